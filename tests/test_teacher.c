/* test_teacher.c: the teacher's scoring library against a direct computation. For each case the
 * reference runs ap_model_forward on each trajectory alone (prefix + completion[0 .. L-1), batch
 * of one, no padding) and computes in double: the sampled token's log-softmax at tau_s, the full
 * log-softmax at tau, and the top-K by a full sort (descending, ties to the lower id). Cases:
 * external top-K (one pass, and packed into many small passes), external full, self-teacher after
 * the privileged context (h = 0 trajectories not present, their positions 0), reference
 * (sampled-token only), each through a scorer that shares equal prefixes and one that does not;
 * prefixes shared across groups and within a group (positions computed counted), several groups
 * and kinds in one call, a trajectory longer than the
 * model's positions, simulated scores (valid on the wire, distinct ids, descending, mass < 1),
 * and the vocabulary check (library and `apprentice teacher` refusing a mismatched tokenizer). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "apprentice/base.h"
#include "apprentice/model.h"
#include "apprentice/msg.h"
#include "apprentice/rundir.h"
#include "apprentice/teacher.h"
#include "apprentice/tokenizer.h"
#include "test.h"

#define V 40

static ap_model_t *s_model(uint64_t seed, int max_pos) {
    ap_model_config_t c;
    ap_model_config_defaults(&c);
    c.vocab_size = V, c.hidden_size = 32, c.intermediate_size = 64, c.num_layers = 2;
    c.num_heads = 4, c.num_kv_heads = 2, c.max_positions = max_pos;
    ap_model_t *m = ap_model_new(&c, seed);
    AP_ASSERTF(m, "%s", ap_errmsg());
    /* larger weights than the 0.02 init, so distributions are far from uniform */
    float *p = ap_model_params(m);
    for (size_t i = 0; i < ap_model_num_floats(m); i++)
        p[i] *= 4.0f;
    return m;
}

/* G = 5 trajectories of lengths 1, 7, 3, 12, 5; contexts (h) on 1, 2 and 4 only. */
static ap_group_t *s_group(ap_rng_t *r, uint64_t id) {
    int len[5] = {1, 7, 3, 12, 5}, ctx[5] = {0, 9, 4, 0, 11};
    ap_group_t *g = ap_group_new(5, 6, len, ctx);
    g->id = id;
    g->version = (ap_version_t){1, 2};
    g->temperature = 0.7f;
    for (int i = 0; i < g->n_prompt; i++)
        g->prompt[i] = i == 0 ? 1 : 3 + (int32_t)ap_rng_below(r, V - 3);
    for (int t = 0; t < g->n_tokens; t++)
        g->tokens[t] = 3 + (int32_t)ap_rng_below(r, V - 3);
    for (int i = 0; i < g->G; i++)
        for (int t = g->ctx_offset[i]; t < g->ctx_offset[i + 1]; t++)
            g->ctx_tokens[t] = t == g->ctx_offset[i] ? 1 : 3 + (int32_t)ap_rng_below(r, V - 3);
    return g;
}

typedef struct {
    double sampled, lp; /* largest absolute errors */
    int id_mismatch;    /* top-K ids that differ where the logits are not tied */
    int present_bad;    /* present flags or zeroed positions wrong */
} s_err_t;

static const float *s_sort_z;
static double s_zmax; /* largest |logit| seen by the reference (error scale) */
static int s_cmp_desc(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    if (s_sort_z[x] != s_sort_z[y]) return s_sort_z[x] > s_sort_z[y] ? -1 : 1;
    return x - y;
}

