/* test_sft.c: supervised training (tasks/sft.h) on a tiny task and a tiny model:
 *   - the loss falls over a short run;
 *   - a run interrupted after its checkpoint and restarted continues bit-exactly: the same loss
 *     sequence and the same final weights as an uninterrupted run, with privileged prompts
 *     (rng coin flips) and with teacher-sampled completions (rng sampling) in the mix;
 *   - teacher and student made from one sft.vocab share vocab.json (same hash), and a
 *     vocabulary mismatch is refused (sft.vocab that does not serve the task, a teacher with
 *     another vocabulary, an sft.out holding another vocabulary);
 *   - bad keys and missing directories give errors naming them.
 * Everything runs in tmp-sft/ under the build directory; each run takes well under a second. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/config.h"
#include "tasks/sft.h"
#include "test.h"

static const char *s_dir;

/* A config for the tiny task: 1-digit addition (100 prompts, 10 held out), a 1-layer model. */
static ap_config_t *s_config(const char *name, const char *const *extra, int nextra) {
    char *sets[64];
    int n = 0;
    sets[n++] = ap_sprintf("run.dir=%s/runs", s_dir);
    sets[n++] = ap_sprintf("run.name=%s", name);
    sets[n++] = ap_sprintf("sft.out=%s/models/%s", s_dir, name);
    const char *base[] = {
        "task.kind=addition",     "task.min_digits=1",         "task.max_digits=1",
        "task.heldout_size=10",   "sampling.max_new_tokens=4", "sampling.temperature=1",
        "optimizer.lr=3e-3",      "optimizer.warmup_steps=5",  "sft.batch=16",
        "sft.steps=12",           "sft.eval_every=0",          "sft.checkpoint_every=4",
        "sft.keep_checkpoints=0", "sft.hidden_size=32",        "sft.intermediate_size=64",
        "sft.num_layers=1",       "sft.num_heads=2",           "sft.num_kv_heads=1",
        "sft.max_positions=32"};
    for (size_t i = 0; i < AP_COUNT(base); i++)
        sets[n++] = ap_strdup(base[i]);
    for (int i = 0; i < nextra; i++)
        sets[n++] = ap_strdup(extra[i]);
    ap_config_t *c = ap_config_load(NULL, (const char *const *)sets, n);
    if (!c) fprintf(stderr, "config: %s\n", ap_errmsg());
    for (int i = 0; i < n; i++)
        free(sets[i]);
    return c;
}

/* The "loss/sft" values of a run's metrics.jsonl, in file order, into loss[] (step[] their
 * steps); returns the count. */
static int s_losses(const char *name, double *loss, long *step, int cap) {
    char *path = ap_sprintf("%s/runs/%s/metrics.jsonl", s_dir, name), *text = NULL;
    int n = 0;
    if (ap_file_read(path, &text, NULL) == 0) {
        for (char *line = strtok(text, "\n"); line && n < cap; line = strtok(NULL, "\n")) {
            json_error_t e;
            json_t *o = json_loads(line, 0, &e);
            json_t *v = o ? json_object_get(json_object_get(o, "values"), "loss/sft") : NULL;
            if (v) {
                loss[n] = json_number_value(v);
                step[n++] = (long)json_integer_value(json_object_get(o, "step"));
            }
            json_decref(o);
        }
    }
    AP_CHECK(text != NULL, "cannot read %s", path);
    free(text);
    free(path);
    return n;
}

