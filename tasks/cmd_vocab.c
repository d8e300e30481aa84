/* cmd_vocab.c: `apprentice vocab`: build the character vocabulary a task needs and write it
 * as vocab.json into a model directory (the teacher's and the student's cold starts both
 * start from it), or check that an existing model directory's vocabulary serves the task.
 *
 *   apprentice vocab configs/run.yaml --out models/base
 *   apprentice vocab --set task.kind=multiplication --set task.max_digits=4 --out models/mul
 *   apprentice vocab configs/run.yaml --check models/teacher
 *
 * The task section is the config's (defaults, then the file, then --set; ap_config_load).
 * Prints one JSON line (path, vocab_size, hash). An existing vocab.json with a different hash is
 * not overwritten without
 * --force: the embedding rows of a model are tied to its vocabulary. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/cli.h"
#include "apprentice/config.h"
#include "apprentice/task.h"
#include "apprentice/tokenizer.h"

static void s_usage(FILE *out) {
    fprintf(out,
            "usage: apprentice vocab [CONFIG.yaml] [--set key=value]... (--out DIR | --check DIR) "
            "[--force]\n"
            "Build the character vocabulary the config's task needs (task: section).\n"
            "  --out DIR        write DIR/vocab.json (creates DIR)\n"
            "  --check DIR      check that DIR/vocab.json encodes everything the task produces\n"
            "  --set key=value  override one config key, e.g. --set task.max_digits=4\n"
            "  --force          overwrite an existing, different vocab.json\n");
}

int ap_cmd_vocab(int argc, char **argv) {
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'}, {"check", required_argument, 0, 'c'},
        {"set", required_argument, 0, 's'}, {"force", no_argument, 0, 'f'},
        {"help", no_argument, 0, 'h'},      {0, 0, 0, 0}};
    const char **sets = ap_calloc((size_t)argc, sizeof *sets);
    const char *out = NULL, *check = NULL;
    int nsets = 0, force = 0, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "o:c:s:fh", opts, NULL)) != -1) {
        switch (opt) {
        case 'o':
            out = optarg;
            break;
        case 'c':
            check = optarg;
            break;
        case 's':
            sets[nsets++] = optarg;
            break;
        case 'f':
            force = 1;
            break;
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
    if (optind + 1 < argc || (!out == !check)) {
        s_usage(stderr);
        free(sets);
        return 2;
    }
    const char *cfg_path = optind < argc ? argv[optind] : NULL;
    ap_config_t *cfg = ap_config_load(cfg_path, sets, nsets);
    free(sets);
    if (!cfg) {
        fprintf(stderr, "apprentice vocab: %s\n", ap_errmsg());
        return 1;
    }
    ap_task_t *task = ap_task_new(&cfg->task);
    ap_config_destroy(&cfg);
    if (!task) {
        fprintf(stderr, "apprentice vocab: %s\n", ap_errmsg());
        return 1;
    }
    int rc = 1;
    char hex[17];
    ap_tokenizer_t *tok = NULL, *old = NULL;
    if (check) {
        tok = ap_tokenizer_load_dir(check);
        if (!tok || ap_task_check_tokenizer(task, tok, check) < 0) {
            fprintf(stderr, "apprentice vocab: %s\n", ap_errmsg());
            goto done;
        }
        printf("{\"dir\": \"%s\", \"task\": \"%s\", \"vocab_size\": %d, \"hash\": \"%s\", \"ok\": "
               "true}\n",
               check, ap_task_kind(task), ap_tokenizer_vocab_size(tok),
               ap_tokenizer_hash_hex(tok, hex));
        rc = 0;
        goto done;
    }
    tok = ap_task_build_tokenizer(task);
    if (!tok) {
        fprintf(stderr, "apprentice vocab: %s\n", ap_errmsg());
        goto done;
    }
    char *path = ap_sprintf("%s/%s", out, AP_VOCAB_FILE);
    if (ap_path_exists(path)) {
        old = ap_tokenizer_load(path);
        if (old && ap_tokenizer_hash(old) == ap_tokenizer_hash(tok)) {
            printf(
                "{\"path\": \"%s\", \"vocab_size\": %d, \"hash\": \"%s\", \"unchanged\": true}\n",
                path, ap_tokenizer_vocab_size(tok), ap_tokenizer_hash_hex(tok, hex));
            free(path);
            rc = 0;
            goto done;
        }
        if (!force) {
            fprintf(
                stderr,
                "apprentice vocab: %s exists with another vocabulary (%s); a model's embeddings "
                "are tied to it: use --force to overwrite, or another --out\n",
                path, old ? "different hash" : ap_errmsg());
            free(path);
            goto done;
        }
    }
    if (ap_tokenizer_save_dir(tok, out) < 0) {
        fprintf(stderr, "apprentice vocab: %s\n", ap_errmsg());
        free(path);
        goto done;
    }
    printf("{\"path\": \"%s\", \"task\": \"%s\", \"vocab_size\": %d, \"hash\": \"%s\"}\n", path,
           ap_task_kind(task), ap_tokenizer_vocab_size(tok), ap_tokenizer_hash_hex(tok, hex));
    free(path);
    rc = 0;
done:
    ap_tokenizer_destroy(&old);
    ap_tokenizer_destroy(&tok);
    ap_task_destroy(&task);
    return rc;
}