/* Compare scores s of group g (kind p) with the direct computation. */
static s_err_t s_compare(ap_model_t *m, const ap_group_t *g, const ap_teacher_params_t *p,
                         const ap_scores_t *s) {
    s_err_t e = {0};
    int max_pos = ap_model_config(m)->max_positions;
    for (int i = 0; i < g->G; i++) {
        int L = g->offset[i + 1] - g->offset[i];
        const int32_t *pre =
            p->kind == AP_TEACHER_SELF ? g->ctx_tokens + g->ctx_offset[i] : g->prompt;
        int P = p->kind == AP_TEACHER_SELF ? g->ctx_offset[i + 1] - g->ctx_offset[i] : g->n_prompt;
        int want_present = P > 0 && P + L - 1 <= max_pos;
        if (s->present[i] != want_present) e.present_bad++;
        if (!want_present) {
            for (int t = g->offset[i]; t < g->offset[i + 1]; t++) {
                if (s->sampled[t] != 0) e.present_bad++;
                for (int k = 0; k < s->K; k++)
                    if (s->logprobs[(size_t)t * s->K + k] != 0) e.present_bad++;
            }
            continue;
        }
        int n = P + L - 1;
        int32_t *seq = ap_malloc((size_t)n * sizeof *seq);
        memcpy(seq, pre, (size_t)P * sizeof *seq);
        memcpy(seq + P, g->tokens + g->offset[i], (size_t)(L - 1) * sizeof *seq);
        const float *logits = ap_model_forward(m, seq, NULL, 1, n);
        AP_ASSERTF(logits, "%s", ap_errmsg());
        for (int t = 0; t < L; t++) {
            const float *z = logits + (size_t)(P - 1 + t) * V;
            int pos = g->offset[i] + t;
            double mx = z[0], ss = 0, st = 0;
            for (int v = 1; v < V; v++)
                mx = fmax(mx, z[v]);
            for (int v = 0; v < V; v++) {
                ss += exp((z[v] - mx) / p->sampled_temperature);
                st += exp((z[v] - mx) / p->temperature);
            }
            double lse_s = log(ss), lse_t = log(st);
            double want = (z[g->tokens[pos]] - mx) / p->sampled_temperature - lse_s;
            s_zmax = fmax(s_zmax, fabs(mx));
            e.sampled = fmax(e.sampled, fabs(want - s->sampled[pos]));
            if (p->full) {
                for (int v = 0; v < V; v++)
                    e.lp = fmax(e.lp, fabs((z[v] - mx) / p->temperature - lse_t -
                                           s->logprobs[(size_t)pos * V + v]));
            } else if (p->top_k > 0) {
                int idx[V];
                for (int v = 0; v < V; v++)
                    idx[v] = v;
                s_sort_z = z;
                qsort(idx, V, sizeof *idx, s_cmp_desc);
                for (int k = 0; k < p->top_k; k++) {
                    int32_t got = s->ids[(size_t)pos * s->K + k];
                    if (got != idx[k] && fabsf(z[got] - z[idx[k]]) > 1e-4f) e.id_mismatch++;
                    double wl = (z[idx[k]] - mx) / p->temperature - lse_t;
                    e.lp = fmax(e.lp, fabs(wl - s->logprobs[(size_t)pos * s->K + k]));
                }
            }
        }
        free(seq);
    }
    return e;
}

static void s_report(const char *name, s_err_t e, const ap_scores_t *s,
                     const ap_teacher_params_t *p) {
    /* two float32 forwards of the same rows (batched vs alone) differ by ~1e-6 of the logits'
     * scale; a log-prob at temperature tau moves by at most 2 dz / tau */
    double tol = 1e-5 * (1 + s_zmax) / fmin(1.0, fmin(p->temperature, p->sampled_temperature));
    printf("%-34s sampled err %.2e  distribution err %.2e (tol %.1e, |z| <= %.1f)  id mismatches "
           "%d  present errors %d\n",
           name, e.sampled, e.lp, tol, s_zmax, e.id_mismatch, e.present_bad);
    AP_CHECK(e.sampled < tol && e.lp < tol && e.id_mismatch == 0 && e.present_bad == 0, "%s", name);
    s_zmax = 0;
    AP_CHECK(s->kind == p->kind && s->full == p->full && s->temperature == p->temperature,
             "%s: kind/full/temperature fields", name);
    AP_CHECK(s->K == (p->full ? V : p->top_k), "%s: K %d", name, s->K);
}