static void test_loss_falls(void) {
    const char *extra[] = {"sft.steps=80", "sft.batch=32", "sft.checkpoint_every=0",
                           "sft.eval_every=40"};
    ap_config_t *c = s_config("falls", extra, AP_COUNT(extra));
    ap_sft_t *s = ap_sft_new(c, AP_SFT_QUIET);
    AP_CHECK(s != NULL, "%s", ap_errmsg());
    if (s) AP_CHECK(ap_sft_run(s) == 0, "%s", ap_errmsg());
    ap_sft_destroy(&s);
    ap_config_destroy(&c);
    double loss[200];
    long step[200];
    int n = s_losses("falls", loss, step, 200);
    AP_CHECK(n == 80, "%d loss records, want 80", n);
    if (n < 80) return;
    double first = 0, last = 0;
    for (int i = 0; i < 5; i++)
        first += loss[i] / 5, last += loss[n - 5 + i] / 5;
    printf("loss falls: first 5 steps %.4f, last 5 steps %.4f\n", first, last);
    AP_CHECK(last < 0.6 * first, "loss went from %.4f to %.4f (want < 60%%)", first, last);
    /* the final model is a complete model directory */
    const char *files[] = {"config.json", "model.safetensors", "vocab.json", "sft.json"};
    for (size_t i = 0; i < AP_COUNT(files); i++) {
        char *p = ap_sprintf("%s/models/falls/%s", s_dir, files[i]);
        AP_CHECK(ap_path_exists(p), "missing %s", p);
        free(p);
    }
}

/* Uninterrupted run vs a run stopped at step 10 (last checkpoint 8) and restarted. */
static void s_resume_case(const char *tag, const char *const *extra, int nextra) {
    char a[64], b[64];
    snprintf(a, sizeof a, "%s-a", tag);
    snprintf(b, sizeof b, "%s-b", tag);
    ap_config_t *ca = s_config(a, extra, nextra);
    ap_sft_t *s = ca ? ap_sft_new(ca, AP_SFT_QUIET) : NULL;
    AP_CHECK(s != NULL, "%s: %s", tag, ap_errmsg());
    if (!s) {
        ap_config_destroy(&ca);
        return;
    }
    AP_CHECK(ap_sft_train(s, 12) == 0, "%s", ap_errmsg());
    uint64_t sum_a = ap_model_checksum(ap_sft_model(s));
    ap_sft_destroy(&s);
    ap_config_destroy(&ca);

    ap_config_t *cb = s_config(b, extra, nextra);
    s = ap_sft_new(cb, AP_SFT_QUIET);
    AP_CHECK(s && ap_sft_resumed_from(s) == -1, "fresh run");
    AP_CHECK(s && ap_sft_train(s, 10) == 0, "%s", ap_errmsg());
    ap_sft_destroy(&s); /* "crash" two steps after the step-8 checkpoint */
    s = ap_sft_new(cb, AP_SFT_QUIET);
    AP_CHECK(s != NULL, "%s: resume: %s", tag, ap_errmsg());
    if (!s) {
        ap_config_destroy(&cb);
        return;
    }
    AP_CHECK(ap_sft_resumed_from(s) == 8, "%s: resumed from %ld, want 8", tag,
             ap_sft_resumed_from(s));
    AP_CHECK(ap_sft_train(s, 12) == 0, "%s", ap_errmsg());
    uint64_t sum_b = ap_model_checksum(ap_sft_model(s));
    ap_sft_destroy(&s);
    ap_config_destroy(&cb);

    double la[64], lb[64];
    long sa[64], sb[64];
    int na = s_losses(a, la, sa, 64), nb = s_losses(b, lb, sb, 64);
    AP_CHECK(na == 12 && nb == 14, "%s: %d and %d loss records (want 12, 14)", tag, na, nb);
    if (na != 12 || nb != 14) return;
    /* b: steps 1..10, then 9..12 after the resume */
    int same = 1;
    double worst = 0;
    for (int i = 0; i < 10; i++)
        same &= la[i] == lb[i], worst = fmax(worst, fabs(la[i] - lb[i]));
    for (int i = 0; i < 4; i++) {
        AP_CHECK(sb[10 + i] == 9 + i, "%s: record %d has step %ld", tag, 10 + i, sb[10 + i]);
        same &= la[8 + i] == lb[10 + i];
        worst = fmax(worst, fabs(la[8 + i] - lb[10 + i]));
    }
    printf("resume %-8s: losses %.6f .. %.6f, largest difference after resume %.3g, weights %s\n",
           tag, la[0], la[11], worst, sum_a == sum_b ? "identical" : "DIFFER");
    AP_CHECK(same, "%s: the resumed loss sequence differs (largest difference %.3g)", tag, worst);
    AP_CHECK(sum_a == sum_b, "%s: final weights differ (%016llx vs %016llx)", tag,
             (unsigned long long)sum_a, (unsigned long long)sum_b);
    AP_CHECK(la[11] < la[0], "%s: loss did not fall (%.4f -> %.4f)", tag, la[0], la[11]);
}

