/* msg.c: encode, validate and decode the apprentice wire messages (msg.h, docs/PROTOCOL.md).
 *
 * Decoding is a pipeline that stops at the first failure, each failure counted by reason:
 *   1. frames: count (1, or 2 for a WeightsChunk) and sizes (non-empty, within limits);
 *   2. protobuf-c unpack through a budget allocator (factor x wire bytes + 64 KiB), so a
 *      small frame of empty sub-messages cannot inflate into a huge allocation;
 *   3. envelope: protocol version, a body set and accepted here, no unknown fields anywhere;
 *   4. structure: counts consistent across the columnar fields and within limits, enums known
 *      (checked on the protobuf structs, before anything is allocated from them);
 *   5. conversion into the plain structs of traj.h / msg.h;
 *   6. semantics (shared with the encoder): token ids in [0, V), finite floats, log-probs
 *      <= 0 (a rounding tolerance), versions not from the future, strings bounded.
 * The encoder runs step 6 on the caller's structs before packing, so a bug in a sender is
 * reported at the sender with the field named, not as a rejection at the receiver. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/msg.h"
#include "proto/apprentice.pb-c.h"

/* A log-prob computed in float may round a hair above 0; anything beyond this is a bug. */
#define S_LOGPROB_TOL 1e-3f

struct ap_msg_codec {
    ap_msg_limits_t lim;
    ap_version_t latest; /* newest version known; {0,0}: no future check */
    ap_msg_stats_t stats;
    ap_ratelimit_t rl; /* one log line per second per codec */
    ap_reject_t last;  /* reason of the latest rejection */
    char name[64];
};

/* The verdict of a check: a reason and a message naming the field. */
typedef struct {
    ap_reject_t reason;
    char why[256];
} s_verdict_t;

