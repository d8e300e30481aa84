/* test_buffer_malformed.c: bad input on every buffer socket is rejected and counted while the
 * buffer keeps serving good peers (this test also runs under ASan/UBSan: scripts/test.sh runs
 * the 'malformed' tests there). Over ipc:// (so ZeroMQ's frame-size limit is in play too), with
 * a good actor, teacher and learner running all along:
 *   - malformed frames from raw sockets, per socket: wrong frame count, empty frame, a frame
 *     just over the socket's max_msg (codec 'size') and one far over it (ZeroMQ drops the
 *     connection), random bytes, truncated messages, another protocol version, unknown fields,
 *     a type the socket does not take, token ids >= V, a NaN log-prob; each counted by reason;
 *   - 600 random mutations of valid messages: never a crash;
 *   - semantic errors, each counted: messages from an unknown peer (RESET), HELLO with the wrong
 *     role or another vocabulary (RESET with the reason), answers of the wrong kind or that do
 *     not fit the group (re-dispatched to the good teacher), answers to a request id never
 *     issued, a batch request that can never be served, an on-policy group of the wrong size;
 *   - the learner keeps receiving batches throughout, and the books balance at the end. */
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "apprentice/base.h"
#include "apprentice/buffer.h"
#include "apprentice/config.h"
#include "test.h"
#include "test_buffer_fakes.h"

#define V 50
#define HB 0.05

static ap_config_t *s_cfg;
static ap_buffer_t *s_buf;
static struct ev_loop *s_loop;
static fk_t *s_good[3]; /* actor, teacher, learner */
static fk_t *s_extra[8];
static int s_n_extra;
static ap_rng_t s_rng;
static uint64_t s_next_id = 1, s_requested, s_batches;

static ap_buffer_stats_t s_stats(void) {
    ap_buffer_stats_t st;
    ap_buffer_stats(s_buf, &st);
    return st;
}

/* The good peers' work: the actor sends while it has credit, the learner keeps 2 requests out. */
static int s_drive(void *arg) {
    (void)arg;
    fk_t *a = s_good[0], *L = s_good[2];
    while (a->credit > 0) {
        ap_group_t *g =
            fk_group(&s_rng, s_next_id++, 4, 6, V, AP_SOURCE_ON_POLICY, (ap_version_t){1, 0});
        fk_send_group(a, g, 0);
        ap_group_destroy(&g);
    }
    for (int i = 0; i < L->n_parts; i++) {
        s_batches += L->parts[i]->part == L->parts[i]->parts - 1;
        ap_batch_destroy(&L->parts[i]);
    }
    L->n_parts = 0;
    while (s_requested < s_batches + 2)
        fk_request_batch(L, ++s_requested, (ap_version_t){1, 0}, 8, 0);
    return 0;
}

static void s_pump(double seconds) {
    fk_t *all[11];
    int n = 0;
    for (int i = 0; i < 3; i++)
        all[n++] = s_good[i];
    for (int i = 0; i < s_n_extra; i++)
        all[n++] = s_extra[i];
    fk_pump(s_loop, all, n, seconds, s_drive, NULL);
}

