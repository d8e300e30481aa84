/* test_dataset: the JSON Lines loader: valid files (optional fields, integer ids, BOM, CRLF,
 * blank lines, unknown keys), every kind of bad line refused with FILE:LINE and the reason,
 * the skip policy counting what it skips, and dataset tasks refusing bad files through
 * ap_task_new (also run under ASan/UBSan by scripts/test.sh). */
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/dataset.h"
#include "apprentice/task.h"
#include "test.h"

static const char *s_dir;

static char *s_write(const char *name, const char *text, size_t len) {
    char *path = ap_sprintf("%s/%s.jsonl", s_dir, name);
    AP_CHECK(ap_file_write_atomic(path, text, len) == 0, "write %s", path);
    return path;
}

static void s_valid(void) {
    const char text[] =
        "\xEF\xBB\xBF{\"prompt\": \"1+2=\", \"answer\": \"3\"}\n"
        "\n"
        "   \t\n"
        "{\"prompt\": \"2+2=\", \"answer\": \"4\", \"solution\": \"2+2=4\", \"id\": \"q2\"}\r\n"
        "{\"prompt\": \"héllo\", \"answer\": \"\", \"solution\": null, \"id\": 17, "
        "\"source\": \"x\", \"difficulty\": 3}\n"
        "{\"answer\": \"5\", \"prompt\": \"2+3=\"}"; /* no final newline */
    char *path = s_write("valid", text, sizeof text - 1);
    ap_dataset_t *d = ap_dataset_load(path, AP_BAD_LINE_ERROR);
    AP_CHECK(d != NULL, "valid file refused: %s", ap_errmsg());
    if (d) {
        AP_CHECK(ap_dataset_size(d) == 4, "size %d", ap_dataset_size(d));
        AP_CHECK(ap_dataset_blank_lines(d) == 2, "blank %ld", ap_dataset_blank_lines(d));
        AP_CHECK(ap_dataset_bad_lines(d) == 0 && ap_dataset_first_bad(d) == NULL, "no bad lines");
        const ap_example_t *e0 = ap_dataset_get(d, 0), *e1 = ap_dataset_get(d, 1);
        const ap_example_t *e2 = ap_dataset_get(d, 2), *e3 = ap_dataset_get(d, 3);
        AP_CHECK(!strcmp(e0->prompt, "1+2=") && !strcmp(e0->answer, "3"), "BOM line");
        AP_CHECK(e0->solution == NULL, "absent solution is NULL");
        char *want_id = ap_sprintf("%s:1", path);
        AP_CHECK(!strcmp(e0->id, want_id), "default id '%s'", e0->id);
        free(want_id);
        AP_CHECK(!strcmp(e1->solution, "2+2=4") && !strcmp(e1->id, "q2"), "solution and id");
        AP_CHECK(ap_dataset_line(d, 1) == 4, "line of example 1: %d", ap_dataset_line(d, 1));
        AP_CHECK(!strcmp(e2->prompt, "héllo") && !strcmp(e2->answer, "") && !e2->solution &&
                     !strcmp(e2->id, "17"),
                 "utf-8, empty answer, null solution, integer id '%s'", e2->id);
        AP_CHECK(!strcmp(e3->prompt, "2+3=") && ap_dataset_line(d, 3) == 6,
                 "last line w/o newline");
        printf("valid file: %d examples, %ld blank lines\n", ap_dataset_size(d),
               ap_dataset_blank_lines(d));
    }
    ap_dataset_destroy(&d);
    AP_CHECK(d == NULL, "destroy NULLs");
    free(path);
}

/* A file whose line `bad_line` is `bad`, surrounded by good lines; expect it refused. */
static void s_bad(const char *name, const char *bad, size_t badlen, const char *must) {
    const char *good = "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n";
    size_t gl = strlen(good);
    char *text = ap_malloc(3 * gl + badlen + 2);
    memcpy(text, good, gl);
    memcpy(text + gl, good, gl);
    memcpy(text + 2 * gl, bad, badlen);
    text[2 * gl + badlen] = '\n';
    memcpy(text + 2 * gl + badlen + 1, good, gl);
    size_t len = 3 * gl + badlen + 1;
    char *path = s_write(name, text, len);
    ap_dataset_t *d = ap_dataset_load(path, AP_BAD_LINE_ERROR);
    AP_CHECK(d == NULL, "%s: accepted", name);
    char *where = ap_sprintf("%s:3:", path);
    AP_CHECK(strstr(ap_errmsg(), where) != NULL, "%s: no FILE:LINE: %s", name, ap_errmsg());
    AP_CHECK(strstr(ap_errmsg(), must) != NULL, "%s: lacks '%s': %s", name, must, ap_errmsg());
    printf("refused %-16s %s\n", name, ap_errmsg());
    ap_dataset_destroy(&d);
    /* the same file under skip: 3 examples, 1 bad line counted with the same reason */
    d = ap_dataset_load(path, AP_BAD_LINE_SKIP);
    AP_CHECK(d && ap_dataset_size(d) == 3 && ap_dataset_bad_lines(d) == 1, "%s: skip: %s", name,
             d ? "wrong counts" : ap_errmsg());
    if (d) AP_CHECK(ap_dataset_first_bad(d) && strstr(ap_dataset_first_bad(d), where), "first_bad");
    ap_dataset_destroy(&d);
    free(where);
    free(path);
    free(text);
}
#define S_BAD(name, line, must) s_bad(name, line, sizeof line - 1, must)

