/* eval.c: held-out greedy accuracy and pass@k of a model on a task (include/apprentice/eval.h).
 *
 * The held-out examples are copied and their prompts encoded once, at ap_eval_new. A run walks
 * them in chunks: greedy chunks of `batch` prompts, pass@k chunks of batch / samples prompts
 * each repeated `samples` times (ap_generate prefills identical prompts once). Completions are
 * decoded up to <eos> (specials skipped) and judged with ap_task_verify, as the actor does. */
#include "apprentice/eval.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"

struct ap_eval {
    const ap_task_t *task;     /* borrowed */
    const ap_tokenizer_t *tok; /* borrowed */
    ap_eval_opts_t o;
    int n;                      /* examples */
    ap_example_t *ex;           /* [n] held-out examples (owned copies) */
    int32_t **prompt;           /* [n] <bos> + prompt or privileged context */
    int *prompt_len;            /* [n] */
    int n_privileged;           /* examples whose privileged context rendered */
    int max_prompt;             /* longest prompt */
    const ap_model_t *kv_model; /* the model the cache was made for ... */
    ap_model_config_t kv_cfg;   /* ... and its config (another model may reuse the address) */
    int kv_len;                 /* its positions per slot */
    ap_kv_t *kv;
    ap_eval_example_fn fn;
    void *user;
};

void ap_eval_defaults(ap_eval_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->max_new_tokens = 16;
    ap_sampling_defaults(&o->sampling);
    o->seed = 1;
    o->batch = 256;
}

static int s_validate(const ap_eval_opts_t *o) {
    if (o->limit < 0) return ap_err("eval: limit must not be negative (got %d)", o->limit);
    if (o->max_new_tokens < 1)
        return ap_err("eval: max_new_tokens must be positive (got %d)", o->max_new_tokens);
    if (o->pass_k < 0) return ap_err("eval: pass_k must not be negative (got %d)", o->pass_k);
    if (o->pass_k > 0) {
        int samples = o->samples ? o->samples : o->pass_k;
        if (samples < o->pass_k)
            return ap_err("eval: samples (%d) must be at least pass_k (%d)", samples, o->pass_k);
        if (!(o->sampling.temperature > 0))
            return ap_err("eval: pass@k needs a sampling temperature > 0 (got %g)",
                          (double)o->sampling.temperature);
        if (ap_sampling_validate(&o->sampling) < 0)
            return ap_err("eval: sampling: %s", ap_errmsg());
    }
    if (o->batch < 1) return ap_err("eval: batch must be positive (got %d)", o->batch);
    return 0;
}

ap_eval_t *ap_eval_new(const ap_task_t *task, const ap_tokenizer_t *tok, const ap_eval_opts_t *o) {
    if (s_validate(o) < 0) return NULL;
    int n = ap_task_heldout_count(task);
    if (n == 0) {
        ap_err("eval: the task has no held-out examples (task.heldout_size is 0)");
        return NULL;
    }
    if (o->limit > 0 && o->limit < n) n = o->limit;
    ap_eval_t *e = ap_calloc(1, sizeof *e);
    e->task = task, e->tok = tok, e->o = *o;
    if (e->o.pass_k > 0 && e->o.samples == 0) e->o.samples = e->o.pass_k;
    e->n = n;
    e->ex = ap_calloc((size_t)n, sizeof *e->ex);
    e->prompt = ap_calloc((size_t)n, sizeof *e->prompt);
    e->prompt_len = ap_calloc((size_t)n, sizeof *e->prompt_len);
    for (int i = 0; i < n; i++) {
        ap_task_heldout_get(task, i, &e->ex[i]);
        int h = 0;
        if (o->privileged) {
            h = ap_task_encode_privileged(task, tok, &e->ex[i], NULL, 0, 0, &e->prompt[i],
                                          &e->prompt_len[i]);
            if (h < 0) goto fail;
            e->n_privileged += h;
        }
        if (h == 0) {
            e->prompt[i] = ap_task_encode_prompt(task, tok, &e->ex[i], &e->prompt_len[i]);
            if (!e->prompt[i]) goto fail;
        }
        e->max_prompt = AP_MAX(e->max_prompt, e->prompt_len[i]);
    }
    return e;
fail:
    ap_err("eval: %s", ap_errmsg()); /* the encoder names the example and the character */
    ap_eval_destroy(&e);
    return NULL;
}

