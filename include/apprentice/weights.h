/* weights.h: distribution of the student's weights from the learner to actors and teachers
 * (docs/PROTOCOL.md, "Weight transfer"; DESIGN.md, "Versions").
 *
 * The learner publishes immutable, versioned snapshots: one blob = a 256-byte header (magic,
 * version, the model config, a tensor-table hash, the arena size) followed by the parameter
 * arena, with a BLAKE2b-256 digest (libsodium). Clients pull a version chunk by chunk (1-4 MiB
 * chunks, a window of W requests in flight) over DEALER -> ROUTER, hash as chunks arrive,
 * verify the digest, and only then offer the version: a client swaps in complete, verified
 * weights only, between its own work units (ap_wclient_take never blocks). The server keeps
 * the newest `keep` versions plus any snapshot a chunk in flight still references (atomic
 * refcount, released by ZeroMQ's zero-copy free callback); a request for a version it no
 * longer has is answered with the newest manifest, and the client restarts on that.
 * New versions are hinted on a PUB socket (re-sent every second) and every client also asks
 * for the latest manifest periodically, so a late joiner or a restarted process converges
 * on the newest version without depending on the hint. Versions order by restart generation,
 * then step (ap_version_cmp).
 *
 * Usage (learner):
 *   ap_wserver_opts_t wo = {.endpoint = cfg->endpoints.weights, .pub_endpoint =
 * cfg->endpoints.weights_pub}; ap_wserver_t *ws = ap_wserver_new(net, loop, &wo); size_t bytes;
 * const void *arena = ap_model_blob(model, &bytes); ap_wserver_publish(ws, (ap_version_t){gen,
 * step}, ap_model_config(model), table_hash, arena, bytes);
 *   ... ev_run(loop, ...) serves pulls ...;  ap_wserver_destroy(&ws);
 *
 * Usage (actor / teacher, between work units):
 *   ap_wclient_opts_t co = {.endpoint = ..., .pub_endpoint = ..., .server_key = learner_pub};
 *   ap_wclient_t *wc = ap_wclient_new(net, loop, &co);      // transfers run on `loop`
 *   ap_weights_t *w;
 *   if (ap_wclient_take(wc, &w) == 1) {                    // a newer verified version
 *       ap_model_set_blob(model, w->params, w->params_bytes); version = w->version;
 *       ap_weights_destroy(&w);
 *   }
 */
#ifndef APPRENTICE_WEIGHTS_H
#define APPRENTICE_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "apprentice/model_config.h"
#include "apprentice/traj.h"
#include "apprentice/transport.h"

#define AP_WEIGHTS_HEADER_BYTES 256 /* blob header; keeps the arena 64-byte aligned */

/* A complete, verified weights version (owned by whoever took it). */
typedef struct {
    ap_version_t version;
    uint8_t digest[AP_DIGEST_BYTES]; /* BLAKE2b-256 of the whole blob */
    ap_model_config_t config;        /* the network the arena belongs to */
    uint64_t table_hash;             /* the learner's tensor-table hash (0 = not given) */
    const void *params;              /* [params_bytes] the parameter arena, 64-byte aligned */
    size_t params_bytes;
    uint8_t *blob; /* [size] header + arena */
    size_t size;
} ap_weights_t;

void ap_weights_destroy(ap_weights_t **w);

/* Build a blob (header + copy of the arena) in a new 64-byte aligned buffer (free()). */
uint8_t *ap_weights_pack(ap_version_t v, const ap_model_config_t *cfg, uint64_t table_hash,
                         const void *params, size_t params_bytes, size_t *size);
/* Check a blob's header (magic, sizes, config) and fill w (w->blob = blob, borrowed: set it
 * NULL before ap_weights_destroy if you do not own it). 0 / -1 with ap_err(). */
int ap_weights_parse(uint8_t *blob, size_t size, ap_weights_t *w);
/* BLAKE2b-256 of data. */
void ap_weights_digest(const void *data, size_t len, uint8_t out[AP_DIGEST_BYTES]);

/* ---------------------------------------------------------------- server (learner) */

typedef struct {
    const char *endpoint;     /* ROUTER for pulls (bound) */
    const char *pub_endpoint; /* PUB for version hints (bound); NULL: none */
    const char *domain;       /* ZAP domain under CURVE (default "weights") */
    uint32_t chunk_bytes;     /* default 1 MiB; 1 KiB .. 16 MiB */
    int keep;                 /* versions kept besides in-flight references (default 2) */
    double hint_interval;     /* seconds between PUB re-announcements (default 1) */
} ap_wserver_opts_t;