static void test_resume(void) {
    const char *plain[] = {"sft.privileged_fraction=0"};
    s_resume_case("plain", plain, AP_COUNT(plain));
    const char *priv[] = {"sft.privileged_fraction=0.5"};
    s_resume_case("priv", priv, AP_COUNT(priv));
    /* sequence-level KD: the teacher is the model of test_loss_falls */
    char *teacher = ap_sprintf("sft.teacher=%s/models/falls", s_dir);
    const char *kd[] = {"sft.data=teacher_samples", teacher, "sft.privileged_fraction=0.25"};
    s_resume_case("kd", kd, AP_COUNT(kd));
    free(teacher);
}

static void test_shared_vocab(void) {
    char *vocab = ap_sprintf("sft.vocab=%s/vocab-shared", s_dir);
    const char *t_extra[] = {vocab, "sft.steps=2", "sft.hidden_size=48", "sft.num_heads=4",
                             "sft.num_kv_heads=4"};
    const char *s_extra[] = {vocab, "sft.steps=2"};
    ap_config_t *ct = s_config("vocab-teacher", t_extra, AP_COUNT(t_extra));
    ap_config_t *cs = s_config("vocab-student", s_extra, AP_COUNT(s_extra));
    ap_sft_t *t = ap_sft_new(ct, AP_SFT_QUIET), *s = ap_sft_new(cs, AP_SFT_QUIET);
    AP_CHECK(t && s, "%s", ap_errmsg());
    if (t) AP_CHECK(ap_sft_run(t) == 0, "%s", ap_errmsg());
    if (s) AP_CHECK(ap_sft_run(s) == 0, "%s", ap_errmsg());
    ap_sft_destroy(&t);
    ap_sft_destroy(&s);
    ap_config_destroy(&ct);
    ap_config_destroy(&cs);
    char *pt = ap_sprintf("%s/models/vocab-teacher", s_dir);
    char *ps = ap_sprintf("%s/models/vocab-student", s_dir);
    char *pv = ap_sprintf("%s/vocab-shared", s_dir);
    ap_tokenizer_t *tt = ap_tokenizer_load_dir(pt), *ts = ap_tokenizer_load_dir(ps),
                   *tv = ap_tokenizer_load_dir(pv);
    AP_CHECK(tt && ts && tv, "vocab.json missing: %s", ap_errmsg());
    if (tt && ts && tv) {
        char h1[17], h2[17];
        printf("shared vocabulary: teacher %s, student %s, V %d\n", ap_tokenizer_hash_hex(tt, h1),
               ap_tokenizer_hash_hex(ts, h2), ap_tokenizer_vocab_size(tt));
        AP_CHECK(ap_tokenizer_check_same(tt, "teacher", ts, "student") == 0, "%s", ap_errmsg());
        AP_CHECK(ap_tokenizer_check_same(tt, "teacher", tv, "sft.vocab") == 0, "%s", ap_errmsg());
    }
    ap_tokenizer_destroy(&tt), ap_tokenizer_destroy(&ts), ap_tokenizer_destroy(&tv);

    /* a task the shared vocabulary cannot serve is refused, naming the character */
    const char *r_extra[] = {vocab, "task.kind=reverse", "task.alphabet=xyz"};
    ap_config_t *cr = s_config("vocab-reverse", r_extra, AP_COUNT(r_extra));
    ap_sft_t *r = ap_sft_new(cr, AP_SFT_QUIET);
    AP_CHECK(!r && strstr(ap_errmsg(), "sft.vocab") && strstr(ap_errmsg(), "lacks"),
             "sft.vocab not serving the task: '%s'", ap_errmsg());
    printf("refused: %s\n", ap_errmsg());
    ap_sft_destroy(&r);
    ap_config_destroy(&cr);

    /* a teacher with another vocabulary is refused (teacher_samples) */
    const char *o_extra[] = {"task.kind=reverse", "task.alphabet=xyz", "task.heldout_size=4",
                             "task.min_length=1", "task.max_length=3", "sft.steps=1"};
    ap_config_t *co = s_config("vocab-other", o_extra, AP_COUNT(o_extra));
    ap_sft_t *o = ap_sft_new(co, AP_SFT_QUIET);
    AP_CHECK(o && ap_sft_run(o) == 0, "%s", ap_errmsg());
    ap_sft_destroy(&o);
    ap_config_destroy(&co);
    char *other = ap_sprintf("sft.teacher=%s/models/vocab-other", s_dir);
    const char *k_extra[] = {"sft.data=teacher_samples", other};
    ap_config_t *ck = s_config("vocab-kd", k_extra, AP_COUNT(k_extra));
    ap_sft_t *k = ap_sft_new(ck, AP_SFT_QUIET);
    AP_CHECK(!k && strstr(ap_errmsg(), "tokenizer mismatch"), "teacher vocabulary: '%s'",
             ap_errmsg());
    printf("refused: %s\n", ap_errmsg());
    ap_sft_destroy(&k);
    ap_config_destroy(&ck);

    /* sft.out already holding another model's vocabulary is not overwritten */
    char *out = ap_sprintf("sft.out=%s/models/vocab-other", s_dir);
    const char *w_extra[] = {out};
    ap_config_t *cw = s_config("vocab-overwrite", w_extra, AP_COUNT(w_extra));
    ap_sft_t *w = ap_sft_new(cw, AP_SFT_QUIET);
    AP_CHECK(!w && strstr(ap_errmsg(), "sft.out"), "sft.out with another vocabulary: '%s'",
             ap_errmsg());
    printf("refused: %s\n", ap_errmsg());
    ap_sft_destroy(&w);
    ap_config_destroy(&cw);
    free(out), free(other), free(vocab), free(pt), free(ps), free(pv);
}

