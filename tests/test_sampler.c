/* test_sampler: the token sampler and its determinism. Same seed -> same samples (token sampler
 * and ap_generate); saving the rng (struct copy) and restoring it resumes the same stream;
 * greedy = argmax (ties to the lower id); top-k / top-p never emit a token outside the kept set
 * (computed independently here) and follow the renormalised distribution; the reported
 * log-prob equals log_softmax(logits / temperature) of the FULL distribution; non-finite
 * logits and bad parameters are refused. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/sampler.h"
#include "test.h"

enum { V = 50 };

static void s_logits(float *z, ap_rng_t *rng, double scale) {
    for (int v = 0; v < V; v++) z[v] = (float)(scale * ap_rng_normal(rng));
}

static double s_log_softmax(const float *z, int tok, double temp) {
    double mx = z[0], s = 0;
    for (int v = 1; v < V; v++) mx = fmax(mx, z[v]);
    for (int v = 0; v < V; v++) s += exp((z[v] - mx) / temp);
    return (z[tok] - mx) / temp - log(s);
}

/* kept[v] = 1 for the tokens top-k then top-p keep (ties: lower id first), independent code. */
static void s_kept(unsigned char *kept, const float *z, int top_k, double top_p, double temp) {
    int order[V];
    for (int v = 0; v < V; v++) order[v] = v;
    for (int i = 0; i < V; i++) /* selection sort by logit desc, id asc */
        for (int j = i + 1; j < V; j++)
            if (z[order[j]] > z[order[i]] || (z[order[j]] == z[order[i]] && order[j] < order[i])) {
                int t = order[i];
                order[i] = order[j], order[j] = t;
            }
    int k = top_k > 0 && top_k < V ? top_k : V;
    double p[V], mass = 0;
    for (int i = 0; i < k; i++) mass += p[i] = exp((z[order[i]] - z[order[0]]) / temp);
    int n = k;
    if (top_p < 1) {
        double c = 0;
        for (n = 0; n < k;) {
            c += p[n++];
            if (c >= top_p * mass * (1 - 1e-6)) break;
        }
    }
    memset(kept, 0, V);
    for (int i = 0; i < n; i++) kept[order[i]] = 1;
}

static void s_truncation(int top_k, float top_p, float temp) {
    ap_rng_t rng;
    ap_rng_seed(&rng, 3, (uint64_t)top_k);
    float z[V], work[3 * V];
    s_logits(z, &rng, 2.0);
    unsigned char kept[V];
    s_kept(kept, z, top_k, top_p, temp);
    ap_sampling_t sp = {.temperature = temp, .top_k = top_k, .top_p = top_p};
    enum { DRAWS = 20000 };
    int count[V] = {0}, outside = 0;
    double worst_lp = 0;
    for (int d = 0; d < DRAWS; d++) {
        float lp;
        int32_t t = ap_sample_token(z, V, &sp, &rng, &lp, work);
        AP_CHECK(t >= 0 && t < V, "token in range");
        if (t < 0) return;
        count[t]++;
        outside += !kept[t];
        double ref = s_log_softmax(z, t, temp);
        worst_lp = fmax(worst_lp, fabs(ref - lp));
        AP_CHECK_NEAR(lp, ref, 1e-5, 1e-5, "logprob of %d (top_k %d top_p %g T %g)", t, top_k, top_p, temp);
    }
    AP_CHECK(outside == 0, "top_k %d top_p %g: %d draws outside the kept set", top_k, top_p, outside);
    /* frequencies follow the renormalised kept distribution (5 sigma) */
    double mass = 0, mx = z[0];
    for (int v = 1; v < V; v++) mx = fmax(mx, z[v]);
    for (int v = 0; v < V; v++) mass += kept[v] ? exp((z[v] - mx) / temp) : 0;
    int nkept = 0, bad = 0;
    for (int v = 0; v < V; v++) {
        if (!kept[v]) continue;
        nkept++;
        double p = exp((z[v] - mx) / temp) / mass, sd = sqrt(DRAWS * p * (1 - p)) + 1;
        bad += fabs(count[v] - DRAWS * p) > 5 * sd;
    }
    AP_CHECK(bad == 0, "top_k %d top_p %g: %d token frequencies off by > 5 sigma", top_k, top_p, bad);
    printf("T=%.2f top_k=%-2d top_p=%.2f: kept %2d tokens, %d draws outside, logprob max|err| %.1e\n",
           temp, top_k, top_p, nkept, outside, worst_lp);
}

static void s_greedy(void) {
    ap_rng_t rng, before;
    ap_rng_seed(&rng, 9, 9);
    ap_sampling_t sp = {.temperature = 0, .top_k = 0, .top_p = 1};
    for (int trial = 0; trial < 100; trial++) {
        float z[V];
        s_logits(z, &rng, 3.0);
        if (trial % 10 == 0) z[7] = z[30] = 50; /* a tie: the lower id wins */
        int arg = 0;
        for (int v = 1; v < V; v++)
            if (z[v] > z[arg]) arg = v;
        before = rng;
        float lp;
        int32_t t = ap_sample_token(z, V, &sp, &rng, &lp, NULL);
        AP_CHECK(t == arg, "greedy %d vs argmax %d", t, arg);
        AP_CHECK(!memcmp(&before, &rng, sizeof rng), "greedy consumes no randomness");
        AP_CHECK_NEAR(lp, s_log_softmax(z, t, 1.0), 1e-5, 1e-5, "greedy logprob at T=1");
    }
}

