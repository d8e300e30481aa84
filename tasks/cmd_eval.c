/* cmd_eval.c: `apprentice eval --model DIR --config CONFIG`: held-out greedy accuracy and pass@k
 * of a model directory on the config's task, with the student prompt or (--privileged) with the
 * privileged context the self-teacher sees; one JSON line on stdout (include/apprentice/eval.h
 * does the work).
 *
 *   apprentice eval --model models/teacher-addition --config configs/eval-addition.yaml
 *   apprentice eval --model models/student-addition --config configs/eval-addition.yaml \
 *       --privileged --pass-k 8 --samples 16 --limit 100
 *
 * pass@k samples at sampling.temperature (--temperature overrides), top_k, top_p; k defaults to
 * actors.pass_k (the evaluator actor's k), --pass-k 0 measures greedy accuracy only. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "apprentice/base.h"
#include "apprentice/blas.h"
#include "apprentice/cli.h"
#include "apprentice/config.h"
#include "apprentice/eval.h"
#include "apprentice/model.h"
#include "apprentice/task.h"
#include "apprentice/tokenizer.h"

static void s_usage(FILE *out) {
    fprintf(out,
            "usage: apprentice eval --model DIR --config CONFIG.yaml [--set key=value]...\n"
            "                       [--privileged] [--pass-k K] [--samples N] [--limit M]\n"
            "                       [--temperature T] [--batch S] [--seed X] [--show N]\n"
            "Held-out greedy accuracy and pass@k of the model in DIR on the config's task.\n"
            "  --privileged     prompt = the privileged context (the self-teacher's view)\n"
            "  --pass-k K       k of pass@k (default actors.pass_k; 0 = greedy only)\n"
            "  --samples N      completions sampled per prompt for pass@k (>= K; default K)\n"
            "  --limit M        only the first M held-out prompts (default: all)\n"
            "  --temperature T  pass@k sampling temperature (default sampling.temperature)\n"
            "  --batch S        sequences per batched generation (default 256)\n"
            "  --seed X         pass@k sampling seed (default run.seed)\n"
            "  --show N         print the first N greedy completions and verdicts to stderr\n"
            "Prints one JSON line: accuracy, pass_at_k, n, privileged, model, tokens_per_s, ...\n");
}

typedef struct {
    int show; /* completions still to print */
} s_show_t;

static void s_on_example(void *user, int i, const ap_example_t *ex, const char *completion,
                         const ap_verdict_t *v) {
    s_show_t *sh = user;
    if (sh->show <= 0) return;
    sh->show--;
    fprintf(stderr, "%4d  %-24s -> %-16s %s\n", i, ex->prompt, completion,
            v->correct ? "correct" : v->feedback);
}