static void s_bad_lines(void) {
    S_BAD("bad-json", "{\"prompt\": \"1+1=\", \"answer\": }", "bad JSON");
    S_BAD("truncated", "{\"prompt\": \"1+1=\", \"answer\": \"2\"", "bad JSON");
    S_BAD("trailing", "{\"prompt\": \"1\", \"answer\": \"2\"} x", "bad JSON");
    S_BAD("two-objects",
          "{\"prompt\": \"1\", \"answer\": \"2\"}{\"prompt\": \"1\", \"answer\": \"2\"}",
          "bad JSON");
    S_BAD("array", "[\"1+1=\", \"2\"]", "got an array");
    S_BAD("string", "\"1+1=\"", "got a string");
    S_BAD("number", "42", "got an integer");
    S_BAD("missing-prompt", "{\"answer\": \"2\"}", "missing \"prompt\"");
    S_BAD("missing-answer", "{\"prompt\": \"1+1=\"}", "missing \"answer\"");
    S_BAD("prompt-type", "{\"prompt\": 11, \"answer\": \"2\"}",
          "\"prompt\" must be a string, got an integer");
    S_BAD("answer-type", "{\"prompt\": \"1+1=\", \"answer\": 2}", "\"answer\" must be a string");
    S_BAD("answer-null", "{\"prompt\": \"1+1=\", \"answer\": null}", "got null");
    S_BAD("solution-type", "{\"prompt\": \"1\", \"answer\": \"2\", \"solution\": [1]}",
          "\"solution\" must be a string or null");
    S_BAD("id-type", "{\"prompt\": \"1\", \"answer\": \"2\", \"id\": true}", "\"id\" must be");
    S_BAD("id-real", "{\"prompt\": \"1\", \"answer\": \"2\", \"id\": 1.5}", "got a number");
    S_BAD("empty-prompt", "{\"prompt\": \"\", \"answer\": \"2\"}", "\"prompt\" is empty");
    S_BAD("duplicate-key", "{\"prompt\": \"1\", \"prompt\": \"2\", \"answer\": \"2\"}",
          "duplicate");
    S_BAD("bad-utf8", "{\"prompt\": \"1\xFF\", \"answer\": \"2\"}", "bad JSON");
    S_BAD("nul-byte", "{\"prompt\": \"1\0\", \"answer\": \"2\"}", "bad JSON");
    S_BAD("nul-escape", "{\"prompt\": \"1\\u0000\", \"answer\": \"2\"}", "bad JSON");
    S_BAD("lone-brace", "{", "bad JSON");
}

