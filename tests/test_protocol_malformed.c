/* test_protocol_malformed.c: bad wire input is rejected, counted by the right reason, and never
 * crashes (this test also runs under ASan/UBSan: scripts/test.sh runs 'protocol' tests there).
 * Cases: frame counts, empty / oversized frames, truncation at every byte, random bytes,
 * protocol version mismatch, unknown fields, the protobuf allocation budget (a small frame of
 * empty sub-messages), semantic errors crafted with the generated code (NaN, +inf, positive
 * log-probs, tokens >= V, lengths that disagree, unknown enums, versions from the future,
 * limits, text length, digest size, raw-frame mismatch), types a codec does not accept, and
 * random mutations of valid messages. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/msg.h"
#include "apprentice/rng.h"
#include "proto/apprentice.pb-c.h"
#include "test.h"
#include "test_protocol_fixtures.h"

#define V 300

static ap_msg_codec_t *s_codec;

/* Decode frames and expect a rejection for `why` (counted exactly once). */
static void s_expect(ap_reject_t why, const void *f0, size_t n0, const void *f1, size_t n1,
                     int nframes, const char *label) {
    const ap_msg_stats_t *st = ap_msg_codec_stats(s_codec);
    uint64_t before = st->by_reason[why], total = st->rejected;
    const void *frames[3] = {f0, f1, f1};
    size_t sizes[3] = {n0, n1, n1};
    ap_msg_t m;
    int rc = ap_msg_decode(s_codec, frames, sizes, nframes, &m);
    AP_CHECK(rc == -1 && m.type == AP_MSG_NONE, "%s: accepted", label);
    AP_CHECK(st->by_reason[why] == before + 1 && st->rejected == total + 1, "%s: not counted as %s",
             label, ap_reject_name(why));
    if (rc == 0) ap_msg_clear(&m);
}

/* Pack a hand-built envelope (bypassing the encoder's validation). */
static uint8_t *s_pack(const Ap__Envelope *env, size_t *len) {
    *len = ap__envelope__get_packed_size(env);
    uint8_t *buf = ap_malloc(*len + 16);
    ap__envelope__pack(env, buf);
    return buf;
}

/* A valid TrajectoryGroup protobuf for semantic tampering; arrays point into statics. */
static uint32_t s_len[2] = {3, 2}, s_tok[5] = {1, 2, 3, 4, 5}, s_prompt[2] = {7, 8};
static float s_lp[5] = {-1, -1, -1, -1, -1}, s_rew[2] = {1, 0};
static protobuf_c_boolean s_correct[2] = {1, 0};
static Ap__Finish s_finish[2] = {AP__FINISH__FINISH_EOS, AP__FINISH__FINISH_LENGTH};

static void s_pb_group(Ap__TrajectoryGroup *g) {
    ap__trajectory_group__init(g);
    g->id = 1;
    g->policy_gen = 1;
    g->policy_step = 5;
    g->temperature = 1.0f;
    g->n_prompt = 2, g->prompt = s_prompt;
    g->n_lengths = 2, g->lengths = s_len;
    g->n_tokens = 5, g->tokens = s_tok;
    g->n_logprobs = 5, g->logprobs = s_lp;
    g->n_reward = 2, g->reward = s_rew;
    g->n_correct = 2, g->correct = s_correct;
    g->n_finish = 2, g->finish = s_finish;
}

static void s_expect_group(ap_reject_t why, const Ap__TrajectoryGroup *g, const char *label) {
    Ap__Envelope env = AP__ENVELOPE__INIT;
    env.protocol = AP_PROTOCOL_VERSION;
    env.body_case = AP__ENVELOPE__BODY_GROUP;
    env.group = (Ap__TrajectoryGroup *)g;
    size_t n;
    uint8_t *buf = s_pack(&env, &n);
    s_expect(why, buf, n, NULL, 0, 1, label);
    free(buf);
}

