/* transport.h: ZeroMQ sockets for apprentice's services: one place that sets every socket
 * option, CURVE security with a ZAP allow-list, multipart framing with validation through the
 * message codec (msg.h), and libev integration that never loses an edge-triggered wake-up
 * (docs/PROTOCOL.md; research/transport.md explains each pitfall).
 *
 * - ap_net_t: one per process. Owns the ZeroMQ context and, when CURVE is on, the ZAP handler
 *   (a thread with a REP socket on inproc://zeromq.zap.01, bound before any server socket)
 *   that admits only public keys on the allow-list of the socket's domain. Every bound
 *   socket sets ZMQ_ZAP_ENFORCE_DOMAIN, so a missing handler means refusal, never "accept
 *   any key".
 * - ap_sock_t: a ROUTER / DEALER / PUB / SUB with its options (explicit linger, MAXMSGSIZE,
 *   HWM as a safety net, ROUTER_MANDATORY, ZMTP heartbeats, reconnect back-off), a codec
 *   (msg.h) that validates every incoming message and counts rejects by reason, and a socket
 *   monitor that counts handshakes (succeeded / refused by auth / failed by protocol).
 * - Framing: [routing id (ROUTER only)][protobuf Envelope][raw bytes (WeightsChunk only)].
 *   Any other frame count is drained, counted (AP_REJECT_FRAMES) and dropped.
 * - Event loop: ap_sock_watch() registers a no-op ev_io on ZMQ_FD plus ev_prepare / ev_check /
 *   ev_idle watchers; ZMQ_EVENTS decides everything and the loop does not sleep while a
 *   socket has pending input, so sends from any callback and messages queued before the
 *   watcher started are never missed. Each wake-up handles at most a bounded batch (64).
 * - Shutdown: ap_signals_start() turns SIGINT/SIGTERM into a callback on the loop;
 *   ap_sock_destroy() applies the socket's linger (0 for ROUTER/PUB/SUB, 200 ms for DEALER)
 *   and ap_net_destroy() terminates the context, retrying on EINTR: it never hangs.
 *
 * Usage (a service binding a ROUTER and echoing credit):
 *   ap_net_opts_t no = {.curve = cfg->security.curve};
 *   ap_curve_load(keys_dir, "buffer", no.public_key, no.secret_key);
 *   ap_net_t *net = ap_net_new(&no);
 *   ap_net_allow(net, "actor", actor_pub, "actor-0");          // once per allowed client
 *   ap_sock_opts_t so = {.type = AP_SOCK_ROUTER, .endpoint = "tcp://0.0.0.0:7001", .bind = 1,
 *                        .domain = "actor", .max_msg = 16 << 20, .name = "buffer/actors"};
 *   ap_sock_t *s = ap_sock_new(net, &so);
 *   ap_sock_watch(s, loop, on_msg, app);    // on_msg(s, &peer, &msg, app) per valid message
 *   ... in on_msg: if (msg->type == AP_MSG_GROUP) { keep(msg->u.group); msg->u.group = NULL; }
 *                  ap_msg_t c = {.type = AP_MSG_CREDIT, .u.credit = {.grant = 1}};
 *                  ap_sock_send(s, peer, &c);     // -1 + errno EAGAIN / EHOSTUNREACH: handle
 *   ev_run(loop, 0);
 *   ap_sock_destroy(&s); ap_net_destroy(&net);
 */
#ifndef APPRENTICE_TRANSPORT_H
#define APPRENTICE_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "apprentice/msg.h"

#define AP_Z85_KEY 41 /* a CURVE key as Z85 text: 40 characters + NUL */

/* ---------------------------------------------------------------- keys (apprentice keygen) */

/* Make a key pair: DIR/NAME.pub (public, Z85 + newline) and DIR/NAME.key (secret, mode 0600).
 * Refuses to overwrite unless `force`. 0 / -1 with ap_err(). */
