/* test_curve.c: CURVE + ZAP over TCP loopback. Keys come from `apprentice keygen` (AP_BIN).
 * For each kind of service socket (ROUTER bind, PUB bind):
 *   - an allow-listed client is served, and its messages carry its ZAP user id;
 *   - a client with an unknown key, a client without CURVE, and a client with the wrong
 *     server key are all refused: nothing is delivered, and the refusal is counted (ZAP
 *     stats and the server socket's handshake counters);
 *   - a key allowed in one domain is refused on another domain's socket (ROUTER).
 * Also: the key files (mode 0600 for the secret), loading them, and bad keys refused. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "apprentice/base.h"
#include "apprentice/transport.h"
#include "test.h"

typedef struct {
    char pub[AP_Z85_KEY], sec[AP_Z85_KEY];
} s_keys_t;

static s_keys_t s_srv, s_actor, s_stranger, s_other_srv;

static ap_net_t *s_net(const s_keys_t *k) {
    ap_net_opts_t o = {.curve = k != NULL};
    if (k) memcpy(o.public_key, k->pub, AP_Z85_KEY), memcpy(o.secret_key, k->sec, AP_Z85_KEY);
    ap_net_t *n = ap_net_new(&o);
    AP_ASSERTF(n, "%s", ap_errmsg());
    return n;
}

static ap_sock_t *s_sock(ap_net_t *n, ap_sock_type_t type, const char *ep, int bind,
                         const char *domain, const char *server_key) {
    ap_sock_opts_t o = {.type = type,
                        .endpoint = ep,
                        .bind = bind,
                        .domain = domain,
                        .server_key = server_key,
                        .linger_ms = 0,
                        .name = "curve-test"};
    ap_sock_t *s = ap_sock_new(n, &o);
    AP_ASSERTF(s, "%s", ap_errmsg());
    return s;
}

/* Refusals counted on the server since (e0, z0): handshake failures of any kind + ZAP 400s.
 * Waits up to 5 s for the evidence (handshakes are asynchronous; a loaded machine is slow). */
static uint64_t s_refusals(ap_net_t *srv_net, ap_sock_t *server, const ap_sock_events_t *e0,
                           const ap_zap_stats_t *z0) {
    uint64_t n = 0;
    for (double t0 = ap_now(); ap_now() - t0 < 5.0; ap_sleep(0.02)) {
        ap_zap_stats_t z1;
        ap_net_zap_stats(srv_net, &z1);
        const ap_sock_events_t *e1 = ap_sock_events(server);
        n = (e1->handshake_failed_auth - e0->handshake_failed_auth) +
            (e1->handshake_failed_protocol - e0->handshake_failed_protocol) +
            (e1->handshake_failed_other - e0->handshake_failed_other) + (z1.refused - z0->refused);
        if (n) break;
    }
    return n;
}

/* A DEALER client from key pair k (NULL: no CURVE) sends to the ROUTER; 1 if delivered. */
static int s_try_router(ap_net_t *srv_net, ap_sock_t *router, const s_keys_t *k,
                        const char *server_key, const char *want_user, const char *label) {
    ap_zap_stats_t z0, z1;
    ap_net_zap_stats(srv_net, &z0); /* before the client exists: no event can be missed */
    ap_sock_events_t e0 = *ap_sock_events(router);
    ap_net_t *cn = s_net(k);
    ap_sock_t *d = s_sock(cn, AP_SOCK_DEALER, ap_sock_endpoint(router), 0, NULL, server_key);
    ap_msg_t m = {.type = AP_MSG_HEARTBEAT, .seq = 7};
    ap_sock_send(d, NULL, &m);
    ap_peer_t p;
    ap_msg_t got;
    int rc = ap_sock_recv_wait(router, &p, &got, want_user ? 5000 : 700);
    uint64_t refusals = want_user ? 0 : s_refusals(srv_net, router, &e0, &z0);
    if (rc == 1) ap_msg_clear(&got);
    ap_net_zap_stats(srv_net, &z1);
    const ap_sock_events_t *e1 = ap_sock_events(router);
    printf("ROUTER %-22s delivered %d user '%s' zap +%llu/-%llu handshake ok %llu auth-fail %llu "
           "proto-fail %llu other %llu\n",
           label, rc, rc == 1 ? p.user_id : "", (unsigned long long)(z1.accepted - z0.accepted),
           (unsigned long long)(z1.refused - z0.refused), (unsigned long long)e1->handshake_ok,
           (unsigned long long)e1->handshake_failed_auth,
           (unsigned long long)e1->handshake_failed_protocol,
           (unsigned long long)e1->handshake_failed_other);
    if (want_user) {
        AP_CHECK(rc == 1 && !strcmp(p.user_id, want_user), "%s: not served (user '%s')", label,
                 p.user_id);
    } else {
        AP_CHECK(rc == 0, "%s: a refused client was served", label);
        AP_CHECK(refusals > 0, "%s: refusal not counted", label);
    }
    ap_sock_destroy(&d);
    ap_net_destroy(&cn);
    return rc;
}

