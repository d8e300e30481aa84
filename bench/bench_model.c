/* bench_model.c: `apprentice bench train` (forward + cross-entropy + backward + AdamW, tokens/s
 * and MFU) and `apprentice bench sample` (batched KV-cache sampling, tokens/s), on the
 * configurations of research/perf-anchors.md: A (D 128, L 4, H 4, F 384, V 64), B (288, 6, 6,
 * 768, 512), C (512, 8, 8, 1376, 512), tied embeddings, 256 positions, random weights.
 *
 * FLOPs per token (perf-anchors.md): training 6 N + 12 L D T; decoding 2 N + 4 L D ctx with
 * ctx the mean attended context; N = every weight matrix including the tied classifier.
 * MFU = achieved FLOP/s / the OpenBLAS sgemm peak measured in this run at the same threads.
 * Each measurement is the median over timed repetitions after warm-up; one JSON line each. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/blas.h"
#include "apprentice/model.h"
#include "apprentice/sampler.h"
#include "bench/bench.h"

typedef struct {
    const char *name;
    int D, L, H, F, V;
} s_cfg_t;

static const s_cfg_t s_cfgs[] = {
    {"A", 128, 4, 4, 384, 64},
    {"B", 288, 6, 6, 768, 512},
    {"C", 512, 8, 8, 1376, 512},
};

static const s_cfg_t *s_find(const char *name) {
    for (size_t i = 0; i < AP_COUNT(s_cfgs); i++)
        if (!strcmp(s_cfgs[i].name, name)) return &s_cfgs[i];
    return NULL;
}

static ap_model_config_t s_config(const s_cfg_t *c) {
    ap_model_config_t mc;
    ap_model_config_defaults(&mc);
    mc.vocab_size = c->V, mc.hidden_size = c->D, mc.intermediate_size = c->F;
    mc.num_layers = c->L, mc.num_heads = c->H, mc.num_kv_heads = c->H;
    mc.max_positions = 256, mc.tie_embeddings = 1;
    return mc;
}

/* Weight-matrix parameters N (tied classifier counted once, embedding lookup free). */
static double s_matmul_params(const ap_model_config_t *c) {
    double D = c->hidden_size, F = c->intermediate_size, kvd = (double)c->num_kv_heads * D / c->num_heads;
    double n = c->num_layers * (2 * D * D + 2 * D * kvd + 3 * D * F) + (double)c->vocab_size * D;
    return c->tie_embeddings ? n : n + (double)c->vocab_size * D;
}

typedef struct {
    const s_cfg_t *cfg; /* NULL: the whole matrix */
    int batch, seq, threads, warmup, reps;
} s_opts_t;

static int s_parse(int argc, char **argv, s_opts_t *o, const char *kind, const char *seq_name) {
    static const struct option longs[] = {
        {"config", required_argument, 0, 'c'}, {"batch", required_argument, 0, 'b'},
        {"seq", required_argument, 0, 's'},    {"new-tokens", required_argument, 0, 'n'},
        {"threads", required_argument, 0, 't'}, {"warmup", required_argument, 0, 'w'},
        {"reps", required_argument, 0, 'r'},   {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "c:b:s:n:t:w:r:h", longs, NULL)) != -1) {
        switch (ch) {
        case 'c':
            if (!(o->cfg = s_find(optarg))) {
                fprintf(stderr, "apprentice bench %s: unknown config '%s' (A, B or C)\n", kind, optarg);
                return 2;
            }
            break;
        case 'b': o->batch = atoi(optarg); break;
        case 's':
        case 'n': o->seq = atoi(optarg); break;
        case 't': o->threads = atoi(optarg); break;
        case 'w': o->warmup = atoi(optarg); break;
        case 'r': o->reps = atoi(optarg); break;
        case 'h':
            printf("usage: apprentice bench %s [--config A|B|C --batch N --%s T] [--threads K] "
                   "[--warmup W --reps R]\nWithout --config: the default matrix. One JSON line "
                   "per measurement.\n",
                   kind, seq_name);
            return -1;
        default: return 2;
        }
    }
    if (o->batch < 1 || o->seq < 1 || o->seq > 256 || o->threads < 1 || o->warmup < 0 || o->reps < 1) {
        fprintf(stderr, "apprentice bench %s: --batch, --threads, --reps must be >= 1 and --%s in "
                        "[1, 256]\n", kind, seq_name);
        return 2;
    }
    return 0;
}

