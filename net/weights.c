/* weights.c: versioned weight snapshots, the pull server (learner side) and the pull client
 * (actors, teachers) of weights.h. Protocol (docs/PROTOCOL.md):
 *   client -> server  WeightsRequest{latest}          server -> client  WeightsAnnounce (manifest)
 *   client -> server  WeightsRequest{version, chunk}  server -> client  WeightsChunk + raw bytes,
 *                                                     or the newest WeightsAnnounce if that
 *                                                     version is gone
 *   server -> PUB     WeightsAnnounce on publish and every hint_interval seconds.
 * Chunks leave the server without a copy (zmq_msg_init_data on the snapshot, refcount held
 * until ZeroMQ's I/O thread releases it). The client keeps `window` requests ahead of what it
 * has received, hashes chunks in order as they land (incremental BLAKE2b), and re-sends
 * missing requests after a stall. */
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/weights.h"

#define S_MAGIC "APWEIGHT"
#define S_FORMAT 1u
#define S_MAX_CHUNK (16u << 20)
#define S_MAX_DIGEST_RETRIES 3

/* ---------------------------------------------------------------- blobs */

static void s_put32(uint8_t *p, uint32_t v) {
    memcpy(p, &v, 4);
} /* little-endian hosts */
static void s_put64(uint8_t *p, uint64_t v) {
    memcpy(p, &v, 8);
}
static uint32_t s_get32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t s_get64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static uint8_t *s_alloc_blob(size_t size) {
    void *p = NULL;
    if (posix_memalign(&p, 64, size ? size : 64) != 0)
        ap_die(__FILE__, __LINE__, "out of memory (%zu bytes)", size);
    return p;
}

uint8_t *ap_weights_pack(ap_version_t v, const ap_model_config_t *cfg, uint64_t table_hash,
                         const void *params, size_t params_bytes, size_t *size) {
    *size = AP_WEIGHTS_HEADER_BYTES + params_bytes;
    uint8_t *b = s_alloc_blob(*size);
    memset(b, 0, AP_WEIGHTS_HEADER_BYTES);
    memcpy(b, S_MAGIC, 8);
    s_put32(b + 8, S_FORMAT);
    s_put32(b + 12, AP_WEIGHTS_HEADER_BYTES);
    s_put32(b + 16, v.gen);
    s_put64(b + 24, v.step);
    s_put64(b + 32, params_bytes);
    s_put64(b + 40, table_hash);
    const int32_t ints[8] = {cfg->vocab_size,    cfg->hidden_size,   cfg->intermediate_size,
                             cfg->num_layers,    cfg->num_heads,     cfg->num_kv_heads,
                             cfg->max_positions, cfg->tie_embeddings};
    memcpy(b + 48, ints, sizeof ints);
    memcpy(b + 80, &cfg->rms_norm_eps, 4);
    memcpy(b + 84, &cfg->rope_theta, 4);
    memcpy(b + AP_WEIGHTS_HEADER_BYTES, params, params_bytes);
    return b;
}

int ap_weights_parse(uint8_t *blob, size_t size, ap_weights_t *w) {
    memset(w, 0, sizeof *w);
    if (size < AP_WEIGHTS_HEADER_BYTES || memcmp(blob, S_MAGIC, 8))
        return ap_err("weights blob: bad magic or %zu bytes", size);
    if (s_get32(blob + 8) != S_FORMAT || s_get32(blob + 12) != AP_WEIGHTS_HEADER_BYTES)
        return ap_err("weights blob: format %u / header %u unsupported", s_get32(blob + 8),
                      s_get32(blob + 12));
    uint64_t pb = s_get64(blob + 32);
    if (pb != size - AP_WEIGHTS_HEADER_BYTES)
        return ap_err("weights blob: header says %llu parameter bytes, blob has %zu",
                      (unsigned long long)pb, size - AP_WEIGHTS_HEADER_BYTES);
    int32_t ints[8];
    memcpy(ints, blob + 48, sizeof ints);
    ap_model_config_t *c = &w->config;
    c->vocab_size = ints[0], c->hidden_size = ints[1], c->intermediate_size = ints[2];
    c->num_layers = ints[3], c->num_heads = ints[4], c->num_kv_heads = ints[5];
    c->max_positions = ints[6], c->tie_embeddings = ints[7];
    memcpy(&c->rms_norm_eps, blob + 80, 4);
    memcpy(&c->rope_theta, blob + 84, 4);
    if (ap_model_config_validate(c, "weights blob") < 0) return -1;
    if ((unsigned long long)ap_model_config_num_params(c) * 4 != pb)
        return ap_err("weights blob: %llu parameter bytes, the config implies %lld",
                      (unsigned long long)pb, ap_model_config_num_params(c) * 4);
    w->version = (ap_version_t){s_get32(blob + 16), s_get64(blob + 24)};
    w->table_hash = s_get64(blob + 40);
    w->params = blob + AP_WEIGHTS_HEADER_BYTES;
    w->params_bytes = pb;
    w->blob = blob;
    w->size = size;
    return 0;
}

