/* bench_objectives.c: `apprentice bench objectives`: the cost of each objective's loss +
 * gradient with respect to the logits (plan + eval + finish, as the learner calls them) at
 * model config B (D 288, L 6, H 6, F 768, V 512), batch 16 x 64, for the full support (V = 512)
 * and top-K 32 with the tail bin, with and without the distribution monitors; and, in the same
 * run, one learner step at the same shape (forward + backward from dlogits + AdamW) so that each
 * objective is reported as a share of a step (target: <= 5%). Single-threaded; medians of
 * repeated runs; one JSON line per measurement. */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/blas.h"
#include "apprentice/model.h"
#include "apprentice/objectives.h"
#include "apprentice/rng.h"
#include "bench/bench.h"

static int s_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double s_median(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, s_cmp);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* Median seconds of one learner step (forward, backward from a fixed dlogits, AdamW) at
 * config B and B x T tokens. */
static double s_step(int B, int T, int V, int warmup, int reps) {
    ap_model_config_t mc;
    ap_model_config_defaults(&mc);
    mc.vocab_size = V, mc.hidden_size = 288, mc.intermediate_size = 768, mc.num_layers = 6;
    mc.num_heads = 6, mc.num_kv_heads = 6, mc.max_positions = 256, mc.tie_embeddings = 1;
    ap_model_t *m = ap_model_new(&mc, 1);
    if (!m) return NAN;
    ap_model_reserve(m, B, T);
    ap_rng_t rng;
    ap_rng_seed(&rng, 3, 0);
    int32_t *tok = ap_malloc((size_t)B * T * sizeof *tok);
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)ap_rng_below(&rng, (uint64_t)V);
    float *dl = ap_malloc((size_t)B * T * V * sizeof *dl);
    for (size_t i = 0; i < (size_t)B * T * V; i++) dl[i] = (float)(1e-4 * ap_rng_normal(&rng));
    ap_adamw_t opt;
    ap_adamw_defaults(&opt);
    double *t = ap_malloc((size_t)reps * sizeof *t);
    for (int r = -warmup; r < reps; r++) {
        double t0 = ap_now();
        ap_model_zero_grad(m);
        ap_model_forward(m, tok, NULL, B, T);
        ap_model_backward(m, dl);
        ap_model_step(m, &opt, 1e-4f);
        if (r >= 0) t[r] = ap_now() - t0;
    }
    double med = s_median(t, reps);
    free(t), free(tok), free(dl);
    ap_model_destroy(&m);
    return med;
}

typedef struct {
    int N, T, V, K;
    float *logits, *dlogits, *t_full, *s_full, *t_lp, *s_lp, *mask, *beh, *ref, *lt, *reward;
    int32_t *t_ids, *s_ids, *tokens, *correct, *group, *h;
    ap_obj_batch_t b;
} s_data_t;

static void s_logsoftmax(float *lp, const float *z, int V) {
    double m = z[0], a = 0;
    for (int v = 1; v < V; v++) m = fmax(m, z[v]);
    for (int v = 0; v < V; v++) a += exp(z[v] - m);
    for (int v = 0; v < V; v++) lp[v] = (float)(z[v] - m - log(a));
}

static void s_topk(int32_t *ids, float *out, const float *lp, int V, int K) {
    for (int j = 0; j < K; j++) ids[j] = -1;
    for (int v = 0; v < V; v++) { /* insertion into a sorted list of K */
        if (ids[K - 1] >= 0 && lp[v] <= out[K - 1]) continue;
        int j = K - 1;
        while (j > 0 && (ids[j - 1] < 0 || out[j - 1] < lp[v])) ids[j] = ids[j - 1], out[j] = out[j - 1], j--;
        ids[j] = v, out[j] = lp[v];
    }
}