int ap_curve_keygen(const char *dir, const char *name, int force);
/* Load DIR/NAME.key (secret) and derive / check DIR/NAME.pub. pub or sec may be NULL. */
int ap_curve_load(const char *dir, const char *name, char pub[AP_Z85_KEY], char sec[AP_Z85_KEY]);
/* Load a public key file (NAME.pub): 40 Z85 characters, optional trailing newline. */
int ap_curve_load_public(const char *path, char pub[AP_Z85_KEY]);

/* ---------------------------------------------------------------- the process context */

typedef struct {
    int curve;                   /* 1: every socket uses CURVE */
    char public_key[AP_Z85_KEY]; /* this process's key pair (Z85), required with curve */
    char secret_key[AP_Z85_KEY];
    int io_threads; /* ZeroMQ I/O threads (0 = 1) */
} ap_net_opts_t;

typedef struct {
    uint64_t accepted; /* ZAP requests admitted */
    uint64_t refused;  /* unknown key, or a key not allowed in that domain */
    uint64_t invalid;  /* malformed ZAP requests (should never happen) */
} ap_zap_stats_t;

typedef struct ap_net ap_net_t;

ap_net_t *ap_net_new(const ap_net_opts_t *o); /* NULL + ap_err() */
/* Destroy every ap_sock_t of this net first. Terminates the context (EINTR-safe). */
void ap_net_destroy(ap_net_t **n);
void *ap_net_zmq_ctx(ap_net_t *n);
int ap_net_curve(const ap_net_t *n);
/* Admit `public_key` (Z85) on sockets of ZAP domain `domain`; the peer's messages then carry
 * `user_id` (ap_peer_t.user_id). Thread-safe; may be called at any time. 0 / -1 (bad key). */
int ap_net_allow(ap_net_t *n, const char *domain, const char *public_key, const char *user_id);
/* Admit every file DIR/NAME.pub for `domain`, user id = file stem. Returns the count or -1. */
int ap_net_allow_dir(ap_net_t *n, const char *domain, const char *dir);
void ap_net_zap_stats(ap_net_t *n, ap_zap_stats_t *out);

/* ---------------------------------------------------------------- sockets */

typedef enum { AP_SOCK_ROUTER, AP_SOCK_DEALER, AP_SOCK_PUB, AP_SOCK_SUB } ap_sock_type_t;

typedef struct {
    ap_sock_type_t type;
    const char *endpoint;   /* "tcp://host:port", "tcp://127.0.0.1:*" (ephemeral), "ipc://..." */
    int bind;               /* 1: bind (a server), 0: connect (a client) */
    const char *domain;     /* bound sockets under CURVE: ZAP domain = the allow-list to use */
    const char *server_key; /* connecting sockets under CURVE: the server's public key (Z85) */
    size_t max_msg;         /* largest frame accepted, bytes (0 = 1 MiB); MAXMSGSIZE adds 64 */
    int hwm;                /* send and receive high-water mark, messages (0 = 1000) */
    int linger_ms;          /* on close; -1 = default (0 ROUTER/PUB/SUB, 200 DEALER) */
    int immediate;          /* DEALER: 1 = queue only to completed connections (EAGAIN else) */
    const ap_msg_limits_t *limits; /* decoder limits (NULL: defaults); max_frame = max_msg */
    const char *name;              /* for logs, e.g. "buffer/actors" */
} ap_sock_opts_t;

typedef struct {
    uint64_t handshake_ok;              /* ZMQ_EVENT_HANDSHAKE_SUCCEEDED */
    uint64_t handshake_failed_auth;     /* refused by ZAP (unknown key / domain) */
    uint64_t handshake_failed_protocol; /* no CURVE, wrong server key, bad ZMTP */
    uint64_t handshake_failed_other;
    uint64_t accepted, connected, disconnected;
    uint64_t too_many_frames; /* messages dropped for their frame count (also in codec stats) */
    uint64_t send_again;      /* sends refused with EAGAIN (HWM / not connected) */
    uint64_t send_unroutable; /* ROUTER sends to a gone peer (EHOSTUNREACH) */
} ap_sock_events_t;

/* Who sent a message (and where to send a reply on a ROUTER). Plain data: copy it freely. */
typedef struct {
    uint8_t rid[255];          /* ROUTER: routing id of the peer */
    uint8_t rid_len;           /* 0 on non-ROUTER sockets */
    char user_id[AP_NAME_MAX]; /* the ZAP user id of the peer ("" without CURVE) */
} ap_peer_t;