/* libsodium picks its fast BLAKE2b implementation in sodium_init (idempotent). */
static void s_sodium(void) {
    if (sodium_init() < 0) ap_die(__FILE__, __LINE__, "sodium_init failed");
}

void ap_weights_digest(const void *data, size_t len, uint8_t out[AP_DIGEST_BYTES]) {
    s_sodium();
    crypto_generichash(out, AP_DIGEST_BYTES, data, len, NULL, 0);
}

void ap_weights_destroy(ap_weights_t **wp) {
    if (!wp || !*wp) return;
    free((*wp)->blob);
    free(*wp);
    *wp = NULL;
}

/* ---------------------------------------------------------------- server */

/* The count of live snapshots, shared by the server and its snapshots: a chunk ZeroMQ releases
 * on its I/O thread after the server is gone must not touch the server's memory, so the counter
 * has its own reference count (1 for the server + 1 per live snapshot). */
typedef struct {
    atomic_int live; /* snapshots not yet freed */
    atomic_int refs; /* holders of this struct */
} s_live_t;

static void s_live_release(s_live_t *l) {
    if (atomic_fetch_sub(&l->refs, 1) == 1) free(l);
}

typedef struct {
    ap_version_t version;
    uint8_t *blob;
    size_t size;
    uint8_t digest[AP_DIGEST_BYTES];
    uint32_t chunk_bytes, n_chunks;
    atomic_int refs;  /* 1 while kept + 1 per chunk in flight (released on an I/O thread) */
    s_live_t *live;   /* the server's live-snapshot counter (a reference is held) */
} s_snap_t;

struct ap_wserver {
    ap_sock_t *router, *pub;
    struct ev_loop *loop;
    ev_timer hint;
    uint32_t chunk_bytes;
    int keep;
    s_snap_t **snaps; /* [n_snaps] kept, oldest first */
    int n_snaps;
    s_live_t *live;   /* shared with the snapshots */
    ap_wserver_stats_t stats;
    int64_t corrupt; /* chunk index to corrupt once, -1 none */
};

static void s_unref(s_snap_t *s) {
    if (atomic_fetch_sub(&s->refs, 1) == 1) {
        atomic_fetch_sub(&s->live->live, 1);
        s_live_release(s->live);
        free(s->blob);
        free(s);
    }
}

static void s_chunk_release(void *data, void *hint) {
    (void)data;
    s_unref(hint);
}

static void s_copy_release(void *data, void *hint) {
    (void)hint;
    free(data);
}

static void s_announce_of(const s_snap_t *s, ap_msg_t *m) {
    memset(m, 0, sizeof *m);
    m->type = AP_MSG_WEIGHTS_ANNOUNCE;
    m->u.announce.version = s->version;
    m->u.announce.size = s->size;
    memcpy(m->u.announce.digest, s->digest, AP_DIGEST_BYTES);
    m->u.announce.chunk_size = s->chunk_bytes;
    m->u.announce.n_chunks = s->n_chunks;
}

static s_snap_t *s_latest(const ap_wserver_t *w) {
    return w->n_snaps ? w->snaps[w->n_snaps - 1] : NULL;
}

static void s_send_latest(ap_wserver_t *w, ap_sock_t *sock, const ap_peer_t *to) {
    s_snap_t *s = s_latest(w);
    if (!s) return; /* nothing yet: the client asks again */
    ap_msg_t m;
    s_announce_of(s, &m);
    if (ap_sock_send(sock, to, &m) < 0) w->stats.send_failures++;
}

