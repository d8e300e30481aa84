/* bench_teacher.c: `apprentice bench teacher`: the teacher's scoring of a batch of groups, three
 * ways on the same model and the same trajectories, one JSON line each:
 *   kv_shared    ap_teacher_score_many as the service runs it (each distinct prompt computed
 *                once per pass, its KV cache copied to the trajectories that share it)
 *   kv_unshared  the same scorer computing every trajectory's prompt itself
 *   full_forward the scorer before the KV cache: one right-padded ap_model_forward over the
 *                batch (prompt + completion[0 .. L-1) per row; the signals are not extracted,
 *                so this is a lower bound of its cost)
 * The default model has the shape of the experiments' teacher (D 256, F 704, L 4, H 8, V 24,
 * random weights) or is loaded with --model DIR; the default batch is what the learner asks of
 * it in configs/gkd-1.yaml: 4 groups of G = 8, prompt 9 tokens, completions of 4 or 5 tokens.
 *
 *   apprentice bench teacher
 *   apprentice bench teacher --model models/teacher-addition --groups 32 --group-size 1 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/blas.h"
#include "apprentice/config.h"
#include "apprentice/model.h"
#include "apprentice/teacher.h"
#include "bench/bench.h"

typedef struct {
    const char *model_dir; /* NULL: random weights of the teacher's shape */
    int groups, G, prompt, completion, threads, warmup, reps;
} s_opts_t;

static ap_model_t *s_model(const s_opts_t *o) {
    if (o->model_dir) return ap_model_load(o->model_dir);
    ap_model_config_t c;
    ap_model_config_defaults(&c);
    c.vocab_size = 24, c.hidden_size = 256, c.intermediate_size = 704, c.num_layers = 4;
    c.num_heads = 8, c.num_kv_heads = 8, c.max_positions = 64, c.tie_embeddings = 1;
    return ap_model_new(&c, 1);
}

/* `groups` groups of G trajectories: random prompt tokens after <bos>, completions of
 * `completion` or completion - 1 tokens (alternating), ids in [3, V). */
static ap_group_t **s_groups(const s_opts_t *o, int V, ap_rng_t *r) {
    ap_group_t **gs = ap_malloc((size_t)o->groups * sizeof *gs);
    int *len = ap_malloc((size_t)o->G * sizeof *len), *ctx = ap_calloc((size_t)o->G, sizeof *ctx);
    for (int j = 0; j < o->groups; j++) {
        for (int i = 0; i < o->G; i++) len[i] = AP_MAX(1, o->completion - (i + j) % 2);
        ap_group_t *g = ap_group_new(o->G, o->prompt, len, ctx);
        g->id = (uint64_t)j + 1;
        for (int t = 0; t < g->n_prompt; t++)
            g->prompt[t] = t == 0 ? 1 : 3 + (int32_t)ap_rng_below(r, (uint64_t)(V - 3));
        for (int t = 0; t < g->n_tokens; t++) g->tokens[t] = 3 + (int32_t)ap_rng_below(r, (uint64_t)(V - 3));
        gs[j] = g;
    }
    free(len), free(ctx);
    return gs;
}

/* The old scorer's compute: one padded forward of every trajectory. Returns the positions
 * computed (B x T), or -1. */
static int s_full_forward(ap_model_t *m, ap_group_t **gs, int n, int32_t *tok, int *lens) {
    int B = 0, T = 0;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < gs[j]->G; i++)
            T = AP_MAX(T, gs[j]->n_prompt + gs[j]->offset[i + 1] - gs[j]->offset[i] - 1);
    for (int j = 0; j < n; j++)
        for (int i = 0; i < gs[j]->G; i++, B++) {
            const ap_group_t *g = gs[j];
            int L = g->offset[i + 1] - g->offset[i];
            int32_t *row = tok + (size_t)B * T;
            memset(row, 0, (size_t)T * sizeof *row);
            memcpy(row, g->prompt, (size_t)g->n_prompt * sizeof *row);
            memcpy(row + g->n_prompt, g->tokens + g->offset[i], (size_t)(L - 1) * sizeof *row);
            lens[B] = g->n_prompt + L - 1;
        }
    return ap_model_forward(m, tok, lens, B, T) ? B * T : -1;
}

static void s_emit(const char *method, const s_opts_t *o, double run, long tokens, long computed,
                   long input) {
    json_t *j = json_object();
    json_object_set_new(j, "bench", json_string("teacher"));
    json_object_set_new(j, "method", json_string(method));
    json_object_set_new(j, "model", json_string(o->model_dir ? o->model_dir : "random D256 L4"));
    json_object_set_new(j, "groups", json_integer(o->groups));
    json_object_set_new(j, "group_size", json_integer(o->G));
    json_object_set_new(j, "prompt", json_integer(o->prompt));
    json_object_set_new(j, "completion", json_integer(o->completion));
    json_object_set_new(j, "threads", json_integer(o->threads));
    json_object_set_new(j, "run_ms", json_real(run * 1e3));
    json_object_set_new(j, "completion_tokens_per_s", json_real((double)tokens / run));
    json_object_set_new(j, "positions_computed", json_integer(computed));
    json_object_set_new(j, "positions_input", json_integer(input));
    json_object_set_new(j, "reps", json_integer(o->reps));
    ap_bench_emit(j);
}