static void s_data(s_data_t *d, int N, int T, int V, int K) {
    memset(d, 0, sizeof *d);
    d->N = N, d->T = T, d->V = V, d->K = K;
    size_t NT = (size_t)N * T, NTV = NT * V, NTK = NT * K;
    ap_rng_t r;
    ap_rng_seed(&r, 11, 0);
    d->logits = ap_malloc(NTV * 4), d->dlogits = ap_malloc(NTV * 4);
    d->t_full = ap_malloc(NTV * 4), d->s_full = ap_malloc(NTV * 4);
    d->t_lp = ap_malloc(NTK * 4), d->s_lp = ap_malloc(NTK * 4);
    d->t_ids = ap_malloc(NTK * 4), d->s_ids = ap_malloc(NTK * 4);
    d->mask = ap_malloc(NT * 4), d->beh = ap_malloc(NT * 4), d->ref = ap_malloc(NT * 4);
    d->lt = ap_malloc(NT * 4), d->tokens = ap_malloc(NT * 4);
    d->reward = ap_malloc((size_t)N * 4), d->correct = ap_malloc((size_t)N * 4);
    d->group = ap_malloc((size_t)N * 4), d->h = ap_malloc((size_t)N * 4);
    float *z = ap_malloc((size_t)V * 4);
    for (size_t i = 0; i < NTV; i++) d->logits[i] = (float)(2 * ap_rng_normal(&r));
    for (size_t p = 0; p < NT; p++) {
        for (int v = 0; v < V; v++) z[v] = (float)(2 * ap_rng_normal(&r));
        s_logsoftmax(d->t_full + p * V, z, V);
        for (int v = 0; v < V; v++) z[v] = (float)(2 * ap_rng_normal(&r));
        s_logsoftmax(d->s_full + p * V, z, V);
        s_topk(d->t_ids + p * K, d->t_lp + p * K, d->t_full + p * V, V, K);
        s_topk(d->s_ids + p * K, d->s_lp + p * K, d->s_full + p * V, V, K);
        d->tokens[p] = (int32_t)ap_rng_below(&r, (uint64_t)V);
        d->mask[p] = (p % T) < (size_t)(T - (p / T) % 8) ? 1.0f : 0.0f; /* ragged lengths */
        d->lt[p] = d->t_full[p * V + d->tokens[p]];
    }
    float *lpt = ap_malloc(NT * 4);
    ap_obj_sampled_logprobs(lpt, d->logits, d->tokens, N, T, V, 1.0);
    for (size_t p = 0; p < NT; p++) {
        d->beh[p] = lpt[p] + (float)(0.2 * ap_rng_normal(&r));
        d->ref[p] = lpt[p] + (float)(0.2 * ap_rng_normal(&r));
    }
    for (int n = 0; n < N; n++) {
        d->group[n] = n / 4, d->reward[n] = (float)ap_rng_below(&r, 2);
        d->correct[n] = d->reward[n] > 0.5f, d->h[n] = ap_rng_uniform(&r) < 0.75;
    }
    free(z), free(lpt);
    d->b = (ap_obj_batch_t){.N = N, .T = T, .V = V, .tokens = d->tokens, .mask = d->mask,
                            .behavior = d->beh, .ref = d->ref, .teacher_sampled = d->lt,
                            .reward = d->reward, .correct = d->correct, .group = d->group,
                            .has_teacher = d->h,
                            .teacher = {.full = d->t_full, .topk_ids = d->t_ids, .topk_lp = d->t_lp,
                                        .K = K, .tau = 1},
                            .self_teacher = {.full = d->s_full, .topk_ids = d->s_ids,
                                             .topk_lp = d->s_lp, .K = K, .tau = 1}};
}

static void s_data_free(s_data_t *d) {
    free(d->logits), free(d->dlogits), free(d->t_full), free(d->s_full), free(d->t_lp);
    free(d->s_lp), free(d->t_ids), free(d->s_ids), free(d->mask), free(d->beh), free(d->ref);
    free(d->lt), free(d->tokens), free(d->reward), free(d->correct), free(d->group), free(d->h);
}

/* Median seconds of plan + eval + finish (with the sampled log-probs the plan needs when
 * `need_lpt`: the policy-gradient objectives' staleness mask). */
static double s_time(ap_obj_t *o, s_data_t *d, int need_lpt, int monitors, int warmup, int reps,
                     double *loss) {
    double *t = ap_malloc((size_t)reps * sizeof *t);
    float *lpt = ap_malloc((size_t)d->N * d->T * sizeof *lpt);
    ap_obj_set_monitors(o, monitors);
    for (int r = -warmup; r < reps; r++) {
        double t0 = ap_now();
        if (need_lpt) ap_obj_sampled_logprobs(lpt, d->logits, d->tokens, d->N, d->T, d->V, 1.0);
        ap_obj_result_t res;
        ap_monitors_t mon = {0};
        if (ap_obj_plan(o, &d->b, need_lpt ? lpt : NULL) < 0) {
            fprintf(stderr, "bench objectives: %s\n", ap_errmsg());
            break;
        }
        ap_obj_eval(o, 0, d->N, d->logits, d->dlogits);
        ap_obj_finish(o, &res, &mon);
        *loss = res.loss;
        if (r >= 0) t[r] = ap_now() - t0;
    }
    double med = s_median(t, reps);
    free(t), free(lpt);
    return med;
}