static void s_server_msg(ap_sock_t *sock, const ap_peer_t *from, ap_msg_t *msg, void *data) {
    ap_wserver_t *w = data;
    if (msg->type != AP_MSG_WEIGHTS_REQUEST) {
        w->stats.bad_requests++;
        return;
    }
    const ap_weights_request_t *r = &msg->u.weights_request;
    if (r->latest) {
        w->stats.manifests++;
        s_send_latest(w, sock, from);
        return;
    }
    s_snap_t *s = NULL;
    for (int i = 0; i < w->n_snaps; i++)
        if (!ap_version_cmp(w->snaps[i]->version, r->version)) s = w->snaps[i];
    if (!s) {
        w->stats.gone++;
        s_send_latest(w, sock, from);
        return;
    }
    if (r->chunk >= s->n_chunks) {
        w->stats.bad_requests++;
        return;
    }
    uint64_t off = (uint64_t)r->chunk * s->chunk_bytes;
    size_t len = (size_t)AP_MIN((uint64_t)s->chunk_bytes, s->size - off);
    ap_msg_t m = {.type = AP_MSG_WEIGHTS_CHUNK};
    m.u.chunk = (ap_weights_chunk_t){s->version, r->chunk, off, s->blob + off, len};
    int rc;
    if (w->corrupt == (int64_t)r->chunk) { /* test hook: a flipped byte, in a private copy */
        w->corrupt = -1;
        uint8_t *copy = ap_malloc(len);
        memcpy(copy, s->blob + off, len);
        copy[len / 2] ^= 0x5a;
        m.u.chunk.data = copy;
        rc = ap_sock_send_chunk(sock, from, &m, s_copy_release, NULL);
    } else {
        atomic_fetch_add(&s->refs, 1);
        rc = ap_sock_send_chunk(sock, from, &m, s_chunk_release, s); /* zero-copy */
    }
    if (rc < 0) {
        w->stats.send_failures++;
        return;
    }
    w->stats.chunks++;
    w->stats.bytes += len;
}

static void s_hint_cb(struct ev_loop *loop, ev_timer *t, int revents) {
    (void)loop, (void)revents;
    ap_wserver_t *w = t->data;
    if (w->pub && s_latest(w)) s_send_latest(w, w->pub, NULL);
}

ap_wserver_t *ap_wserver_new(ap_net_t *net, struct ev_loop *loop, const ap_wserver_opts_t *o) {
    if (o->chunk_bytes && (o->chunk_bytes < 1024 || o->chunk_bytes > S_MAX_CHUNK)) {
        ap_err("weights: chunk size %u outside [1 KiB, 16 MiB]", o->chunk_bytes);
        return NULL;
    }
    s_sodium();
    ap_wserver_t *w = ap_calloc(1, sizeof *w);
    w->loop = loop;
    w->chunk_bytes =
        o->chunk_bytes ? o->chunk_bytes : 1u << 20; /* bench weights: see PERFORMANCE.md */
    w->keep = o->keep > 0 ? o->keep : 2;
    w->corrupt = -1;
    w->live = ap_calloc(1, sizeof *w->live);
    atomic_init(&w->live->live, 0);
    atomic_init(&w->live->refs, 1);
    ap_msg_limits_t lim;
    ap_msg_limits_default(&lim);
    lim.accept = 1u << AP_MSG_WEIGHTS_REQUEST;
    const char *domain = o->domain ? o->domain : "weights";
    ap_sock_opts_t ro = {.type = AP_SOCK_ROUTER,
                         .endpoint = o->endpoint,
                         .bind = 1,
                         .domain = domain,
                         .max_msg = 4096,
                         .hwm = 10000,
                         .linger_ms = 0,
                         .limits = &lim,
                         .name = "weights/router"};
    w->router = ap_sock_new(net, &ro);
    if (!w->router) goto fail;
    if (o->pub_endpoint) {
        ap_sock_opts_t po = {.type = AP_SOCK_PUB,
                             .endpoint = o->pub_endpoint,
                             .bind = 1,
                             .domain = domain,
                             .max_msg = 4096,
                             .hwm = 100,
                             .linger_ms = 0,
                             .name = "weights/pub"};
        w->pub = ap_sock_new(net, &po);
        if (!w->pub) goto fail;
    }
    ap_sock_watch(w->router, loop, s_server_msg, w);
    double ivl = o->hint_interval > 0 ? o->hint_interval : 1.0;
    ev_timer_init(&w->hint, s_hint_cb, ivl, ivl);
    w->hint.data = w;
    ev_timer_start(loop, &w->hint);
    return w;
fail:
    ap_sock_destroy(&w->router);
    s_live_release(w->live);
    free(w);
    return NULL;
}

