/* test_kv: KV-cached logits equal the full forward's at every position (README tolerance:
 * 1e-4 relative or 1e-5 absolute), for a batch of sequences at different lengths fed as a
 * mixed prefill + one-token decode steps with sequences dropping out, for GQA/untied and
 * MHA/tied models, and across the cache's internal row chunking. ap_generate against a
 * recompute-everything reference: greedy tokens equal, every reported log-prob equals
 * log_softmax of the full forward, identical prompts share one prefill, EOS/length finish
 * reasons. Refusals of bad rows leave the cache untouched. A prefix computed once and copied
 * (ap_kv_copy) continues like one computed in place; logits of only the wanted rows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/model.h"
#include "apprentice/sampler.h"
#include "test.h"

static ap_model_t *s_model(int tied, int maxpos, uint64_t seed) {
    ap_model_config_t c;
    ap_model_config_defaults(&c);
    c.vocab_size = 23, c.hidden_size = 32, c.intermediate_size = 48, c.num_layers = 2;
    c.num_heads = 4, c.num_kv_heads = tied ? 4 : 2, c.tie_embeddings = tied, c.max_positions = maxpos;
    ap_model_t *m = ap_model_new(&c, seed);
    ap_rng_t rng;
    ap_rng_seed(&rng, seed, 1);
    float *W = ap_model_params(m); /* larger weights: peaked, position-dependent logits */
    for (int i = 0; i < ap_model_num_tensors(m); i++) {
        const ap_param_t *p = ap_model_tensor(m, i);
        if (p->ndim == 2)
            for (size_t k = 0; k < p->numel; k++) W[p->offset + k] = (float)(0.25 * ap_rng_normal(&rng));
    }
    return m;
}

static double s_cmp_rows(const float *got, const float *want, int V, const char *what, int seq,
                         int pos) {
    double worst = 0;
    for (int v = 0; v < V; v++) {
        worst = fmax(worst, fabs((double)got[v] - want[v]));
        AP_CHECK_NEAR(got[v], want[v], 1e-5, 1e-4, "%s seq %d pos %d token %d", what, seq, pos, v);
    }
    return worst;
}

