/* test_eval.c: held-out evaluation (include/apprentice/eval.h) and `apprentice eval`.
 *
 * A model that is right by construction: a tiny network is trained inside the test (tasks/sft.h)
 * on a copy task (prompt "p7q=", answer "7": the middle character of 250 distinct prompts, 20 of
 * them held out) until it copies every training prompt; the evaluator must then report exactly
 * 1.0 on the held-out prompts. The same model judged against a shifted dataset (same prompts,
 * answer (d+1) mod 10) is wrong by construction and must score exactly 0.0. Also: the pass@k
 * estimator against hand-computed values, pass@k of both models, --privileged rendering,
 * limits, the per-example callback, the JSON line of the CLI, and its refusals of bad input. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "apprentice/base.h"
#include "apprentice/config.h"
#include "apprentice/eval.h"
#include "tasks/sft.h"
#include "test.h"

static const char *s_dir;

/* Write the copy dataset (shift 0) or the shifted one (shift 1). */
static char *s_write_dataset(const char *name, int shift) {
    char *path = ap_sprintf("%s/%s.jsonl", s_dir, name);
    FILE *f = fopen(path, "w");
    AP_ASSERT(f);
    const char *letters = "pqrst";
    for (int a = 0; a < 5; a++)
        for (int d = 0; d < 10; d++)
            for (int b = 0; b < 5; b++)
                fprintf(f, "{\"prompt\": \"%c%d%c=\", \"answer\": \"%d\"}\n", letters[a], d,
                        letters[b], (d + shift) % 10);
    fclose(f);
    return path;
}

static ap_config_t *s_config(const char *dataset, const char *priv_template) {
    char *sets[32];
    int n = 0;
    sets[n++] = ap_sprintf("run.dir=%s/runs", s_dir);
    sets[n++] = ap_strdup("run.name=copy");
    sets[n++] = ap_sprintf("sft.out=%s/models/copy", s_dir);
    sets[n++] = ap_sprintf("task.dataset=%s", dataset);
    sets[n++] = ap_sprintf("task.privileged_template=\"%s\"", priv_template);
    const char *base[] = {"task.kind=dataset",
                          "task.heldout_size=20",
                          "sampling.max_new_tokens=4",
                          "optimizer.lr=1e-2",
                          "optimizer.warmup_steps=10",
                          "optimizer.schedule=constant",
                          "sft.data=dataset",
                          "sft.batch=64",
                          "sft.steps=150",
                          "sft.eval_every=0",
                          "sft.checkpoint_every=0",
                          "sft.hidden_size=32",
                          "sft.intermediate_size=64",
                          "sft.num_layers=2",
                          "sft.num_heads=2",
                          "sft.num_kv_heads=2",
                          "sft.max_positions=32"};
    for (size_t i = 0; i < AP_COUNT(base); i++)
        sets[n++] = ap_strdup(base[i]);
    ap_config_t *c = ap_config_load(NULL, (const char *const *)sets, n);
    AP_CHECK(c != NULL, "config: %s", ap_errmsg());
    for (int i = 0; i < n; i++)
        free(sets[i]);
    return c;
}

static void test_pass_at_k(void) {
    struct {
        int n, c, k;
        double want;
    } cases[] = {
        {4, 1, 1, 0.25},
        {5, 2, 2, 1 - 3.0 / 10}, /* 1 - C(3,2)/C(5,2) */
        {3, 0, 2, 0.0},
        {4, 3, 2, 1.0}, /* n - c < k */
        {10, 3, 4, 1 - 35.0 / 210},
        {8, 8, 8, 1.0}, /* C(7,4)/C(10,4) */
    };
    for (size_t i = 0; i < AP_COUNT(cases); i++)
        AP_CHECK_NEAR(ap_eval_pass_at_k(cases[i].n, cases[i].c, cases[i].k), cases[i].want, 1e-12,
                      0, "pass@%d with n=%d c=%d", cases[i].k, cases[i].n, cases[i].c);
}

typedef struct {
    int calls, correct;
} s_count_t;

static void s_count(void *user, int i, const ap_example_t *ex, const char *completion,
                    const ap_verdict_t *v) {
    (void)i, (void)ex, (void)completion;
    s_count_t *c = user;
    c->calls++;
    c->correct += v->correct;
}