/* A raw DEALER that sends arbitrary frames. */
static void *s_raw(ap_net_t *net, const char *ep) {
    void *z = zmq_socket(ap_net_zmq_ctx(net), ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(z, ZMQ_LINGER, &zero, sizeof zero);
    AP_ASSERT(zmq_connect(z, ep) == 0);
    return z;
}

static void s_send_frames(void *z, const void *const *f, const size_t *n, int nf) {
    for (int i = 0; i < nf; i++)
        zmq_send(z, f[i], n[i], i + 1 < nf ? ZMQ_SNDMORE : 0);
}

static void s_send1(void *z, const void *f, size_t n) {
    s_send_frames(z, &f, &n, 1);
}

static uint8_t *s_encode(const ap_msg_t *m, size_t *len) {
    uint8_t *buf;
    AP_ASSERTF(ap_msg_encode(m, &buf, len) == 0, "%s", ap_errmsg());
    return buf;
}

/* Send `count` copies of one kind of bad input and expect `reason` to grow by exactly count. */
static void s_expect(const char *label, ap_reject_t reason, void *z, const void *const *f,
                     const size_t *n, int nf, int count) {
    uint64_t before = s_stats().rejected_by_reason[reason];
    for (int i = 0; i < count; i++)
        s_send_frames(z, f, n, nf);
    s_pump(0.15);
    uint64_t got = s_stats().rejected_by_reason[reason] - before;
    printf("  %-44s -> %-14s %llu of %d\n", label, ap_reject_name(reason), (unsigned long long)got,
           count);
    AP_CHECK(got == (uint64_t)count, "%s: %llu counted as %s, want %d", label,
             (unsigned long long)got, ap_reject_name(reason), count);
}

static void s_malformed(ap_net_t *net, const char *eps[3]) {
    static const char *sock_names[3] = {"actors", "teachers", "learner"};
    static const size_t max_msg[3] = {64u << 20, 256u << 20, 64u << 10};
    ap_group_t *g = fk_group(&s_rng, 999999, 4, 6, V, AP_SOURCE_ON_POLICY, (ap_version_t){1, 0});
    for (int s = 0; s < 3; s++) {
        printf(" socket %s\n", sock_names[s]);
        void *z = s_raw(net, eps[s]);
        s_pump(0.05);
        /* a valid message of a type this socket does not take, and one it does */
        ap_msg_t other = {.type = s == 0 ? AP_MSG_BATCH_REQUEST : AP_MSG_GROUP, .u.group = g};
        if (s == 0)
            other.u.batch_request = (ap_batch_request_t){.request_id = 1, .trajectories = 4};
        size_t n_other, n_good;
        uint8_t *b_other = s_encode(&other, &n_other);
        ap_msg_t hb = {.type = AP_MSG_HEARTBEAT, .seq = 3, .u.heartbeat = {.time = 1.0}};
        uint8_t *b_good = s_encode(&hb, &n_good);
        const void *f3[3] = {b_good, b_good, b_good};
        size_t n3[3] = {n_good, n_good, n_good};
        s_expect("three frames", AP_REJECT_FRAMES, z, f3, n3, 3, 5);
        const void *fe[1] = {""};
        size_t ne[1] = {0};
        s_expect("empty frame", AP_REJECT_SIZE, z, fe, ne, 1, 5);
        if (s == 2) { /* just over max_msg: the codec; far over: ZeroMQ cuts the connection */
            size_t big = max_msg[s] + 16;
            uint8_t *junk = ap_calloc(1, big);
            const void *fb[1] = {junk};
            size_t nb[1] = {big};
            s_expect("frame of max_msg + 16 bytes", AP_REJECT_SIZE, z, fb, nb, 1, 3);
            free(junk);
            size_t huge = 4 * max_msg[s];
            junk = ap_calloc(1, huge);
            uint64_t before = s_stats().rejected;
            s_send1(z, junk, huge);
            s_pump(0.2);
            printf("  %-44s -> connection dropped by ZeroMQ (codec count +%llu)\n",
                   "frame of 4 x max_msg", (unsigned long long)(s_stats().rejected - before));
            free(junk);
        }
        uint8_t rnd[200];
        for (size_t i = 0; i < sizeof rnd; i++)
            rnd[i] = (uint8_t)ap_rng_below(&s_rng, 256);
        rnd[0] = 0xff; /* an invalid tag byte sequence start */
        rnd[1] = 0xff;
        const void *fr[1] = {rnd};
        size_t nr[1] = {sizeof rnd};
        s_expect("random bytes", AP_REJECT_PARSE, z, fr, nr, 1, 5);
        ap_msg_t gm = {.type = AP_MSG_GROUP, .u.group = g};
        size_t n_g;
        uint8_t *b_g = s_encode(&gm, &n_g);
        const void *ft[1] = {b_g};
        size_t nt[1] = {n_g / 2};
        s_expect("truncated group", AP_REJECT_PARSE, z, ft, nt, 1, 5);
        uint8_t *b_p = ap_malloc(n_good);
        memcpy(b_p, b_good, n_good);
        AP_ASSERT(b_p[0] == 0x08 && b_p[1] == AP_PROTOCOL_VERSION); /* field 1, varint */
        b_p[1] = 9;
        const void *fp[1] = {b_p};
        size_t np_[1] = {n_good};
        s_expect("protocol version 9", AP_REJECT_PROTOCOL, z, fp, np_, 1, 5);
        uint8_t *b_u = ap_malloc(n_good + 3);
        memcpy(b_u, b_good, n_good);
        b_u[n_good] = 0xc0, b_u[n_good + 1] = 0x3e, b_u[n_good + 2] = 0x01; /* field 1000 = 1 */
        const void *fu[1] = {b_u};
        size_t nu[1] = {n_good + 3};
        s_expect("unknown field 1000", AP_REJECT_UNKNOWN, z, fu, nu, 1, 5);
        const void *fo[1] = {b_other};
        size_t no_[1] = {n_other};
        s_expect(s == 0 ? "BATCH_REQUEST on the actor socket" : "GROUP on this socket",
                 AP_REJECT_TYPE, z, fo, no_, 1, 5);
        if (s == 0) { /* token ids and floats: only groups carry them here */
            ap_group_t *bad = ap_group_clone(g);
            bad->tokens[1] = V + 3;
            ap_msg_t bm = {.type = AP_MSG_GROUP, .u.group = bad};
            size_t n_b;
            uint8_t *b_b = s_encode(&bm, &n_b); /* the encoder does not know V */
            const void *fb[1] = {b_b};
            size_t nb[1] = {n_b};
            s_expect("group with a token id >= V", AP_REJECT_TOKEN, z, fb, nb, 1, 5);
            free(b_b);
            bad->tokens[1] = 3;
            for (int t = 0; t < bad->n_tokens; t++)
                bad->logprobs[t] = -0.5f;
            bad->logprobs[2] = -1.5f; /* bytes 00 00 c0 bf: patched into a NaN below */
            b_b = s_encode(&bm, &n_b);
            int patched = 0;
            for (size_t i = 0; i + 4 <= n_b && !patched; i++)
                if (b_b[i] == 0 && b_b[i + 1] == 0 && b_b[i + 2] == 0xc0 && b_b[i + 3] == 0xbf)
                    b_b[i + 3] = 0x7f, patched = 1;
            AP_ASSERT(patched);
            nb[0] = n_b;
            fb[0] = b_b;
            s_expect("group with a NaN log-prob", AP_REJECT_FLOAT, z, fb, nb, 1, 5);
            free(b_b);
            ap_group_destroy(&bad);
        }
        free(b_u), free(b_p), free(b_g), free(b_good), free(b_other);
        zmq_close(z);
    }
    /* random mutations of valid messages on every socket: whatever happens, no crash */
    ap_scores_t *sc = fx_scores(&s_rng, g, 8, 0, V, AP_TEACHER_EXTERNAL);
    ap_msg_t ms[4] = {
        {.type = AP_MSG_GROUP, .u.group = g},
        {.type = AP_MSG_SCORES, .u.scores = sc},
        {.type = AP_MSG_BATCH_REQUEST, .u.batch_request = {.request_id = 5, .trajectories = 8}},
        {.type = AP_MSG_HELLO, .u.hello = {.role = AP_ROLE_ACTOR, .name = "x"}}};
    uint64_t before = s_stats().rejected;
    for (int s = 0; s < 3; s++) {
        void *z = s_raw(net, eps[s]);
        for (int i = 0; i < 200; i++) {
            size_t n;
            uint8_t *b = s_encode(&ms[ap_rng_below(&s_rng, 4)], &n);
            int flips = 1 + (int)ap_rng_below(&s_rng, 4);
            for (int k = 0; k < flips; k++)
                b[ap_rng_below(&s_rng, n)] ^= (uint8_t)(1 + ap_rng_below(&s_rng, 255));
            if (ap_rng_below(&s_rng, 4) == 0) n = ap_rng_below(&s_rng, n) + 1;
            s_send1(z, b, n);
            free(b);
            if (i % 20 == 19) s_pump(0.01);
        }
        s_pump(0.1);
        zmq_close(z);
    }
    printf("  600 mutated messages: %llu rejected by the codec, the rest handled\n",
           (unsigned long long)(s_stats().rejected - before));
    ap_scores_destroy(&sc);
    ap_group_destroy(&g);
}

static fk_t *s_add(ap_net_t *net, const char *ep, const char *name, ap_role_t role, double hb) {
    fk_t *f = fk_new(net, ep, name, role, hb, NULL);
    s_extra[s_n_extra++] = f;
    return f;
}

static void s_semantic(ap_net_t *net, const char *eps[3]) {
    ap_buffer_stats_t st0 = s_stats();
    /* not HELLO from an unknown peer: RESET */
    fk_t *stranger = s_add(net, eps[0], "actor-7", AP_ROLE_ACTOR, 1e9);
    ap_group_t *g = fk_group(&s_rng, 5000, 4, 6, V, AP_SOURCE_ON_POLICY, (ap_version_t){1, 0});
    fk_send_group(stranger, g, 1);
    /* HELLO with the wrong role; with another vocabulary */
    fk_t *wrong = s_add(net, eps[0], "actor-8", AP_ROLE_TEACHER, 1e9);
    fk_hello(wrong, 8, 0, 0, V, 0x1234);
    fk_t *vocab = s_add(net, eps[1], "teacher-external-9", AP_ROLE_TEACHER, 1e9);
    fk_hello(vocab, 9, AP_TEACHER_EXTERNAL, 4, V, 0x9999);
    /* teachers answering the wrong kind, scores that do not fit, a request never issued */
    fk_t *wk = s_add(net, eps[1], "teacher-external-3", AP_ROLE_TEACHER, HB);
    wk->mode = FK_WRONG_KIND;
    fk_hello(wk, 3, AP_TEACHER_EXTERNAL, 4, V, 0x1234);
    fk_t *mm = s_add(net, eps[1], "teacher-external-4", AP_ROLE_TEACHER, HB);
    mm->mode = FK_MISMATCH;
    fk_hello(mm, 4, AP_TEACHER_EXTERNAL, 4, V, 0x1234);
    s_pump(0.5);
    ap_scores_t *sc = fx_scores(&s_rng, g, 8, 0, V, AP_TEACHER_EXTERNAL);
    sc->request_id = 12345; /* never issued */
    sc->temperature = 1.0f;
    ap_msg_t m = {.type = AP_MSG_SCORES, .u.scores = sc};
    fk_send(mm, &m);
    ap_scores_destroy(&sc);
    /* a batch request that can never be served; an on-policy group of the wrong size */
    fk_request_batch(s_good[2], 77777, (ap_version_t){1, 0}, 0, 0);
    ap_group_t *g3 = fk_group(&s_rng, 5001, 3, 6, V, AP_SOURCE_ON_POLICY, (ap_version_t){1, 0});
    fk_send_group(s_good[0], g3, 1);
    s_pump(1.5);
    wk->mode = mm->mode = FK_HOLD; /* let every bad answer already sent be processed */
    s_pump(0.3);
    ap_buffer_stats_t st = s_stats();
    for (int r = 0; r < AP_BUFFER_BAD_REASON_COUNT; r++)
        printf("  semantic %-16s %llu\n", ap_buffer_bad_name((ap_buffer_bad_t)r),
               (unsigned long long)(st.bad[r] - st0.bad[r]));
    printf(
        "  invalid group drops %llu; stranger RESETs %d; vocabulary RESET '%s'; answers by the "
        "bad teachers %llu + %llu\n",
        (unsigned long long)(st.drops[AP_BUFFER_DROP_INVALID] - st0.drops[AP_BUFFER_DROP_INVALID]),
        stranger->resets, vocab->last_reset, (unsigned long long)wk->answered,
        (unsigned long long)mm->answered);
    AP_CHECK(st.bad[AP_BUFFER_BAD_UNKNOWN_PEER] > st0.bad[AP_BUFFER_BAD_UNKNOWN_PEER] &&
                 stranger->resets >= 1,
             "unknown peer");
    AP_CHECK(st.bad[AP_BUFFER_BAD_ROLE] == st0.bad[AP_BUFFER_BAD_ROLE] + 1 && wrong->resets == 1 &&
                 !strncmp(wrong->last_reset, "wrong role", 10),
             "wrong role");
    AP_CHECK(st.bad[AP_BUFFER_BAD_VOCAB] == st0.bad[AP_BUFFER_BAD_VOCAB] + 1 &&
                 !strncmp(vocab->last_reset, "vocab mismatch", 14),
             "vocabulary");
    AP_CHECK(wk->answered > 0 &&
                 st.bad[AP_BUFFER_BAD_WRONG_KIND] - st0.bad[AP_BUFFER_BAD_WRONG_KIND] ==
                     wk->answered,
             "wrong kind: %llu answers", (unsigned long long)wk->answered);
    AP_CHECK(mm->answered > 0 && st.bad[AP_BUFFER_BAD_MISMATCH] - st0.bad[AP_BUFFER_BAD_MISMATCH] ==
                                     mm->answered + 1, /* + the group of the wrong size */
             "mismatch: %llu answers", (unsigned long long)mm->answered);
    AP_CHECK(st.bad[AP_BUFFER_BAD_UNKNOWN_REQUEST] == st0.bad[AP_BUFFER_BAD_UNKNOWN_REQUEST] + 1,
             "unknown request");
    AP_CHECK(st.bad[AP_BUFFER_BAD_REQUEST] == st0.bad[AP_BUFFER_BAD_REQUEST] + 1,
             "bad batch request");
    AP_CHECK(st.drops[AP_BUFFER_DROP_INVALID] == st0.drops[AP_BUFFER_DROP_INVALID] + 1,
             "wrong-size group dropped");
    AP_CHECK(st.drops[AP_BUFFER_DROP_TEACHER_FAILED] == 0, "a group lost to bad teachers");
    ap_group_destroy(&g3);
    ap_group_destroy(&g);
}

int main(void) {
    ap_log_set_role("test_buffer_malformed", 0);
    ap_log_set_level(AP_LOG_ERROR);
    const char *dir = ap_test_tmpdir("buffer-malformed");
    char ep[3][600];
    const char *eps[3];
    static const char *names[3] = {"actors", "teachers", "learner"};
    for (int i = 0; i < 3; i++) {
        snprintf(ep[i], sizeof ep[i], "ipc://%s/%s.ipc", dir, names[i]);
        eps[i] = ep[i];
    }
    s_cfg = ap_config_new();
    s_cfg->objective.gkd.c.enabled = 1;
    s_cfg->sampling.group_size = 4;
    s_cfg->buffer.heartbeat_ms = (int)(HB * 1000);
    s_cfg->buffer.teacher_timeout_ms = 300;
    s_cfg->teacher.top_k = 8;
    s_cfg->teacher.full_vocab_max = 16;
    ap_net_opts_t no = {0};
    ap_net_t *net = ap_net_new(&no);
    s_loop = ev_loop_new(EVFLAG_AUTO);
    ap_buffer_opts_t o = {.cfg = s_cfg,
                          .vocab_size = V,
                          .vocab_hash = 0x1234,
                          .actors_endpoint = eps[0],
                          .teachers_endpoint = eps[1],
                          .learner_endpoint = eps[2]};
    s_buf = ap_buffer_new(net, s_loop, &o);
    AP_ASSERTF(s_buf, "%s", ap_errmsg());
    ap_rng_seed(&s_rng, 17, 0);
    s_good[0] = fk_new(net, eps[0], "actor-0", AP_ROLE_ACTOR, HB, NULL);
    s_good[1] = fk_new(net, eps[1], "teacher-external-0", AP_ROLE_TEACHER, HB, NULL);
    s_good[2] = fk_new(net, eps[2], "learner-0", AP_ROLE_LEARNER, HB, NULL);
    fk_hello(s_good[0], 0, 0, 0, V, 0x1234);
    fk_hello(s_good[1], 0, AP_TEACHER_EXTERNAL, 4, V, 0x1234);
    fk_hello(s_good[2], 0, 0, 0, V, 0x1234);
    s_pump(0.5);
    uint64_t b0 = s_batches;
    printf("good peers: %llu batches in 0.5 s\n", (unsigned long long)b0);
    AP_CHECK(b0 > 0, "no batches before the abuse");
    printf("malformed input\n");
    s_malformed(net, eps);
    uint64_t b1 = s_batches;
    printf("semantic errors\n");
    s_semantic(net, eps);
    uint64_t b2 = s_batches;
    printf("batches while under abuse: %llu during malformed input, %llu during semantic errors\n",
           (unsigned long long)(b1 - b0), (unsigned long long)(b2 - b1));
    AP_CHECK(b1 > b0 + 5 && b2 > b1 + 5, "the good learner stopped being served");
    ap_buffer_stats_t st = s_stats();
    AP_CHECK(st.groups_in == st.drops_total + st.served_first + (uint64_t)st.held_unserved,
             "books: in %llu drops %llu served %llu held %d", (unsigned long long)st.groups_in,
             (unsigned long long)st.drops_total, (unsigned long long)st.served_first,
             st.held_unserved);
    printf("books: in %llu = drops %llu + served %llu + held %d; codec rejects %llu\n",
           (unsigned long long)st.groups_in, (unsigned long long)st.drops_total,
           (unsigned long long)st.served_first, st.held_unserved, (unsigned long long)st.rejected);
    for (int i = 0; i < s_n_extra; i++)
        fk_destroy(&s_extra[i]);
    for (int i = 0; i < 3; i++)
        fk_destroy(&s_good[i]);
    ap_buffer_destroy(&s_buf);
    ap_net_destroy(&net);
    ev_loop_destroy(s_loop);
    ap_config_destroy(&s_cfg);
    return ap_test_result();
}
