/* cmd_sample.c: `apprentice sample --model DIR [PROMPT...]`: completions of a model directory for
 * prompts given on the command line or, when none, one per stdin line; one JSON line per
 * completion: prompt, completion (decoded up to <eos>), mean log-prob of its tokens (at the
 * sampling temperature, <eos> included), token count, finish reason, and with --config the
 * verifier's verdict.
 *
 *   apprentice sample --model models/teacher-addition 123+234= 999+1=
 *   echo '123+234=' | apprentice sample --model models/student-addition \
 *       --config configs/eval-addition.yaml --n 4 --temperature 0.7
 *
 * Without --config the prompt is used as it is (after <bos>). With it, the task's prompt
 * template is applied, and the expected answer comes from (in order) a tab after the prompt
 * ("123+234=<TAB>357"), the generator's own rule (addition, multiplication, reverse, sort), or
 * the held-out set; when none applies there is no verdict ("correct": null). A prompt that
 * cannot be encoded is reported on stderr with where it came from (argv[2], stdin:3), counted,
 * and skipped; the exit code is then 1. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/blas.h"
#include "apprentice/cli.h"
#include "apprentice/config.h"
#include "apprentice/model.h"
#include "apprentice/sampler.h"
#include "apprentice/task.h"
#include "apprentice/tokenizer.h"

static void s_usage(FILE *out) {
    fprintf(out,
            "usage: apprentice sample --model DIR [--config CONFIG.yaml] [--set key=value]...\n"
            "                         [--temperature T] [--n N] [--max-new M] [--seed X] "
            "[PROMPT...]\n"
            "Sample completions for each PROMPT, or for each stdin line when none is given.\n"
            "  --config FILE    apply the task's prompt template and judge each completion\n"
            "  --temperature T  sampling temperature (0 = greedy; default sampling.temperature)\n"
            "  --n N            completions per prompt (default 1)\n"
            "  --max-new M      completion length limit (default sampling.max_new_tokens)\n"
            "  --seed X         sampling seed (default run.seed)\n"
            "A prompt may carry its expected answer after a tab: '123+234=\\t357'.\n"
            "One JSON line per completion: prompt, completion, mean_logprob, tokens, finish,\n"
            "and with --config: answer, correct, feedback.\n");
}

/* ---- expected answers of the built-in generators ------------------------------------------- */

/* Parse "digits" of 1..18 characters into *v; returns the characters consumed, 0 if none. */
static int s_digits(const char *s, unsigned long long *v) {
    int n = 0;
    *v = 0;
    while (s[n] >= '0' && s[n] <= '9' && n < 19)
        *v = *v * 10 + (unsigned)(s[n++] - '0');
    return n <= 18 ? n : 0;
}

/* The code points of s (NUL-terminated) into cp[]; returns their count, -1 on invalid UTF-8 or
 * more than `cap`. */
static int s_codepoints(const char *s, uint32_t *cp, int cap) {
    size_t pos = 0;
    int n = 0;
    int32_t c;
    while ((c = ap_utf8_next(s, &pos)) > 0) {
        if (n == cap) return -1;
        cp[n++] = (uint32_t)c;
    }
    return c < 0 ? -1 : n;
}

static int s_cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* The answer the generator of `kind` gives for a raw prompt, NULL when the prompt is not one of
 * its prompts (caller frees). Mirrors docs/TASKS.md, "Prompt sources". */
static char *s_generator_answer(const char *kind, const char *prompt) {
    unsigned long long a, b;
    int na, nb;
    if (!strcmp(kind, "addition") || !strcmp(kind, "multiplication")) {
        char op = kind[0] == 'a' ? '+' : '*';
        if (!(na = s_digits(prompt, &a)) || prompt[na] != op) return NULL;
        if (!(nb = s_digits(prompt + na + 1, &b)) || strcmp(prompt + na + 1 + nb, "=")) return NULL;
        if (op == '*' && na + nb > 19) return NULL; /* the product could overflow 64 bits */
        return ap_sprintf("%llu", op == '+' ? a + b : a * b);
    }
    const char *head = !strcmp(kind, "reverse") ? "reverse:"
                       : !strcmp(kind, "sort")  ? "sort:"
                                                : NULL;
    size_t hl = head ? strlen(head) : 0, len = strlen(prompt);
    if (!head || strncmp(prompt, head, hl) || len < hl + 2 || prompt[len - 1] != '=') return NULL;
    char *body = ap_strdup(prompt + hl);
    body[len - hl - 1] = 0;
    uint32_t cp[256];
    int n = s_codepoints(body, cp, (int)AP_COUNT(cp));
    free(body);
    if (n <= 0) return NULL;
    if (head[1] == 'e')
        for (int i = 0; i < n / 2; i++) {
            uint32_t t = cp[i];
            cp[i] = cp[n - 1 - i], cp[n - 1 - i] = t;
        }
    else
        qsort(cp, (size_t)n, sizeof *cp, s_cmp_u32);
    char *out = ap_malloc((size_t)n * 4 + 1);
    size_t o = 0;
    for (int i = 0; i < n; i++)
        o += (size_t)ap_utf8_put(out + o, cp[i]);
    out[o] = 0;
    return out;
}