static void s_mixed(int tied) {
    enum { S = 4, T = 14 };
    const int lens[S] = {9, 3, 14, 1};
    ap_model_t *m = s_model(tied, 16, 3 + tied);
    int V = ap_model_config(m)->vocab_size;
    ap_rng_t rng;
    ap_rng_seed(&rng, 5, tied);
    int32_t tok[S * T];
    for (int i = 0; i < S * T; i++) tok[i] = (int32_t)ap_rng_below(&rng, (uint64_t)V);
    float *full = ap_malloc((size_t)S * T * V * sizeof *full);
    memcpy(full, ap_model_forward(m, tok, lens, S, T), (size_t)S * T * V * sizeof *full);

    ap_kv_t *kv = ap_kv_new(m, S, 16);
    float *lg = ap_malloc((size_t)S * T * V * sizeof *lg);
    int slots[S * T], fed[S] = {0};
    int32_t rows[S * T];
    /* one call: a prefill of the first half of each sequence, slots interleaved in blocks */
    int n = 0;
    for (int i = S - 1; i >= 0; i--)
        for (int t = 0; t < (lens[i] + 1) / 2; t++) slots[n] = i, rows[n++] = tok[i * T + t], fed[i]++;
    AP_CHECK(ap_kv_forward(kv, lg, slots, rows, NULL, n) == 0, "prefill: %s", ap_errmsg());
    double worst = 0;
    for (int r = 0, i = S - 1; i >= 0; i--)
        for (int t = 0; t < fed[i]; t++, r++)
            worst = fmax(worst, s_cmp_rows(lg + (size_t)r * V, full + ((size_t)i * T + t) * V, V,
                                           "prefill", i, t));
    /* then one token per still-active sequence per step; finished ones drop out */
    for (;;) {
        n = 0;
        for (int i = 0; i < S; i++)
            if (fed[i] < lens[i]) slots[n] = i, rows[n++] = tok[i * T + fed[i]];
        if (!n) break;
        AP_CHECK(ap_kv_forward(kv, lg, slots, rows, NULL, n) == 0, "decode: %s", ap_errmsg());
        for (int r = 0; r < n; r++) {
            int i = slots[r];
            worst = fmax(worst, s_cmp_rows(lg + (size_t)r * V, full + ((size_t)i * T + fed[i]) * V,
                                           V, "decode", i, fed[i]));
            fed[i]++;
        }
    }
    for (int i = 0; i < S; i++) AP_CHECK(ap_kv_len(kv, i) == lens[i], "slot %d length", i);
    printf("%s: KV vs full forward, 4 sequences (lengths 9 3 14 1), prefill + decode: max|diff| %.2e\n",
           tied ? "mha tied  " : "gqa untied", worst);

    /* refusals change nothing */
    int bad_slot[2] = {0, 7};
    int32_t bad_tok[3] = {1, 1, 1}, oov[1] = {V};
    AP_CHECK(ap_kv_forward(kv, NULL, bad_slot, bad_tok, NULL, 2) < 0 && strstr(ap_errmsg(), "slot 7"),
             "bad slot refused: %s", ap_errmsg());
    AP_CHECK(ap_kv_forward(kv, NULL, bad_slot, oov, NULL, 1) < 0 && strstr(ap_errmsg(), "vocabulary"),
             "bad token refused: %s", ap_errmsg());
    int full_slot[3] = {2, 2, 2};
    AP_CHECK(ap_kv_forward(kv, NULL, full_slot, bad_tok, NULL, 3) < 0 && strstr(ap_errmsg(), "exceed"),
             "overflow refused: %s", ap_errmsg());
    AP_CHECK(ap_kv_len(kv, 0) == lens[0] && ap_kv_len(kv, 2) == lens[2], "refused rows not fed");
    ap_kv_destroy(&kv);
    AP_CHECK(kv == NULL, "destroy NULLs");
    AP_CHECK(ap_kv_new(m, 2, 17) == NULL && strstr(ap_errmsg(), "max_position_embeddings"),
             "a cache longer than the model's positions is refused: %s", ap_errmsg());
    free(full), free(lg);
    ap_model_destroy(&m);
}

/* Shared prefix: slot 0 prefilled, copied to slots 1 and 2, each continued with its own tokens
 * (in one call, with only some rows' logits wanted) equals the full forward of prefix ++ own
 * tokens; copying onto a used slot replaces it; bad slots are refused. */
static void s_copy_and_want(void) {
    enum { S = 3, P = 7, T = 12 };
    ap_model_t *m = s_model(0, 16, 21);
    int V = ap_model_config(m)->vocab_size;
    ap_rng_t rng;
    ap_rng_seed(&rng, 8, 0);
    int32_t tok[S * T];
    for (int i = 0; i < S * T; i++) tok[i] = (int32_t)ap_rng_below(&rng, (uint64_t)V);
    for (int i = 1; i < S; i++) memcpy(tok + i * T, tok, P * sizeof *tok); /* one prefix */
    const int lens[S] = {T, T - 3, T - 1};
    float *full = ap_malloc((size_t)S * T * V * sizeof *full);
    memcpy(full, ap_model_forward(m, tok, lens, S, T), (size_t)S * T * V * sizeof *full);
    ap_kv_t *kv = ap_kv_new(m, S, 16);
    int slots[S * T];
    int32_t rows[S * T];
    unsigned char want[S * T];
    float *lg = ap_malloc((size_t)S * T * V * sizeof *lg);
    /* slot 2 first holds something else: the copy must replace it */
    slots[0] = 2, rows[0] = 5;
    AP_CHECK(ap_kv_forward(kv, NULL, slots, rows, NULL, 1) == 0, "%s", ap_errmsg());
    for (int t = 0; t < P; t++) slots[t] = 0, rows[t] = tok[t], want[t] = t == P - 1;
    AP_CHECK(ap_kv_forward(kv, lg, slots, rows, want, P) == 0, "prefix: %s", ap_errmsg());
    s_cmp_rows(lg, full + (size_t)(P - 1) * V, V, "prefix last row", 0, P - 1);
    for (int i = 1; i < S; i++) AP_CHECK(ap_kv_copy(kv, i, 0) == 0, "copy: %s", ap_errmsg());
    AP_CHECK(ap_kv_len(kv, 2) == P, "copied length %d", ap_kv_len(kv, 2));
    int n = 0, nw = 0, wseq[S * T], wpos[S * T];
    for (int i = 0; i < S; i++)
        for (int t = P; t < lens[i]; t++) {
            slots[n] = i, rows[n] = tok[i * T + t], want[n] = (t + i) % 2 == 0;
            if (want[n]) wseq[nw] = i, wpos[nw++] = t;
            n++;
        }
    AP_CHECK(ap_kv_forward(kv, lg, slots, rows, want, n) == 0, "continue: %s", ap_errmsg());
    double worst = 0;
    for (int w = 0; w < nw; w++)
        worst = fmax(worst, s_cmp_rows(lg + (size_t)w * V, full + ((size_t)wseq[w] * T + wpos[w]) * V,
                                       V, "after copy", wseq[w], wpos[w]));
    printf("prefix computed once, copied to 2 slots, %d of %d rows wanted: max|diff| %.2e\n", nw, n,
           worst);
    AP_CHECK(ap_kv_copy(kv, 3, 0) < 0 && strstr(ap_errmsg(), "outside"), "bad copy refused: %s",
             ap_errmsg());
    ap_kv_destroy(&kv);
    free(full), free(lg);
    ap_model_destroy(&m);
}