static void s_determinism(void) {
    ap_rng_t a, b;
    ap_rng_seed(&a, 123, 4);
    ap_rng_seed(&b, 123, 4);
    float z[V], work[3 * V];
    ap_sampling_t sp = {.temperature = 1.3f, .top_k = 20, .top_p = 0.9f};
    int32_t first[64], second[64];
    ap_rng_t zr;
    ap_rng_seed(&zr, 1, 1);
    s_logits(z, &zr, 2.0);
    for (int i = 0; i < 64; i++) first[i] = ap_sample_token(z, V, &sp, &a, NULL, work);
    for (int i = 0; i < 64; i++) second[i] = ap_sample_token(z, V, &sp, &b, NULL, work);
    AP_CHECK(!memcmp(first, second, sizeof first), "same seed, same samples");
    /* save / restore resumes the stream */
    ap_rng_t saved = a;
    for (int i = 0; i < 64; i++) first[i] = ap_sample_token(z, V, &sp, &a, NULL, work);
    a = saved;
    for (int i = 0; i < 64; i++) second[i] = ap_sample_token(z, V, &sp, &a, NULL, work);
    AP_CHECK(!memcmp(first, second, sizeof first), "restored rng resumes the same stream");
    int distinct = 0;
    for (int i = 1; i < 64; i++) distinct += first[i] != first[0];
    AP_CHECK(distinct > 0, "samples vary");

    /* the same through ap_generate on a small model */
    ap_model_config_t c;
    ap_model_config_defaults(&c);
    c.vocab_size = 17, c.hidden_size = 16, c.intermediate_size = 32, c.num_layers = 1;
    c.num_heads = 2, c.num_kv_heads = 2, c.max_positions = 40;
    ap_model_t *m = ap_model_new(&c, 1);
    for (size_t k = 0; k < ap_model_num_floats(m); k++) ap_model_params(m)[k] *= 20; /* peakier */
    ap_kv_t *kv = ap_kv_new(m, 4, 40);
    int32_t p[3] = {1, 2, 3};
    const int32_t *prompts[4] = {p, p, p, p};
    int lens[4] = {3, 3, 3, 3};
    ap_sampling_t s2;
    ap_sampling_defaults(&s2);
    ap_completion_t o1[4], o2[4];
    int32_t keep[4][32];
    int n1[4];
    ap_rng_seed(&a, 5, 5);
    saved = a;
    AP_CHECK(ap_generate(kv, o1, prompts, lens, 4, 32, -1, &s2, &a) == 0, "%s", ap_errmsg());
    for (int i = 0; i < 4; i++) n1[i] = o1[i].n, memcpy(keep[i], o1[i].tokens, (size_t)o1[i].n * 4);
    a = saved;
    AP_CHECK(ap_generate(kv, o2, prompts, lens, 4, 32, -1, &s2, &a) == 0, "%s", ap_errmsg());
    int same = 1, differ = 0;
    for (int i = 0; i < 4; i++) {
        same &= n1[i] == o2[i].n && !memcmp(keep[i], o2[i].tokens, (size_t)n1[i] * 4);
        differ += memcmp(keep[0], keep[i], sizeof keep[0]) != 0;
    }
    AP_CHECK(same, "ap_generate: same rng state, same completions");
    AP_CHECK(differ > 0, "four samples of one prompt are not all identical");
    printf("determinism: token sampler and ap_generate repeat exactly from a saved rng state\n");
    ap_kv_destroy(&kv);
    ap_model_destroy(&m);
}

static void s_refusals(void) {
    ap_rng_t rng;
    ap_rng_seed(&rng, 1, 1);
    float z[V];
    s_logits(z, &rng, 1.0);
    ap_sampling_t sp;
    ap_sampling_defaults(&sp);
    z[4] = NAN;
    AP_CHECK(ap_sample_token(z, V, &sp, &rng, NULL, NULL) == -1 && strstr(ap_errmsg(), "finite"),
             "NaN logits refused: %s", ap_errmsg());
    z[4] = INFINITY;
    AP_CHECK(ap_sample_token(z, V, &sp, &rng, NULL, NULL) == -1, "inf logits refused");
    for (int v = 0; v < V; v++) z[v] = v == 9 ? 0.0f : -INFINITY; /* masked tokens are fine */
    float lp;
    AP_CHECK(ap_sample_token(z, V, &sp, &rng, &lp, NULL) == 9 && lp == 0.0f, "-inf logits masked");
    ap_sampling_t bad[3] = {{-1, 0, 1}, {1, -2, 1}, {1, 0, 1.5f}};
    const char *field[3] = {"temperature", "top_k", "top_p"};
    for (int i = 0; i < 3; i++)
        AP_CHECK(ap_sampling_validate(&bad[i]) < 0 && strstr(ap_errmsg(), field[i]),
                 "bad %s refused: %s", field[i], ap_errmsg());
}

int main(void) {
    s_truncation(0, 1.0f, 1.0f);
    s_truncation(0, 1.0f, 0.5f);
    s_truncation(5, 1.0f, 1.0f);
    s_truncation(0, 0.8f, 1.0f);
    s_truncation(10, 0.5f, 2.0f);
    s_truncation(1, 1.0f, 0.7f);
    s_greedy();
    s_determinism();
    s_refusals();
    fflush(stdout);
    return ap_test_result();
}