/* Expected answer for a raw prompt: the generator's, else the held-out set's. Caller frees. */
static char *s_expected(const ap_task_t *task, const char *prompt) {
    char *a = s_generator_answer(ap_task_kind(task), prompt);
    if (a || !ap_task_is_heldout(task, prompt)) return a;
    for (int i = 0; i < ap_task_heldout_count(task) && !a; i++) {
        ap_example_t ex = {0};
        ap_task_heldout_get(task, i, &ex);
        if (!strcmp(ex.prompt, prompt)) a = ap_strdup(ex.answer);
        ap_example_clear(&ex);
    }
    return a;
}

/* ---- sampling ------------------------------------------------------------------------------ */

typedef struct {
    ap_model_t *model;
    ap_tokenizer_t *tok;
    ap_task_t *task; /* NULL without --config */
    ap_sampling_t sp;
    ap_rng_t rng;
    int n, max_new;
    ap_kv_t *kv;
    int kv_len;
    long bad; /* prompts refused */
} s_sampler_t;

static void s_emit(const char *prompt, const char *completion, const ap_completion_t *c,
                   const char *answer, const ap_verdict_t *v) {
    json_t *o = json_object();
    double sum = 0;
    for (int i = 0; i < c->n; i++)
        sum += c->logprobs[i];
    json_object_set_new(o, "prompt", json_string(prompt));
    json_object_set_new(o, "completion", json_string(completion));
    json_object_set_new(o, "mean_logprob", c->n ? json_real(sum / c->n) : json_null());
    json_object_set_new(o, "tokens", json_integer(c->n));
    json_object_set_new(o, "finish", json_string(c->finish == AP_FINISH_EOS ? "eos" : "length"));
    if (v) {
        json_object_set_new(o, "answer", answer ? json_string(answer) : json_null());
        json_object_set_new(o, "correct", answer ? json_boolean(v->correct) : json_null());
        json_object_set_new(o, "feedback", answer ? json_string(v->feedback) : json_null());
    }
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(o);
    printf("%s\n", line);
    free(line);
}

/* Sample for one input line/argument ("prompt" or "prompt\tanswer"); `origin` names it. A bad
 * prompt is reported and counted (returns 0); -1 only for a generation failure. */
static int s_one(s_sampler_t *s, const char *input, const char *origin) {
    char *prompt = ap_strdup(input), *answer = NULL, *tab = strchr(prompt, '\t');
    if (tab) {
        *tab = 0;
        answer = ap_strdup(tab + 1);
    }
    int rc = 0, n = 0;
    int32_t *ids = NULL;
    if (s->task) {
        ap_example_t ex = {
            .prompt = prompt, .answer = answer ? answer : (char *)"", .id = (char *)origin};
        ids = ap_task_encode_prompt(s->task, s->tok, &ex, &n);
        if (!answer) answer = s_expected(s->task, prompt);
    } else {
        ids = ap_tokenizer_encode_alloc(s->tok, prompt, AP_TOK_BOS, origin, &n);
    }
    const ap_model_config_t *mc = ap_model_config(s->model);
    if (ids && n >= mc->max_positions) {
        ap_err("%s: the prompt has %d tokens: no room for a completion within the model's %d "
               "positions",
               origin, n, mc->max_positions);
        free(ids);
        ids = NULL;
    }
    if (!ids) {
        fprintf(stderr, "apprentice sample: %s\n", ap_errmsg());
        s->bad++;
        goto done;
    }
    int len = AP_MIN(mc->max_positions, n + s->max_new);
    if (!s->kv || s->kv_len < len) {
        ap_kv_destroy(&s->kv);
        s->kv = ap_kv_new(s->model, s->n, len);
        s->kv_len = len;
    }
    const int32_t **prompts = ap_malloc((size_t)s->n * sizeof *prompts);
    int *lens = ap_malloc((size_t)s->n * sizeof *lens);
    ap_completion_t *out = ap_malloc((size_t)s->n * sizeof *out);
    for (int i = 0; i < s->n; i++)
        prompts[i] = ids, lens[i] = n;
    if (ap_generate(s->kv, out, prompts, lens, s->n, s->max_new, ap_tokenizer_eos(s->tok), &s->sp,
                    &s->rng) < 0) {
        ap_err("%s: %s", origin, ap_errmsg());
        rc = -1;
    }
    for (int i = 0; rc == 0 && i < s->n; i++) {
        char *text = ap_tokenizer_decode(s->tok, out[i].tokens, out[i].n, AP_TOK_STOP_EOS);
        if (!text) {
            rc = -1;
            break;
        }
        ap_verdict_t v;
        if (s->task && answer) {
            ap_example_t ex = {.prompt = prompt, .answer = answer, .id = (char *)origin};
            ap_task_verify(s->task, &ex, text, &v);
        }
        s_emit(prompt, text, &out[i], answer, s->task ? &v : NULL);
        free(text);
    }
    fflush(stdout);
    free(prompts), free(lens), free(out), free(ids);
done:
    free(prompt);
    free(answer);
    return rc;
}