/* ---- train ----------------------------------------------------------------------------------- */

static void s_train_one(const s_cfg_t *cfg, int B, int T, int threads, int warmup, int reps) {
    ap_blas_set_threads(threads);
    double peak = ap_bench_sgemm_peak(threads, 10);
    ap_model_config_t mc = s_config(cfg);
    ap_model_t *m = ap_model_new(&mc, 1);
    ap_model_reserve(m, B, T);
    ap_rng_t rng;
    ap_rng_seed(&rng, 2, 0);
    int32_t *tok = ap_malloc((size_t)B * T * sizeof *tok), *tgt = ap_malloc((size_t)B * T * sizeof *tgt);
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)ap_rng_below(&rng, (uint64_t)mc.vocab_size);
    for (int i = 0; i < B * T; i++) tgt[i] = i % T == T - 1 ? -100 : tok[i + 1];
    ap_adamw_t opt;
    ap_adamw_defaults(&opt);
    opt.weight_decay = 0.1f;
    double *t = ap_malloc((size_t)reps * sizeof *t), fwd = 0, loss_first = 0;
    float loss = 0;
    for (int r = -warmup; r < reps; r++) {
        double t0 = ap_now();
        ap_model_zero_grad(m);
        float *z = ap_model_forward(m, tok, NULL, B, T);
        double t1 = ap_now();
        ap_cross_entropy(z, &loss, z, tgt, B * T, mc.vocab_size);
        ap_model_backward(m, z);
        ap_model_step(m, &opt, 1e-4f);
        if (r == -warmup) loss_first = loss;
        if (r >= 0) t[r] = ap_now() - t0, fwd += t1 - t0;
    }
    double step = ap_bench_median(t, reps), tokens = (double)B * T;
    double flops = 6 * s_matmul_params(&mc) + 12.0 * mc.num_layers * mc.hidden_size * T;
    double need = 4.0 * ap_model_num_floats(m) * sizeof(float) + ap_model_activation_bytes(m);
    json_t *j = json_object();
    json_object_set_new(j, "bench", json_string("train"));
    json_object_set_new(j, "system", json_string("apprentice"));
    json_object_set_new(j, "config", json_string(cfg->name));
    json_object_set_new(j, "batch", json_integer(B));
    json_object_set_new(j, "seq", json_integer(T));
    json_object_set_new(j, "threads", json_integer(threads));
    json_object_set_new(j, "tokens_per_s", json_real(tokens / step));
    json_object_set_new(j, "step_ms", json_real(step * 1e3));
    json_object_set_new(j, "forward_share", json_real(fwd / reps / step));
    json_object_set_new(j, "flops_per_token", json_real(flops));
    json_object_set_new(j, "mfu", json_real(flops * tokens / step / (peak * 1e9)));
    json_object_set_new(j, "peak_gflops", json_real(peak));
    json_object_set_new(j, "peak_rss_mb", json_real(ap_peak_rss_mb()));
    json_object_set_new(j, "design_mb", json_real(need / (1 << 20)));
    json_object_set_new(j, "activation_mb", json_real((double)ap_model_activation_bytes(m) / (1 << 20)));
    json_object_set_new(j, "loss_first", json_real(loss_first));
    json_object_set_new(j, "loss_last", json_real(loss));
    json_object_set_new(j, "reps", json_integer(reps));
    ap_bench_emit(j);
    free(t), free(tok), free(tgt);
    ap_model_destroy(&m);
}

int ap_bench_train(int argc, char **argv) {
    s_opts_t o = {.batch = 16, .seq = 64, .threads = 1, .warmup = 2, .reps = 7};
    int rc = s_parse(argc, argv, &o, "train", "seq");
    if (rc) return rc < 0 ? 0 : rc;
    if (o.cfg) {
        s_train_one(o.cfg, o.batch, o.seq, o.threads, o.warmup, o.reps);
        return 0;
    }
    for (size_t i = 0; i < AP_COUNT(s_cfgs); i++) {
        s_train_one(&s_cfgs[i], 16, 64, o.threads, o.warmup, o.reps);
        s_train_one(&s_cfgs[i], 8, 256, o.threads, o.warmup, o.reps);
    }
    return 0;
}

