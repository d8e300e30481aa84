/* test_tokenizer_cli: `apprentice vocab` end to end: it writes a model directory's
 * vocab.json for the config's task (one JSON line out), is idempotent, refuses to overwrite a
 * different vocabulary without --force, `--check` accepts a vocabulary that serves the task
 * and refuses one that does not (naming the missing character), and bad options or config
 * keys exit non-zero with a message. Runs the real executable ($AP_BIN). */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "apprentice/base.h"
#include "apprentice/task.h"
#include "apprentice/tokenizer.h"
#include "test.h"

static const char *s_bin;

/* Run `apprentice ARGS`, capture stdout+stderr into *out (caller frees); exit status. */
static int s_run(const char *args, char **out) {
    char *cmd = ap_sprintf("'%s' %s 2>&1", s_bin, args);
    FILE *p = popen(cmd, "r");
    free(cmd);
    AP_ASSERT(p);
    size_t cap = 4096, n = 0;
    char *buf = ap_malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (cap - n < 256) buf = ap_realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    int st = pclose(p);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void s_expect(const char *args, int rc_want, const char *must) {
    char *out;
    int rc = s_run(args, &out);
    AP_CHECK(rc == rc_want, "apprentice %s: exit %d want %d: %s", args, rc, rc_want, out);
    if (must) AP_CHECK(strstr(out, must) != NULL, "apprentice %s: lacks '%s': %s", args, must, out);
    printf("exit %d  apprentice %s\n        %s", rc, args, out);
    if (!*out || out[strlen(out) - 1] != '\n') printf("\n");
    free(out);
}

int main(void) {
    s_bin = getenv("AP_BIN");
    if (!s_bin || !*s_bin) {
        fprintf(stderr, "AP_BIN is not set (run through ctest)\n");
        return 1;
    }
    const char *dir = ap_strdup(ap_test_tmpdir("tokenizer-cli"));
    char *model = ap_sprintf("%s/base", dir);
    char *args =
        ap_sprintf("vocab --set task.kind=multiplication --set task.max_digits=4 --out %s", model);
    s_expect(args, 0, "\"vocab_size\"");
    free(args);
    /* the file matches what the library builds for the same task */
    ap_task_config_t c;
    ap_task_config_defaults(&c);
    c.kind = "multiplication";
    c.max_digits = 4;
    ap_task_t *t = ap_task_new(&c);
    ap_tokenizer_t *want = t ? ap_task_build_tokenizer(t) : NULL;
    ap_tokenizer_t *got = ap_tokenizer_load_dir(model);
    AP_CHECK(want && got && ap_tokenizer_hash(want) == ap_tokenizer_hash(got), "written vocab: %s",
             ap_errmsg());
    ap_tokenizer_destroy(&want);
    ap_tokenizer_destroy(&got);
    ap_task_destroy(&t);
    /* same task again: unchanged; another task: refused unless --force */
    args =
        ap_sprintf("vocab --set task.kind=multiplication --set task.max_digits=4 --out %s", model);
    s_expect(args, 0, "\"unchanged\": true");
    free(args);
    args = ap_sprintf("vocab --set task.kind=reverse --out %s", model);
    s_expect(args, 1, "--force");
    free(args);
    /* --check: serves multiplication and addition, not reverse */
    args = ap_sprintf("vocab --set task.kind=multiplication --check %s", model);
    s_expect(args, 0, "\"ok\": true");
    free(args);
    args = ap_sprintf("vocab --set task.kind=reverse --check %s", model);
    s_expect(args, 1, "lacks");
    free(args);
    args = ap_sprintf("vocab --set task.kind=reverse --force --out %s", model);
    s_expect(args, 0, "\"task\": \"reverse\"");
    free(args);
    /* a dataset task with a bad line: the message names FILE:LINE */
    char *data = ap_sprintf("%s/d.jsonl", dir);
    const char *text = "{\"prompt\": \"é?\", \"answer\": \"1\"}\n{\"prompt\": 5}\n";
    ap_file_write_atomic(data, text, strlen(text));
    char *where = ap_sprintf("%s:2:", data);
    args =
        ap_sprintf("vocab --set task.kind=dataset --set task.dataset=%s --set task.heldout_size=0 "
                   "--out %s/ds",
                   data, dir);
    s_expect(args, 1, where);
    free(args);
    args =
        ap_sprintf("vocab --set task.kind=dataset --set task.dataset=%s --set task.heldout_size=0 "
                   "--set task.on_bad_line=skip --out %s/ds",
                   data, dir);
    /* 3 specials + "é?" "1" + the privileged literals "answer: " " | " (a e n r s w : space |) */
    s_expect(args, 0, "\"vocab_size\": 15");
    free(args);
    free(where);
    free(data);
    /* usage errors */
    s_expect("vocab", 2, "usage");
    s_expect("vocab --out a --check b", 2, "usage");
    s_expect("vocab --set task.kind=division --out x", 1, "task.kind");
    s_expect("vocab --help", 0, "--check");
    free(model);
    free((void *)dir);
    return ap_test_result();
}