void ap_wserver_destroy(ap_wserver_t **wp) {
    if (!wp || !*wp) return;
    ap_wserver_t *w = *wp;
    ev_timer_stop(w->loop, &w->hint);
    ap_sock_destroy(&w->router); /* linger 0: queued chunks are dropped and released */
    ap_sock_destroy(&w->pub);
    for (int i = 0; i < w->n_snaps; i++)
        s_unref(w->snaps[i]);
    free(w->snaps);
    if (atomic_load(&w->live->live))
        ap_log(AP_LOG_DEBUG, "weights: %d snapshots still referenced by ZeroMQ at destroy",
               atomic_load(&w->live->live));
    s_live_release(w->live); /* the last in-flight chunk frees it if any remain */
    free(w);
    *wp = NULL;
}

int ap_wserver_publish(ap_wserver_t *w, ap_version_t v, const ap_model_config_t *cfg,
                       uint64_t table_hash, const void *params, size_t params_bytes) {
    s_snap_t *last = s_latest(w);
    if (last && ap_version_cmp(v, last->version) <= 0)
        return ap_err("weights: version %u:%llu is not newer than %u:%llu", v.gen,
                      (unsigned long long)v.step, last->version.gen,
                      (unsigned long long)last->version.step);
    if ((unsigned long long)ap_model_config_num_params(cfg) * 4 != params_bytes)
        return ap_err("weights: %zu parameter bytes, the config implies %lld", params_bytes,
                      ap_model_config_num_params(cfg) * 4);
    s_snap_t *s = ap_calloc(1, sizeof *s);
    s->version = v;
    s->blob = ap_weights_pack(v, cfg, table_hash, params, params_bytes, &s->size);
    ap_weights_digest(s->blob, s->size, s->digest);
    s->chunk_bytes = w->chunk_bytes;
    s->n_chunks = (uint32_t)((s->size + w->chunk_bytes - 1) / w->chunk_bytes);
    atomic_init(&s->refs, 1);
    s->live = w->live;
    atomic_fetch_add(&w->live->refs, 1);
    atomic_fetch_add(&w->live->live, 1);
    w->snaps = ap_realloc(w->snaps, (size_t)(w->n_snaps + 1) * sizeof *w->snaps);
    w->snaps[w->n_snaps++] = s;
    while (w->n_snaps > w->keep) { /* evict the oldest; in-flight chunks keep it alive */
        s_unref(w->snaps[0]);
        memmove(w->snaps, w->snaps + 1, (size_t)(w->n_snaps - 1) * sizeof *w->snaps);
        w->n_snaps--;
    }
    w->stats.published++;
    if (w->pub) s_send_latest(w, w->pub, NULL);
    return 0;
}

ap_version_t ap_wserver_latest(const ap_wserver_t *w) {
    s_snap_t *s = s_latest(w);
    return s ? s->version : (ap_version_t){0, 0};
}

void ap_wserver_stats(const ap_wserver_t *w, ap_wserver_stats_t *out) {
    *out = w->stats;
    out->live_snapshots = atomic_load(&w->live->live);
}

const char *ap_wserver_endpoint(const ap_wserver_t *w) {
    return ap_sock_endpoint(w->router);
}
const char *ap_wserver_pub_endpoint(const ap_wserver_t *w) {
    return w->pub ? ap_sock_endpoint(w->pub) : NULL;
}
void ap_wserver_debug_corrupt(ap_wserver_t *w, uint32_t index) {
    w->corrupt = index;
}

/* ---------------------------------------------------------------- client */

struct ap_wclient {
    ap_sock_t *dealer, *sub;
    struct ev_loop *loop;
    ev_timer tick;
    int window;
    double poll;
    uint64_t max_bytes;
    /* the transfer in progress */
    int active;
    ap_weights_announce_t man;
    uint8_t *blob;
    uint8_t *got;      /* [n_chunks] received */
    uint32_t next_req; /* chunks [0, next_req) have been requested */
    uint32_t n_recv;
    uint32_t hash_next; /* chunks [0, hash_next) are in the hash */
    crypto_generichash_state hs;
    double last_progress;
    int digest_retries; /* of this version */
    /* results */
    ap_version_t newest; /* newest announced */
    ap_version_t taken;  /* newest handed out by take */
    ap_weights_t *ready; /* verified, not yet taken */
    ap_wclient_stats_t stats;
    void (*on_ready)(ap_wclient_t *c, void *data);
    void *on_ready_data;
    int notify; /* a version became ready in this callback: call on_ready after unlocking */
    /* ap_wclient_spawn: the loop runs on its own thread; `mu` guards everything the caller's
     * thread reads (ready, taken, newest, stats); the loop thread holds it while handling. */
    pthread_mutex_t mu;
    int threaded;
    pthread_t thread;
    ev_async stop;
    struct ev_loop *own_loop;
};