typedef struct ap_sock ap_sock_t;

ap_sock_t *ap_sock_new(ap_net_t *net, const ap_sock_opts_t *o); /* NULL + ap_err() */
void ap_sock_destroy(ap_sock_t **s);                            /* linger, close, NULL */
/* The endpoint actually bound or connected (resolves "tcp://127.0.0.1:*"). Borrowed. */
const char *ap_sock_endpoint(const ap_sock_t *s);
ap_msg_codec_t *ap_sock_codec(ap_sock_t *s);          /* set latest version / vocab; reject stats */
const ap_sock_events_t *ap_sock_events(ap_sock_t *s); /* drains the monitor first */
void *ap_sock_zmq(ap_sock_t *s);                      /* the raw socket (tests, benchmarks) */

/* Send m (encoded here). `to` is required on a ROUTER, ignored elsewhere. Never blocks.
 * 0, or -1 with ap_err() and errno EAGAIN (HWM reached / no connection: retry later),
 * EHOSTUNREACH (ROUTER: the peer is gone) or EINVAL (m invalid). */
int ap_sock_send(ap_sock_t *s, const ap_peer_t *to, const ap_msg_t *m);
/* Send a WEIGHTS_CHUNK whose bytes (m->u.chunk.data, .len) go as the raw frame without a
 * copy: `release(data, hint)` is called from a ZeroMQ I/O thread once they are sent (also
 * when the send fails). release == NULL: the bytes are copied. Same returns as ap_sock_send. */
int ap_sock_send_chunk(ap_sock_t *s, const ap_peer_t *to, const ap_msg_t *m,
                       void (*release)(void *data, void *hint), void *hint);

/* Receive one message without blocking: 1 = *out filled (ap_msg_clear it), 0 = nothing
 * waiting, -1 = a message arrived and was rejected (counted, logged): call again.
 * A chunk's data stays valid until the next receive on this socket. */
int ap_sock_recv(ap_sock_t *s, ap_peer_t *from, ap_msg_t *out);
/* Same, waiting up to timeout_ms for a valid message (0 when none came). For simple clients
 * and tests; services use ap_sock_watch. */
int ap_sock_recv_wait(ap_sock_t *s, ap_peer_t *from, ap_msg_t *out, int timeout_ms);

/* libev: on_msg is called for every valid message (at most 64 per loop iteration; the loop
 * keeps iterating without sleeping while more are pending). The message is cleared after
 * the callback returns: steal pointers by setting them to NULL. One watch per socket. */
typedef void (*ap_sock_msg_cb)(ap_sock_t *s, const ap_peer_t *from, ap_msg_t *msg, void *data);
void ap_sock_watch(ap_sock_t *s, struct ev_loop *loop, ap_sock_msg_cb on_msg, void *data);
/* Also call on_writable (once per loop iteration) while set and the socket can send: set it
 * after an EAGAIN to resume parked output, clear it (NULL) when done. */
void ap_sock_on_writable(ap_sock_t *s, void (*on_writable)(ap_sock_t *s, void *data));
/* Also call on_reject for every message the watcher drops (already counted and logged), with
 * its sender and reason: for per-peer accounting (e.g. expire a peer after K violations). */
typedef void (*ap_sock_reject_cb)(ap_sock_t *s, const ap_peer_t *from, ap_reject_t why, void *data);
void ap_sock_on_reject(ap_sock_t *s, ap_sock_reject_cb on_reject);
void ap_sock_unwatch(ap_sock_t *s);

/* ---------------------------------------------------------------- signals */

/* SIGINT and SIGTERM as libev watchers (call ap_signals_stop before leaving). */
typedef struct {
    ev_signal sigint, sigterm;
    struct ev_loop *loop;
} ap_signals_t;

void ap_signals_start(ap_signals_t *sg, struct ev_loop *loop,
                      void (*cb)(struct ev_loop *loop, ev_signal *w, int revents), void *data);
void ap_signals_stop(ap_signals_t *sg);

#endif