static void s_skip_policy(void) {
    const char text[] = "{\"prompt\": \"a\", \"answer\": \"1\"}\n"
                        "oops\n"
                        "{\"prompt\": \"b\"}\n"
                        "\n"
                        "{\"prompt\": \"c\", \"answer\": \"3\"}\n"
                        "{\"prompt\": 1, \"answer\": \"3\"}\n"
                        "[]\n"
                        "{\"prompt\": \"d\", \"answer\": \"4\"}\n"
                        "{\"prompt\": \"e\", \"answer\": 5}\n"
                        "{\"prompt\": \"f\", \"answer\": \"6\", \"id\": {}}\n"
                        "{\"prompt\": \"g\", \"answer\": \"7\"}\n";
    char *path = s_write("mixed", text, sizeof text - 1);
    ap_dataset_t *d = ap_dataset_load(path, AP_BAD_LINE_SKIP);
    AP_CHECK(d != NULL, "skip: %s", ap_errmsg());
    if (d) {
        AP_CHECK(ap_dataset_size(d) == 4, "examples %d", ap_dataset_size(d));
        AP_CHECK(ap_dataset_bad_lines(d) == 6, "bad lines %ld", ap_dataset_bad_lines(d));
        AP_CHECK(ap_dataset_blank_lines(d) == 1, "blank %ld", ap_dataset_blank_lines(d));
        char *where = ap_sprintf("%s:2:", path);
        AP_CHECK(strstr(ap_dataset_first_bad(d), where) != NULL, "first bad: %s",
                 ap_dataset_first_bad(d));
        free(where);
        const char *want[] = {"a", "c", "d", "g"};
        const int lines[] = {1, 5, 8, 11};
        for (int i = 0; i < 4; i++)
            AP_CHECK(!strcmp(ap_dataset_get(d, i)->prompt, want[i]) &&
                         ap_dataset_line(d, i) == lines[i],
                     "example %d", i);
        printf("skip policy: %d kept, %ld bad lines counted, first: %s\n", ap_dataset_size(d),
               ap_dataset_bad_lines(d), ap_dataset_first_bad(d));
    }
    ap_dataset_destroy(&d);
    /* the error policy stops at line 2 */
    d = ap_dataset_load(path, AP_BAD_LINE_ERROR);
    char *where = ap_sprintf("%s:2:", path);
    AP_CHECK(d == NULL && strstr(ap_errmsg(), where), "error policy: %s", ap_errmsg());
    free(where);
    free(path);

    /* nothing valid at all: an error under both policies */
    const char allbad[] = "x\n{\"prompt\": 3}\n";
    path = s_write("allbad", allbad, sizeof allbad - 1);
    d = ap_dataset_load(path, AP_BAD_LINE_SKIP);
    AP_CHECK(d == NULL && strstr(ap_errmsg(), "no valid example") && strstr(ap_errmsg(), "2 bad"),
             "all bad: %s", ap_errmsg());
    printf("refused all-bad: %s\n", ap_errmsg());
    free(path);
    path = s_write("empty", "", 0);
    d = ap_dataset_load(path, AP_BAD_LINE_SKIP);
    AP_CHECK(d == NULL && strstr(ap_errmsg(), "empty") && strstr(ap_errmsg(), path), "empty: %s",
             ap_errmsg());
    free(path);
    path = s_write("blank-only", "\n  \n", 4);
    d = ap_dataset_load(path, AP_BAD_LINE_ERROR);
    AP_CHECK(d == NULL && strstr(ap_errmsg(), path), "blank only: %s", ap_errmsg());
    free(path);
    path = ap_sprintf("%s/does-not-exist.jsonl", s_dir);
    d = ap_dataset_load(path, AP_BAD_LINE_ERROR);
    AP_CHECK(d == NULL && strstr(ap_errmsg(), path) && strstr(ap_errmsg(), "No such file"),
             "missing: %s", ap_errmsg());
    free(path);
    /* a binary file: one "line" of garbage */
    char garbage[300];
    for (int i = 0; i < 300; i++)
        garbage[i] = (char)(i * 37 + 11);
    path = s_write("garbage", garbage, sizeof garbage);
    d = ap_dataset_load(path, AP_BAD_LINE_ERROR);
    AP_CHECK(d == NULL && strstr(ap_errmsg(), path), "garbage: %s", ap_errmsg());
    free(path);
    int policy;
    AP_CHECK(ap_dataset_bad_line_parse("skip", &policy) == 0 && policy == AP_BAD_LINE_SKIP, "skip");
    AP_CHECK(ap_dataset_bad_line_parse("ignore", &policy) < 0 && strstr(ap_errmsg(), "ignore"),
             "unknown policy: %s", ap_errmsg());
}

/* The task layer passes the loader's refusals and counts through. */
static void s_dataset_task(void) {
    const char text[] = "{\"prompt\": \"a\", \"answer\": \"1\"}\n"
                        "{\"prompt\": \"b\", \"answer\": \"2\"}\n"
                        "{\"prompt\": \"c\", \"answer\": 3}\n"
                        "{\"prompt\": \"d\", \"answer\": \"4\"}\n";
    char *path = s_write("task", text, sizeof text - 1);
    ap_task_config_t c;
    ap_task_config_defaults(&c);
    c.kind = "dataset";
    c.dataset = path;
    c.heldout_size = 1;
    ap_task_t *t = ap_task_new(&c);
    char *where = ap_sprintf("%s:3:", path);
    AP_CHECK(t == NULL && strstr(ap_errmsg(), where) && strstr(ap_errmsg(), "answer"),
             "task with bad line: %s", ap_errmsg());
    printf("refused task: %s\n", ap_errmsg());
    c.on_bad_line = "skip";
    t = ap_task_new(&c);
    AP_CHECK(t != NULL, "skip: %s", ap_errmsg());
    if (t) {
        AP_CHECK(ap_task_heldout_count(t) == 1 && ap_task_train_size(t) == 2, "split %d/%ld",
                 ap_task_heldout_count(t), ap_task_train_size(t));
    }
    ap_task_destroy(&t);
    c.heldout_size = 2; /* more than half of 3 distinct prompts */
    t = ap_task_new(&c);
    AP_CHECK(t == NULL && strstr(ap_errmsg(), "task.heldout_size"), "too many held out: %s",
             ap_errmsg());
    c.heldout_size = 1;
    c.heldout_dataset = path; /* the same file as held-out: nothing left to train on */
    t = ap_task_new(&c);
    AP_CHECK(t == NULL && strstr(ap_errmsg(), "no training example"), "all held out: %s",
             ap_errmsg());
    char *nope = ap_sprintf("%s/nope.jsonl", s_dir);
    c.heldout_dataset = nope;
    t = ap_task_new(&c);
    AP_CHECK(t == NULL && strstr(ap_errmsg(), nope), "missing held-out file: %s", ap_errmsg());
    free(nope);
    free(where);
    free(path);
}

int main(void) {
    s_dir = ap_strdup(ap_test_tmpdir("dataset"));
    ap_log_set_level(AP_LOG_ERROR); /* the skip policy's warnings are expected here */
    s_valid();
    s_bad_lines();
    s_skip_policy();
    s_dataset_task();
    free((void *)s_dir);
    return ap_test_result();
}