static int s_parse_int(const char *s, const char *opt, int min, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < min || v > 1000000) {
        fprintf(stderr, "apprentice eval: %s: expected an integer >= %d, got '%s'\n", opt, min, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int ap_cmd_eval(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"config", required_argument, 0, 'c'},
                                         {"set", required_argument, 0, 's'},
                                         {"privileged", no_argument, 0, 'p'},
                                         {"pass-k", required_argument, 0, 'k'},
                                         {"samples", required_argument, 0, 'n'},
                                         {"limit", required_argument, 0, 'l'},
                                         {"temperature", required_argument, 0, 't'},
                                         {"batch", required_argument, 0, 'b'},
                                         {"seed", required_argument, 0, 'x'},
                                         {"show", required_argument, 0, 'w'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char **sets = ap_calloc((size_t)argc, sizeof *sets);
    const char *model_dir = NULL, *cfg_path = NULL, *temp = NULL, *seed = NULL;
    int nsets = 0, privileged = 0, pass_k = -1, samples = 0, limit = 0, batch = 256, opt;
    s_show_t show = {0};
    optind = 1;
    while ((opt = getopt_long(argc, argv, "m:c:s:pk:n:l:t:b:x:w:h", opts, NULL)) != -1) {
        int bad = 0;
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
        case 'p':
            privileged = 1;
            break;
        case 'k':
            bad = s_parse_int(optarg, "--pass-k", 0, &pass_k);
            break;
        case 'n':
            bad = s_parse_int(optarg, "--samples", 1, &samples);
            break;
        case 'l':
            bad = s_parse_int(optarg, "--limit", 1, &limit);
            break;
        case 't':
            temp = optarg;
            break;
        case 'b':
            bad = s_parse_int(optarg, "--batch", 1, &batch);
            break;
        case 'x':
            seed = optarg;
            break;
        case 'w':
            bad = s_parse_int(optarg, "--show", 0, &show.show);
            break;
        case 'h':
            s_usage(stdout);
            free(sets);
            return 0;
        default:
            bad = 1;
        }
        if (bad) {
            if (opt == '?') s_usage(stderr); /* the parsers above said what was wrong */
            free(sets);
            return 2;
        }
    }
    if (optind != argc || !model_dir || !cfg_path) {
        if (optind == argc) fprintf(stderr, "apprentice eval: --model and --config are required\n");
        s_usage(stderr);
        free(sets);
        return 2;
    }
    /* --temperature and --seed go through the config, so their checks and messages are its */
    char *tset = temp ? ap_sprintf("sampling.temperature=%s", temp) : NULL;
    char *xset = seed ? ap_sprintf("run.seed=%s", seed) : NULL;
    if (tset) sets[nsets++] = tset;
    if (xset) sets[nsets++] = xset;
    ap_config_t *cfg = ap_config_load(cfg_path, sets, nsets);
    free(sets), free(tset), free(xset);
    if (!cfg) {
        fprintf(stderr, "apprentice eval: %s\n", ap_errmsg());
        return 1;
    }
    ap_blas_set_threads(cfg->model.blas_threads);
    int rc = 1;
    ap_task_t *task = NULL;
    ap_tokenizer_t *tok = NULL;
    ap_model_t *model = NULL;
    ap_eval_t *ev = NULL;
    if (!(task = ap_task_new(&cfg->task))) goto fail;
    if (!ap_path_exists(model_dir)) {
        ap_err("--model %s: no such directory", model_dir);
        goto fail;
    }
    if (!(tok = ap_tokenizer_load_dir(model_dir))) goto fail;
    if (ap_task_check_tokenizer(task, tok, model_dir) < 0) goto fail;
    if (!(model = ap_model_load(model_dir))) goto fail;

    ap_eval_opts_t o;
    ap_eval_defaults(&o);
    o.limit = limit;
    o.privileged = privileged;
    o.max_new_tokens = cfg->sampling.max_new_tokens;
    o.pass_k = pass_k >= 0 ? pass_k : cfg->actors.pass_k;
    o.samples = samples;
    o.sampling.temperature = (float)cfg->sampling.temperature;
    o.sampling.top_k = cfg->sampling.top_k;
    o.sampling.top_p = (float)cfg->sampling.top_p;
    o.seed = (uint64_t)cfg->run.seed;
    o.batch = batch;
    if (!(ev = ap_eval_new(task, tok, &o))) goto fail;
    ap_eval_set_callback(ev, s_on_example, &show);
    ap_eval_result_t r;
    if (ap_eval_run(ev, model, &r) < 0) goto fail;
    if (privileged && r.n_privileged == 0)
        ap_log(AP_LOG_WARN, "--privileged: the privileged template rendered no context for any "
                            "held-out example (empty, or it needs {feedback}/{sibling}): these "
                            "are student-prompt numbers");

    char *body = ap_eval_result_json(&r, privileged);
    json_error_t jerr;
    json_t *obj = json_loads(body, 0, &jerr);
    free(body);
    json_object_set_new(obj, "model", json_string(model_dir));
    json_object_set_new(obj, "task", json_string(ap_task_kind(task)));
    json_object_set_new(obj, "temperature", json_real(cfg->sampling.temperature));
    char *line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(obj);
    printf("%s\n", line);
    free(line);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "apprentice eval: %s\n", ap_errmsg());
done:
    ap_eval_destroy(&ev);
    ap_model_destroy(&model);
    ap_tokenizer_destroy(&tok);
    ap_task_destroy(&task);
    ap_config_destroy(&cfg);
    return rc;
}