int ap_bench_objectives(int argc, char **argv) {
    int B = 16, T = 64, V = 512, K = 32, reps = 15, warmup = 2, step_reps = 5, with_step = 1;
    static const struct option longs[] = {
        {"batch", required_argument, 0, 'b'}, {"seq", required_argument, 0, 's'},
        {"vocab", required_argument, 0, 'v'}, {"k", required_argument, 0, 'k'},
        {"reps", required_argument, 0, 'r'},  {"no-step", no_argument, 0, 'n'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "b:s:v:k:r:nh", longs, NULL)) != -1) {
        switch (ch) {
        case 'b': B = atoi(optarg); break;
        case 's': T = atoi(optarg); break;
        case 'v': V = atoi(optarg); break;
        case 'k': K = atoi(optarg); break;
        case 'r': reps = atoi(optarg); break;
        case 'n': with_step = 0; break;
        case 'h':
            printf("usage: apprentice bench objectives [--batch 16 --seq 64 --vocab 512 --k 32] "
                   "[--reps 15] [--no-step]\nLoss + gradient of gkd, opd, grpo, opsd, srpo "
                   "(full support and top-K with tail), median ms, and their share of one "
                   "learner step (config B forward + backward + AdamW) measured in the same run.\n");
            return 0;
        default: return 2;
        }
    }
    if (B < 1 || T < 1 || T > 256 || V < 2 || K < 1 || K > V || reps < 1) {
        fprintf(stderr, "apprentice bench objectives: need batch, reps >= 1, seq in [1, 256], "
                        "vocab >= 2, k in [1, vocab]\n");
        return 2;
    }
    ap_blas_set_threads(1);
    double step = with_step ? s_step(B, T, V, 1, step_reps) : NAN;
    if (with_step) {
        json_t *j = json_object();
        json_object_set_new(j, "bench", json_string("objectives"));
        json_object_set_new(j, "what", json_string("learner_step"));
        json_object_set_new(j, "config", json_string("B"));
        json_object_set_new(j, "batch", json_integer(B));
        json_object_set_new(j, "seq", json_integer(T));
        json_object_set_new(j, "step_ms", json_real(step * 1e3));
        json_object_set_new(j, "reps", json_integer(step_reps));
        ap_bench_emit(j);
    }
    s_data_t d;
    s_data(&d, B, T, V, K);
    static const char *const sup_name[] = {"auto", "full", "topk", "topk_tail"};
    for (int k = 0; k < AP_OBJ_COUNT; k++) {
        int pg_only = k == AP_OBJ_OPD || k == AP_OBJ_GRPO;
        for (int si = 0; si < (pg_only ? 1 : 2); si++) {
            ap_support_t sup = si ? AP_SUPPORT_TOPK_TAIL : AP_SUPPORT_FULL;
            ap_obj_config_t c;
            ap_obj_config_defaults(&c);
            if (k == AP_OBJ_GKD) c.gkd.c.enabled = 1, c.gkd.support = sup;
            if (k == AP_OBJ_OPD) c.opd.c.enabled = 1;
            if (k == AP_OBJ_GRPO) c.grpo.c.enabled = 1;
            if (k == AP_OBJ_OPSD) c.opsd.c.enabled = 1, c.opsd.support = sup;
            if (k == AP_OBJ_SRPO) c.srpo.c.enabled = 1, c.srpo.support = sup;
            ap_obj_t *o = ap_obj_new(&c);
            if (!o) {
                fprintf(stderr, "bench objectives: %s\n", ap_errmsg());
                continue;
            }
            double loss = 0;
            int need = k == AP_OBJ_OPD || k == AP_OBJ_GRPO || k == AP_OBJ_SRPO;
            double t_off = s_time(o, &d, need, 0, warmup, reps, &loss);
            double t_on = s_time(o, &d, need, 1, warmup, reps, &loss);
            json_t *j = json_object();
            json_object_set_new(j, "bench", json_string("objectives"));
            json_object_set_new(j, "objective", json_string(ap_obj_name(k)));
            json_object_set_new(j, "support", json_string(pg_only ? "sampled" : sup_name[sup]));
            json_object_set_new(j, "batch", json_integer(B));
            json_object_set_new(j, "seq", json_integer(T));
            json_object_set_new(j, "V", json_integer(V));
            if (sup != AP_SUPPORT_FULL && !pg_only) json_object_set_new(j, "K", json_integer(K));
            json_object_set_new(j, "ms", json_real(t_off * 1e3));
            json_object_set_new(j, "ms_with_monitors", json_real(t_on * 1e3));
            json_object_set_new(j, "ns_per_position", json_real(t_off * 1e9 / ((double)B * T)));
            if (with_step) {
                json_object_set_new(j, "step_ms", json_real(step * 1e3));
                json_object_set_new(j, "share_of_step", json_real(t_off / step));
                json_object_set_new(j, "share_with_monitors", json_real(t_on / step));
            }
            json_object_set_new(j, "loss", json_real(loss));
            json_object_set_new(j, "reps", json_integer(reps));
            ap_bench_emit(j);
            ap_obj_destroy(&o);
        }
    }
    s_data_free(&d);
    return 0;
}