static int s_fail(s_verdict_t *v, ap_reject_t reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int s_fail(s_verdict_t *v, ap_reject_t reason, const char *fmt, ...) {
    v->reason = reason;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->why, sizeof v->why, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---------------------------------------------------------------- names and limits */

static const char *s_type_names[AP_MSG_TYPE_COUNT] = {"none",
                                                      "hello",
                                                      "credit",
                                                      "heartbeat",
                                                      "bye",
                                                      "reset",
                                                      "group",
                                                      "score_request",
                                                      "scores",
                                                      "batch_request",
                                                      "batch",
                                                      "weights_announce",
                                                      "weights_request",
                                                      "weights_chunk",
                                                      "metrics"};

const char *ap_msg_type_name(ap_msg_type_t t) {
    return (unsigned)t < AP_MSG_TYPE_COUNT ? s_type_names[t] : "invalid";
}

static const char *s_reject_names[AP_REJECT_REASON_COUNT] = {
    "frames", "size",   "parse", "budget", "protocol", "type",   "unknown_fields",
    "enum",   "length", "limit", "token",  "float",    "future", "text"};

const char *ap_reject_name(ap_reject_t r) {
    return (unsigned)r < AP_REJECT_REASON_COUNT ? s_reject_names[r] : "invalid";
}

void ap_msg_limits_default(ap_msg_limits_t *lim) {
    memset(lim, 0, sizeof *lim);
    lim->vocab_size = 0;
    lim->max_group = 64;
    lim->max_prompt = 4096;
    lim->max_tokens = 4096;
    lim->max_ctx = 8192;
    lim->max_topk = 256;
    lim->max_full_vocab = 4096;
    lim->max_items = 4096;
    lim->max_metrics = 1024;
    lim->max_text = 65536;
    lim->max_frame = 256ull << 20;
    lim->max_raw = 16ull << 20;
    lim->budget_factor = 8.0;
    lim->accept = 0;
}

/* ---------------------------------------------------------------- semantic checks (C side) */

static int s_check_version(const char *what, ap_version_t v, ap_version_t latest, s_verdict_t *vd) {
    if (!ap_version_is_zero(latest) && ap_version_cmp(v, latest) > 0)
        return s_fail(vd, AP_REJECT_FUTURE,
                      "%s version %u:%llu is newer than the latest known %u:%llu", what, v.gen,
                      (unsigned long long)v.step, latest.gen, (unsigned long long)latest.step);
    return 0;
}

static int s_check_ids(const char *what, const int32_t *ids, long long n, int32_t V,
                       s_verdict_t *vd) {
    for (long long i = 0; i < n; i++)
        if (ids[i] < 0 || (V > 0 && ids[i] >= V))
            return s_fail(vd, AP_REJECT_TOKEN, "%s[%lld] = %d outside [0, %d)", what, i, ids[i],
                          V > 0 ? V : 0x7fffffff);
    return 0;
}

/* Log-probs: no NaN, no +inf, <= tolerance. -inf (probability 0 in float) is allowed where
 * `allow_ninf`: the learner masks non-finite teacher positions and counts them. */
static int s_check_logprobs(const char *what, const float *x, long long n, int allow_ninf,
                            s_verdict_t *vd) {
    for (long long i = 0; i < n; i++) {
        float f = x[i];
        if (isnan(f) || f > S_LOGPROB_TOL || (!allow_ninf && !isfinite(f)))
            return s_fail(vd, AP_REJECT_FLOAT, "%s[%lld] = %g is not a log-prob", what, i,
                          (double)f);
    }
    return 0;
}

static int s_check_offsets(const char *what, const int *off, int G, int total, int max_each,
                           s_verdict_t *vd) {
    if (off[0] != 0) return s_fail(vd, AP_REJECT_LENGTH, "%s[0] = %d, not 0", what, off[0]);
    for (int i = 0; i < G; i++) {
        int len = off[i + 1] - off[i];
        if (len < 0) return s_fail(vd, AP_REJECT_LENGTH, "%s decreases at %d", what, i);
        if (max_each > 0 && len > max_each)
            return s_fail(vd, AP_REJECT_LIMIT, "%s: trajectory %d has %d tokens > limit %d", what,
                          i, len, max_each);
    }
    if (off[G] != total)
        return s_fail(vd, AP_REJECT_LENGTH, "%s[G] = %d but the total is %d", what, off[G], total);
    return 0;
}

static int s_check_text(const char *what, const char *s, int max, s_verdict_t *vd) {
    if (!s) return s_fail(vd, AP_REJECT_TEXT, "%s is NULL", what);
    size_t n = strlen(s);
    if (max > 0 && n > (size_t)max)
        return s_fail(vd, AP_REJECT_TEXT, "%s has %zu bytes > limit %d", what, n, max);
    return 0;
}

static int s_check_group(const ap_group_t *g, const ap_msg_limits_t *lim, ap_version_t latest,
                         s_verdict_t *vd) {
    if (!g) return s_fail(vd, AP_REJECT_LENGTH, "group missing");
    if (g->G < 1)
        return s_fail(vd, AP_REJECT_LENGTH, "group %llu has G = %d", (unsigned long long)g->id,
                      g->G);
    if (g->G > lim->max_group)
        return s_fail(vd, AP_REJECT_LIMIT, "group G = %d > limit %d", g->G, lim->max_group);
    if (g->n_prompt < 0 || g->n_prompt > lim->max_prompt)
        return s_fail(vd, AP_REJECT_LIMIT, "prompt of %d tokens, limit %d", g->n_prompt,
                      lim->max_prompt);
    if ((unsigned)g->source >= AP_SOURCE_COUNT)
        return s_fail(vd, AP_REJECT_ENUM, "group source %d unknown", (int)g->source);
    if (s_check_offsets("group offset", g->offset, g->G, g->n_tokens, lim->max_tokens, vd) < 0 ||
        s_check_offsets("group ctx_offset", g->ctx_offset, g->G, g->n_ctx, lim->max_ctx, vd) < 0)
        return -1;
    if (s_check_ids("prompt", g->prompt, g->n_prompt, lim->vocab_size, vd) < 0 ||
        s_check_ids("tokens", g->tokens, g->n_tokens, lim->vocab_size, vd) < 0 ||
        s_check_ids("ctx_tokens", g->ctx_tokens, g->n_ctx, lim->vocab_size, vd) < 0)
        return -1;
    for (int i = 0; i < g->G; i++) {
        if (g->finish[i] >= AP_FINISH_COUNT)
            return s_fail(vd, AP_REJECT_ENUM, "finish[%d] = %d unknown", i, g->finish[i]);
        if (g->correct[i] > 1)
            return s_fail(vd, AP_REJECT_ENUM, "correct[%d] = %d not 0/1", i, g->correct[i]);
        if (!isfinite(g->reward[i]))
            return s_fail(vd, AP_REJECT_FLOAT, "reward[%d] = %g", i, (double)g->reward[i]);
        if (s_check_text("feedback", g->feedback[i], lim->max_text, vd) < 0) return -1;
    }
    if (s_check_text("prompt_text", g->prompt_text, lim->max_text, vd) < 0) return -1;
    if (s_check_logprobs("logprobs", g->logprobs, g->n_tokens, 0, vd) < 0) return -1;
    if (g->source == AP_SOURCE_ON_POLICY) {
        if (!isfinite(g->temperature) || g->temperature <= 0)
            return s_fail(vd, AP_REJECT_FLOAT, "sampling temperature %g", (double)g->temperature);
        if (s_check_version("policy", g->version, latest, vd) < 0) return -1;
    } else if (!isfinite(g->temperature) || g->temperature < 0) {
        return s_fail(vd, AP_REJECT_FLOAT, "temperature %g", (double)g->temperature);
    }
    return 0;
}

static int s_check_scores(const ap_scores_t *s, const ap_msg_limits_t *lim, ap_version_t latest,
                          s_verdict_t *vd) {
    if (!s) return s_fail(vd, AP_REJECT_LENGTH, "scores missing");
    if ((unsigned)s->kind >= AP_TEACHER_COUNT)
        return s_fail(vd, AP_REJECT_ENUM, "teacher kind %d unknown", (int)s->kind);
    if (s->G < 1) return s_fail(vd, AP_REJECT_LENGTH, "scores G = %d", s->G);
    if (s->G > lim->max_group)
        return s_fail(vd, AP_REJECT_LIMIT, "scores G = %d > limit %d", s->G, lim->max_group);
    if (s_check_offsets("scores offset", s->offset, s->G, s->n_tokens, lim->max_tokens, vd) < 0)
        return -1;
    if (s->vocab_size < 1)
        return s_fail(vd, AP_REJECT_LENGTH, "scores vocab_size %d", s->vocab_size);
    if (lim->vocab_size > 0 && s->vocab_size != lim->vocab_size)
        return s_fail(vd, AP_REJECT_LENGTH, "scores for V = %d, expected %d", s->vocab_size,
                      lim->vocab_size);
    if (s->full) {
        if (s->K != s->vocab_size)
            return s_fail(vd, AP_REJECT_LENGTH, "full scores with K %d != V %d", s->K,
                          s->vocab_size);
        if (s->vocab_size > lim->max_full_vocab)
            return s_fail(vd, AP_REJECT_LIMIT, "full distribution over V = %d > limit %d",
                          s->vocab_size, lim->max_full_vocab);
    } else {
        if (s->K < 0 || s->K > lim->max_topk)
            return s_fail(vd, AP_REJECT_LIMIT, "top-K %d outside [0, %d]", s->K, lim->max_topk);
        if (s->K > s->vocab_size)
            return s_fail(vd, AP_REJECT_LENGTH, "top-K %d > V %d", s->K, s->vocab_size);
    }
    if (!isfinite(s->temperature) || s->temperature <= 0)
        return s_fail(vd, AP_REJECT_FLOAT, "scores temperature %g", (double)s->temperature);
    for (int i = 0; i < s->G; i++)
        if (s->present[i] > 1)
            return s_fail(vd, AP_REJECT_ENUM, "present[%d] = %d not 0/1", i, s->present[i]);
    long long nk = (long long)s->n_tokens * s->K;
    if (s_check_logprobs("sampled", s->sampled, s->n_tokens, 1, vd) < 0 ||
        s_check_logprobs(s->full ? "full logprobs" : "topk logprobs", s->logprobs, nk, 1, vd) < 0)
        return -1;
    if (!s->full && s_check_ids("topk ids", s->ids, nk, s->vocab_size, vd) < 0) return -1;
    return s_check_version("teacher weights", s->version, latest, vd);
}

int ap_msg_scores_match(const ap_scores_t *s, const ap_group_t *g) {
    if (s->group_id != g->id)
        return ap_err("scores are for group %llu, not %llu", (unsigned long long)s->group_id,
                      (unsigned long long)g->id);
    if (s->G != g->G) return ap_err("scores have G = %d, the group %d", s->G, g->G);
    for (int i = 0; i <= g->G; i++)
        if (s->offset[i] != g->offset[i])
            return ap_err("scores offset[%d] = %d, the group's %d", i, s->offset[i], g->offset[i]);
    return 0;
}

static int s_check_batch(const ap_batch_t *b, const ap_msg_limits_t *lim, ap_version_t latest,
                         s_verdict_t *vd) {
    if (!b) return s_fail(vd, AP_REJECT_LENGTH, "batch missing");
    if (b->n_items < 0 || b->n_items > lim->max_items)
        return s_fail(vd, AP_REJECT_LIMIT, "batch of %d items, limit %d", b->n_items,
                      lim->max_items);
    if (b->parts < 1 || b->part < 0 || b->part >= b->parts)
        return s_fail(vd, AP_REJECT_LENGTH, "batch part %d of %d", b->part, b->parts);
    for (int i = 0; i < b->n_items; i++) {
        const ap_batch_item_t *it = &b->items[i];
        if (s_check_group(it->group, lim, latest, vd) < 0) return -1;
        if (it->n_scores < 0 || it->n_scores > AP_TEACHER_COUNT)
            return s_fail(vd, AP_REJECT_LIMIT, "item %d has %d scores", i, it->n_scores);
        unsigned kinds = 0;
        for (int k = 0; k < it->n_scores; k++) {
            if (s_check_scores(it->scores[k], lim, latest, vd) < 0) return -1;
            if (ap_msg_scores_match(it->scores[k], it->group) < 0)
                return s_fail(vd, AP_REJECT_LENGTH, "item %d: %s", i, ap_errmsg());
            unsigned bit = 1u << it->scores[k]->kind;
            if (kinds & bit)
                return s_fail(vd, AP_REJECT_LENGTH, "item %d has two scores of kind %d", i,
                              (int)it->scores[k]->kind);
            kinds |= bit;
        }
    }
    return 0;
}

static int s_name_ok(const char *s) {
    return memchr(s, 0, AP_NAME_MAX) != NULL;
}

/* Semantic check of any message (step 6). */
static int s_check(const ap_msg_t *m, const ap_msg_limits_t *lim, ap_version_t latest,
                   s_verdict_t *vd) {
    switch (m->type) {
    case AP_MSG_HELLO:
        if ((unsigned)m->u.hello.role >= AP_ROLE_COUNT || m->u.hello.role == AP_ROLE_NONE)
            return s_fail(vd, AP_REJECT_ENUM, "hello role %d", (int)m->u.hello.role);
        if ((unsigned)m->u.hello.kind >= AP_TEACHER_COUNT)
            return s_fail(vd, AP_REJECT_ENUM, "hello teacher kind %d", (int)m->u.hello.kind);
        if (!s_name_ok(m->u.hello.name)) return s_fail(vd, AP_REJECT_TEXT, "hello name too long");
        if (m->u.hello.vocab_size < 0)
            return s_fail(vd, AP_REJECT_LENGTH, "hello vocab_size %d", m->u.hello.vocab_size);
        return 0;
    case AP_MSG_CREDIT:
        return 0;
    case AP_MSG_HEARTBEAT:
        if (!isfinite(m->u.heartbeat.time))
            return s_fail(vd, AP_REJECT_FLOAT, "heartbeat time %g", m->u.heartbeat.time);
        return 0;
    case AP_MSG_BYE:
    case AP_MSG_RESET:
        return s_name_ok(m->u.bye.reason) ? 0 : s_fail(vd, AP_REJECT_TEXT, "reason too long");
    case AP_MSG_GROUP:
        return s_check_group(m->u.group, lim, latest, vd);
    case AP_MSG_SCORE_REQUEST: {
        const ap_score_request_t *r = &m->u.score_request;
        if ((unsigned)r->kind >= AP_TEACHER_COUNT)
            return s_fail(vd, AP_REJECT_ENUM, "score request kind %d", (int)r->kind);
        if (r->top_k < 0 || r->top_k > lim->max_topk)
            return s_fail(vd, AP_REJECT_LIMIT, "score request top_k %d", r->top_k);
        if (!isfinite(r->temperature) || r->temperature <= 0)
            return s_fail(vd, AP_REJECT_FLOAT, "score request temperature %g",
                          (double)r->temperature);
        return s_check_group(r->group, lim, latest, vd);
    }
    case AP_MSG_SCORES:
        return s_check_scores(m->u.scores, lim, latest, vd);
    case AP_MSG_BATCH_REQUEST:
        if (m->u.batch_request.trajectories < 0)
            return s_fail(vd, AP_REJECT_LENGTH, "batch request for %d trajectories",
                          m->u.batch_request.trajectories);
        return 0;
    case AP_MSG_BATCH:
        return s_check_batch(m->u.batch, lim, latest, vd);
    case AP_MSG_WEIGHTS_ANNOUNCE: {
        const ap_weights_announce_t *a = &m->u.announce;
        if (a->size == 0 || a->chunk_size == 0)
            return s_fail(vd, AP_REJECT_LENGTH, "announce size %llu chunk %u",
                          (unsigned long long)a->size, a->chunk_size);
        if (lim->max_raw && a->chunk_size > lim->max_raw)
            return s_fail(vd, AP_REJECT_LIMIT, "chunk size %u > limit %llu", a->chunk_size,
                          (unsigned long long)lim->max_raw);
        if ((a->size + a->chunk_size - 1) / a->chunk_size != a->n_chunks)
            return s_fail(vd, AP_REJECT_LENGTH, "%u chunks of %u bytes for %llu bytes", a->n_chunks,
                          a->chunk_size, (unsigned long long)a->size);
        return 0;
    }
    case AP_MSG_WEIGHTS_REQUEST:
        return 0;
    case AP_MSG_WEIGHTS_CHUNK:
        if (m->u.chunk.len == 0 || (lim->max_raw && m->u.chunk.len > lim->max_raw))
            return s_fail(vd, AP_REJECT_SIZE, "chunk of %zu bytes", m->u.chunk.len);
        if (m->u.chunk.len && !m->u.chunk.data)
            return s_fail(vd, AP_REJECT_LENGTH, "chunk without data");
        return 0;
    case AP_MSG_METRICS: {
        const ap_msg_metrics_t *x = m->u.metrics;
        if (!x) return s_fail(vd, AP_REJECT_LENGTH, "metrics missing");
        if ((unsigned)x->role >= AP_ROLE_COUNT)
            return s_fail(vd, AP_REJECT_ENUM, "metrics role %d", (int)x->role);
        if (x->n < 0 || x->n > lim->max_metrics)
            return s_fail(vd, AP_REJECT_LIMIT, "%d metric values, limit %d", x->n,
                          lim->max_metrics);
        if (!isfinite(x->time)) return s_fail(vd, AP_REJECT_FLOAT, "metrics time %g", x->time);
        for (int i = 0; i < x->n; i++) {
            if (!s_name_ok(x->names[i]) || !x->names[i][0])
                return s_fail(vd, AP_REJECT_TEXT, "metric name %d empty or too long", i);
            if (!isfinite(x->values[i]))
                return s_fail(vd, AP_REJECT_FLOAT, "metric %s = %g", x->names[i], x->values[i]);
        }
        return 0;
    }
    default:
        return s_fail(vd, AP_REJECT_TYPE, "message type %d", (int)m->type);
    }
}

int ap_msg_validate(const ap_msg_t *m, const ap_msg_limits_t *lim) {
    ap_msg_limits_t def;
    if (!lim) {
        ap_msg_limits_default(&def);
        lim = &def;
    }
    s_verdict_t vd;
    if (s_check(m, lim, (ap_version_t){0, 0}, &vd) < 0)
        return ap_err("%s message invalid (%s): %s", ap_msg_type_name(m->type),
                      ap_reject_name(vd.reason), vd.why);
    return 0;
}

/* ---------------------------------------------------------------- encoding */

/* Temporary arrays made while building protobuf structs for one encode. */
typedef struct {
    void **p;
    int n, cap;
} s_scratch_t;

static void *s_tmp(s_scratch_t *sc, size_t bytes) {
    if (sc->n == sc->cap) {
        sc->cap = sc->cap ? 2 * sc->cap : 16;
        sc->p = ap_realloc(sc->p, (size_t)sc->cap * sizeof *sc->p);
    }
    return sc->p[sc->n++] = ap_calloc(1, bytes ? bytes : 1);
}

static void s_tmp_free(s_scratch_t *sc) {
    for (int i = 0; i < sc->n; i++)
        free(sc->p[i]);
    free(sc->p);
    memset(sc, 0, sizeof *sc);
}

static void s_group_to_pb(const ap_group_t *g, Ap__TrajectoryGroup *pb, s_scratch_t *sc) {
    ap__trajectory_group__init(pb);
    size_t G = (size_t)g->G;
    pb->id = g->id;
    pb->source = (Ap__Source)g->source;
    pb->policy_gen = g->version.gen;
    pb->policy_step = g->version.step;
    pb->actor_id = g->actor_id;
    pb->item_id = g->item_id;
    pb->temperature = g->temperature;
    pb->prompt_text = g->prompt_text;
    pb->n_prompt = (size_t)g->n_prompt;
    pb->prompt = (uint32_t *)g->prompt; /* ids validated >= 0: same bits */
    uint32_t *len = s_tmp(sc, G * 4), *ctx = s_tmp(sc, G * 4);
    protobuf_c_boolean *correct = s_tmp(sc, G * sizeof *correct);
    Ap__Finish *finish = s_tmp(sc, G * sizeof *finish);
    int any_ctx = 0, any_feedback = 0;
    for (size_t i = 0; i < G; i++) {
        len[i] = (uint32_t)(g->offset[i + 1] - g->offset[i]);
        ctx[i] = (uint32_t)(g->ctx_offset[i + 1] - g->ctx_offset[i]);
        any_ctx |= ctx[i] != 0;
        correct[i] = g->correct[i];
        finish[i] = (Ap__Finish)g->finish[i];
        any_feedback |= g->feedback[i][0] != 0;
    }
    pb->n_lengths = G;
    pb->lengths = len;
    pb->n_tokens = (size_t)g->n_tokens;
    pb->tokens = (uint32_t *)g->tokens;
    int dataset = g->source == AP_SOURCE_DATASET;
    pb->n_logprobs = dataset ? 0 : (size_t)g->n_tokens; /* dataset: no behaviour log-probs */
    pb->logprobs = g->logprobs;
    pb->n_reward = dataset ? 0 : G;
    pb->reward = g->reward;
    pb->n_correct = G;
    pb->correct = correct;
    pb->n_finish = G;
    pb->finish = finish;
    pb->n_feedback = any_feedback ? G : 0;
    pb->feedback = g->feedback;
    pb->n_ctx_lengths = any_ctx ? G : 0;
    pb->ctx_lengths = ctx;
    pb->n_ctx_tokens = (size_t)g->n_ctx;
    pb->ctx_tokens = (uint32_t *)g->ctx_tokens;
}

static void s_scores_to_pb(const ap_scores_t *s, Ap__ScoredGroup *pb, s_scratch_t *sc) {
    ap__scored_group__init(pb);
    size_t G = (size_t)s->G, nk = (size_t)s->n_tokens * (size_t)s->K;
    pb->request_id = s->request_id;
    pb->group_id = s->group_id;
    pb->kind = (Ap__TeacherKind)s->kind;
    pb->weights_gen = s->version.gen;
    pb->weights_step = s->version.step;
    pb->temperature = s->temperature;
    pb->vocab_size = s->vocab_size;
    pb->top_k = s->K;
    pb->full = s->full ? 1 : 0;
    uint32_t *len = s_tmp(sc, G * 4);
    protobuf_c_boolean *present = s_tmp(sc, G * sizeof *present);
    int all = 1;
    for (size_t i = 0; i < G; i++) {
        len[i] = (uint32_t)(s->offset[i + 1] - s->offset[i]);
        present[i] = s->present[i];
        all &= s->present[i] == 1;
    }
    pb->n_lengths = G;
    pb->lengths = len;
    pb->n_present = all ? 0 : G; /* empty = all present */
    pb->present = present;
    pb->n_sampled = (size_t)s->n_tokens;
    pb->sampled = s->sampled;
    pb->n_ids = s->full ? 0 : nk;
    pb->ids = (uint32_t *)s->ids;
    pb->n_logprobs = nk;
    pb->logprobs = s->logprobs;
}

static void s_name_copy(char dst[AP_NAME_MAX], const char *src) {
    size_t n = strlen(src);
    if (n >= AP_NAME_MAX) n = AP_NAME_MAX - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

/* Fill env from m; every pointer in env borrows from m or from sc. */
static void s_to_pb(const ap_msg_t *m, Ap__Envelope *env, s_scratch_t *sc) {
    ap__envelope__init(env);
    env->protocol = AP_PROTOCOL_VERSION;
    env->seq = m->seq;
    switch (m->type) {
    case AP_MSG_HELLO: {
        Ap__Hello *h = s_tmp(sc, sizeof *h);
        ap__hello__init(h);
        h->role = (Ap__Role)m->u.hello.role;
        h->id = m->u.hello.id;
        h->name = (char *)m->u.hello.name;
        h->capacity = m->u.hello.capacity;
        h->vocab_size = m->u.hello.vocab_size;
        h->vocab_hash = m->u.hello.vocab_hash;
        h->kind = (Ap__TeacherKind)m->u.hello.kind;
        env->body_case = AP__ENVELOPE__BODY_HELLO;
        env->hello = h;
        break;
    }
    case AP_MSG_CREDIT: {
        Ap__Credit *c = s_tmp(sc, sizeof *c);
        ap__credit__init(c);
        c->grant = m->u.credit.grant;
        c->ack_seq = m->u.credit.ack_seq;
        c->latest_gen = m->u.credit.latest.gen;
        c->latest_step = m->u.credit.latest.step;
        env->body_case = AP__ENVELOPE__BODY_CREDIT;
        env->credit = c;
        break;
    }
    case AP_MSG_HEARTBEAT: {
        Ap__Heartbeat *h = s_tmp(sc, sizeof *h);
        ap__heartbeat__init(h);
        h->time = m->u.heartbeat.time;
        h->gen = m->u.heartbeat.version.gen;
        h->step = m->u.heartbeat.version.step;
        env->body_case = AP__ENVELOPE__BODY_HEARTBEAT;
        env->heartbeat = h;
        break;
    }
    case AP_MSG_BYE:
    case AP_MSG_RESET: {
        Ap__Bye *b = s_tmp(sc, sizeof *b);
        ap__bye__init(b);
        b->reason = (char *)m->u.bye.reason;
        if (m->type == AP_MSG_BYE)
            env->body_case = AP__ENVELOPE__BODY_BYE, env->bye = b;
        else
            env->body_case = AP__ENVELOPE__BODY_RESET, env->reset = b;
        break;
    }
    case AP_MSG_GROUP: {
        Ap__TrajectoryGroup *g = s_tmp(sc, sizeof *g);
        s_group_to_pb(m->u.group, g, sc);
        env->body_case = AP__ENVELOPE__BODY_GROUP;
        env->group = g;
        break;
    }
    case AP_MSG_SCORE_REQUEST: {
        const ap_score_request_t *r = &m->u.score_request;
        Ap__ScoreRequest *q = s_tmp(sc, sizeof *q);
        ap__score_request__init(q);
        q->request_id = r->request_id;
        q->attempt = r->attempt;
        q->kind = (Ap__TeacherKind)r->kind;
        q->top_k = r->top_k;
        q->full = r->full ? 1 : 0;
        q->temperature = r->temperature;
        q->group = s_tmp(sc, sizeof *q->group);
        s_group_to_pb(r->group, q->group, sc);
        env->body_case = AP__ENVELOPE__BODY_SCORE_REQUEST;
        env->score_request = q;
        break;
    }
    case AP_MSG_SCORES: {
        Ap__ScoredGroup *s = s_tmp(sc, sizeof *s);
        s_scores_to_pb(m->u.scores, s, sc);
        env->body_case = AP__ENVELOPE__BODY_SCORES;
        env->scores = s;
        break;
    }
    case AP_MSG_BATCH_REQUEST: {
        Ap__BatchRequest *r = s_tmp(sc, sizeof *r);
        ap__batch_request__init(r);
        r->request_id = m->u.batch_request.request_id;
        r->learner_gen = m->u.batch_request.learner_version.gen;
        r->learner_step = m->u.batch_request.learner_version.step;
        r->trajectories = m->u.batch_request.trajectories;
        r->max_bytes = m->u.batch_request.max_bytes;
        env->body_case = AP__ENVELOPE__BODY_BATCH_REQUEST;
        env->batch_request = r;
        break;
    }
    case AP_MSG_BATCH: {
        const ap_batch_t *b = m->u.batch;
        Ap__Batch *pb = s_tmp(sc, sizeof *pb);
        ap__batch__init(pb);
        pb->request_id = b->request_id;
        pb->part = (uint32_t)b->part;
        pb->parts = (uint32_t)b->parts;
        pb->n_items = (size_t)b->n_items;
        pb->items = s_tmp(sc, (size_t)b->n_items * sizeof *pb->items);
        Ap__BatchItem *items = s_tmp(sc, (size_t)b->n_items * sizeof *items);
        for (int i = 0; i < b->n_items; i++) {
            const ap_batch_item_t *it = &b->items[i];
            Ap__BatchItem *pi = &items[i];
            ap__batch_item__init(pi);
            pi->group = s_tmp(sc, sizeof *pi->group);
            s_group_to_pb(it->group, pi->group, sc);
            pi->n_scores = (size_t)it->n_scores;
            pi->scores = s_tmp(sc, (size_t)it->n_scores * sizeof *pi->scores);
            Ap__ScoredGroup *ss = s_tmp(sc, (size_t)it->n_scores * sizeof *ss);
            for (int k = 0; k < it->n_scores; k++) {
                s_scores_to_pb(it->scores[k], &ss[k], sc);
                pi->scores[k] = &ss[k];
            }
            pb->items[i] = pi;
        }
        env->body_case = AP__ENVELOPE__BODY_BATCH;
        env->batch = pb;
        break;
    }
    case AP_MSG_WEIGHTS_ANNOUNCE: {
        const ap_weights_announce_t *a = &m->u.announce;
        Ap__WeightsAnnounce *pa = s_tmp(sc, sizeof *pa);
        ap__weights_announce__init(pa);
        pa->gen = a->version.gen;
        pa->step = a->version.step;
        pa->size = a->size;
        pa->digest.len = AP_DIGEST_BYTES;
        pa->digest.data = (uint8_t *)a->digest;
        pa->chunk_size = a->chunk_size;
        pa->n_chunks = a->n_chunks;
        env->body_case = AP__ENVELOPE__BODY_WEIGHTS_ANNOUNCE;
        env->weights_announce = pa;
        break;
    }
    case AP_MSG_WEIGHTS_REQUEST: {
        Ap__WeightsRequest *r = s_tmp(sc, sizeof *r);
        ap__weights_request__init(r);
        r->latest = m->u.weights_request.latest ? 1 : 0;
        r->gen = m->u.weights_request.version.gen;
        r->step = m->u.weights_request.version.step;
        r->chunk = m->u.weights_request.chunk;
        env->body_case = AP__ENVELOPE__BODY_WEIGHTS_REQUEST;
        env->weights_request = r;
        break;
    }
    case AP_MSG_WEIGHTS_CHUNK: {
        Ap__WeightsChunk *c = s_tmp(sc, sizeof *c);
        ap__weights_chunk__init(c);
        c->gen = m->u.chunk.version.gen;
        c->step = m->u.chunk.version.step;
        c->index = m->u.chunk.index;
        c->offset = m->u.chunk.offset;
        c->length = (uint32_t)m->u.chunk.len;
        env->body_case = AP__ENVELOPE__BODY_WEIGHTS_CHUNK;
        env->weights_chunk = c;
        break;
    }
    case AP_MSG_METRICS: {
        const ap_msg_metrics_t *x = m->u.metrics;
        Ap__Metrics *pm = s_tmp(sc, sizeof *pm);
        ap__metrics__init(pm);
        pm->role = (Ap__Role)x->role;
        pm->id = x->id;
        pm->step = x->step;
        pm->time = x->time;
        pm->n_names = pm->n_values = (size_t)x->n;
        pm->names = s_tmp(sc, (size_t)x->n * sizeof *pm->names);
        for (int i = 0; i < x->n; i++)
            pm->names[i] = x->names[i];
        pm->values = x->values;
        env->body_case = AP__ENVELOPE__BODY_METRICS;
        env->metrics = pm;
        break;
    }
    default:
        AP_ASSERTF(0, "s_to_pb: message type %d", (int)m->type);
    }
}

size_t ap_msg_encoded_size(const ap_msg_t *m) {
    s_scratch_t sc = {0};
    Ap__Envelope env;
    s_to_pb(m, &env, &sc);
    size_t n = ap__envelope__get_packed_size(&env);
    s_tmp_free(&sc);
    return n;
}

int ap_msg_encode(const ap_msg_t *m, uint8_t **data, size_t *len) {
    *data = NULL;
    *len = 0;
    ap_msg_limits_t lim;
    ap_msg_limits_default(&lim);
    lim.max_frame = 0; /* the sender's own limits are the receiver's business */
    lim.max_group = lim.max_prompt = lim.max_tokens = lim.max_ctx = lim.max_topk = 0x7fffffff;
    lim.max_full_vocab = lim.max_items = lim.max_metrics = lim.max_text = 0x7fffffff;
    lim.max_raw = 0;
    if (ap_msg_validate(m, &lim) < 0) return -1;
    s_scratch_t sc = {0};
    Ap__Envelope env;
    s_to_pb(m, &env, &sc);
    size_t n = ap__envelope__get_packed_size(&env);
    uint8_t *buf = ap_malloc(n ? n : 1);
    size_t w = ap__envelope__pack(&env, buf);
    AP_ASSERT(w == n);
    s_tmp_free(&sc);
    *data = buf;
    *len = n;
    return 0;
}

/* ---------------------------------------------------------------- decoding */

/* protobuf-c allocator with a byte budget: over budget, allocation fails and unpack returns
 * NULL after freeing what it built (research/transport.md 7.2, verified). */
typedef struct {
    size_t used, limit;
    int exceeded;
} s_budget_t;

static void *s_budget_alloc(void *d, size_t n) {
    s_budget_t *b = d;
    if (n > b->limit - b->used) {
        b->exceeded = 1;
        return NULL;
    }
    size_t *p = malloc(sizeof *p + n);
    if (!p) return NULL;
    *p = n;
    b->used += n;
    return p + 1;
}

static void s_budget_free(void *d, void *ptr) {
    if (!ptr) return;
    s_budget_t *b = d;
    size_t *p = (size_t *)ptr - 1;
    b->used -= *p;
    free(p);
}

/* Any unknown field in m or in a message nested in it (walks the descriptors). */
static int s_has_unknown(const ProtobufCMessage *m) {
    if (!m) return 0;
    if (m->n_unknown_fields) return 1;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
        const char *base = (const char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++)
                if (s_has_unknown(arr[k])) return 1;
        } else {
            if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
                *(const uint32_t *)(base + f->quantifier_offset) != f->id)
                continue;
            if (s_has_unknown(*(ProtobufCMessage *const *)(base + f->offset))) return 1;
        }
    }
    return 0;
}