static void test_scoring(void) {
    ap_model_t *m = s_model(11, 64);
    ap_rng_t r;
    ap_rng_seed(&r, 5, 0);
    ap_group_t *g = s_group(&r, 42);
    ap_version_t ver = {3, 7};
    struct {
        const char *name;
        ap_teacher_params_t p;
        int budget;
    } cases[] = {
        {"external top-K 6 (one pass)", {AP_TEACHER_EXTERNAL, 6, 0, 1.5f, 0.7f}, 4096},
        {"external top-K 6 (passes of 8 tok)", {AP_TEACHER_EXTERNAL, 6, 0, 1.5f, 0.7f}, 8},
        {"external full", {AP_TEACHER_EXTERNAL, V, 1, 2.0f, 0.7f}, 4096},
        {"self top-K 5 after the context", {AP_TEACHER_SELF, 5, 0, 1.0f, 0.7f}, 4096},
        {"self full (passes of 20 tok)", {AP_TEACHER_SELF, V, 1, 0.5f, 1.0f}, 20},
        {"reference (sampled only)", {AP_TEACHER_REFERENCE, 0, 0, 1.0f, 0.7f}, 4096},
    };
    ap_teacher_scorer_t *shared = ap_teacher_scorer_new(m, 1), *alone = ap_teacher_scorer_new(m, 0);
    for (size_t c = 0; c < 2 * AP_COUNT(cases); c++) {
        int share = c < AP_COUNT(cases); /* every case through both scorers */
        size_t k = c % AP_COUNT(cases);
        const ap_group_t *gs[1] = {g};
        const ap_teacher_params_t *ps[1] = {&cases[k].p};
        ap_scores_t *s = NULL;
        ap_teacher_score_stats_t st = {0};
        char name[96];
        snprintf(name, sizeof name, "%s%s", cases[k].name, share ? "" : ", prefixes not shared");
        int rc = ap_teacher_score_many(share ? shared : alone, 1, gs, ps, ver, cases[k].budget, &s, &st);
        AP_CHECK(rc == 0 && s, "%s: %s", name, ap_errmsg());
        if (!s) continue;
        AP_CHECK(s->group_id == 42 && ap_version_cmp(s->version, ver) == 0, "ids/version");
        AP_CHECK(ap_msg_scores_match(s, g) == 0, "%s: %s", name, ap_errmsg());
        s_report(name, s_compare(m, g, &cases[k].p, s), s, &cases[k].p);
        if (cases[k].budget == 8)
            AP_CHECK(st.passes >= 4, "%ld passes with a budget of 8", st.passes);
        /* prompt 6, completions 1 7 3 12 5: inputs 6 12 8 17 10 = 53; shared: the prompt once,
         * 6 + 0 + 6 + 2 + 11 + 4 = 29 positions computed */
        if (k == 0)
            AP_CHECK(st.passes == 1 && st.input_tokens == 53 &&
                         st.computed_tokens == (share ? 29 : 53) && st.tokens == 28,
                     "stats: %ld passes, %ld input, %ld computed, %ld completion tokens", st.passes,
                     st.input_tokens, st.computed_tokens, st.tokens);
        ap_msg_t msg = {.type = AP_MSG_SCORES, .u.scores = s};
        AP_CHECK(ap_msg_validate(&msg, NULL) == 0, "%s: not valid on the wire: %s", name,
                 ap_errmsg());
        ap_scores_destroy(&s);
    }
    ap_teacher_scorer_destroy(&alone);
    AP_CHECK(alone == NULL, "destroy NULLs");
    /* shared prefixes: a second group with the same prompt (one prefill for both), and a group
     * whose privileged contexts are all the same (the self-teacher's usual case) */
    {
        ap_group_t *twin = s_group(&r, 45);
        memcpy(twin->prompt, g->prompt, (size_t)g->n_prompt * sizeof *g->prompt);
        int len[5] = {1, 7, 3, 12, 5}, ctx[5] = {0, 9, 9, 0, 9};
        ap_group_t *same = ap_group_new(5, 6, len, ctx);
        same->id = 46;
        memcpy(same->prompt, g->prompt, 6 * sizeof *g->prompt);
        memcpy(same->tokens, g->tokens, (size_t)g->n_tokens * sizeof *g->tokens);
        for (int i = 0; i < 5; i++)
            for (int t = 0; t < ctx[i]; t++)
                same->ctx_tokens[same->ctx_offset[i] + t] = t == 0 ? 1 : 3 + (t * 7) % (V - 3);
        const ap_group_t *gs[3] = {g, twin, same};
        const ap_teacher_params_t *ps[3] = {&cases[0].p, &cases[2].p, &cases[3].p};
        ap_scores_t *out[3] = {0};
        ap_teacher_score_stats_t st = {0};
        AP_CHECK(ap_teacher_score_many(shared, 3, gs, ps, ver, 4096, out, &st) == 0, "%s",
                 ap_errmsg());
        const char *names[3] = {"shared prompt: group 1", "shared prompt: group 2 (full)",
                                "one context for the group"};
        for (int j = 0; j < 3 && out[j]; j++) {
            s_report(names[j], s_compare(m, gs[j], ps[j], out[j]), out[j], ps[j]);
            ap_scores_destroy(&out[j]);
        }
        /* the prompt once for 10 trajectories: 6 + 2 x 23; the context once for 3: 9 + 6 + 2 + 4 */
        AP_CHECK(st.computed_tokens == 6 + 2 * 23 + 9 + 12 && st.passes == 1,
                 "shared prefixes: %ld positions computed, %ld passes", st.computed_tokens, st.passes);
        ap_group_destroy(&same), ap_group_destroy(&twin);
    }
    /* several groups and kinds in one call: each as if alone */
    ap_group_t *g2 = s_group(&r, 43), *g3 = s_group(&r, 44);
    const ap_group_t *gs[3] = {g, g2, g3};
    const ap_teacher_params_t *ps[3] = {&cases[0].p, &cases[3].p, &cases[5].p};
    ap_scores_t *out[3] = {0};
    ap_teacher_score_stats_t st = {0};
    int rc3 = ap_teacher_score_many(shared, 3, gs, ps, ver, 64, out, &st);
    AP_CHECK(rc3 == 0, "%s", ap_errmsg());
    for (int j = 0; j < 3 && rc3 == 0; j++) {
        char name[64];
        snprintf(name, sizeof name, "3 groups in one call: group %d", j);
        s_report(name, s_compare(m, gs[j], ps[j], out[j]), out[j], ps[j]);
        ap_scores_destroy(&out[j]);
    }
    printf("3 groups: %ld trajectories scored, %ld skipped (h = 0), %ld passes, %.0f%% of the input "
           "positions shared\n",
           st.sequences, st.skipped, st.passes,
           100.0 * (1 - (double)st.computed_tokens / (double)AP_MAX(1, st.input_tokens)));
    AP_CHECK(st.skipped == 2 && st.sequences == 13, "stats: %ld skipped %ld scored", st.skipped,
             st.sequences);
    /* too long for the model: not present, counted */
    ap_model_t *small = s_model(11, 16);
    ap_teacher_score_stats_t st2 = {0};
    const ap_group_t *one[1] = {g};
    const ap_teacher_params_t *pe[1] = {&cases[0].p};
    ap_scores_t *s = NULL;
    ap_teacher_scorer_t *small_sc = ap_teacher_scorer_new(small, 1);
    AP_CHECK(ap_teacher_score_many(small_sc, 1, one, pe, ver, 4096, &s, &st2) == 0, "%s", ap_errmsg());
    ap_teacher_scorer_destroy(&small_sc);
    if (s) {
        s_report("max_positions 16 (one too long)", s_compare(small, g, &cases[0].p, s), s,
                 &cases[0].p);
        AP_CHECK(st2.too_long == 1 && s->present[3] == 0, "too long: %ld", st2.too_long);
        ap_scores_destroy(&s);
    }
    /* a forward that fails (token outside the model's V) is an error, not a crash */
    g2->tokens[0] = V + 5;
    const ap_group_t *bad[1] = {g2};
    AP_CHECK(ap_teacher_score_many(shared, 1, bad, pe, ver, 4096, &s, NULL) < 0 && !s,
             "a token outside V was scored");
    printf("token outside V refused: %s\n", ap_errmsg());
    ap_teacher_scorer_destroy(&shared);
    ap_model_destroy(&small);
    ap_group_destroy(&g3), ap_group_destroy(&g2), ap_group_destroy(&g);
    ap_model_destroy(&m);
}