/* A SUB client subscribes to the PUB while it publishes; 1 if anything arrives. */
static int s_try_pub(ap_net_t *srv_net, ap_sock_t *pub, const s_keys_t *k, const char *server_key,
                     int want, const char *label) {
    ap_zap_stats_t z0, z1;
    ap_net_zap_stats(srv_net, &z0); /* before the client exists: no event can be missed */
    ap_sock_events_t e0 = *ap_sock_events(pub);
    ap_net_t *cn = s_net(k);
    ap_sock_t *sub = s_sock(cn, AP_SOCK_SUB, ap_sock_endpoint(pub), 0, NULL, server_key);
    int rc = 0;
    double t0 = ap_now(), limit = want ? 5.0 : 0.8;
    ap_peer_t p;
    while (!rc && ap_now() - t0 < limit) {
        ap_msg_t m = {.type = AP_MSG_HEARTBEAT, .seq = 1};
        ap_sock_send(pub, NULL, &m);
        ap_msg_t got;
        rc = ap_sock_recv_wait(sub, &p, &got, 50);
        if (rc == 1) ap_msg_clear(&got);
    }
    uint64_t refusals = want ? 0 : s_refusals(srv_net, pub, &e0, &z0);
    ap_net_zap_stats(srv_net, &z1);
    const ap_sock_events_t *e1 = ap_sock_events(pub);
    printf("PUB    %-22s delivered %d zap +%llu/-%llu handshake ok %llu auth-fail %llu "
           "proto-fail %llu other %llu\n",
           label, rc, (unsigned long long)(z1.accepted - z0.accepted),
           (unsigned long long)(z1.refused - z0.refused), (unsigned long long)e1->handshake_ok,
           (unsigned long long)e1->handshake_failed_auth,
           (unsigned long long)e1->handshake_failed_protocol,
           (unsigned long long)e1->handshake_failed_other);
    if (want) {
        AP_CHECK(rc == 1, "%s: subscriber not served", label);
    } else {
        AP_CHECK(rc == 0, "%s: a refused subscriber got data", label);
        AP_CHECK(refusals > 0, "%s: refusal not counted", label);
    }
    ap_sock_destroy(&sub);
    ap_net_destroy(&cn);
    return rc;
}