/* Sum of n uint32 lengths, each <= max_each (0 = no limit); -1 LIMIT / the sum. */
static long long s_sum_lengths(const char *what, const uint32_t *len, size_t n, int max_each,
                               s_verdict_t *vd) {
    long long sum = 0;
    for (size_t i = 0; i < n; i++) {
        if (max_each > 0 && len[i] > (uint32_t)max_each)
            return s_fail(vd, AP_REJECT_LIMIT, "%s[%zu] = %u > limit %d", what, i, len[i],
                          max_each);
        sum += len[i];
    }
    return sum;
}

static int s_ids_fit(const char *what, const uint32_t *ids, size_t n, s_verdict_t *vd) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] > 0x7fffffffu)
            return s_fail(vd, AP_REJECT_TOKEN, "%s[%zu] = %u out of range", what, i, ids[i]);
    return 0;
}

/* Structure checks and conversion of a TrajectoryGroup; NULL with vd set. */
static ap_group_t *s_group_from_pb(const Ap__TrajectoryGroup *pb, const ap_msg_limits_t *lim,
                                   s_verdict_t *vd) {
    if (!pb) return s_fail(vd, AP_REJECT_LENGTH, "group missing"), NULL;
    size_t G = pb->n_lengths;
    if (G == 0) return s_fail(vd, AP_REJECT_LENGTH, "group without trajectories"), NULL;
    if (G > (size_t)lim->max_group)
        return s_fail(vd, AP_REJECT_LIMIT, "group G = %zu > limit %d", G, lim->max_group), NULL;
    if (pb->n_prompt > (size_t)lim->max_prompt)
        return s_fail(vd, AP_REJECT_LIMIT, "prompt of %zu tokens > limit %d", pb->n_prompt,
                      lim->max_prompt),
               NULL;
    if (pb->source != AP__SOURCE__SOURCE_ON_POLICY && pb->source != AP__SOURCE__SOURCE_DATASET)
        return s_fail(vd, AP_REJECT_ENUM, "source %d unknown", (int)pb->source), NULL;
    int dataset = pb->source == AP__SOURCE__SOURCE_DATASET;
    long long n = s_sum_lengths("lengths", pb->lengths, G, lim->max_tokens, vd);
    if (n < 0) return NULL;
    if ((size_t)n != pb->n_tokens)
        return s_fail(vd, AP_REJECT_LENGTH, "lengths sum to %lld but %zu tokens", n, pb->n_tokens),
               NULL;
    if (pb->n_logprobs != (size_t)n && !(dataset && pb->n_logprobs == 0))
        return s_fail(vd, AP_REJECT_LENGTH, "%zu logprobs for %lld tokens", pb->n_logprobs, n),
               NULL;
    if (pb->n_reward != G && !(dataset && pb->n_reward == 0))
        return s_fail(vd, AP_REJECT_LENGTH, "%zu rewards for G = %zu", pb->n_reward, G), NULL;
    if ((pb->n_correct && pb->n_correct != G) || (pb->n_finish && pb->n_finish != G) ||
        (pb->n_feedback && pb->n_feedback != G) || (pb->n_ctx_lengths && pb->n_ctx_lengths != G))
        return s_fail(vd, AP_REJECT_LENGTH,
                      "per-trajectory fields disagree with G = %zu (correct %zu, finish %zu, "
                      "feedback %zu, ctx_lengths %zu)",
                      G, pb->n_correct, pb->n_finish, pb->n_feedback, pb->n_ctx_lengths),
               NULL;
    long long nc =
        s_sum_lengths("ctx_lengths", pb->ctx_lengths, pb->n_ctx_lengths, lim->max_ctx, vd);
    if (nc < 0) return NULL;
    if ((size_t)nc != pb->n_ctx_tokens)
        return s_fail(vd, AP_REJECT_LENGTH, "ctx_lengths sum to %lld but %zu ctx tokens", nc,
                      pb->n_ctx_tokens),
               NULL;
    for (size_t i = 0; i < pb->n_finish; i++)
        if ((unsigned)pb->finish[i] >= AP_FINISH_COUNT)
            return s_fail(vd, AP_REJECT_ENUM, "finish[%zu] = %d unknown", i, (int)pb->finish[i]),
                   NULL;
    if (s_ids_fit("prompt", pb->prompt, pb->n_prompt, vd) < 0 ||
        s_ids_fit("tokens", pb->tokens, pb->n_tokens, vd) < 0 ||
        s_ids_fit("ctx_tokens", pb->ctx_tokens, pb->n_ctx_tokens, vd) < 0)
        return NULL;
    if (pb->prompt_text && lim->max_text > 0 && strlen(pb->prompt_text) > (size_t)lim->max_text)
        return s_fail(vd, AP_REJECT_TEXT, "prompt_text over %d bytes", lim->max_text), NULL;
    for (size_t i = 0; i < pb->n_feedback; i++)
        if (!pb->feedback[i] ||
            (lim->max_text > 0 && strlen(pb->feedback[i]) > (size_t)lim->max_text))
            return s_fail(vd, AP_REJECT_TEXT, "feedback[%zu] missing or over %d bytes", i,
                          lim->max_text),
                   NULL;

    int *len = ap_malloc(G * sizeof *len), *ctx = ap_malloc(G * sizeof *ctx);
    for (size_t i = 0; i < G; i++) {
        len[i] = (int)pb->lengths[i];
        ctx[i] = pb->n_ctx_lengths ? (int)pb->ctx_lengths[i] : 0;
    }
    ap_group_t *g = ap_group_new((int)G, (int)pb->n_prompt, len, ctx);
    free(len), free(ctx);
    g->id = pb->id;
    g->source = dataset ? AP_SOURCE_DATASET : AP_SOURCE_ON_POLICY;
    g->version = (ap_version_t){pb->policy_gen, pb->policy_step};
    g->actor_id = pb->actor_id;
    g->item_id = pb->item_id;
    g->temperature = pb->temperature;
    if (pb->prompt_text) ap_group_set_prompt_text(g, pb->prompt_text);
    memcpy(g->prompt, pb->prompt, pb->n_prompt * 4);
    memcpy(g->tokens, pb->tokens, pb->n_tokens * 4);
    if (pb->n_logprobs) memcpy(g->logprobs, pb->logprobs, pb->n_logprobs * 4);
    if (pb->n_reward) memcpy(g->reward, pb->reward, G * 4);
    if (pb->n_ctx_tokens) memcpy(g->ctx_tokens, pb->ctx_tokens, pb->n_ctx_tokens * 4);
    for (size_t i = 0; i < G; i++) {
        g->correct[i] = pb->n_correct ? (pb->correct[i] ? 1 : 0) : 0;
        g->finish[i] = pb->n_finish ? (uint8_t)pb->finish[i] : AP_FINISH_EOS;
        if (pb->n_feedback) ap_group_set_feedback(g, (int)i, pb->feedback[i]);
    }
    return g;
}