typedef struct {
    uint64_t published;     /* versions published */
    uint64_t manifests;     /* "latest" requests answered */
    uint64_t chunks;        /* chunks sent */
    uint64_t bytes;         /* chunk bytes sent */
    uint64_t gone;          /* requests for a version no longer kept (answered with latest) */
    uint64_t bad_requests;  /* chunk index out of range, wrong type */
    uint64_t send_failures; /* sends refused (HWM, peer gone) */
    int live_snapshots;     /* snapshots still allocated (kept + referenced) */
} ap_wserver_stats_t;

typedef struct ap_wserver ap_wserver_t;

ap_wserver_t *ap_wserver_new(ap_net_t *net, struct ev_loop *loop, const ap_wserver_opts_t *o);
void ap_wserver_destroy(ap_wserver_t **s);
/* Publish version v (must be newer than the latest: -1 with ap_err otherwise): copies the
 * arena into a new snapshot, hashes it, announces it. Costs one copy + one BLAKE2b pass. */
int ap_wserver_publish(ap_wserver_t *s, ap_version_t v, const ap_model_config_t *cfg,
                       uint64_t table_hash, const void *params, size_t params_bytes);
ap_version_t ap_wserver_latest(const ap_wserver_t *s); /* {0,0} before the first publish */
void ap_wserver_stats(const ap_wserver_t *s, ap_wserver_stats_t *out);
const char *ap_wserver_endpoint(const ap_wserver_t *s);     /* bound ROUTER (resolved) */
const char *ap_wserver_pub_endpoint(const ap_wserver_t *s); /* bound PUB, or NULL */
/* Test hook: the next send of chunk `index` (any version) carries one flipped byte. */
void ap_wserver_debug_corrupt(ap_wserver_t *s, uint32_t index);

/* ---------------------------------------------------------------- client (actor, teacher) */

typedef struct {
    const char *endpoint;     /* the server's ROUTER */
    const char *pub_endpoint; /* the server's PUB (NULL: rely on polling) */
    const char *server_key;   /* CURVE: the learner's public key (Z85) */
    int window;               /* chunk requests in flight (default 4) */
    double poll_interval;     /* seconds between "latest?" requests and stall checks (default 1) */
    uint64_t max_bytes;       /* largest blob accepted (default 16 GiB) */
} ap_wclient_opts_t;

typedef struct {
    uint64_t completed;       /* versions verified */
    uint64_t digest_failures; /* versions whose digest did not match (then re-pulled) */
    uint64_t restarts;        /* transfers abandoned for a newer version or a gone one */
    uint64_t stalls;          /* in-flight requests re-sent after a stall */
    uint64_t bytes;           /* chunk bytes received */
    uint64_t bad_chunks;      /* chunks refused (wrong offset/length, unknown version) */
    uint64_t bad_blobs;       /* verified blobs whose header did not parse */
} ap_wclient_stats_t;

typedef struct ap_wclient ap_wclient_t;

/* A client whose transfers run on `loop` (the caller's loop: transfers progress only while it
 * runs, so call ev_run(loop, EVRUN_NOWAIT) between work units, or use ap_wclient_spawn). */
ap_wclient_t *ap_wclient_new(ap_net_t *net, struct ev_loop *loop, const ap_wclient_opts_t *o);
/* A client running on its own thread and loop: transfers progress while the caller computes;
 * take / stats / newest_known are thread-safe; on_ready runs on the client's thread. */
ap_wclient_t *ap_wclient_spawn(ap_net_t *net, const ap_wclient_opts_t *o);
void ap_wclient_destroy(ap_wclient_t **c); /* joins the thread of a spawned client */
/* 1 and *out = the newest verified version newer than anything taken before (the caller owns
 * it: ap_weights_destroy), or 0 when there is none. Never blocks. */
int ap_wclient_take(ap_wclient_t *c, ap_weights_t **out);
/* Called on the loop each time a newer version has been verified (optional). */
void ap_wclient_on_ready(ap_wclient_t *c, void (*cb)(ap_wclient_t *c, void *data), void *data);
ap_version_t ap_wclient_newest_known(ap_wclient_t *c); /* newest version announced */
void ap_wclient_stats(ap_wclient_t *c, ap_wclient_stats_t *out);

#endif