void ap_eval_destroy(ap_eval_t **ep) {
    if (!ep || !*ep) return;
    ap_eval_t *e = *ep;
    for (int i = 0; i < e->n; i++) {
        ap_example_clear(&e->ex[i]);
        free(e->prompt[i]);
    }
    free(e->ex);
    free(e->prompt);
    free(e->prompt_len);
    ap_kv_destroy(&e->kv);
    free(e);
    *ep = NULL;
}

int ap_eval_count(const ap_eval_t *e) {
    return e->n;
}

int ap_eval_max_prompt_len(const ap_eval_t *e) {
    return e->max_prompt;
}

void ap_eval_set_callback(ap_eval_t *e, ap_eval_example_fn fn, void *user) {
    e->fn = fn;
    e->user = user;
}

double ap_eval_pass_at_k(int n, int c, int k) {
    AP_ASSERT(0 <= c && c <= n && 1 <= k && k <= n);
    if (n - c < k) return 1.0;
    double miss = 1.0; /* C(n-c, k) / C(n, k) = prod_{i = n-c+1}^{n} (1 - k / i) */
    for (int i = n - c + 1; i <= n; i++)
        miss *= 1.0 - (double)k / i;
    return 1.0 - miss;
}

/* The cache for model m: slots for the largest chunk, positions for the longest prompt plus
 * the completion (capped at the model's limit). */
static int s_cache(ap_eval_t *e, const ap_model_t *m) {
    const ap_model_config_t *c = ap_model_config(m);
    if (c->vocab_size != ap_tokenizer_vocab_size(e->tok))
        return ap_err("eval: the model has %d token ids but the vocabulary %d: they do not belong "
                      "together",
                      c->vocab_size, ap_tokenizer_vocab_size(e->tok));
    if (e->max_prompt >= c->max_positions)
        return ap_err("eval: a held-out prompt has %d tokens: no room for a completion within "
                      "max_position_embeddings %d",
                      e->max_prompt, c->max_positions);
    int len = AP_MIN(c->max_positions, e->max_prompt + e->o.max_new_tokens);
    int seqs = AP_MAX(e->o.batch, e->o.samples);
    if (e->kv && e->kv_model == m && !memcmp(&e->kv_cfg, c, sizeof *c) && e->kv_len == len &&
        ap_kv_max_seqs(e->kv) == seqs)
        return 0;
    ap_kv_destroy(&e->kv);
    e->kv = ap_kv_new(m, seqs, len);
    e->kv_model = m;
    e->kv_cfg = *c;
    e->kv_len = len;
    return 0;
}

/* Decode and judge one completion; *correct gets the verdict. -1 on a decode error. */
static int s_judge(ap_eval_t *e, int i, const ap_completion_t *c, int *correct, int call) {
    char *text = ap_tokenizer_decode(e->tok, c->tokens, c->n, AP_TOK_STOP_EOS);
    if (!text) return ap_err("eval: %s: %s", e->ex[i].id, ap_errmsg());
    ap_verdict_t v;
    ap_task_verify(e->task, &e->ex[i], text, &v);
    *correct = v.correct;
    if (call && e->fn) e->fn(e->user, i, &e->ex[i], text, &v);
    free(text);
    return 0;
}