static ap_scores_t *s_scores_from_pb(const Ap__ScoredGroup *pb, const ap_msg_limits_t *lim,
                                     s_verdict_t *vd) {
    if (!pb) return s_fail(vd, AP_REJECT_LENGTH, "scores missing"), NULL;
    size_t G = pb->n_lengths;
    if (G == 0) return s_fail(vd, AP_REJECT_LENGTH, "scores without trajectories"), NULL;
    if (G > (size_t)lim->max_group)
        return s_fail(vd, AP_REJECT_LIMIT, "scores G = %zu > limit %d", G, lim->max_group), NULL;
    if ((unsigned)pb->kind >= AP_TEACHER_COUNT)
        return s_fail(vd, AP_REJECT_ENUM, "teacher kind %d unknown", (int)pb->kind), NULL;
    if (pb->vocab_size < 1)
        return s_fail(vd, AP_REJECT_LENGTH, "vocab_size %d", pb->vocab_size), NULL;
    if (pb->full ? (pb->vocab_size > lim->max_full_vocab || pb->top_k != pb->vocab_size)
                 : (pb->top_k < 0 || pb->top_k > lim->max_topk))
        return s_fail(vd, AP_REJECT_LIMIT, "K = %d (full %d, V %d) outside the limits", pb->top_k,
                      (int)pb->full, pb->vocab_size),
               NULL;
    long long n = s_sum_lengths("lengths", pb->lengths, G, lim->max_tokens, vd);
    if (n < 0) return NULL;
    size_t nk = (size_t)n * (size_t)pb->top_k;
    if (pb->n_sampled != (size_t)n || pb->n_logprobs != nk || pb->n_ids != (pb->full ? 0 : nk) ||
        (pb->n_present && pb->n_present != G))
        return s_fail(vd, AP_REJECT_LENGTH,
                      "scores for %lld tokens, K %d: %zu sampled, %zu ids, %zu logprobs, "
                      "%zu present",
                      n, pb->top_k, pb->n_sampled, pb->n_ids, pb->n_logprobs, pb->n_present),
               NULL;
    if (s_ids_fit("topk ids", pb->ids, pb->n_ids, vd) < 0) return NULL;
    int *off = ap_malloc((G + 1) * sizeof *off);
    off[0] = 0;
    for (size_t i = 0; i < G; i++)
        off[i + 1] = off[i] + (int)pb->lengths[i];
    ap_scores_t *s = ap_scores_new((int)G, off, pb->top_k, pb->full, pb->vocab_size);
    free(off);
    s->request_id = pb->request_id;
    s->group_id = pb->group_id;
    s->kind = (ap_teacher_kind_t)pb->kind;
    s->version = (ap_version_t){pb->weights_gen, pb->weights_step};
    s->temperature = pb->temperature;
    for (size_t i = 0; i < pb->n_present; i++)
        s->present[i] = pb->present[i] ? 1 : 0;
    memcpy(s->sampled, pb->sampled, (size_t)n * 4);
    if (nk > 0) { /* K = 0 (reference scores): no arrays, and memcpy(NULL, 0) is undefined */
        if (!pb->full) memcpy(s->ids, pb->ids, nk * 4);
        memcpy(s->logprobs, pb->logprobs, nk * 4);
    }
    return s;
}