static ap_version_t s_have(const ap_wclient_t *c) {
    if (c->ready && ap_version_cmp(c->ready->version, c->taken) > 0) return c->ready->version;
    return c->taken;
}

static void s_request(ap_wclient_t *c, int latest, uint32_t chunk) {
    ap_msg_t m = {.type = AP_MSG_WEIGHTS_REQUEST};
    m.u.weights_request.latest = latest;
    m.u.weights_request.version = c->man.version;
    m.u.weights_request.chunk = chunk;
    if (ap_sock_send(c->dealer, NULL, &m) < 0 && errno != EAGAIN)
        ap_log(AP_LOG_WARN, "weights client: %s", ap_errmsg());
}

/* Keep `window` requests ahead of what has arrived. */
static void s_fill(ap_wclient_t *c) {
    while (c->active && c->next_req < c->man.n_chunks &&
           c->next_req - c->n_recv < (uint32_t)c->window) {
        ap_msg_t m = {.type = AP_MSG_WEIGHTS_REQUEST};
        m.u.weights_request.version = c->man.version;
        m.u.weights_request.chunk = c->next_req;
        if (ap_sock_send(c->dealer, NULL, &m) < 0) break; /* HWM: the tick retries */
        c->next_req++;
    }
}

static void s_stop_transfer(ap_wclient_t *c) {
    free(c->blob);
    free(c->got);
    c->blob = c->got = NULL;
    c->active = 0;
}

static void s_start_transfer(ap_wclient_t *c, const ap_weights_announce_t *a) {
    if (c->active) {
        c->stats.restarts++;
        s_stop_transfer(c);
    }
    c->man = *a;
    c->blob = s_alloc_blob(a->size);
    c->got = ap_calloc(a->n_chunks, 1);
    c->next_req = c->n_recv = c->hash_next = 0;
    crypto_generichash_init(&c->hs, NULL, 0, AP_DIGEST_BYTES);
    c->active = 1;
    c->last_progress = ap_now();
    s_fill(c);
}

static void s_on_announce(ap_wclient_t *c, const ap_weights_announce_t *a) {
    if (a->size > c->max_bytes || a->size < AP_WEIGHTS_HEADER_BYTES ||
        a->chunk_size > S_MAX_CHUNK) {
        c->stats.bad_chunks++;
        return;
    }
    if (ap_version_cmp(a->version, c->newest) > 0) c->newest = a->version;
    if (ap_version_cmp(a->version, s_have(c)) <= 0) return;                   /* nothing new */
    if (c->active && ap_version_cmp(a->version, c->man.version) <= 0) return; /* already on it */
    c->digest_retries = 0;
    s_start_transfer(c, a);
}

static void s_complete(ap_wclient_t *c) {
    uint8_t digest[AP_DIGEST_BYTES];
    crypto_generichash_final(&c->hs, digest, AP_DIGEST_BYTES);
    if (sodium_memcmp(digest, c->man.digest, AP_DIGEST_BYTES) != 0) {
        c->stats.digest_failures++;
        ap_log(AP_LOG_WARN, "weights: version %u:%llu failed its digest check: re-pulling",
               c->man.version.gen, (unsigned long long)c->man.version.step);
        ap_weights_announce_t a = c->man;
        s_stop_transfer(c);
        if (++c->digest_retries <= S_MAX_DIGEST_RETRIES) s_start_transfer(c, &a);
        return;
    }
    ap_weights_t *w = ap_calloc(1, sizeof *w);
    if (ap_weights_parse(c->blob, c->man.size, w) < 0 ||
        ap_version_cmp(w->version, c->man.version) != 0) {
        c->stats.bad_blobs++;
        ap_log(AP_LOG_WARN, "weights: version %u:%llu: %s", c->man.version.gen,
               (unsigned long long)c->man.version.step, ap_errmsg());
        free(w);
        s_stop_transfer(c);
        return;
    }
    memcpy(w->digest, digest, AP_DIGEST_BYTES);
    c->blob = NULL; /* now owned by w */
    s_stop_transfer(c);
    ap_weights_destroy(&c->ready); /* an older untaken version is superseded */
    c->ready = w;
    c->stats.completed++;
    c->notify = 1;
}