static void test_simulate(void) {
    ap_rng_t r;
    ap_rng_seed(&r, 6, 0);
    ap_group_t *g = s_group(&r, 9);
    ap_teacher_params_t ps[3] = {{AP_TEACHER_EXTERNAL, 16, 0, 1.0f, 1.0f},
                                 {AP_TEACHER_SELF, 300, 1, 2.0f, 1.0f},
                                 {AP_TEACHER_REFERENCE, 0, 0, 1.0f, 1.0f}};
    int Vs[3] = {32000, 300, 32000};
    for (int c = 0; c < 3; c++) {
        ap_scores_t *s = ap_teacher_simulate(g, &ps[c], Vs[c], (ap_version_t){0, 0}, &r);
        ap_msg_t msg = {.type = AP_MSG_SCORES, .u.scores = s};
        ap_msg_limits_t lim;
        ap_msg_limits_default(&lim);
        lim.vocab_size = Vs[c];
        int valid = ap_msg_validate(&msg, &lim) == 0 && ap_msg_scores_match(s, g) == 0;
        int distinct = 1, desc = 1, mass = 1, absent = 1;
        for (int i = 0; i < g->G; i++) {
            int want = ps[c].kind != AP_TEACHER_SELF || ap_group_has_ctx(g, i);
            absent &= s->present[i] == want;
        }
        for (int t = 0; t < s->n_tokens && s->K > 0; t++) {
            const float *lp = s->logprobs + (size_t)t * s->K;
            double sum = 0;
            for (int k = 0; k < s->K; k++) {
                sum += exp(lp[k]);
                if (!s->full && k > 0) desc &= lp[k] <= lp[k - 1];
                if (s->ids)
                    for (int j = 0; j < k; j++)
                        distinct &= s->ids[(size_t)t * s->K + j] != s->ids[(size_t)t * s->K + k];
            }
            int present = 1;
            for (int i = 0; i < g->G; i++)
                if (t >= g->offset[i] && t < g->offset[i + 1]) present = s->present[i];
            mass &= present ? (s->full ? fabs(sum - 1) < 1e-3 : sum < 1) : sum == s->K;
        }
        printf("simulate %-9s V %5d: valid %d distinct %d descending %d mass %d presence %d\n",
               ap_teacher_kind_name(ps[c].kind), Vs[c], valid, distinct, desc, mass, absent);
        AP_CHECK(valid && distinct && desc && mass && absent, "simulated scores (%s): %s",
                 ap_teacher_kind_name(ps[c].kind), valid ? "" : ap_errmsg());
        ap_scores_destroy(&s);
    }
    ap_group_destroy(&g);
}