/* A prefill longer than the cache's row chunk (512 rows), once with every row's logits and once
 * with every third row's (the wanted rows of each chunk land after the previous chunk's). */
static void s_long_prefill(void) {
    enum { T = 700 };
    ap_model_t *m = s_model(0, 768, 9);
    int V = ap_model_config(m)->vocab_size;
    int32_t tok[T];
    ap_rng_t rng;
    ap_rng_seed(&rng, 1, 1);
    for (int t = 0; t < T; t++) tok[t] = (int32_t)ap_rng_below(&rng, (uint64_t)V);
    float *full = ap_malloc((size_t)T * V * sizeof *full), *lg = ap_malloc((size_t)T * V * sizeof *lg);
    memcpy(full, ap_model_forward(m, tok, NULL, 1, T), (size_t)T * V * sizeof *full);
    ap_kv_t *kv = ap_kv_new(m, 1, 768);
    int slots[T] = {0};
    AP_CHECK(ap_kv_forward(kv, lg, slots, tok, NULL, T) == 0, "long prefill: %s", ap_errmsg());
    double worst = 0;
    for (int t = 0; t < T; t++) worst = fmax(worst, s_cmp_rows(lg + (size_t)t * V, full + (size_t)t * V, V, "long", 0, t));
    printf("gqa untied: KV vs full forward, one 700-token prefill (chunked): max|diff| %.2e\n", worst);
    unsigned char want[T];
    for (int t = 0; t < T; t++) want[t] = t % 3 == 0;
    ap_kv_clear(kv);
    AP_CHECK(ap_kv_forward(kv, lg, slots, tok, want, T) == 0, "long prefill: %s", ap_errmsg());
    for (int t = 0, w = 0; t < T; t += 3, w++)
        s_cmp_rows(lg + (size_t)w * V, full + (size_t)t * V, V, "long, every third row", 0, t);
    ap_kv_destroy(&kv);
    free(full), free(lg);
    ap_model_destroy(&m);
}

/* 16 sequences decoding together (the 16-row packed product), and the packed weights following
 * a weight change (set_blob, and writes through ap_model_params). */