static int s_name_from_pb(char dst[AP_NAME_MAX], const char *src, const char *what,
                          s_verdict_t *vd) {
    if (!src) src = "";
    if (strlen(src) >= AP_NAME_MAX)
        return s_fail(vd, AP_REJECT_TEXT, "%s over %d bytes", what, AP_NAME_MAX - 1);
    s_name_copy(dst, src);
    return 0;
}

/* Steps 4 and 5: protobuf envelope -> out. -1 with vd set (out owns nothing). */
static int s_from_pb(const Ap__Envelope *env, const ap_msg_limits_t *lim, const void *raw,
                     size_t raw_len, ap_msg_t *out, s_verdict_t *vd) {
    out->protocol = env->protocol;
    out->seq = env->seq;
    switch (env->body_case) {
    case AP__ENVELOPE__BODY_HELLO: {
        const Ap__Hello *h = env->hello;
        out->type = AP_MSG_HELLO;
        out->u.hello.role = (ap_role_t)h->role;
        out->u.hello.id = h->id;
        out->u.hello.capacity = h->capacity;
        out->u.hello.vocab_size = h->vocab_size;
        out->u.hello.vocab_hash = h->vocab_hash;
        out->u.hello.kind = (ap_teacher_kind_t)h->kind;
        return s_name_from_pb(out->u.hello.name, h->name, "hello name", vd);
    }
    case AP__ENVELOPE__BODY_CREDIT:
        out->type = AP_MSG_CREDIT;
        out->u.credit.grant = env->credit->grant;
        out->u.credit.ack_seq = env->credit->ack_seq;
        out->u.credit.latest = (ap_version_t){env->credit->latest_gen, env->credit->latest_step};
        return 0;
    case AP__ENVELOPE__BODY_HEARTBEAT:
        out->type = AP_MSG_HEARTBEAT;
        out->u.heartbeat.time = env->heartbeat->time;
        out->u.heartbeat.version = (ap_version_t){env->heartbeat->gen, env->heartbeat->step};
        return 0;
    case AP__ENVELOPE__BODY_BYE:
        out->type = AP_MSG_BYE;
        return s_name_from_pb(out->u.bye.reason, env->bye->reason, "bye reason", vd);
    case AP__ENVELOPE__BODY_RESET:
        out->type = AP_MSG_RESET;
        return s_name_from_pb(out->u.bye.reason, env->reset->reason, "reset reason", vd);
    case AP__ENVELOPE__BODY_GROUP:
        out->type = AP_MSG_GROUP;
        out->u.group = s_group_from_pb(env->group, lim, vd);
        return out->u.group ? 0 : -1;
    case AP__ENVELOPE__BODY_SCORE_REQUEST: {
        const Ap__ScoreRequest *q = env->score_request;
        out->type = AP_MSG_SCORE_REQUEST;
        ap_score_request_t *r = &out->u.score_request;
        r->request_id = q->request_id;
        r->attempt = q->attempt;
        r->kind = (ap_teacher_kind_t)q->kind;
        r->top_k = q->top_k;
        r->full = q->full ? 1 : 0;
        r->temperature = q->temperature;
        r->group = s_group_from_pb(q->group, lim, vd);
        return r->group ? 0 : -1;
    }
    case AP__ENVELOPE__BODY_SCORES:
        out->type = AP_MSG_SCORES;
        out->u.scores = s_scores_from_pb(env->scores, lim, vd);
        return out->u.scores ? 0 : -1;
    case AP__ENVELOPE__BODY_BATCH_REQUEST: {
        const Ap__BatchRequest *r = env->batch_request;
        out->type = AP_MSG_BATCH_REQUEST;
        out->u.batch_request.request_id = r->request_id;
        out->u.batch_request.learner_version = (ap_version_t){r->learner_gen, r->learner_step};
        out->u.batch_request.trajectories = r->trajectories;
        out->u.batch_request.max_bytes = r->max_bytes;
        return 0;
    }
    case AP__ENVELOPE__BODY_BATCH: {
        const Ap__Batch *pb = env->batch;
        if (pb->n_items > (size_t)lim->max_items)
            return s_fail(vd, AP_REJECT_LIMIT, "batch of %zu items > limit %d", pb->n_items,
                          lim->max_items);
        for (size_t i = 0; i < pb->n_items; i++)
            if (pb->items[i]->n_scores > AP_TEACHER_COUNT)
                return s_fail(vd, AP_REJECT_LIMIT, "batch item %zu has %zu scores", i,
                              pb->items[i]->n_scores);
        out->type = AP_MSG_BATCH;
        ap_batch_t *b = ap_batch_new((int)pb->n_items);
        out->u.batch = b;
        b->request_id = pb->request_id;
        b->part = (int)AP_MIN(pb->part, 0x7fffffffu);
        b->parts = (int)AP_MIN(pb->parts, 0x7fffffffu);
        for (size_t i = 0; i < pb->n_items; i++) {
            ap_batch_item_t *it = &b->items[i];
            it->group = s_group_from_pb(pb->items[i]->group, lim, vd);
            if (!it->group) return -1;
            it->scores = ap_calloc(AP_TEACHER_COUNT, sizeof *it->scores);
            for (size_t k = 0; k < pb->items[i]->n_scores; k++) {
                it->scores[k] = s_scores_from_pb(pb->items[i]->scores[k], lim, vd);
                if (!it->scores[k]) return -1;
                it->n_scores++;
            }
        }
        return 0;
    }
    case AP__ENVELOPE__BODY_WEIGHTS_ANNOUNCE: {
        const Ap__WeightsAnnounce *a = env->weights_announce;
        out->type = AP_MSG_WEIGHTS_ANNOUNCE;
        if (a->digest.len != AP_DIGEST_BYTES)
            return s_fail(vd, AP_REJECT_LENGTH, "digest of %zu bytes", a->digest.len);
        out->u.announce.version = (ap_version_t){a->gen, a->step};
        out->u.announce.size = a->size;
        memcpy(out->u.announce.digest, a->digest.data, AP_DIGEST_BYTES);
        out->u.announce.chunk_size = a->chunk_size;
        out->u.announce.n_chunks = a->n_chunks;
        return 0;
    }
    case AP__ENVELOPE__BODY_WEIGHTS_REQUEST: {
        const Ap__WeightsRequest *r = env->weights_request;
        out->type = AP_MSG_WEIGHTS_REQUEST;
        out->u.weights_request.latest = r->latest ? 1 : 0;
        out->u.weights_request.version = (ap_version_t){r->gen, r->step};
        out->u.weights_request.chunk = r->chunk;
        return 0;
    }
    case AP__ENVELOPE__BODY_WEIGHTS_CHUNK: {
        const Ap__WeightsChunk *c = env->weights_chunk;
        out->type = AP_MSG_WEIGHTS_CHUNK;
        if (c->length != raw_len)
            return s_fail(vd, AP_REJECT_LENGTH, "chunk header says %u bytes, raw frame has %zu",
                          c->length, raw_len);
        out->u.chunk.version = (ap_version_t){c->gen, c->step};
        out->u.chunk.index = c->index;
        out->u.chunk.offset = c->offset;
        out->u.chunk.data = raw;
        out->u.chunk.len = raw_len;
        return 0;
    }
    case AP__ENVELOPE__BODY_METRICS: {
        const Ap__Metrics *pm = env->metrics;
        if (pm->n_names != pm->n_values)
            return s_fail(vd, AP_REJECT_LENGTH, "%zu metric names, %zu values", pm->n_names,
                          pm->n_values);
        if (pm->n_names > (size_t)lim->max_metrics)
            return s_fail(vd, AP_REJECT_LIMIT, "%zu metric values > limit %d", pm->n_names,
                          lim->max_metrics);
        out->type = AP_MSG_METRICS;
        ap_msg_metrics_t *x = ap_msg_metrics_new((int)pm->n_names);
        out->u.metrics = x;
        x->role = (ap_role_t)pm->role;
        x->id = pm->id;
        x->step = pm->step;
        x->time = pm->time;
        for (size_t i = 0; i < pm->n_names; i++) {
            if (s_name_from_pb(x->names[i], pm->names[i], "metric name", vd) < 0) return -1;
            x->values[i] = pm->values[i];
        }
        return 0;
    }
    default:
        return s_fail(vd, AP_REJECT_TYPE, "envelope without a known body (%d)",
                      (int)env->body_case);
    }
}

