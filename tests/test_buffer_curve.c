/* test_buffer_curve.c: the buffer under security.curve over TCP loopback. Keys come from
 * `apprentice keygen` (AP_BIN; in-process keygen otherwise): buffer, actor-0, teacher-external-0,
 * learner in the run's key directory, and a stranger's pair elsewhere. The buffer admits keys
 * by role (ap_buffer_allow_keys): actor* on the actor socket, teacher* on the teacher socket,
 * learner* on the learner socket. Allowed clients are served (an actor gets its CREDIT, a teacher
 * and the learner are registered); an unknown key, a key of another role, and a client without
 * CURVE are refused on each socket: nothing reaches the buffer, and ZAP counts the refusals. */
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/buffer.h"
#include "apprentice/config.h"
#include "test.h"
#include "test_buffer_fakes.h"

#define HB 0.1

static struct ev_loop *s_loop;
static ap_buffer_t *s_buf;
static ap_net_t *s_srv;

static ap_net_t *s_client_net(const char *dir, const char *name) {
    ap_net_opts_t o = {0};
    if (name) AP_ASSERTF(ap_buffer_load_keys(dir, name, "actor", &o) == 0, "%s", ap_errmsg());
    ap_net_t *n = ap_net_new(&o);
    AP_ASSERTF(n, "%s", ap_errmsg());
    return n;
}

static int s_served(void *arg) {
    fk_t *f = arg;
    return f->credit_msgs > 0 || f->heartbeats > 0;
}

/* A client with key `name` from `dir` (NULL: no CURVE) says HELLO as `role` on socket `which`;
 * returns 1 when the buffer answered it. */
static int s_try(const char *dir, const char *name, int which, ap_role_t role, const char *label,
                 int want) {
    static const char *hello_names[3] = {"actor-0", "teacher-external-0", "learner-0"};
    ap_zap_stats_t z0, z1;
    ap_net_zap_stats(s_srv, &z0);
    ap_buffer_stats_t st0;
    ap_buffer_stats(s_buf, &st0);
    ap_net_t *cn = s_client_net(dir, name);
    char key[AP_Z85_KEY];
    AP_ASSERTF(ap_buffer_service_key(getenv("KEYS"), "buffer", key) == 0, "%s", ap_errmsg());
    fk_t *f = fk_new(cn, ap_buffer_endpoint(s_buf, which), hello_names[which], role, HB,
                     name ? key : NULL);
    fk_hello(f, 0, AP_TEACHER_EXTERNAL, 2, 0, 0);
    fk_t *all[1] = {f};
    int served = fk_pump(s_loop, all, 1, want ? 5.0 : 1.0, s_served, f);
    ap_net_zap_stats(s_srv, &z1);
    ap_buffer_stats_t st;
    ap_buffer_stats(s_buf, &st);
    int registered = st.actors + st.teachers[AP_TEACHER_EXTERNAL] + st.learners >
                     st0.actors + st0.teachers[AP_TEACHER_EXTERNAL] + st0.learners;
    printf("%-40s served %d registered %d  zap +%llu accepted / +%llu refused\n", label, served,
           registered, (unsigned long long)(z1.accepted - z0.accepted),
           (unsigned long long)(z1.refused - z0.refused));
    if (want) {
        AP_CHECK(served && registered, "%s: not served", label);
    } else {
        AP_CHECK(!served && !registered, "%s: a refused client was served", label);
        if (name) AP_CHECK(z1.refused > z0.refused, "%s: refusal not counted by ZAP", label);
    }
    /* say BYE so the next case starts from an empty peer table */
    ap_msg_t bye = {.type = AP_MSG_BYE};
    fk_send(f, &bye);
    fk_pump(s_loop, all, 1, 0.1, NULL, NULL);
    fk_destroy(&f);
    ap_net_destroy(&cn);
    return served;
}