int ap_cmd_sample(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"config", required_argument, 0, 'c'},
                                         {"set", required_argument, 0, 's'},
                                         {"temperature", required_argument, 0, 't'},
                                         {"n", required_argument, 0, 'n'},
                                         {"max-new", required_argument, 0, 'M'},
                                         {"seed", required_argument, 0, 'x'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char **sets = ap_calloc((size_t)argc + 2, sizeof *sets);
    const char *model_dir = NULL, *cfg_path = NULL, *temp = NULL, *seed = NULL, *max_new = NULL;
    int nsets = 0, n = 1, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "m:c:s:t:n:M:x:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'm':
            model_dir = optarg;
            break;
        case 'c':
            cfg_path = optarg;
            break;
        case 's':
            sets[nsets++] = optarg;
            break;
        case 't':
            temp = optarg;
            break;
        case 'M':
            max_new = optarg;
            break;
        case 'x':
            seed = optarg;
            break;
        case 'n': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 1 || v > 4096) {
                fprintf(stderr, "apprentice sample: --n: expected 1..4096, got '%s'\n", optarg);
                free(sets);
                return 2;
            }
            n = (int)v;
            break;
        }
        case 'h':
            s_usage(stdout);
            free(sets);
            return 0;
        default:
            s_usage(stderr);
            free(sets);
            return 2;
        }
    }
    if (!model_dir) {
        fprintf(stderr, "apprentice sample: --model is required\n");
        s_usage(stderr);
        free(sets);
        return 2;
    }
    /* --seed and --max-new go through the config (its checks and messages); --temperature 0
     * (greedy) is below the config's range, so it is parsed here */
    char *xset = seed ? ap_sprintf("run.seed=%s", seed) : NULL;
    char *mset = max_new ? ap_sprintf("sampling.max_new_tokens=%s", max_new) : NULL;
    if (xset) sets[nsets++] = xset;
    if (mset) sets[nsets++] = mset;
    ap_config_t *cfg = ap_config_load(cfg_path, sets, nsets);
    free(sets), free(xset), free(mset);
    if (!cfg) {
        fprintf(stderr, "apprentice sample: %s\n", ap_errmsg());
        return 1;
    }
    ap_blas_set_threads(cfg->model.blas_threads);
    s_sampler_t s = {0};
    int rc = 1;
    ap_sampling_defaults(&s.sp);
    s.sp.temperature = (float)cfg->sampling.temperature;
    s.sp.top_k = cfg->sampling.top_k;
    s.sp.top_p = (float)cfg->sampling.top_p;
    if (temp) {
        char *end;
        s.sp.temperature = strtof(temp, &end);
        if (!*temp || *end || !(s.sp.temperature >= 0)) {
            ap_err("--temperature: expected a number >= 0, got '%s'", temp);
            goto fail;
        }
    }
    ap_rng_seed(&s.rng, (uint64_t)cfg->run.seed, 0x5a3);
    s.n = n;
    s.max_new = cfg->sampling.max_new_tokens;
    if (!ap_path_exists(model_dir)) {
        ap_err("--model %s: no such directory", model_dir);
        goto fail;
    }
    if (!(s.tok = ap_tokenizer_load_dir(model_dir))) goto fail;
    if (!(s.model = ap_model_load(model_dir))) goto fail;
    if (ap_model_config(s.model)->vocab_size != ap_tokenizer_vocab_size(s.tok)) {
        ap_err("%s: the model has %d token ids but its vocab.json %d", model_dir,
               ap_model_config(s.model)->vocab_size, ap_tokenizer_vocab_size(s.tok));
        goto fail;
    }
    if (cfg_path) {
        if (!(s.task = ap_task_new(&cfg->task))) goto fail;
        if (ap_task_check_tokenizer(s.task, s.tok, model_dir) < 0) goto fail;
    }
    rc = 0;
    if (optind < argc) {
        for (int i = optind; i < argc && rc == 0; i++) {
            char origin[32];
            snprintf(origin, sizeof origin, "argument %d", i - optind + 1);
            rc = s_one(&s, argv[i], origin) < 0;
        }
    } else {
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        long lineno = 0;
        while (rc == 0 && (len = getline(&line, &cap, stdin)) >= 0) {
            lineno++;
            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                line[--len] = 0;
            if (!len) continue;
            char origin[32];
            snprintf(origin, sizeof origin, "stdin:%ld", lineno);
            rc = s_one(&s, line, origin) < 0;
        }
        free(line);
    }
    if (rc) goto fail;
    if (s.bad) {
        fprintf(stderr, "apprentice sample: %ld prompt%s refused\n", s.bad, s.bad == 1 ? "" : "s");
        rc = 1;
    }
    goto done;
fail:
    rc = 1;
    fprintf(stderr, "apprentice sample: %s\n", ap_errmsg());
done:
    ap_kv_destroy(&s.kv);
    ap_task_destroy(&s.task);
    ap_model_destroy(&s.model);
    ap_tokenizer_destroy(&s.tok);
    ap_config_destroy(&cfg);
    return rc;
}