static void s_on_chunk(ap_wclient_t *c, const ap_weights_chunk_t *ch) {
    if (!c->active || ap_version_cmp(ch->version, c->man.version)) return; /* stale */
    uint64_t off = (uint64_t)ch->index * c->man.chunk_size;
    size_t want = ch->index < c->man.n_chunks
                      ? (size_t)AP_MIN((uint64_t)c->man.chunk_size, c->man.size - off)
                      : 0;
    if (ch->index >= c->man.n_chunks || ch->offset != off || ch->len != want) {
        c->stats.bad_chunks++;
        return;
    }
    if (c->got[ch->index]) return; /* a duplicate after a stall re-request */
    memcpy(c->blob + off, ch->data, ch->len);
    c->got[ch->index] = 1;
    c->n_recv++;
    c->stats.bytes += ch->len;
    c->last_progress = ap_now();
    while (c->hash_next < c->man.n_chunks && c->got[c->hash_next]) { /* in order */
        uint64_t o = (uint64_t)c->hash_next * c->man.chunk_size;
        crypto_generichash_update(&c->hs, c->blob + o,
                                  AP_MIN((uint64_t)c->man.chunk_size, c->man.size - o));
        c->hash_next++;
    }
    if (c->n_recv == c->man.n_chunks)
        s_complete(c);
    else
        s_fill(c);
}

static void s_client_msg(ap_sock_t *s, const ap_peer_t *from, ap_msg_t *msg, void *data) {
    (void)s, (void)from;
    ap_wclient_t *c = data;
    pthread_mutex_lock(&c->mu);
    if (msg->type == AP_MSG_WEIGHTS_ANNOUNCE)
        s_on_announce(c, &msg->u.announce);
    else if (msg->type == AP_MSG_WEIGHTS_CHUNK)
        s_on_chunk(c, &msg->u.chunk);
    int notify = c->notify;
    void (*cb)(ap_wclient_t *, void *) = c->on_ready;
    void *cb_data = c->on_ready_data;
    c->notify = 0;
    pthread_mutex_unlock(&c->mu);
    if (notify && cb) cb(c, cb_data);
}

static void s_tick_cb(struct ev_loop *loop, ev_timer *t, int revents) {
    (void)loop, (void)revents;
    ap_wclient_t *c = t->data;
    pthread_mutex_lock(&c->mu);
    if (!c->active) {
        s_request(c, 1, 0); /* late joiners and lost hints converge on the newest */
        pthread_mutex_unlock(&c->mu);
        return;
    }
    if (ap_now() - c->last_progress > 2 * c->poll) { /* stalled: re-ask what is missing */
        c->stats.stalls++;
        for (uint32_t i = 0; i < c->next_req; i++)
            if (!c->got[i]) s_request(c, 0, i);
        c->last_progress = ap_now();
        s_request(c, 1, 0); /* and check the version still exists */
    }
    s_fill(c);
    pthread_mutex_unlock(&c->mu);
}