int main(void) {
    ap_log_set_role("test_curve", 0);
    const char *bin = getenv("AP_BIN");
    const char *dir = ap_test_tmpdir("curve");
    char keys[600], cmd[2000];
    snprintf(keys, sizeof keys, "%s/keys", dir);

    /* keys from the command */
    if (bin) {
        snprintf(cmd, sizeof cmd, "'%s' keygen --help > /dev/null", bin);
        AP_CHECK(system(cmd) == 0, "keygen --help");
        snprintf(cmd, sizeof cmd, "'%s' keygen --dir '%s' buffer actor-0 > /dev/null", bin, keys);
        AP_CHECK(system(cmd) == 0, "keygen");
        snprintf(cmd, sizeof cmd, "'%s' keygen --dir '%s' buffer 2> /dev/null", bin, keys);
        AP_CHECK(system(cmd) != 0, "keygen refuses to overwrite");
    } else {
        fprintf(stderr, "AP_BIN unset: making keys in-process\n");
        AP_CHECK(ap_curve_keygen(keys, "buffer", 0) == 0, "%s", ap_errmsg());
        AP_CHECK(ap_curve_keygen(keys, "actor-0", 0) == 0, "%s", ap_errmsg());
    }
    char path[800];
    snprintf(path, sizeof path, "%s/buffer.key", keys);
    struct stat st;
    AP_CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "secret key mode %o",
             (unsigned)(st.st_mode & 0777));
    AP_CHECK(ap_curve_load(keys, "buffer", s_srv.pub, s_srv.sec) == 0, "%s", ap_errmsg());
    AP_CHECK(ap_curve_load(keys, "actor-0", s_actor.pub, s_actor.sec) == 0, "%s", ap_errmsg());
    AP_CHECK(ap_curve_load(keys, "nobody", NULL, NULL) < 0, "missing key file refused");
    zmq_curve_keypair(s_stranger.pub, s_stranger.sec);
    zmq_curve_keypair(s_other_srv.pub, s_other_srv.sec);

    /* bad keys are refused at start-up */
    {
        ap_net_opts_t o = {.curve = 1};
        strcpy(o.public_key, "not a key");
        AP_CHECK(ap_net_new(&o) == NULL, "bad key accepted");
        memcpy(o.public_key, s_actor.pub, AP_Z85_KEY);
        memcpy(o.secret_key, s_srv.sec, AP_Z85_KEY);
        AP_CHECK(ap_net_new(&o) == NULL, "mismatched key pair accepted");
        ap_net_t *n = s_net(&s_srv);
        AP_CHECK(ap_net_allow(n, "actor", "garbage", "x") < 0, "bad allow-list key accepted");
        ap_sock_opts_t so = {.type = AP_SOCK_ROUTER, .endpoint = "tcp://127.0.0.1:*", .bind = 1};
        ap_sock_t *s = ap_sock_new(n, &so);
        AP_CHECK(s == NULL, "CURVE server without a ZAP domain accepted");
        ap_sock_destroy(&s);
        ap_net_destroy(&n);
    }

    ap_net_t *srv = s_net(&s_srv);
    snprintf(path, sizeof path, "%s", keys);
    /* allow-list of the actor domain from the key directory: buffer.pub and actor-0.pub */
    AP_CHECK(ap_net_allow_dir(srv, "actor", path) == 2, "allow_dir: %s", ap_errmsg());
    AP_CHECK(ap_net_allow(srv, "weights", s_actor.pub, "actor-0") == 0, "%s", ap_errmsg());

    /* ROUTER bind */
    ap_sock_t *router = s_sock(srv, AP_SOCK_ROUTER, "tcp://127.0.0.1:*", 1, "actor", NULL);
    s_try_router(srv, router, &s_actor, s_srv.pub, "actor-0", "allowed key");
    s_try_router(srv, router, &s_stranger, s_srv.pub, NULL, "unknown key");
    s_try_router(srv, router, NULL, NULL, NULL, "no CURVE");
    s_try_router(srv, router, &s_actor, s_other_srv.pub, NULL, "wrong server key");
    ap_sock_t *teach = s_sock(srv, AP_SOCK_ROUTER, "tcp://127.0.0.1:*", 1, "teacher", NULL);
    s_try_router(srv, teach, &s_actor, s_srv.pub, NULL, "actor key, teacher domain");
    const ap_sock_events_t *ev = ap_sock_events(router);
    AP_CHECK(ev->handshake_failed_auth >= 1 &&
                 ev->handshake_failed_protocol + ev->handshake_failed_other >= 2,
             "ROUTER counters: auth %llu protocol %llu",
             (unsigned long long)ev->handshake_failed_auth,
             (unsigned long long)ev->handshake_failed_protocol);

    /* the same over ipc:// (the launcher's single-machine endpoints) */
    {
        char ep[700];
        snprintf(ep, sizeof ep, "ipc://%s/actor.ipc", dir);
        ap_sock_t *ipc = s_sock(srv, AP_SOCK_ROUTER, ep, 1, "actor", NULL);
        s_try_router(srv, ipc, &s_actor, s_srv.pub, "actor-0", "ipc allowed key");
        s_try_router(srv, ipc, &s_stranger, s_srv.pub, NULL, "ipc unknown key");
        s_try_router(srv, ipc, NULL, NULL, NULL, "ipc no CURVE");
        ap_sock_destroy(&ipc);
    }

    /* PUB bind */
    ap_sock_t *pub = s_sock(srv, AP_SOCK_PUB, "tcp://127.0.0.1:*", 1, "weights", NULL);
    s_try_pub(srv, pub, &s_actor, s_srv.pub, 1, "allowed key");
    s_try_pub(srv, pub, &s_stranger, s_srv.pub, 0, "unknown key");
    s_try_pub(srv, pub, NULL, NULL, 0, "no CURVE");
    s_try_pub(srv, pub, &s_actor, s_other_srv.pub, 0, "wrong server key");
    ev = ap_sock_events(pub);
    AP_CHECK(ev->handshake_failed_auth >= 1 &&
                 ev->handshake_failed_protocol + ev->handshake_failed_other >= 2,
             "PUB counters: auth %llu protocol %llu", (unsigned long long)ev->handshake_failed_auth,
             (unsigned long long)ev->handshake_failed_protocol);

    ap_zap_stats_t z;
    ap_net_zap_stats(srv, &z);
    printf("ZAP totals: %llu accepted, %llu refused, %llu invalid\n",
           (unsigned long long)z.accepted, (unsigned long long)z.refused,
           (unsigned long long)z.invalid);
    AP_CHECK(z.refused >= 3 && z.accepted >= 2 && z.invalid == 0, "ZAP totals");

    ap_sock_destroy(&pub);
    ap_sock_destroy(&teach);
    ap_sock_destroy(&router);
    ap_net_destroy(&srv);
    return ap_test_result();
}