/* A model directory: weights + a vocabulary of `chars`. */
static void s_model_dir(const char *dir, const char *chars, int model_V) {
    ap_tokenizer_builder_t *b = ap_tokenizer_builder_new();
    ap_tokenizer_builder_add(b, chars, "test");
    ap_tokenizer_t *tok = ap_tokenizer_builder_build(&b);
    AP_ASSERT(ap_tokenizer_save_dir(tok, dir) == 0);
    ap_model_config_t c;
    ap_model_config_defaults(&c);
    c.vocab_size = model_V ? model_V : ap_tokenizer_vocab_size(tok);
    c.hidden_size = 16, c.intermediate_size = 32, c.num_layers = 1, c.num_heads = 2;
    c.num_kv_heads = 2, c.max_positions = 32;
    ap_model_t *m = ap_model_new(&c, 1);
    AP_ASSERT(m && ap_model_save(m, dir) == 0);
    ap_model_destroy(&m);
    ap_tokenizer_destroy(&tok);
}

static void test_vocab(void) {
    const char *tmp = ap_test_tmpdir("teacher");
    char student[600], same[600], other[600], wrongV[600];
    snprintf(student, sizeof student, "%s/student", tmp);
    snprintf(same, sizeof same, "%s/teacher-same", tmp);
    snprintf(other, sizeof other, "%s/teacher-other", tmp);
    snprintf(wrongV, sizeof wrongV, "%s/teacher-wrong-v", tmp);
    s_model_dir(student, "0123456789+=", 0);
    s_model_dir(same, "0123456789+=", 0);
    s_model_dir(other, "0123456789+-", 0);
    s_model_dir(wrongV, "0123456789+=", 40);
    int Vs = 0;
    uint64_t h = 0;
    AP_CHECK(ap_teacher_check_vocab(same, student, 15, &Vs, &h) == 0 && Vs == 15 && h != 0,
             "same vocabulary refused: %s", ap_errmsg());
    AP_CHECK(ap_teacher_check_vocab(other, student, 15, NULL, NULL) < 0, "mismatch accepted");
    printf("mismatched tokenizer refused: %s\n", ap_errmsg());
    AP_CHECK(strstr(ap_errmsg(), "tokenizer") != NULL, "message names the tokenizer");
    AP_CHECK(ap_teacher_check_vocab(wrongV, student, 40, NULL, NULL) < 0, "model V 40 accepted");
    printf("model/vocabulary size refused: %s\n", ap_errmsg());
    /* the command refuses to start */
    const char *bin = getenv("AP_BIN");
    if (!bin) {
        printf("AP_BIN unset: command-line refusal not tested\n");
        return;
    }
    ap_config_t *cfg = ap_config_new();
    free(cfg->run.dir), free(cfg->run.name), free(cfg->model.student), free(cfg->model.teacher);
    cfg->run.dir = ap_strdup(tmp);
    cfg->run.name = ap_strdup("run");
    cfg->model.student = ap_strdup(student);
    cfg->model.teacher = ap_strdup(other);
    cfg->objective.gkd.c.enabled = 1;
    char *dir = NULL;
    AP_CHECK(ap_rundir_create(cfg, &dir) == 0, "%s", ap_errmsg());
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "'%s' teacher --run '%s' --kind external --id 0 2> '%s/refusal.txt'",
             bin, dir, tmp);
    int st = system(cmd);
    char path[700], *text = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/refusal.txt", tmp);
    ap_file_read(path, &text, &len);
    printf("apprentice teacher with a mismatched tokenizer: exit %d, stderr: %s", WEXITSTATUS(st),
           text ? text : "(none)\n");
    AP_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "exit status %d", st);
    AP_CHECK(text && strstr(text, "refusing to start") && strstr(text, "tokenizer"),
             "refusal message");
    free(text);
    free(dir);
    ap_config_destroy(&cfg);
}

int main(void) {
    ap_log_set_role("test_teacher", 0);
    test_scoring();
    test_simulate();
    test_vocab();
    return ap_test_result();
}