static void test_bad_inputs(void) {
    struct {
        const char *set;  /* one override that makes the run invalid */
        const char *want; /* expected in the message */
    } cases[] = {
        {"sft.out=", "sft.out"},
        {"sft.init=/nonexistent/model", "sft.init: /nonexistent/model: no such model directory"},
        {"sft.max_positions=12", "sft.max_positions"},
        {"sft.data=dataset", "task.kind: dataset"},
        {"sft.data=teacher_samples", "sft.teacher"},
        {"sft.hidden_size=30", "sft"}, /* D not divisible by H */
        {"task.kind=dataset", "task.dataset"},
    };
    for (size_t i = 0; i < AP_COUNT(cases); i++) {
        const char *extra[] = {cases[i].set};
        ap_config_t *c = s_config("bad", extra, 1);
        ap_sft_t *s = c ? ap_sft_new(c, AP_SFT_QUIET) : NULL;
        AP_CHECK(!s && strstr(ap_errmsg(), cases[i].want), "%s: got '%s', want it to name %s",
                 cases[i].set, s ? "(accepted)" : ap_errmsg(), cases[i].want);
        printf("bad input %-32s -> %s\n", cases[i].set, ap_errmsg());
        ap_sft_destroy(&s);
        ap_config_destroy(&c);
    }
    /* a checkpoint of another task is not resumed silently */
    const char *extra[] = {"task.max_digits=2", "task.heldout_size=10"};
    ap_config_t *c = s_config("plain-b", extra, AP_COUNT(extra));
    ap_sft_t *s = c ? ap_sft_new(c, AP_SFT_QUIET) : NULL;
    AP_CHECK(!s && strstr(ap_errmsg(), "task"), "resume with another task: '%s'",
             s ? "(accepted)" : ap_errmsg());
    printf("bad resume -> %s\n", ap_errmsg());
    ap_sft_destroy(&s);
    ap_config_destroy(&c);
}

int main(void) {
    s_dir = ap_strdup(ap_test_tmpdir("sft"));
    ap_log_set_level(AP_LOG_WARN);
    test_loss_falls();
    test_resume();
    test_shared_vocab();
    test_bad_inputs();
    free((void *)s_dir);
    return ap_test_result();
}