void ap_msg_clear(ap_msg_t *m) {
    switch (m->type) {
    case AP_MSG_GROUP:
        ap_group_destroy(&m->u.group);
        break;
    case AP_MSG_SCORE_REQUEST:
        ap_group_destroy(&m->u.score_request.group);
        break;
    case AP_MSG_SCORES:
        ap_scores_destroy(&m->u.scores);
        break;
    case AP_MSG_BATCH:
        ap_batch_destroy(&m->u.batch);
        break;
    case AP_MSG_METRICS:
        ap_msg_metrics_destroy(&m->u.metrics);
        break;
    default:
        break;
    }
    memset(m, 0, sizeof *m);
}

ap_msg_codec_t *ap_msg_codec_new(const ap_msg_limits_t *lim, const char *name) {
    ap_msg_codec_t *c = ap_calloc(1, sizeof *c);
    if (lim)
        c->lim = *lim;
    else
        ap_msg_limits_default(&c->lim);
    snprintf(c->name, sizeof c->name, "%s", name ? name : "codec");
    c->last = AP_REJECT_REASON_COUNT;
    return c;
}

void ap_msg_codec_destroy(ap_msg_codec_t **c) {
    if (!c || !*c) return;
    free(*c);
    *c = NULL;
}

void ap_msg_codec_set_latest(ap_msg_codec_t *c, ap_version_t v) {
    c->latest = v;
}
void ap_msg_codec_set_vocab(ap_msg_codec_t *c, int32_t vocab_size) {
    c->lim.vocab_size = vocab_size;
}
const ap_msg_stats_t *ap_msg_codec_stats(const ap_msg_codec_t *c) {
    return &c->stats;
}
ap_reject_t ap_msg_codec_last_reject(const ap_msg_codec_t *c) {
    return c->last;
}

