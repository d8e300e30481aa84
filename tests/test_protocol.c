/* test_protocol.c: every message type survives encode -> decode unchanged, the decoder's
 * semantic checks accept what the encoder produced, and the encoder refuses malformed structs
 * (a bug in a sender is reported at the sender). Bad wire input: test_protocol_malformed.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/msg.h"
#include "apprentice/rng.h"
#include "test.h"
#include "test_protocol_fixtures.h"

static ap_msg_codec_t *s_codec;

/* Encode m, decode it into out (which the caller clears). 0 on success. */
static int s_roundtrip(const ap_msg_t *m, ap_msg_t *out, const void *raw, size_t raw_len) {
    uint8_t *buf;
    size_t len;
    if (ap_msg_encode(m, &buf, &len) < 0) {
        fprintf(stderr, "encode %s: %s\n", ap_msg_type_name(m->type), ap_errmsg());
        return -1;
    }
    AP_CHECK(len == ap_msg_encoded_size(m), "encoded size %zu vs %zu", len, ap_msg_encoded_size(m));
    const void *frames[2] = {buf, raw};
    size_t sizes[2] = {len, raw_len};
    int rc = ap_msg_decode(s_codec, frames, sizes, raw ? 2 : 1, out);
    free(buf);
    if (rc < 0) fprintf(stderr, "decode %s failed\n", ap_msg_type_name(m->type));
    return rc;
}

static int s_group_eq(const ap_group_t *a, const ap_group_t *b) {
    if (a->id != b->id || a->source != b->source || ap_version_cmp(a->version, b->version) ||
        a->actor_id != b->actor_id || a->item_id != b->item_id ||
        a->temperature != b->temperature || strcmp(a->prompt_text, b->prompt_text) ||
        a->n_prompt != b->n_prompt || a->G != b->G || a->n_tokens != b->n_tokens ||
        a->n_ctx != b->n_ctx)
        return 0;
    if (memcmp(a->prompt, b->prompt, (size_t)a->n_prompt * 4) ||
        memcmp(a->offset, b->offset, (size_t)(a->G + 1) * sizeof(int)) ||
        memcmp(a->tokens, b->tokens, (size_t)a->n_tokens * 4) ||
        memcmp(a->ctx_offset, b->ctx_offset, (size_t)(a->G + 1) * sizeof(int)) ||
        memcmp(a->ctx_tokens, b->ctx_tokens, (size_t)a->n_ctx * 4) ||
        memcmp(a->correct, b->correct, (size_t)a->G) || memcmp(a->finish, b->finish, (size_t)a->G))
        return 0;
    if (a->source == AP_SOURCE_ON_POLICY &&
        (memcmp(a->logprobs, b->logprobs, (size_t)a->n_tokens * 4) ||
         memcmp(a->reward, b->reward, (size_t)a->G * 4)))
        return 0;
    for (int i = 0; i < a->G; i++)
        if (strcmp(a->feedback[i], b->feedback[i])) return 0;
    return 1;
}

static int s_scores_eq(const ap_scores_t *a, const ap_scores_t *b) {
    size_t nk = (size_t)a->n_tokens * (size_t)a->K;
    return a->request_id == b->request_id && a->group_id == b->group_id && a->kind == b->kind &&
           !ap_version_cmp(a->version, b->version) && a->temperature == b->temperature &&
           a->vocab_size == b->vocab_size && a->G == b->G && a->n_tokens == b->n_tokens &&
           a->K == b->K && a->full == b->full &&
           !memcmp(a->offset, b->offset, (size_t)(a->G + 1) * sizeof(int)) &&
           !memcmp(a->present, b->present, (size_t)a->G) &&
           !memcmp(a->sampled, b->sampled, (size_t)a->n_tokens * 4) &&
           (a->full || !memcmp(a->ids, b->ids, nk * 4)) &&
           !memcmp(a->logprobs, b->logprobs, nk * 4);
}