int main(void) {
    ap_log_set_role("test_protocol_malformed", 0);
    ap_rng_t r;
    ap_rng_seed(&r, 11, 0);
    ap_msg_limits_t lim;
    ap_msg_limits_default(&lim);
    lim.vocab_size = V;
    lim.max_frame = 1 << 20;
    lim.max_raw = 1 << 16;
    s_codec = ap_msg_codec_new(&lim, "malformed");
    ap_msg_codec_set_latest(s_codec, (ap_version_t){1, 5});

    /* a valid group message to start from */
    ap_group_t *g = fx_group(&r, 8, 40, V);
    ap_msg_t gm = {.type = AP_MSG_GROUP, .u.group = g};
    uint8_t *good;
    size_t good_len;
    AP_ASSERT(ap_msg_encode(&gm, &good, &good_len) == 0);
    {
        ap_msg_t m;
        const void *f[1] = {good};
        AP_CHECK(ap_msg_decode(s_codec, f, &good_len, 1, &m) == 0, "the valid group decodes");
        ap_msg_clear(&m);
    }

    /* frames and sizes */
    s_expect(AP_REJECT_FRAMES, good, good_len, NULL, 0, 0, "no frames");
    s_expect(AP_REJECT_FRAMES, good, good_len, good, good_len, 3, "three frames");
    s_expect(AP_REJECT_FRAMES, good, good_len, good, 10, 2, "group with a raw frame");
    s_expect(AP_REJECT_SIZE, good, 0, NULL, 0, 1, "empty frame");
    {
        uint8_t *big = ap_calloc(1, (1 << 20) + 1);
        s_expect(AP_REJECT_SIZE, big, (1 << 20) + 1, NULL, 0, 1, "oversized frame");
        ap_msg_t cm = {.type = AP_MSG_WEIGHTS_CHUNK};
        cm.u.chunk = (ap_weights_chunk_t){{1, 1}, 0, 0, big, (1 << 16) + 1};
        uint8_t *hdr;
        size_t hn;
        AP_ASSERT(ap_msg_encode(&cm, &hdr, &hn) == 0);
        s_expect(AP_REJECT_SIZE, hdr, hn, big, (1 << 16) + 1, 2, "oversized raw frame");
        s_expect(AP_REJECT_FRAMES, hdr, hn, NULL, 0, 1, "chunk without its raw frame");
        s_expect(AP_REJECT_LENGTH, hdr, hn, big, 100, 2, "chunk length != raw frame");
        free(hdr);
        free(big);
    }

    /* truncation at every byte: never accepted */
    {
        const ap_msg_stats_t *st = ap_msg_codec_stats(s_codec);
        uint64_t before = st->rejected, acc = st->accepted;
        for (size_t n = 1; n < good_len; n++) {
            ap_msg_t m;
            const void *f[1] = {good};
            if (ap_msg_decode(s_codec, f, &n, 1, &m) == 0) ap_msg_clear(&m);
        }
        AP_CHECK(st->rejected - before == good_len - 1 && st->accepted == acc,
                 "truncations: %llu of %zu rejected", (unsigned long long)(st->rejected - before),
                 good_len - 1);
        printf("truncated: %zu cases rejected (parse %llu)\n", good_len - 1,
               (unsigned long long)st->by_reason[AP_REJECT_PARSE]);
    }

    /* random bytes */
    {
        const ap_msg_stats_t *st = ap_msg_codec_stats(s_codec);
        uint64_t before = st->rejected, acc = st->accepted;
        uint8_t buf[512];
        const int n = 20000;
        for (int i = 0; i < n; i++) {
            size_t len = 1 + ap_rng_below(&r, sizeof buf);
            for (size_t k = 0; k < len; k++)
                buf[k] = (uint8_t)ap_rng_u64(&r);
            ap_msg_t m;
            const void *f[1] = {buf};
            if (ap_msg_decode(s_codec, f, &len, 1, &m) == 0) ap_msg_clear(&m);
        }
        AP_CHECK(st->rejected - before == (uint64_t)n && st->accepted == acc,
                 "random bytes: %llu accepted", (unsigned long long)(st->accepted - acc));
        printf("random bytes: %d cases rejected\n", n);
    }

    /* protocol version mismatch: the encoder writes field 1 first (0x08, version varint) */
    {
        AP_ASSERT(good[0] == 0x08 && good[1] == AP_PROTOCOL_VERSION);
        uint8_t *bad = ap_malloc(good_len);
        memcpy(bad, good, good_len);
        bad[1] = AP_PROTOCOL_VERSION + 1;
        s_expect(AP_REJECT_PROTOCOL, bad, good_len, NULL, 0, 1, "protocol + 1");
        bad[1] = 0;
        s_expect(AP_REJECT_PROTOCOL, bad, good_len, NULL, 0, 1, "protocol 0");
        free(bad);
        /* unknown field 99 (varint) appended to the envelope */
        uint8_t *ext = ap_malloc(good_len + 3);
        memcpy(ext, good, good_len);
        ext[good_len] = 0x98, ext[good_len + 1] = 0x06, ext[good_len + 2] = 0x01;
        s_expect(AP_REJECT_UNKNOWN, ext, good_len + 3, NULL, 0, 1, "unknown field");
        free(ext);
        /* an envelope with only the protocol: no body */
        uint8_t nobody[2] = {0x08, AP_PROTOCOL_VERSION};
        s_expect(AP_REJECT_TYPE, nobody, 2, NULL, 0, 1, "no body");
    }

    /* allocation budget: a batch of 100k empty items is 200 KB on the wire but megabytes
     * unpacked (research/transport.md 7.2: x41) */
    {
        const size_t items = 100000;
        size_t body = 2 * items, n = 0;
        uint8_t *buf = ap_malloc(body + 16);
        buf[n++] = 0x08, buf[n++] = AP_PROTOCOL_VERSION;
        buf[n++] = 0xC2, buf[n++] = 0x01; /* field 24 (batch), length-delimited */
        size_t v = body;                  /* varint length */
        while (v >= 0x80)
            buf[n++] = (uint8_t)(v | 0x80), v >>= 7;
        buf[n++] = (uint8_t)v;
        for (size_t i = 0; i < items; i++)
            buf[n++] = 0x22, buf[n++] = 0x00; /* items: empty */
        s_expect(AP_REJECT_BUDGET, buf, n, NULL, 0, 1, "amplification");
        /* the same shape with 10 items fits the budget and fails validation instead */
        n = 0;
        buf[n++] = 0x08, buf[n++] = AP_PROTOCOL_VERSION, buf[n++] = 0xC2, buf[n++] = 0x01;
        buf[n++] = 20;
        for (int i = 0; i < 10; i++)
            buf[n++] = 0x22, buf[n++] = 0x00;
        s_expect(AP_REJECT_LENGTH, buf, n, NULL, 0, 1, "items without groups");
        free(buf);
    }

    /* semantic tampering through the generated structs */
    {
        Ap__TrajectoryGroup pg;
        s_pb_group(&pg);
        { /* the baseline is valid */
            Ap__Envelope env = AP__ENVELOPE__INIT;
            env.protocol = AP_PROTOCOL_VERSION;
            env.body_case = AP__ENVELOPE__BODY_GROUP;
            env.group = &pg;
            size_t n;
            uint8_t *buf = s_pack(&env, &n);
            ap_msg_t m;
            const void *f[1] = {buf};
            AP_CHECK(ap_msg_decode(s_codec, f, &n, 1, &m) == 0, "baseline group");
            ap_msg_clear(&m);
            free(buf);
        }
        s_lp[2] = NAN;
        s_expect_group(AP_REJECT_FLOAT, &pg, "NaN log-prob");
        s_lp[2] = INFINITY;
        s_expect_group(AP_REJECT_FLOAT, &pg, "+inf log-prob");
        s_lp[2] = -INFINITY;
        s_expect_group(AP_REJECT_FLOAT, &pg, "-inf behaviour log-prob");
        s_lp[2] = 0.5f;
        s_expect_group(AP_REJECT_FLOAT, &pg, "positive log-prob");
        s_lp[2] = -1;
        s_rew[1] = NAN;
        s_expect_group(AP_REJECT_FLOAT, &pg, "NaN reward");
        s_rew[1] = 0;
        s_tok[4] = V;
        s_expect_group(AP_REJECT_TOKEN, &pg, "token == V");
        s_tok[4] = 0x80000000u;
        s_expect_group(AP_REJECT_TOKEN, &pg, "token >= 2^31");
        s_tok[4] = 5;
        s_prompt[0] = 100000;
        s_expect_group(AP_REJECT_TOKEN, &pg, "prompt token >= V");
        s_prompt[0] = 7;
        pg.n_tokens = 4;
        s_expect_group(AP_REJECT_LENGTH, &pg, "lengths sum != tokens");
        pg.n_tokens = 5;
        pg.n_logprobs = 4;
        s_expect_group(AP_REJECT_LENGTH, &pg, "logprobs != tokens");
        pg.n_logprobs = 5;
        pg.n_reward = 1;
        s_expect_group(AP_REJECT_LENGTH, &pg, "rewards != G");
        pg.n_reward = 2;
        pg.n_finish = 1;
        s_expect_group(AP_REJECT_LENGTH, &pg, "finish != G");
        pg.n_finish = 2;
        s_finish[1] = (Ap__Finish)7;
        s_expect_group(AP_REJECT_ENUM, &pg, "unknown finish");
        s_finish[1] = AP__FINISH__FINISH_LENGTH;
        pg.source = (Ap__Source)5;
        s_expect_group(AP_REJECT_ENUM, &pg, "unknown source");
        pg.source = AP__SOURCE__SOURCE_ON_POLICY;
        pg.policy_gen = 2, pg.policy_step = 0;
        s_expect_group(AP_REJECT_FUTURE, &pg, "version from a future generation");
        pg.policy_gen = 1, pg.policy_step = 6;
        s_expect_group(AP_REJECT_FUTURE, &pg, "version from a future step");
        pg.policy_step = 5;
        pg.temperature = 0;
        s_expect_group(AP_REJECT_FLOAT, &pg, "temperature 0");
        pg.temperature = 1;
        pg.n_lengths = 0;
        s_expect_group(AP_REJECT_LENGTH, &pg, "G = 0");
        pg.n_lengths = 2;
        s_len[0] = 5000, s_len[1] = 0;
        uint32_t *many = ap_calloc(5000, 4);
        float *mlp = ap_calloc(5000, 4);
        pg.tokens = many, pg.n_tokens = 5000, pg.logprobs = mlp, pg.n_logprobs = 5000;
        s_expect_group(AP_REJECT_LIMIT, &pg, "trajectory over max_tokens");
        pg.tokens = s_tok, pg.n_tokens = 5, pg.logprobs = s_lp, pg.n_logprobs = 5;
        s_len[0] = 3, s_len[1] = 2;
        char *text = ap_malloc(70000);
        memset(text, 'a', 69999);
        text[69999] = 0;
        pg.prompt_text = text;
        s_expect_group(AP_REJECT_TEXT, &pg, "prompt text over max_text");
        pg.prompt_text = (char *)"";
        free(text), free(many), free(mlp);
        uint32_t ctxl[2] = {2, 0}, ctxt[1] = {1};
        pg.n_ctx_lengths = 2, pg.ctx_lengths = ctxl, pg.n_ctx_tokens = 1, pg.ctx_tokens = ctxt;
        s_expect_group(AP_REJECT_LENGTH, &pg, "ctx lengths != ctx tokens");
        pg.n_ctx_lengths = 0, pg.n_ctx_tokens = 0;

        /* G over max_group */
        uint32_t len70[70];
        float rew70[70];
        for (int i = 0; i < 70; i++)
            len70[i] = 0, rew70[i] = 0;
        len70[0] = 5;
        pg.n_lengths = 70, pg.lengths = len70, pg.n_reward = 70, pg.reward = rew70;
        pg.n_correct = pg.n_finish = 0;
        s_expect_group(AP_REJECT_LIMIT, &pg, "G over max_group");
    }

    /* scores tampering */
    {
        uint32_t len[2] = {2, 1}, ids[6] = {1, 2, 3, 4, 5, 6};
        float sampled[3] = {-1, -2, -3}, lp[6] = {-1, -2, -1, -2, -1, -2};
        Ap__ScoredGroup s = AP__SCORED_GROUP__INIT;
        s.vocab_size = V, s.top_k = 2, s.temperature = 1;
        s.n_lengths = 2, s.lengths = len, s.n_sampled = 3, s.sampled = sampled;
        s.n_ids = 6, s.ids = ids, s.n_logprobs = 6, s.logprobs = lp;
        Ap__Envelope env = AP__ENVELOPE__INIT;
        env.protocol = AP_PROTOCOL_VERSION;
        env.body_case = AP__ENVELOPE__BODY_SCORES;
        env.scores = &s;
        size_t n;
        uint8_t *buf = s_pack(&env, &n);
        ap_msg_t m;
        const void *f[1] = {buf};
        AP_CHECK(ap_msg_decode(s_codec, f, &n, 1, &m) == 0, "baseline scores");
        ap_msg_clear(&m);
        free(buf);
#define S_EXPECT_SCORES(why, label)                                                                \
    do {                                                                                           \
        buf = s_pack(&env, &n);                                                                    \
        s_expect(why, buf, n, NULL, 0, 1, label);                                                  \
        free(buf);                                                                                 \
    } while (0)
        sampled[1] = NAN;
        S_EXPECT_SCORES(AP_REJECT_FLOAT, "NaN sampled");
        sampled[1] = -INFINITY; /* allowed: the learner masks it */
        buf = s_pack(&env, &n);
        f[0] = buf;
        AP_CHECK(ap_msg_decode(s_codec, f, &n, 1, &m) == 0, "-inf teacher log-prob accepted");
        ap_msg_clear(&m);
        free(buf);
        sampled[1] = -2;
        lp[3] = 1.0f;
        S_EXPECT_SCORES(AP_REJECT_FLOAT, "positive top-K log-prob");
        lp[3] = -2;
        ids[5] = V;
        S_EXPECT_SCORES(AP_REJECT_TOKEN, "top-K id == V");
        ids[5] = 6;
        s.n_ids = 5;
        S_EXPECT_SCORES(AP_REJECT_LENGTH, "ids != n * K");
        s.n_ids = 6;
        s.vocab_size = V + 1;
        S_EXPECT_SCORES(AP_REJECT_LENGTH, "teacher V != student V");
        s.vocab_size = V;
        s.kind = (Ap__TeacherKind)9;
        S_EXPECT_SCORES(AP_REJECT_ENUM, "unknown teacher kind");
        s.kind = AP__TEACHER_KIND__TEACHER_SELF;
        s.weights_gen = 1, s.weights_step = 9;
        S_EXPECT_SCORES(AP_REJECT_FUTURE, "teacher weights from the future");
        s.weights_step = 3;
        s.top_k = 1000;
        S_EXPECT_SCORES(AP_REJECT_LIMIT, "K over max_topk");
        s.top_k = 2;
        s.full = 1;
        S_EXPECT_SCORES(AP_REJECT_LIMIT, "full with K != V");
        s.full = 0;
    }

    /* other bodies */
    {
        Ap__Envelope env = AP__ENVELOPE__INIT;
        env.protocol = AP_PROTOCOL_VERSION;
        size_t n;
        uint8_t *buf;
        Ap__WeightsAnnounce a = AP__WEIGHTS_ANNOUNCE__INIT;
        uint8_t dg[16] = {0};
        a.size = 100, a.chunk_size = 10, a.n_chunks = 10, a.digest.len = 16, a.digest.data = dg;
        env.body_case = AP__ENVELOPE__BODY_WEIGHTS_ANNOUNCE;
        env.weights_announce = &a;
        buf = s_pack(&env, &n);
        s_expect(AP_REJECT_LENGTH, buf, n, NULL, 0, 1, "16-byte digest");
        free(buf);
        uint8_t dg32[32] = {0};
        a.digest.len = 32, a.digest.data = dg32, a.n_chunks = 9;
        buf = s_pack(&env, &n);
        s_expect(AP_REJECT_LENGTH, buf, n, NULL, 0, 1, "chunk count != size / chunk");
        free(buf);

        Ap__Metrics x = AP__METRICS__INIT;
        char *names[2] = {"loss", "kl"};
        double vals[2] = {1, NAN};
        x.role = AP__ROLE__ROLE_LEARNER, x.n_names = 2, x.names = names, x.n_values = 2,
        x.values = vals;
        env.body_case = AP__ENVELOPE__BODY_METRICS;
        env.metrics = &x;
        buf = s_pack(&env, &n);
        s_expect(AP_REJECT_FLOAT, buf, n, NULL, 0, 1, "NaN metric");
        free(buf);
        vals[1] = 0, x.n_values = 1;
        buf = s_pack(&env, &n);
        s_expect(AP_REJECT_LENGTH, buf, n, NULL, 0, 1, "metric names != values");
        free(buf);

        Ap__Hello h = AP__HELLO__INIT;
        char longname[100];
        memset(longname, 'x', 99), longname[99] = 0;
        h.role = AP__ROLE__ROLE_ACTOR, h.name = longname;
        env.body_case = AP__ENVELOPE__BODY_HELLO;
        env.hello = &h;
        buf = s_pack(&env, &n);
        s_expect(AP_REJECT_TEXT, buf, n, NULL, 0, 1, "hello name too long");
        free(buf);
        h.name = (char *)"a", h.role = (Ap__Role)77;
        buf = s_pack(&env, &n);
        s_expect(AP_REJECT_ENUM, buf, n, NULL, 0, 1, "hello role unknown");
        free(buf);
    }

    /* a codec that accepts only groups refuses a heartbeat */
    {
        ap_msg_limits_t l2 = lim;
        l2.accept = 1u << AP_MSG_GROUP;
        ap_msg_codec_t *only = ap_msg_codec_new(&l2, "groups-only");
        ap_msg_t hb = {.type = AP_MSG_HEARTBEAT};
        uint8_t *buf;
        size_t n;
        AP_ASSERT(ap_msg_encode(&hb, &buf, &n) == 0);
        ap_msg_t m;
        const void *f[1] = {buf};
        AP_CHECK(ap_msg_decode(only, f, &n, 1, &m) < 0 &&
                     ap_msg_codec_stats(only)->by_reason[AP_REJECT_TYPE] == 1,
                 "type filter");
        f[0] = good;
        AP_CHECK(ap_msg_decode(only, f, &good_len, 1, &m) == 0, "group passes the filter");
        ap_msg_clear(&m);
        free(buf);
        ap_msg_codec_destroy(&only);
    }

    /* mutations of valid messages: decode either rejects or yields a message that validates */
    {
        ap_scores_t *s = fx_scores(&r, g, 4, 0, V, AP_TEACHER_SELF);
        ap_msg_t sm = {.type = AP_MSG_SCORES, .u.scores = s};
        uint8_t *sb;
        size_t sn;
        AP_ASSERT(ap_msg_encode(&sm, &sb, &sn) == 0);
        const uint8_t *srcs[2] = {good, sb};
        size_t lens[2] = {good_len, sn};
        const ap_msg_stats_t *st = ap_msg_codec_stats(s_codec);
        uint64_t acc0 = st->accepted, rej0 = st->rejected;
        int bad_accept = 0;
        const int iters = 20000;
        for (int i = 0; i < iters; i++) {
            int which = i & 1;
            size_t len = lens[which];
            uint8_t *buf = ap_malloc(len);
            memcpy(buf, srcs[which], len);
            int flips = 1 + (int)ap_rng_below(&r, 8);
            for (int k = 0; k < flips; k++)
                buf[ap_rng_below(&r, len)] ^= (uint8_t)(1 + ap_rng_below(&r, 255));
            if (ap_rng_below(&r, 4) == 0) len = 1 + ap_rng_below(&r, len); /* and truncate */
            ap_msg_t m;
            const void *f[1] = {buf};
            if (ap_msg_decode(s_codec, f, &len, 1, &m) == 0) {
                if (ap_msg_validate(&m, &lim) < 0) bad_accept++;
                ap_msg_clear(&m);
            }
            free(buf);
        }
        AP_CHECK(bad_accept == 0, "%d mutated messages accepted but invalid", bad_accept);
        AP_CHECK(st->accepted - acc0 + st->rejected - rej0 == (uint64_t)iters,
                 "every case counted");
        printf("mutations: %d cases, %llu rejected, %llu still valid\n", iters,
               (unsigned long long)(st->rejected - rej0),
               (unsigned long long)(st->accepted - acc0));
        free(sb);
        ap_scores_destroy(&s);
    }

    const ap_msg_stats_t *st = ap_msg_codec_stats(s_codec);
    printf("reject counters:");
    for (int k = 0; k < AP_REJECT_REASON_COUNT; k++) {
        printf(" %s=%llu", ap_reject_name((ap_reject_t)k), (unsigned long long)st->by_reason[k]);
        AP_CHECK(st->by_reason[k] > 0, "reason %s never exercised", ap_reject_name((ap_reject_t)k));
    }
    printf("\n");
    free(good);
    ap_group_destroy(&g);
    ap_msg_codec_destroy(&s_codec);
    return ap_test_result();
}