const ap_msg_limits_t *ap_msg_codec_limits(const ap_msg_codec_t *c) {
    return &c->lim;
}

static void s_count(ap_msg_codec_t *c, ap_reject_t why, const char *msg) {
    AP_ASSERT((unsigned)why < AP_REJECT_REASON_COUNT);
    c->stats.rejected++;
    c->stats.by_reason[why]++;
    c->last = why;
    long suppressed = c->rl.suppressed;
    if (ap_ratelimit_ok(&c->rl, 1.0))
        ap_log(AP_LOG_WARN, "%s: rejected a message (%s): %s [%ld similar suppressed]", c->name,
               ap_reject_name(why), msg, suppressed);
}

void ap_msg_codec_reject(ap_msg_codec_t *c, ap_reject_t why, const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    s_count(c, why, buf);
}

int ap_msg_decode(ap_msg_codec_t *c, const void *const *frames, const size_t *sizes, int nframes,
                  ap_msg_t *out) {
    memset(out, 0, sizeof *out);
    const ap_msg_limits_t *lim = &c->lim;
    s_verdict_t vd = {0, ""};
    if (nframes < 1 || nframes > 2) {
        s_fail(&vd, AP_REJECT_FRAMES, "%d frames", nframes);
        goto reject;
    }
    if (sizes[0] == 0 || (lim->max_frame && sizes[0] > lim->max_frame)) {
        s_fail(&vd, AP_REJECT_SIZE, "frame of %zu bytes (limit %llu)", sizes[0],
               (unsigned long long)lim->max_frame);
        goto reject;
    }
    if (nframes == 2 && lim->max_raw && sizes[1] > lim->max_raw) {
        s_fail(&vd, AP_REJECT_SIZE, "raw frame of %zu bytes (limit %llu)", sizes[1],
               (unsigned long long)lim->max_raw);
        goto reject;
    }
    s_budget_t bud = {0, (size_t)(lim->budget_factor * (double)sizes[0]) + 65536, 0};
    ProtobufCAllocator alloc = {s_budget_alloc, s_budget_free, &bud};
    Ap__Envelope *env = ap__envelope__unpack(&alloc, sizes[0], frames[0]);
    if (!env) {
        if (bud.exceeded)
            s_fail(&vd, AP_REJECT_BUDGET, "%zu-byte frame needs more than %zu bytes to unpack",
                   sizes[0], bud.limit);
        else
            s_fail(&vd, AP_REJECT_PARSE, "%zu-byte frame is not a valid Envelope", sizes[0]);
        goto reject;
    }
    int rc = -1;
    if (env->protocol != AP_PROTOCOL_VERSION) {
        s_fail(&vd, AP_REJECT_PROTOCOL, "protocol version %u, expected %u", env->protocol,
               AP_PROTOCOL_VERSION);
    } else if (s_has_unknown(&env->base)) {
        s_fail(&vd, AP_REJECT_UNKNOWN, "unknown fields (a newer or foreign sender)");
    } else if (env->body_case == AP__ENVELOPE__BODY__NOT_SET) {
        s_fail(&vd, AP_REJECT_TYPE, "envelope without a body");
    } else if ((env->body_case == AP__ENVELOPE__BODY_WEIGHTS_CHUNK) != (nframes == 2)) {
        s_fail(&vd, AP_REJECT_FRAMES, "%d frames for this message type", nframes);
    } else if (s_from_pb(env, lim, nframes == 2 ? frames[1] : NULL, nframes == 2 ? sizes[1] : 0,
                         out, &vd) == 0) {
        if (lim->accept && !(lim->accept & (1u << out->type)))
            s_fail(&vd, AP_REJECT_TYPE, "%s not accepted here", ap_msg_type_name(out->type));
        else if (s_check(out, lim, c->latest, &vd) == 0)
            rc = 0;
    }
    ap__envelope__free_unpacked(env, &alloc);
    AP_ASSERT(bud.used == 0);
    if (rc == 0) {
        c->stats.accepted++;
        return 0;
    }
    ap_msg_clear(out);
reject:
    s_count(c, vd.reason, vd.why);
    return -1;
}