int main(void) {
    ap_log_set_role("test_buffer_curve", 0);
    ap_log_set_level(AP_LOG_ERROR);
    const char *tmp = ap_test_tmpdir("buffer-curve");
    char keys[600], other[600], cmd[2000];
    snprintf(keys, sizeof keys, "%s/keys", tmp);
    snprintf(other, sizeof other, "%s/other", tmp);
    setenv("KEYS", keys, 1);
    const char *bin = getenv("AP_BIN");
    static const char *names[4] = {"buffer", "actor-0", "teacher-external-0", "learner"};
    if (bin) {
        snprintf(cmd, sizeof cmd,
                 "'%s' keygen --dir '%s' %s %s %s %s > /dev/null && '%s' keygen "
                 "--dir '%s' actor-0 > /dev/null",
                 bin, keys, names[0], names[1], names[2], names[3], bin, other);
        AP_CHECK(system(cmd) == 0, "keygen");
    } else {
        for (int i = 0; i < 4; i++)
            AP_CHECK(ap_curve_keygen(keys, names[i], 0) == 0, "%s", ap_errmsg());
        AP_CHECK(ap_curve_keygen(other, "actor-0", 0) == 0, "%s", ap_errmsg());
    }
    ap_net_opts_t so = {0};
    AP_CHECK(ap_buffer_load_keys(keys, "buffer-0", "buffer", &so) == 0, "%s", ap_errmsg());
    s_srv = ap_net_new(&so);
    AP_ASSERTF(s_srv, "%s", ap_errmsg());
    int admitted = ap_buffer_allow_keys(s_srv, keys);
    printf("allow-lists from %s: %d keys admitted\n", keys, admitted);
    AP_CHECK(admitted == 3, "admitted %d keys (actor-0, teacher-external-0, learner)", admitted);
    ap_config_t *cfg = ap_config_new();
    cfg->objective.gkd.c.enabled = 1;
    cfg->buffer.heartbeat_ms = (int)(HB * 1000);
    s_loop = ev_loop_new(EVFLAG_AUTO);
    ap_buffer_opts_t bo = {.cfg = cfg,
                           .actors_endpoint = "tcp://127.0.0.1:*",
                           .teachers_endpoint = "tcp://127.0.0.1:*",
                           .learner_endpoint = "tcp://127.0.0.1:*"};
    s_buf = ap_buffer_new(s_srv, s_loop, &bo);
    AP_ASSERTF(s_buf, "%s", ap_errmsg());

    s_try(keys, "actor-0", 0, AP_ROLE_ACTOR, "actor socket, actor-0's key", 1);
    s_try(other, "actor-0", 0, AP_ROLE_ACTOR, "actor socket, unknown key", 0);
    s_try(keys, "teacher-external-0", 0, AP_ROLE_ACTOR, "actor socket, a teacher's key", 0);
    s_try(NULL, NULL, 0, AP_ROLE_ACTOR, "actor socket, no CURVE", 0);
    s_try(keys, "teacher-external-0", 1, AP_ROLE_TEACHER, "teacher socket, teacher's key", 1);
    s_try(other, "actor-0", 1, AP_ROLE_TEACHER, "teacher socket, unknown key", 0);
    s_try(keys, "actor-0", 1, AP_ROLE_TEACHER, "teacher socket, an actor's key", 0);
    s_try(keys, "learner", 2, AP_ROLE_LEARNER, "learner socket, learner's key", 1);
    s_try(other, "actor-0", 2, AP_ROLE_LEARNER, "learner socket, unknown key", 0);
    s_try(keys, "actor-0", 2, AP_ROLE_LEARNER, "learner socket, an actor's key", 0);
    s_try(NULL, NULL, 2, AP_ROLE_LEARNER, "learner socket, no CURVE", 0);

    ap_buffer_destroy(&s_buf);
    ap_net_destroy(&s_srv);
    ev_loop_destroy(s_loop);
    ap_config_destroy(&cfg);
    return ap_test_result();
}