static void s_eval(const char *label, const ap_task_t *task, const ap_tokenizer_t *tok,
                   const ap_model_t *m, const ap_eval_opts_t *o, ap_eval_result_t *r) {
    ap_eval_t *e = ap_eval_new(task, tok, o);
    AP_CHECK(e != NULL, "%s: %s", label, ap_errmsg());
    memset(r, 0, sizeof *r);
    if (!e) return;
    s_count_t cnt = {0};
    ap_eval_set_callback(e, s_count, &cnt);
    AP_CHECK(ap_eval_run(e, m, r) == 0, "%s: %s", label, ap_errmsg());
    AP_CHECK(cnt.calls == r->n && cnt.correct == r->correct, "%s: callback saw %d/%d, result %d/%d",
             label, cnt.correct, cnt.calls, r->correct, r->n);
    printf("%-28s accuracy %.3f (%d/%d)  pass@%d %.3f  privileged %d  %.0f tok/s\n", label,
           r->accuracy, r->correct, r->n, r->pass_k, r->pass_at_k, r->n_privileged,
           r->tokens_per_s);
    ap_eval_destroy(&e);
}

static int s_run(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    AP_ASSERT(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(const char *bin, const char *model, const char *good_data) {
    char *cfg = ap_sprintf("%s/eval.yaml", s_dir);
    char *yaml = ap_sprintf("task: {kind: dataset, dataset: %s, heldout_size: 20}\n"
                            "sampling: {max_new_tokens: 4, temperature: 1.0}\n",
                            good_data);
    AP_ASSERT(ap_file_write_atomic(cfg, yaml, strlen(yaml)) == 0);
    char out[4096];
    char *cmd = ap_sprintf("'%s' eval --model '%s' --config '%s' --pass-k 2 --samples 4 2>&1", bin,
                           model, cfg);
    int rc = s_run(cmd, out, sizeof out);
    printf("cli: %s", out);
    AP_CHECK(rc == 0, "eval exit %d: %s", rc, out);
    json_error_t jerr;
    json_t *o = json_loads(out, JSON_DISABLE_EOF_CHECK, &jerr);
    AP_CHECK(o != NULL, "eval printed no JSON: %s", out);
    if (o) {
        AP_CHECK(json_number_value(json_object_get(o, "accuracy")) == 1.0, "cli accuracy");
        AP_CHECK(json_integer_value(json_object_get(o, "n")) == 20, "cli n");
        AP_CHECK(json_is_false(json_object_get(o, "privileged")), "cli privileged");
        AP_CHECK(json_object_get(o, "pass_at_k") && json_object_get(o, "tokens_per_s") &&
                     json_is_string(json_object_get(o, "model")),
                 "cli fields");
        json_decref(o);
    }
    free(cmd);

    /* bad inputs: each exits non-zero with a message naming the culprit */
    char *bad_yaml = ap_sprintf("%s/bad.yaml", s_dir);
    const char *bad_text = "task: {kind: dataset, dataset: x.jsonl}\nsampling: {temprature: 1}\n";
    AP_ASSERT(ap_file_write_atomic(bad_yaml, bad_text, strlen(bad_text)) == 0);
    struct {
        char *cmd;
        int want_rc;
        const char *want;
    } cases[] = {
        {ap_sprintf("'%s' eval --model '%s/nowhere' --config '%s' 2>&1", bin, s_dir, cfg), 1,
         "nowhere: no such directory"},
        {ap_sprintf("'%s' eval --model '%s' --config '%s' 2>&1", bin, model, bad_yaml), 1,
         "temprature"},
        {ap_sprintf("'%s' eval --model '%s' --config '%s/missing.yaml' 2>&1", bin, model, s_dir), 1,
         "missing.yaml"},
        {ap_sprintf("'%s' eval --model '%s' 2>&1", bin, model), 2, "--config"},
        {ap_sprintf("'%s' eval --model '%s' --config '%s' --pass-k x 2>&1", bin, model, cfg), 2,
         "--pass-k"},
        {ap_sprintf("'%s' eval --model '%s' --config '%s' --pass-k 4 --samples 2 2>&1", bin, model,
                    cfg),
         1, "samples"},
        {ap_sprintf("'%s' eval --model '%s' --config '%s' --set task.heldout_size=0 2>&1", bin,
                    model, cfg),
         1, "held-out"},
    };
    for (size_t i = 0; i < AP_COUNT(cases); i++) {
        rc = s_run(cases[i].cmd, out, sizeof out);
        out[strcspn(out, "\n")] = 0;
        printf("bad input -> exit %d: %s\n", rc, out);
        AP_CHECK(rc == cases[i].want_rc && strstr(out, cases[i].want),
                 "%s\n    exit %d, output '%s' (want exit %d naming '%s')", cases[i].cmd, rc, out,
                 cases[i].want_rc, cases[i].want);
        free(cases[i].cmd);
    }
    free(bad_yaml);
    free(cfg);
    free(yaml);
}

int main(void) {
    s_dir = ap_strdup(ap_test_tmpdir("eval"));
    ap_log_set_level(AP_LOG_WARN);
    test_pass_at_k();

    char *good = s_write_dataset("copy", 0), *shifted = s_write_dataset("shifted", 1);
    /* train the copy model */
    ap_config_t *cfg = s_config(good, "answer: {answer} | {prompt}");
    ap_sft_t *s = cfg ? ap_sft_new(cfg, AP_SFT_QUIET) : NULL;
    AP_CHECK(s != NULL, "%s", ap_errmsg());
    if (!s || ap_sft_run(s) < 0) {
        fprintf(stderr, "training failed: %s\n", ap_errmsg());
        return 1;
    }
    ap_model_t *m = ap_sft_model(s);
    const ap_tokenizer_t *tok = ap_sft_tokenizer(s);
    char *model_dir = ap_sprintf("%s/models/copy", s_dir);

    ap_task_t *right = ap_task_new(&cfg->task);
    ap_config_t *cfg_wrong = s_config(shifted, "answer: {answer} | {prompt}");
    ap_task_t *wrong = ap_task_new(&cfg_wrong->task);
    ap_config_t *cfg_noctx = s_config(good, "");
    ap_task_t *noctx = ap_task_new(&cfg_noctx->task);
    AP_CHECK(right && wrong && noctx, "%s", ap_errmsg());
    if (!right || !wrong || !noctx) return ap_test_result();
    AP_CHECK(ap_task_heldout_count(right) == 20 && ap_task_heldout_count(wrong) == 20,
             "held-out sizes");

    ap_eval_opts_t o;
    ap_eval_defaults(&o);
    o.max_new_tokens = 4;
    ap_eval_result_t r;
    s_eval("right by construction", right, tok, m, &o, &r);
    AP_CHECK(r.n == 20 && r.accuracy == 1.0, "accuracy %.4f over %d, want exactly 1", r.accuracy,
             r.n);
    AP_CHECK(r.truncated == 0 && r.mean_length == 2.0, "completion = digit + <eos>: length %.3f",
             r.mean_length);
    s_eval("wrong by construction", wrong, tok, m, &o, &r);
    AP_CHECK(r.n == 20 && r.accuracy == 0.0, "accuracy %.4f over %d, want exactly 0", r.accuracy,
             r.n);

    o.pass_k = 2, o.samples = 8, o.sampling.temperature = 1.0f;
    s_eval("right, pass@2 of 8 samples", right, tok, m, &o, &r);
    AP_CHECK(r.pass_at_k >= 0.95 && r.sample_accuracy >= 0.8, "pass@2 %.3f, sample acc %.3f",
             r.pass_at_k, r.sample_accuracy);
    AP_CHECK(r.gen_tokens > 20 * 8, "sampled tokens counted: %ld", r.gen_tokens);
    ap_eval_result_t r2;
    s_eval("right, same seed again", right, tok, m, &o, &r2);
    AP_CHECK(r2.pass_at_k == r.pass_at_k && r2.sample_accuracy == r.sample_accuracy,
             "same seed, same numbers");
    s_eval("wrong, pass@2 of 8 samples", wrong, tok, m, &o, &r);
    AP_CHECK(r.pass_at_k <= 0.1, "pass@2 %.3f on the wrong task", r.pass_at_k);

    o.pass_k = 0, o.samples = 0;
    o.privileged = 1;
    s_eval("privileged", right, tok, m, &o, &r);
    AP_CHECK(r.n_privileged == 20, "privileged contexts rendered: %d of 20", r.n_privileged);
    s_eval("privileged, empty template", noctx, tok, m, &o, &r);
    AP_CHECK(r.n_privileged == 0 && r.accuracy == 1.0,
             "empty template falls back to the student prompt: %d contexts, accuracy %.3f",
             r.n_privileged, r.accuracy);
    o.privileged = 0;
    o.limit = 5, o.batch = 2; /* several generation batches */
    s_eval("limit 5, batch 2", right, tok, m, &o, &r);
    AP_CHECK(r.n == 5 && r.accuracy == 1.0, "limit: n %d accuracy %.3f", r.n, r.accuracy);

    /* refusals of the library */
    o.limit = 0, o.pass_k = 3, o.samples = 2;
    AP_CHECK(!ap_eval_new(right, tok, &o) && strstr(ap_errmsg(), "samples"), "samples < k: %s",
             ap_errmsg());
    o.samples = 0, o.sampling.temperature = 0;
    AP_CHECK(!ap_eval_new(right, tok, &o) && strstr(ap_errmsg(), "temperature"),
             "pass@k at temperature 0: %s", ap_errmsg());

    const char *bin = getenv("AP_BIN");
    if (bin && *bin)
        test_cli(bin, model_dir, good);
    else
        AP_CHECK(0, "AP_BIN is not set: the CLI part cannot run");

    ap_task_destroy(&right), ap_task_destroy(&wrong), ap_task_destroy(&noctx);
    ap_config_destroy(&cfg_wrong), ap_config_destroy(&cfg_noctx);
    ap_sft_destroy(&s);
    ap_config_destroy(&cfg);
    free(good), free(shifted), free(model_dir);
    free((void *)s_dir);
    return ap_test_result();
}