static int s_run(const s_opts_t *o) {
    ap_blas_set_threads(o->threads);
    ap_model_t *m = s_model(o);
    if (!m) {
        fprintf(stderr, "apprentice bench teacher: %s\n", ap_errmsg());
        return 1;
    }
    const ap_model_config_t *mc = ap_model_config(m);
    if (o->prompt + o->completion - 1 > mc->max_positions) {
        fprintf(stderr, "apprentice bench teacher: prompt + completion > the model's %d positions\n",
                mc->max_positions);
        ap_model_destroy(&m);
        return 2;
    }
    ap_rng_t r;
    ap_rng_seed(&r, 7, 0);
    ap_group_t **gs = s_groups(o, mc->vocab_size, &r);
    ap_teacher_params_t p;
    ap_config_t *cfg = ap_config_new(); /* the default signals: top-K, tau 1 */
    ap_teacher_params_for(&p, cfg, AP_TEACHER_EXTERNAL, mc->vocab_size);
    ap_config_destroy(&cfg);
    const ap_teacher_params_t **ps = ap_malloc((size_t)o->groups * sizeof *ps);
    ap_scores_t **out = ap_calloc((size_t)o->groups, sizeof *out);
    for (int j = 0; j < o->groups; j++) ps[j] = &p;
    int nseq = o->groups * o->G;
    int32_t *tok = ap_malloc((size_t)nseq * mc->max_positions * sizeof *tok);
    int *lens = ap_malloc((size_t)nseq * sizeof *lens);
    double *t = ap_malloc((size_t)o->reps * sizeof *t);
    long tokens = 0;
    for (int j = 0; j < o->groups; j++) tokens += gs[j]->n_tokens;
    int rc = 0;
    for (int method = 0; method < 3 && rc == 0; method++) {
        ap_teacher_scorer_t *sc = method < 2 ? ap_teacher_scorer_new(m, method == 0) : NULL;
        ap_teacher_score_stats_t st = {0};
        long computed = 0;
        for (int k = -o->warmup; k < o->reps && rc == 0; k++) {
            double t0 = ap_now();
            if (sc) {
                memset(&st, 0, sizeof st);
                rc = ap_teacher_score_many(sc, o->groups, (const ap_group_t *const *)gs, ps,
                                           (ap_version_t){0, 0}, 4096, out, &st);
                for (int j = 0; j < o->groups; j++) ap_scores_destroy(&out[j]);
                computed = st.computed_tokens;
            } else {
                computed = s_full_forward(m, gs, o->groups, tok, lens);
                rc = computed < 0 ? -1 : 0;
            }
            if (k >= 0) t[k] = ap_now() - t0;
        }
        if (rc == 0) {
            long input = 0;
            for (int j = 0; j < o->groups; j++) input += (long)gs[j]->G * (gs[j]->n_prompt - 1) + gs[j]->n_tokens;
            s_emit(method == 0 ? "kv_shared" : method == 1 ? "kv_unshared" : "full_forward", o,
                   ap_bench_median(t, o->reps), tokens, computed, input);
        } else {
            fprintf(stderr, "apprentice bench teacher: %s\n", ap_errmsg());
        }
        ap_teacher_scorer_destroy(&sc);
    }
    for (int j = 0; j < o->groups; j++) ap_group_destroy(&gs[j]);
    free(gs), free(ps), free(out), free(tok), free(lens), free(t);
    ap_model_destroy(&m);
    return rc == 0 ? 0 : 1;
}

int ap_bench_teacher(int argc, char **argv) {
    s_opts_t o = {.groups = 4, .G = 8, .prompt = 9, .completion = 5, .threads = 1, .warmup = 3,
                  .reps = 31};
    static const struct option longs[] = {
        {"model", required_argument, 0, 'm'},      {"groups", required_argument, 0, 'n'},
        {"group-size", required_argument, 0, 'g'}, {"prompt", required_argument, 0, 'p'},
        {"completion", required_argument, 0, 'l'}, {"threads", required_argument, 0, 't'},
        {"reps", required_argument, 0, 'r'},       {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    optind = 1;
    int ch, matrix = 1;
    while ((ch = getopt_long(argc, argv, "m:n:g:p:l:t:r:h", longs, NULL)) != -1) {
        switch (ch) {
        case 'm': o.model_dir = optarg; break;
        case 'n': o.groups = atoi(optarg), matrix = 0; break;
        case 'g': o.G = atoi(optarg), matrix = 0; break;
        case 'p': o.prompt = atoi(optarg), matrix = 0; break;
        case 'l': o.completion = atoi(optarg), matrix = 0; break;
        case 't': o.threads = atoi(optarg); break;
        case 'r': o.reps = atoi(optarg); break;
        case 'h':
            printf("usage: apprentice bench teacher [--model DIR] [--groups N --group-size G "
                   "--prompt P --completion L] [--threads K] [--reps R]\nWithout a batch shape: "
                   "4 x G 8 (the learner's batch of configs/gkd-1.yaml) and 32 x G 1 (gold data: "
                   "nothing to share). One JSON line per method.\n");
            return 0;
        default: return 2;
        }
    }
    if (o.groups < 1 || o.G < 1 || o.prompt < 1 || o.completion < 1 || o.threads < 1 || o.reps < 1) {
        fprintf(stderr, "apprentice bench teacher: every count must be >= 1\n");
        return 2;
    }
    if (!matrix) return s_run(&o);
    int rc = s_run(&o);
    o.groups = 32, o.G = 1;
    return rc | s_run(&o);
}
