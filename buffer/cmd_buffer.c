/* cmd_buffer.c: `apprentice buffer --run DIR --id 0`: the buffer process (DESIGN.md "Processes,
 * command lines, files"). Loads RUN/config.yaml (ap_proc_open: log prefix, metrics file
 * RUN/metrics/buffer-0.jsonl), reads the student's vocabulary (model.student/vocab.json: V and
 * hash, which every peer's HELLO must match), sets up CURVE when security.curve (own key
 * buffer-0 or buffer, allow-lists from security.keys_dir by role), serves until SIGINT/SIGTERM,
 * then sends BYE to every peer and exits 0 within the sockets' linger (ROUTER: 0). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/buffer.h"
#include "apprentice/cli.h"
#include "apprentice/rundir.h"
#include "apprentice/tokenizer.h"

static void s_usage(FILE *out) {
    fprintf(out,
            "usage: apprentice buffer --run DIR [--id N] [--vocab-size V]\n"
            "The generation/replay buffer of a run: takes groups from actors, has them scored by\n"
            "the teachers the objectives need, and answers the learner's batch requests in the\n"
            "ratio batch.on_policy_fraction (docs/DESIGN.md, \"Conversations\").\n\n"
            "  -r, --run DIR        run directory (its config.yaml is the resolved config)\n"
            "  -i, --id N           instance id (default 0)\n"
            "  -V, --vocab-size V   vocabulary size when model.student has no vocab.json\n"
            "                       (simulated runs; the vocabulary hash is then not checked)\n"
            "  -h, --help           this help\n");
}

typedef struct {
    ap_buffer_t *b;
} s_ctx_t;

static void s_on_signal(struct ev_loop *loop, ev_signal *w, int revents) {
    (void)revents;
    s_ctx_t *c = w->data;
    ap_log(AP_LOG_INFO, "buffer: signal %d: leaving", w->signum);
    ap_buffer_stop(c->b);
    ev_break(loop, EVBREAK_ALL);
}

int ap_cmd_buffer(int argc, char **argv) {
    static const struct option opts[] = {{"run", required_argument, 0, 'r'},
                                         {"id", required_argument, 0, 'i'},
                                         {"vocab-size", required_argument, 0, 'V'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *run = NULL;
    int id = 0, vocab = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "r:i:V:h", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            run = optarg;
            break;
        case 'i':
            id = atoi(optarg);
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
    if (!run || optind < argc || id < 0 || vocab < 0) {
        s_usage(stderr);
        return 2;
    }
    ap_proc_t r;
    if (ap_proc_open(&r, run, "buffer", id) < 0) {
        fprintf(stderr, "apprentice buffer: %s\n", ap_errmsg());
        return 1;
    }
    ap_buffer_tune_malloc();
    const ap_config_t *cfg = r.cfg;
    int V = vocab;
    uint64_t hash = 0;
    ap_tokenizer_t *tok = ap_tokenizer_load_dir(cfg->model.student);
    if (tok) {
        V = ap_tokenizer_vocab_size(tok);
        hash = ap_tokenizer_hash(tok);
        if (vocab && vocab != V)
            ap_log(AP_LOG_WARN, "buffer: --vocab-size %d ignored: %s/vocab.json has %d tokens",
                   vocab, cfg->model.student, V);
        ap_tokenizer_destroy(&tok);
    } else if (!vocab) {
        ap_log(AP_LOG_ERROR, "buffer: the student's vocabulary: %s (or give --vocab-size)",
               ap_errmsg());
        ap_proc_close(&r);
        return 1;
    }
    ap_net_opts_t no = {0};
    char name[AP_NAME_MAX];
    snprintf(name, sizeof name, "buffer-%d", id);
    if (cfg->security.curve &&
        ap_buffer_load_keys(cfg->security.keys_dir, name, "buffer", &no) < 0) {
        ap_log(AP_LOG_ERROR, "%s", ap_errmsg());
        ap_proc_close(&r);
        return 1;
    }
    ap_net_t *net = ap_net_new(&no);
    int rc = 1;
    ap_buffer_t *b = NULL;
    if (!net) {
        ap_log(AP_LOG_ERROR, "buffer: %s", ap_errmsg());
    } else if (cfg->security.curve && ap_buffer_allow_keys(net, cfg->security.keys_dir) < 0) {
        ap_log(AP_LOG_ERROR, "%s", ap_errmsg());
    } else {
        struct ev_loop *loop = ev_default_loop(0);
        ap_buffer_opts_t bo = {.cfg = cfg,
                               .vocab_size = V,
                               .vocab_hash = hash,
                               .metrics = r.metrics,
                               .seed = (uint64_t)cfg->run.seed};
        b = ap_buffer_new(net, loop, &bo);
        if (!b) {
            ap_log(AP_LOG_ERROR, "%s", ap_errmsg());
        } else {
            s_ctx_t ctx = {.b = b};
            ap_signals_t sg;
            ap_signals_start(&sg, loop, s_on_signal, &ctx);
            ev_run(loop, 0);
            ap_signals_stop(&sg);
            ap_buffer_stats_t st;
            ap_buffer_stats(b, &st);
            ap_log(AP_LOG_INFO, "buffer: %llu groups in, %llu served, %llu dropped, %llu batches",
                   (unsigned long long)st.groups_in, (unsigned long long)st.served_first,
                   (unsigned long long)st.drops_total, (unsigned long long)st.batches);
            rc = 0;
        }
    }
    ap_buffer_destroy(&b);
    ap_net_destroy(&net);
    ap_proc_close(&r);
    return rc;
}