int ap_eval_run(ap_eval_t *e, const ap_model_t *m, ap_eval_result_t *out) {
    memset(out, 0, sizeof *out);
    out->pass_at_k = out->sample_accuracy = NAN;
    if (s_cache(e, m) < 0) return -1;
    double t0 = ap_now();
    int seqs = ap_kv_max_seqs(e->kv), max_new = e->o.max_new_tokens;
    const int32_t **prompts = ap_malloc((size_t)seqs * sizeof *prompts);
    int *lens = ap_malloc((size_t)seqs * sizeof *lens);
    ap_completion_t *comp = ap_malloc((size_t)seqs * sizeof *comp);
    ap_sampling_t greedy;
    ap_sampling_defaults(&greedy);
    greedy.temperature = 0;
    ap_rng_t rng;
    ap_rng_seed(&rng, e->o.seed, 0);
    int rc = -1;
    long total_len = 0, truncated = 0;

    /* greedy accuracy */
    for (int i0 = 0; i0 < e->n; i0 += e->o.batch) {
        int S = AP_MIN(e->o.batch, e->n - i0);
        for (int s = 0; s < S; s++) {
            prompts[s] = e->prompt[i0 + s];
            lens[s] = e->prompt_len[i0 + s];
            out->prompt_tokens += lens[s];
        }
        if (ap_generate(e->kv, comp, prompts, lens, S, max_new, ap_tokenizer_eos(e->tok), &greedy,
                        &rng) < 0)
            goto done;
        for (int s = 0; s < S; s++) {
            int ok = 0;
            if (s_judge(e, i0 + s, &comp[s], &ok, 1) < 0) goto done;
            out->correct += ok;
            total_len += comp[s].n;
            truncated += comp[s].finish == AP_FINISH_LENGTH;
        }
    }
    out->n = e->n;
    out->accuracy = (double)out->correct / e->n;
    out->mean_length = (double)total_len / e->n;
    out->truncated = (double)truncated / e->n;
    out->n_privileged = e->n_privileged;
    out->gen_tokens = total_len;

    /* pass@k: chunks of whole prompts, each repeated `samples` times */
    if (e->o.pass_k > 0) {
        int k = e->o.pass_k, ns = e->o.samples, per = AP_MAX(1, seqs / ns);
        double sum_pass = 0, sum_acc = 0;
        for (int i0 = 0; i0 < e->n; i0 += per) {
            int P = AP_MIN(per, e->n - i0);
            for (int p = 0; p < P; p++)
                for (int s = 0; s < ns; s++) {
                    prompts[p * ns + s] = e->prompt[i0 + p];
                    lens[p * ns + s] = e->prompt_len[i0 + p];
                }
            for (int p = 0; p < P; p++)
                out->prompt_tokens += e->prompt_len[i0 + p];
            if (ap_generate(e->kv, comp, prompts, lens, P * ns, max_new, ap_tokenizer_eos(e->tok),
                            &e->o.sampling, &rng) < 0)
                goto done;
            for (int p = 0; p < P; p++) {
                int c = 0;
                for (int s = 0; s < ns; s++) {
                    int ok = 0;
                    if (s_judge(e, i0 + p, &comp[p * ns + s], &ok, 0) < 0) goto done;
                    c += ok;
                    out->gen_tokens += comp[p * ns + s].n;
                }
                sum_pass += ap_eval_pass_at_k(ns, c, k);
                sum_acc += (double)c / ns;
            }
        }
        out->pass_k = k;
        out->samples = ns;
        out->pass_at_k = sum_pass / e->n;
        out->sample_accuracy = sum_acc / e->n;
    }
    out->seconds = ap_now() - t0;
    out->tokens_per_s = out->seconds > 0 ? out->gen_tokens / out->seconds : 0;
    rc = 0;
done:
    free(prompts);
    free(lens);
    free(comp);
    return rc;
}

static json_t *s_num(double x) {
    return isfinite(x) ? json_real(x) : json_null();
}

char *ap_eval_result_json(const ap_eval_result_t *r, int privileged) {
    json_t *o = json_object();
    json_object_set_new(o, "accuracy", s_num(r->accuracy));
    json_object_set_new(o, "correct", json_integer(r->correct));
    json_object_set_new(o, "n", json_integer(r->n));
    json_object_set_new(o, "privileged", json_boolean(privileged));
    json_object_set_new(o, "n_privileged", json_integer(r->n_privileged));
    json_object_set_new(o, "pass_k", json_integer(r->pass_k));
    json_object_set_new(o, "pass_at_k", s_num(r->pass_at_k));
    json_object_set_new(o, "samples", json_integer(r->samples));
    json_object_set_new(o, "sample_accuracy", s_num(r->sample_accuracy));
    json_object_set_new(o, "mean_length", s_num(r->mean_length));
    json_object_set_new(o, "truncated", s_num(r->truncated));
    json_object_set_new(o, "gen_tokens", json_integer(r->gen_tokens));
    json_object_set_new(o, "seconds", s_num(r->seconds));
    json_object_set_new(o, "tokens_per_s", s_num(r->tokens_per_s));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(o);
    char *copy = ap_strdup(s);
    free(s);
    return copy;
}