ap_wclient_t *ap_wclient_new(ap_net_t *net, struct ev_loop *loop, const ap_wclient_opts_t *o) {
    s_sodium();
    ap_wclient_t *c = ap_calloc(1, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    c->loop = loop;
    c->window = o->window > 0 ? o->window : 4;
    c->poll = o->poll_interval > 0 ? o->poll_interval : 1.0;
    c->max_bytes = o->max_bytes ? o->max_bytes : (16ull << 30);
    ap_msg_limits_t lim;
    ap_msg_limits_default(&lim);
    lim.accept = (1u << AP_MSG_WEIGHTS_ANNOUNCE) | (1u << AP_MSG_WEIGHTS_CHUNK);
    lim.max_raw = S_MAX_CHUNK;
    ap_sock_opts_t d = {.type = AP_SOCK_DEALER,
                        .endpoint = o->endpoint,
                        .server_key = o->server_key,
                        .max_msg = S_MAX_CHUNK + 4096,
                        .hwm = 4 * c->window + 16,
                        .linger_ms = 0,
                        .limits = &lim,
                        .name = "weights/client"};
    c->dealer = ap_sock_new(net, &d);
    if (!c->dealer) goto fail;
    ap_sock_watch(c->dealer, loop, s_client_msg, c);
    if (o->pub_endpoint) {
        ap_msg_limits_t sl = lim;
        sl.accept = 1u << AP_MSG_WEIGHTS_ANNOUNCE;
        ap_sock_opts_t so = {.type = AP_SOCK_SUB,
                             .endpoint = o->pub_endpoint,
                             .server_key = o->server_key,
                             .max_msg = 4096,
                             .hwm = 100,
                             .linger_ms = 0,
                             .limits = &sl,
                             .name = "weights/sub"};
        c->sub = ap_sock_new(net, &so);
        if (!c->sub) goto fail;
        ap_sock_watch(c->sub, loop, s_client_msg, c);
    }
    ev_timer_init(&c->tick, s_tick_cb, c->poll, c->poll);
    c->tick.data = c;
    ev_timer_start(loop, &c->tick);
    s_request(c, 1, 0); /* a late joiner asks right away */
    return c;
fail:
    ap_sock_destroy(&c->dealer);
    pthread_mutex_destroy(&c->mu);
    free(c);
    return NULL;
}

static void s_stop_cb(struct ev_loop *loop, ev_async *w, int revents) {
    (void)w, (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void *s_thread_main(void *arg) {
    ap_wclient_t *c = arg;
    ev_run(c->loop, 0);
    return NULL;
}

ap_wclient_t *ap_wclient_spawn(ap_net_t *net, const ap_wclient_opts_t *o) {
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    if (!loop) {
        ap_err("weights client: ev_loop_new failed");
        return NULL;
    }
    ap_wclient_t *c = ap_wclient_new(net, loop, o);
    if (!c) {
        ev_loop_destroy(loop);
        return NULL;
    }
    c->own_loop = loop;
    ev_async_init(&c->stop, s_stop_cb);
    ev_async_start(loop, &c->stop);
    /* The sockets move to the new thread: pthread_create is the full barrier ZeroMQ needs. */
    if (pthread_create(&c->thread, NULL, s_thread_main, c) != 0) {
        ap_err("weights client: pthread_create failed");
        ap_wclient_destroy(&c);
        return NULL;
    }
    c->threaded = 1;
    return c;
}

void ap_wclient_destroy(ap_wclient_t **cp) {
    if (!cp || !*cp) return;
    ap_wclient_t *c = *cp;
    if (c->threaded) { /* stop the loop thread; the sockets come back with the join */
        ev_async_send(c->loop, &c->stop);
        pthread_join(c->thread, NULL);
    }
    if (c->own_loop) ev_async_stop(c->loop, &c->stop);
    ev_timer_stop(c->loop, &c->tick);
    ap_sock_destroy(&c->dealer);
    ap_sock_destroy(&c->sub);
    s_stop_transfer(c);
    ap_weights_destroy(&c->ready);
    if (c->own_loop) ev_loop_destroy(c->own_loop);
    pthread_mutex_destroy(&c->mu);
    free(c);
    *cp = NULL;
}

int ap_wclient_take(ap_wclient_t *c, ap_weights_t **out) {
    *out = NULL;
    pthread_mutex_lock(&c->mu);
    int got = c->ready && ap_version_cmp(c->ready->version, c->taken) > 0;
    if (got) {
        *out = c->ready;
        c->ready = NULL;
        c->taken = (*out)->version;
    }
    pthread_mutex_unlock(&c->mu);
    return got;
}

void ap_wclient_on_ready(ap_wclient_t *c, void (*cb)(ap_wclient_t *c, void *data), void *data) {
    pthread_mutex_lock(&c->mu);
    c->on_ready = cb;
    c->on_ready_data = data;
    pthread_mutex_unlock(&c->mu);
}

ap_version_t ap_wclient_newest_known(ap_wclient_t *c) {
    pthread_mutex_lock(&c->mu);
    ap_version_t v = c->newest;
    pthread_mutex_unlock(&c->mu);
    return v;
}

void ap_wclient_stats(ap_wclient_t *c, ap_wclient_stats_t *out) {
    pthread_mutex_lock(&c->mu);
    *out = c->stats;
    pthread_mutex_unlock(&c->mu);
}