int main(void) {
    ap_log_set_role("test_protocol", 0);
    ap_rng_t r;
    ap_rng_seed(&r, 7, 0);
    const int V = 300;
    ap_msg_limits_t lim;
    ap_msg_limits_default(&lim);
    lim.vocab_size = V;
    s_codec = ap_msg_codec_new(&lim, "test");
    ap_msg_codec_set_latest(s_codec, (ap_version_t){1, 5});
    ap_msg_t out;
    int types_done[AP_MSG_TYPE_COUNT] = {0};

    { /* control messages */
        ap_msg_t m = {.type = AP_MSG_HELLO, .seq = 1};
        m.u.hello = (ap_hello_t){.role = AP_ROLE_TEACHER,
                                 .id = 2,
                                 .capacity = 4,
                                 .vocab_size = V,
                                 .vocab_hash = 0xdeadbeefcafeull,
                                 .kind = AP_TEACHER_SELF};
        strcpy(m.u.hello.name, "teacher-self-2");
        AP_CHECK(s_roundtrip(&m, &out, NULL, 0) == 0, "hello");
        if (out.type == AP_MSG_HELLO) {
            AP_CHECK(out.seq == 1 && out.protocol == AP_PROTOCOL_VERSION, "seq/protocol");
            AP_CHECK(!memcmp(&out.u.hello, &m.u.hello, sizeof m.u.hello), "hello fields");
            types_done[out.type] = 1;
        }
        ap_msg_clear(&out);

        m = (ap_msg_t){.type = AP_MSG_CREDIT, .seq = 9};
        m.u.credit = (ap_credit_t){.grant = 3, .ack_seq = 77, .latest = {1, 5}};
        if (s_roundtrip(&m, &out, NULL, 0) == 0) {
            AP_CHECK(out.u.credit.grant == 3 && out.u.credit.ack_seq == 77 &&
                         out.u.credit.latest.gen == 1 && out.u.credit.latest.step == 5,
                     "credit fields");
            types_done[out.type] = 1;
        }
        ap_msg_clear(&out);

        m = (ap_msg_t){.type = AP_MSG_HEARTBEAT};
        m.u.heartbeat = (ap_heartbeat_t){.time = 1234.5, .version = {2, 9}};
        if (s_roundtrip(&m, &out, NULL, 0) == 0) {
            AP_CHECK(out.u.heartbeat.time == 1234.5 && out.u.heartbeat.version.step == 9,
                     "heartbeat fields");
            types_done[out.type] = 1;
        }
        ap_msg_clear(&out);

        for (int t = AP_MSG_BYE; t <= AP_MSG_RESET; t++) {
            m = (ap_msg_t){.type = (ap_msg_type_t)t};
            strcpy(m.u.bye.reason, "shutdown");
            if (s_roundtrip(&m, &out, NULL, 0) == 0) {
                AP_CHECK((int)out.type == t && !strcmp(out.u.bye.reason, "shutdown"), "bye/reset");
                types_done[out.type] = 1;
            }
            ap_msg_clear(&out);
        }
    }

    /* groups of several shapes, on-policy and dataset */
    for (int rep = 0; rep < 20; rep++) {
        int G = 1 + (int)ap_rng_below(&r, 16);
        ap_group_t *g = fx_group(&r, G, 1 + (int)ap_rng_below(&r, 64), V);
        if (rep % 4 == 3) { /* dataset: no behaviour log-probs or rewards on the wire */
            g->source = AP_SOURCE_DATASET;
            g->version = (ap_version_t){0, 0};
            memset(g->logprobs, 0, (size_t)g->n_tokens * 4);
            memset(g->reward, 0, (size_t)g->G * 4);
        }
        ap_msg_t m = {.type = AP_MSG_GROUP, .seq = (uint64_t)rep, .u.group = g};
        if (s_roundtrip(&m, &out, NULL, 0) == 0) {
            AP_CHECK(out.type == AP_MSG_GROUP && s_group_eq(g, out.u.group), "group %d", rep);
            types_done[out.type] = 1;
        }
        ap_msg_clear(&out);

        /* score request carrying the group */
        m = (ap_msg_t){.type = AP_MSG_SCORE_REQUEST};
        m.u.score_request = (ap_score_request_t){.request_id = 99,
                                                 .attempt = 1,
                                                 .kind = AP_TEACHER_EXTERNAL,
                                                 .top_k = 16,
                                                 .temperature = 1.0f,
                                                 .group = g};
        if (s_roundtrip(&m, &out, NULL, 0) == 0) {
            AP_CHECK(out.u.score_request.request_id == 99 && out.u.score_request.attempt == 1 &&
                         out.u.score_request.top_k == 16 &&
                         s_group_eq(g, out.u.score_request.group),
                     "score request %d", rep);
            types_done[out.type] = 1;
        }
        ap_msg_clear(&out);

        /* scores: top-K, and full over V */
        for (int full = 0; full <= 1; full++) {
            ap_scores_t *s =
                fx_scores(&r, g, 16, full, V, full ? AP_TEACHER_EXTERNAL : AP_TEACHER_SELF);
            m = (ap_msg_t){.type = AP_MSG_SCORES, .u.scores = s};
            if (s_roundtrip(&m, &out, NULL, 0) == 0) {
                AP_CHECK(s_scores_eq(s, out.u.scores), "scores %d full %d", rep, full);
                AP_CHECK(ap_msg_scores_match(out.u.scores, g) == 0, "match: %s", ap_errmsg());
                types_done[out.type] = 1;
            }
            ap_msg_clear(&out);
            ap_scores_destroy(&s);
        }
        ap_group_destroy(&g);
    }

    { /* a batch of 3 items with 0, 1 and 2 teacher kinds */
        ap_batch_t *b = ap_batch_new(3);
        b->request_id = 5;
        b->part = 1;
        b->parts = 2;
        for (int i = 0; i < 3; i++) {
            ap_batch_item_t *it = &b->items[i];
            it->group = fx_group(&r, 8, 32, V);
            it->scores = ap_calloc(2, sizeof *it->scores);
            for (int k = 0; k < i && k < 2; k++)
                it->scores[it->n_scores++] =
                    fx_scores(&r, it->group, 8, 0, V, (ap_teacher_kind_t)k);
        }
        ap_msg_t m = {.type = AP_MSG_BATCH, .u.batch = b};
        if (s_roundtrip(&m, &out, NULL, 0) == 0) {
            const ap_batch_t *d = out.u.batch;
            AP_CHECK(d->request_id == 5 && d->part == 1 && d->parts == 2 && d->n_items == 3,
                     "batch header");
            for (int i = 0; i < 3 && i < d->n_items; i++) {
                AP_CHECK(s_group_eq(b->items[i].group, d->items[i].group), "batch group %d", i);
                AP_CHECK(d->items[i].n_scores == b->items[i].n_scores, "item %d scores", i);
                for (int k = 0; k < d->items[i].n_scores; k++)
                    AP_CHECK(s_scores_eq(b->items[i].scores[k], d->items[i].scores[k]),
                             "batch scores %d/%d", i, k);
            }
            AP_CHECK(ap_batch_item_scores(&d->items[2], AP_TEACHER_SELF) != NULL, "find self");
            AP_CHECK(ap_batch_item_scores(&d->items[1], AP_TEACHER_SELF) == NULL, "no self");
            types_done[out.type] = 1;
        }
        ap_msg_clear(&out);
        ap_batch_destroy(&b);
        AP_CHECK(b == NULL, "destroy NULLs");
        ap_batch_destroy(&b); /* safe on NULL */
    }

    { /* batch request, weights messages, metrics */
        ap_msg_t m = {.type = AP_MSG_BATCH_REQUEST};
        m.u.batch_request = (ap_batch_request_t){7, {1, 4}, 64, 1u << 20};
        if (s_roundtrip(&m, &out, NULL, 0) == 0) {
            AP_CHECK(out.u.batch_request.request_id == 7 &&
                         out.u.batch_request.trajectories == 64 &&
                         out.u.batch_request.learner_version.step == 4 &&
                         out.u.batch_request.max_bytes == 1u << 20,
                     "batch request");
            types_done[out.type] = 1;
        }
        ap_msg_clear(&out);

        m = (ap_msg_t){.type = AP_MSG_WEIGHTS_ANNOUNCE};
        m.u.announce = (ap_weights_announce_t){
            .version = {2, 100}, .size = 10000001, .chunk_size = 1 << 20, .n_chunks = 10};
        for (int i = 0; i < AP_DIGEST_BYTES; i++)
            m.u.announce.digest[i] = (uint8_t)(i * 7);
        if (s_roundtrip(&m, &out, NULL, 0) == 0) {
            AP_CHECK(!memcmp(&out.u.announce, &m.u.announce, sizeof m.u.announce), "announce");
            types_done[out.type] = 1;
        }
        ap_msg_clear(&out);

        m = (ap_msg_t){.type = AP_MSG_WEIGHTS_REQUEST};
        m.u.weights_request = (ap_weights_request_t){0, {2, 100}, 7};
        if (s_roundtrip(&m, &out, NULL, 0) == 0) {
            AP_CHECK(!out.u.weights_request.latest && out.u.weights_request.chunk == 7 &&
                         out.u.weights_request.version.gen == 2,
                     "weights request");
            types_done[out.type] = 1;
        }
        ap_msg_clear(&out);

        uint8_t raw[1000];
        for (int i = 0; i < 1000; i++)
            raw[i] = (uint8_t)i;
        m = (ap_msg_t){.type = AP_MSG_WEIGHTS_CHUNK};
        m.u.chunk = (ap_weights_chunk_t){{2, 100}, 3, 3000, raw, sizeof raw};
        if (s_roundtrip(&m, &out, raw, sizeof raw) == 0) {
            AP_CHECK(out.u.chunk.index == 3 && out.u.chunk.offset == 3000 &&
                         out.u.chunk.len == 1000 && out.u.chunk.data == raw,
                     "chunk");
            types_done[out.type] = 1;
        }
        ap_msg_clear(&out);

        ap_msg_metrics_t *x = ap_msg_metrics_new(3);
        x->role = AP_ROLE_LEARNER;
        x->id = 0;
        x->step = 42;
        x->time = 1.7e9;
        const char *names[3] = {"loss", "grad_norm", "kl"};
        for (int i = 0; i < 3; i++)
            strcpy(x->names[i], names[i]), x->values[i] = i * 0.5 - 1;
        m = (ap_msg_t){.type = AP_MSG_METRICS, .u.metrics = x};
        if (s_roundtrip(&m, &out, NULL, 0) == 0) {
            const ap_msg_metrics_t *y = out.u.metrics;
            AP_CHECK(y->n == 3 && y->step == 42 && y->role == AP_ROLE_LEARNER, "metrics header");
            for (int i = 0; i < 3 && i < y->n; i++)
                AP_CHECK(!strcmp(y->names[i], names[i]) && y->values[i] == x->values[i],
                         "metric %d", i);
            types_done[out.type] = 1;
        }
        ap_msg_clear(&out);
        ap_msg_metrics_destroy(&x);
    }

    for (int t = 1; t < AP_MSG_TYPE_COUNT; t++)
        AP_CHECK(types_done[t], "round trip of %s not done", ap_msg_type_name((ap_msg_type_t)t));

    { /* the encoder refuses malformed structs, naming the field */
        ap_group_t *g = fx_group(&r, 4, 8, V);
        ap_msg_t m = {.type = AP_MSG_GROUP, .u.group = g};
        uint8_t *buf;
        size_t len;
        g->logprobs[0] = NAN;
        AP_CHECK(ap_msg_encode(&m, &buf, &len) < 0 && strstr(ap_errmsg(), "logprobs"), "NaN: %s",
                 ap_errmsg());
        g->logprobs[0] = 0.5f;
        AP_CHECK(ap_msg_encode(&m, &buf, &len) < 0, "positive log-prob");
        g->logprobs[0] = -1;
        g->tokens[1] = -4;
        AP_CHECK(ap_msg_encode(&m, &buf, &len) < 0 && strstr(ap_errmsg(), "tokens"), "%s",
                 ap_errmsg());
        g->tokens[1] = 1;
        g->offset[2] = g->offset[1] - 1; /* decreasing offsets */
        AP_CHECK(ap_msg_encode(&m, &buf, &len) < 0, "offsets");
        ap_group_destroy(&g);

        /* validate with a vocabulary: token >= V is refused */
        g = fx_group(&r, 2, 8, V);
        g->tokens[0] = V;
        m.u.group = g;
        AP_CHECK(ap_msg_validate(&m, &lim) < 0 && strstr(ap_errmsg(), "outside"), "%s",
                 ap_errmsg());
        ap_group_destroy(&g);
    }

    { /* versions order by generation first */
        ap_version_t a = {1, 90}, b = {2, 5};
        AP_CHECK(ap_version_cmp(a, b) < 0 && ap_version_cmp(b, a) > 0 && ap_version_cmp(a, a) == 0,
                 "version order");
    }

    { /* clones are deep and equal */
        ap_group_t *g = fx_group(&r, 5, 20, V), *c = ap_group_clone(g);
        AP_CHECK(s_group_eq(g, c) && c->tokens != g->tokens, "clone");
        ap_scores_t *s = fx_scores(&r, g, 4, 0, V, AP_TEACHER_EXTERNAL), *sc = ap_scores_clone(s);
        AP_CHECK(s_scores_eq(s, sc), "scores clone");
        ap_group_destroy(&g), ap_group_destroy(&c), ap_scores_destroy(&s), ap_scores_destroy(&sc);
    }

    const ap_msg_stats_t *st = ap_msg_codec_stats(s_codec);
    printf("protocol round trips: %llu accepted, %llu rejected\n", (unsigned long long)st->accepted,
           (unsigned long long)st->rejected);
    AP_CHECK(st->rejected == 0, "valid messages rejected: %llu", (unsigned long long)st->rejected);
    ap_msg_codec_destroy(&s_codec);
    return ap_test_result();
}