static void s_batch16_and_new_weights(void) {
    enum { S = 16, P = 3, T = 5 };
    ap_model_t *m = s_model(0, 16, 31);
    int V = ap_model_config(m)->vocab_size;
    int32_t tok[S * T];
    for (int i = 0; i < S * T; i++) tok[i] = (int32_t)((i * 7 + i / T) % V);
    ap_kv_t *kv = ap_kv_new(m, S, 16);
    float *lg = ap_malloc((size_t)S * T * V * sizeof *lg), *full = ap_malloc((size_t)S * T * V * sizeof *full);
    int slots[S * T];
    int32_t rows[S * T];
    size_t bytes;
    float *blob = ap_malloc(ap_model_num_floats(m) * sizeof *blob);
    for (int round = 0; round < 3; round++) {
        if (round == 1) { /* new weights through the transfer path */
            const void *cur = ap_model_blob(m, &bytes);
            memcpy(blob, cur, bytes);
            for (size_t k = 0; k < ap_model_num_floats(m); k++) blob[k] *= 1.1f;
            AP_CHECK(ap_model_set_blob(m, blob, bytes) == 0, "set_blob");
        }
        if (round == 2) ap_model_params(m)[7] += 0.5f; /* a direct write */
        memcpy(full, ap_model_forward(m, tok, NULL, S, T), (size_t)S * T * V * sizeof *full);
        ap_kv_clear(kv);
        int n = 0;
        for (int i = 0; i < S; i++) /* prefill P tokens each: 48 rows, the sgemm path */
            for (int t = 0; t < P; t++) slots[n] = i, rows[n++] = tok[i * T + t];
        AP_CHECK(ap_kv_forward(kv, lg, slots, rows, NULL, n) == 0, "prefill: %s", ap_errmsg());
        double worst = 0;
        for (int t = P; t < T; t++) { /* then 16-row decode steps: the packed path */
            for (int i = 0; i < S; i++) slots[i] = i, rows[i] = tok[i * T + t];
            AP_CHECK(ap_kv_forward(kv, lg, slots, rows, NULL, S) == 0, "decode: %s", ap_errmsg());
            for (int i = 0; i < S; i++)
                worst = fmax(worst, s_cmp_rows(lg + (size_t)i * V, full + ((size_t)i * T + t) * V, V,
                                               round ? "after new weights" : "batch 16", i, t));
        }
        printf("gqa untied: 16 sequences decoding together%s: max|diff| vs full forward %.2e\n",
               round == 0 ? "" : round == 1 ? ", after set_blob" : ", after a write through ap_model_params",
               worst);
    }
    free(lg), free(full), free(blob);
    ap_kv_destroy(&kv);
    ap_model_destroy(&m);
}

/* Full-forward log_softmax(logits / temp) of `tok` at row t of one sequence. */
static double s_ref_logprob(const float *z, int V, int32_t tok, double temp) {
    double mx = z[0], s = 0;
    for (int v = 1; v < V; v++) mx = fmax(mx, z[v]);
    for (int v = 0; v < V; v++) s += exp((z[v] - mx) / temp);
    return (z[tok] - mx) / temp - log(s);
}