/* ---- sample ---------------------------------------------------------------------------------- */

static void s_sample_one(const s_cfg_t *cfg, int S, int new_tokens, int threads, int warmup,
                         int reps) {
    ap_blas_set_threads(threads);
    double peak = ap_bench_sgemm_peak(threads, 10);
    ap_model_config_t mc = s_config(cfg);
    ap_model_t *m = ap_model_new(&mc, 1);
    ap_kv_t *kv = ap_kv_new(m, S, mc.max_positions);
    int32_t prompt[1] = {1}; /* one start token, as llama2.c's BOS */
    const int32_t **prompts = ap_malloc((size_t)S * sizeof *prompts);
    int *lens = ap_malloc((size_t)S * sizeof *lens);
    for (int i = 0; i < S; i++) prompts[i] = prompt, lens[i] = 1;
    ap_completion_t *out = ap_malloc((size_t)S * sizeof *out);
    ap_sampling_t sp;
    ap_sampling_defaults(&sp);
    ap_rng_t rng;
    ap_rng_seed(&rng, 3, 0);
    double *t = ap_malloc((size_t)reps * sizeof *t);
    long generated = 0;
    for (int r = -warmup; r < reps; r++) {
        double t0 = ap_now();
        if (ap_generate(kv, out, prompts, lens, S, new_tokens, -1, &sp, &rng) < 0) {
            fprintf(stderr, "bench sample: %s\n", ap_errmsg());
            break;
        }
        if (r >= 0) t[r] = ap_now() - t0;
        generated = 0;
        for (int i = 0; i < S; i++) generated += out[i].n;
    }
    double run = ap_bench_median(t, reps);
    /* the token at completion index k attends to 1 + k positions (prompt of 1) */
    double ctx = 0;
    for (int k = 0; k < new_tokens; k++) ctx += 1 + k;
    ctx /= new_tokens;
    double flops = 2 * s_matmul_params(&mc) + 4.0 * mc.num_layers * mc.hidden_size * ctx;
    json_t *j = json_object();
    json_object_set_new(j, "bench", json_string("sample"));
    json_object_set_new(j, "system", json_string("apprentice"));
    json_object_set_new(j, "config", json_string(cfg->name));
    json_object_set_new(j, "batch", json_integer(S));
    json_object_set_new(j, "seq", json_integer(new_tokens));
    json_object_set_new(j, "threads", json_integer(threads));
    json_object_set_new(j, "tokens_per_s", json_real((double)generated / run));
    json_object_set_new(j, "run_ms", json_real(run * 1e3));
    json_object_set_new(j, "flops_per_token", json_real(flops));
    json_object_set_new(j, "mfu", json_real(flops * generated / run / (peak * 1e9)));
    json_object_set_new(j, "peak_gflops", json_real(peak));
    json_object_set_new(j, "peak_rss_mb", json_real(ap_peak_rss_mb()));
    json_object_set_new(j, "reps", json_integer(reps));
    ap_bench_emit(j);
    free(t), free(out), free(lens), free(prompts);
    ap_kv_destroy(&kv);
    ap_model_destroy(&m);
}

int ap_bench_sample(int argc, char **argv) {
    s_opts_t o = {.batch = 1, .seq = 256, .threads = 1, .warmup = 1, .reps = 5};
    int rc = s_parse(argc, argv, &o, "sample", "new-tokens");
    if (rc) return rc < 0 ? 0 : rc;
    if (o.cfg) {
        s_sample_one(o.cfg, o.batch, o.seq, o.threads, o.warmup, o.reps);
        return 0;
    }
    for (size_t i = 0; i < AP_COUNT(s_cfgs); i++) {
        s_sample_one(&s_cfgs[i], 1, 256, o.threads, o.warmup, o.reps);
        s_sample_one(&s_cfgs[i], 16, 256, o.threads, o.warmup, o.reps);
    }
    return 0;
}
