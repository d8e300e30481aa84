/* cmd_teacher.c: `apprentice teacher --run DIR --id N --kind external|self|reference`: one teacher
 * worker (DESIGN.md "teacher", "Processes, command lines, files"). Loads RUN/config.yaml
 * (ap_proc_open as role "teacher-KIND": log prefix, RUN/metrics/teacher-KIND-N.jsonl, BLAS
 * threads), checks the tokenizer of its model directory against the student's and refuses a
 * mismatch before anything else, loads its frozen checkpoint (external: model.teacher; self and
 * reference: model.student) or, for a `current` self-teacher, follows the learner's weights, and
 * serves the buffer until SIGINT/SIGTERM (BYE, exit 0 within the DEALER's 200 ms linger).
 * `--simulate` needs no model: random valid scores of the right shape (benchmarks, tests). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/buffer.h"
#include "apprentice/cli.h"
#include "apprentice/rundir.h"
#include "apprentice/teacher.h"
#include "apprentice/tokenizer.h"

static void s_usage(FILE *out) {
    fprintf(out,
            "usage: apprentice teacher --run DIR --kind external|self|reference [--id N]\n"
            "                          [--simulate [--delay-ms MS] [--vocab-size V]]\n"
            "A teacher worker: scores the groups the buffer sends it (sampled-token log-probs,\n"
            "top-K or full distributions) with a frozen checkpoint (external: model.teacher;\n"
            "reference: model.student) or the student's weights (self: teacher.self_weights).\n\n"
            "  -r, --run DIR        run directory (its config.yaml is the resolved config)\n"
            "  -i, --id N           worker index within the kind (default 0)\n"
            "  -k, --kind KIND      external, self or reference\n"
            "  -s, --simulate       no model: random but valid scores (benchmarks)\n"
            "  -d, --delay-ms MS    with --simulate: answer each request MS after it arrived\n"
            "  -V, --vocab-size V   with --simulate: V when model.student has no vocab.json\n"
            "  -h, --help           this help\n");
}

typedef struct {
    ap_teacher_t *t;
} s_ctx_t;

static void s_on_signal(struct ev_loop *loop, ev_signal *w, int revents) {
    (void)revents;
    s_ctx_t *c = w->data;
    ap_log(AP_LOG_INFO, "teacher: signal %d: leaving", w->signum);
    ap_teacher_stop(c->t);
    ev_break(loop, EVBREAK_ALL);
}

int ap_cmd_teacher(int argc, char **argv) {
    static const struct option opts[] = {
        {"run", required_argument, 0, 'r'},      {"id", required_argument, 0, 'i'},
        {"kind", required_argument, 0, 'k'},     {"simulate", no_argument, 0, 's'},
        {"delay-ms", required_argument, 0, 'd'}, {"vocab-size", required_argument, 0, 'V'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    const char *run = NULL, *kind_name = NULL;
    int id = 0, simulate = 0, vocab = 0, c;
    double delay_ms = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "r:i:k:sd:V:h", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            run = optarg;
            break;
        case 'i':
            id = atoi(optarg);
            break;
        case 'k':
            kind_name = optarg;
            break;
        case 's':
            simulate = 1;
            break;
        case 'd':
            delay_ms = atof(optarg);
            break;
        case 'V':
            vocab = atoi(optarg);
            break;
        case 'h':
            s_usage(stdout);
            return 0;
        default:
            s_usage(stderr);
            return 2;
        }
    }
    int kind = ap_teacher_kind_parse(kind_name);
    if (!run || optind < argc || id < 0 || vocab < 0 || delay_ms < 0 || kind < 0) {
        if (kind_name && kind < 0)
            fprintf(stderr, "apprentice teacher: unknown kind '%s'\n", kind_name);
        s_usage(stderr);
        return 2;
    }
    static const char *roles[AP_TEACHER_COUNT] = {"teacher-external", "teacher-self",
                                                  "teacher-reference"};
    ap_proc_t r;
    if (ap_proc_open(&r, run, roles[kind], id) < 0) {
        fprintf(stderr, "apprentice teacher: %s\n", ap_errmsg());
        return 1;
    }
    const ap_config_t *cfg = r.cfg;
    char name[AP_NAME_MAX];
    snprintf(name, sizeof name, "%s-%d", roles[kind], id);
    const char *student = cfg->model.student;
    const char *dir = kind == AP_TEACHER_EXTERNAL ? cfg->model.teacher : student;
    int follow = kind == AP_TEACHER_SELF && cfg->teacher.self_weights == AP_SELF_CURRENT;
    int rc = 1, V = 0;
    uint64_t hash = 0;
    ap_model_t *model = NULL;
    ap_net_t *net = NULL;
    ap_teacher_t *t = NULL;
    char buffer_key[AP_Z85_KEY], learner_key[AP_Z85_KEY];
    ap_net_opts_t no = {0};
    if (!simulate && (!dir || !*dir)) {
        ap_log(AP_LOG_ERROR, "%s: model.teacher is empty: an external teacher needs a checkpoint",
               name);
        goto done;
    }
    if (simulate) { /* the student's vocabulary when there is one, else --vocab-size */
        ap_tokenizer_t *tok = student && *student ? ap_tokenizer_load_dir(student) : NULL;
        if (tok) {
            V = ap_tokenizer_vocab_size(tok), hash = ap_tokenizer_hash(tok);
            ap_tokenizer_destroy(&tok);
        } else if (vocab > 0) {
            V = vocab;
        } else {
            ap_log(AP_LOG_ERROR, "%s: --simulate needs the student's vocab.json or --vocab-size",
                   name);
            goto done;
        }
    } else {
        model = ap_model_load(dir);
        if (!model) {
            ap_log(AP_LOG_ERROR, "%s: %s", name, ap_errmsg());
            goto done;
        }
        if (ap_teacher_check_vocab(dir, student, ap_model_config(model)->vocab_size, &V, &hash) <
            0) {
            ap_log(AP_LOG_ERROR, "%s: refusing to start: %s", name, ap_errmsg());
            goto done;
        }
    }
    if (cfg->security.curve) {
        const char *kd = cfg->security.keys_dir;
        if (ap_buffer_load_keys(kd, name, "teacher", &no) < 0 ||
            ap_buffer_service_key(kd, "buffer", buffer_key) < 0 ||
            (follow && ap_buffer_service_key(kd, "learner", learner_key) < 0)) {
            ap_log(AP_LOG_ERROR, "%s: %s", name, ap_errmsg());
            goto done;
        }
    }
    net = ap_net_new(&no);
    if (!net) {
        ap_log(AP_LOG_ERROR, "%s: %s", name, ap_errmsg());
        goto done;
    }
    struct ev_loop *loop = ev_default_loop(0);
    ap_teacher_opts_t to = {.cfg = cfg,
                            .kind = (ap_teacher_kind_t)kind,
                            .id = id,
                            .name = name,
                            .model = model,
                            .simulate = simulate,
                            .simulate_delay_s = delay_ms / 1000.0,
                            .vocab_size = V,
                            .vocab_hash = hash,
                            .follow_weights = follow && !simulate,
                            .buffer_key = cfg->security.curve ? buffer_key : NULL,
                            .learner_key = cfg->security.curve && follow ? learner_key : NULL,
                            .metrics = r.metrics,
                            .seed = (uint64_t)cfg->run.seed};
    t = ap_teacher_new(net, loop, &to);
    if (!t) {
        ap_log(AP_LOG_ERROR, "%s: %s", name, ap_errmsg());
        goto done;
    }
    s_ctx_t ctx = {.t = t};
    ap_signals_t sg;
    ap_signals_start(&sg, loop, s_on_signal, &ctx);
    ev_run(loop, 0);
    ap_signals_stop(&sg);
    ap_teacher_stats_t st;
    ap_teacher_stats(t, &st);
    ap_log(AP_LOG_INFO, "%s: %llu requests, %llu answered, %llu dropped", name,
           (unsigned long long)st.requests, (unsigned long long)st.answered,
           (unsigned long long)st.dropped);
    rc = st.fatal ? 1 : 0;
done:
    ap_teacher_destroy(&t);
    ap_net_destroy(&net);
    ap_model_destroy(&model);
    ap_proc_close(&r);
    return rc;
}