static void s_generate(int tied) {
    enum { S = 5, MAXLEN = 24, NEW = 12 };
    ap_model_t *m = s_model(tied, 32, 21 + tied);
    int V = ap_model_config(m)->vocab_size;
    int32_t pa[4] = {1, 2, 3, 4}, pb[7] = {5, 6, 7, 8, 9, 10, 11}, pc[20];
    for (int i = 0; i < 20; i++) pc[i] = (int32_t)(i * 7 % V);
    const int32_t *prompts[S] = {pa, pb, pa, pc, pa}; /* pa three times: one shared prefill */
    int plen[S] = {4, 7, 4, 20, 4};
    ap_kv_t *kv = ap_kv_new(m, S, MAXLEN);
    ap_completion_t out[S];
    ap_rng_t rng;
    ap_rng_seed(&rng, 77, 0);
    for (int mode = 0; mode < 2; mode++) {
        ap_sampling_t sp;
        ap_sampling_defaults(&sp);
        sp.temperature = mode == 0 ? 0.0f : 0.7f;
        int32_t eos = mode == 0 ? -1 : 3;
        AP_CHECK(ap_generate(kv, out, prompts, plen, S, NEW, eos, &sp, &rng) == 0, "generate: %s",
                 ap_errmsg());
        double worst = 0;
        int greedy_mismatch = 0;
        for (int i = 0; i < S; i++) {
            int n = out[i].n, L = plen[i] + n;
            AP_CHECK(n >= 1 && n <= NEW, "seq %d: %d tokens", i, n);
            /* finish reasons */
            for (int k = 0; k + 1 < n; k++) AP_CHECK(out[i].tokens[k] != eos, "EOS only at the end");
            if (out[i].finish == AP_FINISH_EOS) AP_CHECK(out[i].tokens[n - 1] == eos, "EOS finish");
            else AP_CHECK(n == NEW || L - 1 == MAXLEN, "length finish: n %d, total %d", n, L);
            /* reference: full forward over prompt + completion (all but the last token) */
            int32_t *seq = ap_malloc((size_t)L * sizeof *seq);
            memcpy(seq, prompts[i], (size_t)plen[i] * sizeof *seq);
            memcpy(seq + plen[i], out[i].tokens, (size_t)n * sizeof *seq);
            const float *z = ap_model_forward(m, seq, NULL, 1, L - 1);
            for (int k = 0; k < n; k++) {
                const float *row = z + (size_t)(plen[i] - 1 + k) * V;
                double temp = sp.temperature > 0 ? sp.temperature : 1.0;
                double ref = s_ref_logprob(row, V, out[i].tokens[k], temp);
                worst = fmax(worst, fabs(ref - out[i].logprobs[k]));
                AP_CHECK_NEAR(out[i].logprobs[k], ref, 2e-5, 1e-4, "seq %d token %d logprob", i, k);
                if (mode == 0) {
                    int32_t arg = 0;
                    for (int v = 1; v < V; v++)
                        if (row[v] > row[arg]) arg = v;
                    greedy_mismatch += arg != out[i].tokens[k];
                }
            }
            free(seq);
        }
        AP_CHECK(greedy_mismatch == 0, "greedy tokens differ from full-forward argmax %d times",
                 greedy_mismatch);
        if (mode == 0) {
            AP_CHECK(!memcmp(out[0].tokens, out[2].tokens, (size_t)out[0].n * 4) &&
                         out[0].n == out[4].n,
                     "identical prompts give identical greedy completions");
            AP_CHECK(out[3].finish == AP_FINISH_LENGTH && out[3].n == MAXLEN - 20 + 1,
                     "seq 3 stops at the cache length (%d tokens)", out[3].n);
        }
        printf("%s generate (%s): logprobs vs full forward max|diff| %.2e, lengths %d %d %d %d %d\n",
               tied ? "mha tied  " : "gqa untied", mode == 0 ? "greedy" : "T=0.7, eos=3", worst,
               out[0].n, out[1].n, out[2].n, out[3].n, out[4].n);
    }
    /* bad prompts */
    int32_t oov[2] = {1, V};
    const int32_t *bp[1] = {oov};
    int bl[1] = {2};
    ap_sampling_t sp;
    ap_sampling_defaults(&sp);
    AP_CHECK(ap_generate(kv, out, bp, bl, 1, 4, -1, &sp, &rng) < 0 && strstr(ap_errmsg(), "vocabulary"),
             "out-of-vocabulary prompt refused: %s", ap_errmsg());
    bl[0] = 0;
    AP_CHECK(ap_generate(kv, out, bp, bl, 1, 4, -1, &sp, &rng) < 0, "empty prompt refused");
    bl[0] = 2;
    AP_CHECK(ap_generate(kv, out, bp, bl, S + 1, 4, -1, &sp, &rng) < 0, "too many sequences refused");
    sp.top_p = 0;
    AP_CHECK(ap_generate(kv, out, prompts, plen, 1, 4, -1, &sp, &rng) < 0 && strstr(ap_errmsg(), "top_p"),
             "bad top_p refused: %s", ap_errmsg());
    ap_kv_destroy(&kv);
    ap_model_destroy(&m);
}

int main(void) {
    s_mixed(0);
    s_mixed(1);
    s_copy_and_want();
    s_long_prefill();
    s_batch16_and_new_weights();
    s_generate(0);
    s_generate(1);
    fflush(stdout);
    return ap_test_result();
}
