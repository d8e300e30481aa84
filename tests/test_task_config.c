/* test_task_config: the task section's defaults validate; every bad value is refused naming
 * its key (kind, ranges, alphabet, dataset, on_bad_line, heldout_size, verifier, rewards,
 * templates: unknown placeholder, missing {prompt} / {answer}, ambiguous answer position);
 * ap_task_config_set parses `--set task.KEY=VALUE` and refuses unknown keys and bad numbers;
 * the dump lists every key (also run under ASan/UBSan by scripts/test.sh). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/task.h"
#include "test.h"

typedef struct {
    const char *name;
    const char *sets[4][2]; /* key, value pairs applied over the defaults */
    const char *key;        /* expected in the message */
    const char *detail;     /* also expected */
} s_bad_t;

static const s_bad_t s_bad[] = {
    {"kind", {{"kind", "subtraction"}}, "task.kind", "subtraction"},
    {"min_digits 0", {{"min_digits", "0"}}, "task.min_digits", "1..18"},
    {"max_digits 19", {{"max_digits", "19"}}, "task.max_digits", "1..18"},
    {"digits order",
     {{"min_digits", "3"}, {"max_digits", "2"}},
     "task.max_digits",
     ">= task.min_digits"},
    {"factor digits",
     {{"kind", "multiplication"}, {"factor_min_digits", "0"}},
     "task.factor_min_digits",
     NULL},
    {"product too wide",
     {{"kind", "multiplication"}, {"max_digits", "18"}, {"factor_max_digits", "2"}},
     "task.factor_max_digits",
     "19"},
    {"length 0", {{"kind", "reverse"}, {"min_length", "0"}}, "task.min_length", NULL},
    {"length 65", {{"kind", "sort"}, {"max_length", "65"}}, "task.max_length", "64"},
    {"alphabet empty", {{"kind", "reverse"}, {"alphabet", ""}}, "task.alphabet", "empty"},
    {"alphabet dup", {{"kind", "reverse"}, {"alphabet", "abca"}}, "task.alphabet", "twice"},
    {"alphabet space", {{"kind", "sort"}, {"alphabet", "ab c"}}, "task.alphabet", "whitespace"},
    {"alphabet utf8", {{"kind", "sort"}, {"alphabet", "ab\xFF"}}, "task.alphabet", "UTF-8"},
    {"dataset missing", {{"kind", "dataset"}}, "task.dataset", "required"},
    {"on_bad_line", {{"on_bad_line", "ignore"}}, "task.on_bad_line", "ignore"},
    {"heldout_size", {{"heldout_size", "-1"}}, "task.heldout_size", NULL},
    {"verifier", {{"verifier", "regex"}}, "task.verifier", "regex"},
    {"numeric reverse", {{"kind", "reverse"}, {"verifier", "numeric"}}, "task.verifier", "reverse"},
    {"rewards order",
     {{"reward_correct", "0"}, {"reward_wrong", "1"}},
     "task.reward_correct",
     "greater"},
    {"reward nan", {{"reward_correct", "nan"}}, "task.reward_correct", "finite"},
    {"reward inf", {{"reward_wrong", "-inf"}}, "task.reward_wrong", "finite"},
    {"privileged unknown",
     {{"privileged_template", "hint {hint} {prompt}"}},
     "task.privileged_template",
     "unknown placeholder {hint}"},
    {"prompt no {prompt}", {{"prompt_template", "Q:"}}, "task.prompt_template", "{prompt}"},
    {"prompt leaks answer",
     {{"prompt_template", "{prompt} {answer}"}},
     "task.prompt_template",
     "not allowed"},
    {"completion no answer",
     {{"completion_template", "{solution}"}},
     "task.completion_template",
     "exactly once"},
    {"completion twice",
     {{"completion_template", "{answer} {answer}"}},
     "task.completion_template",
     "exactly once"},
    {"completion ambiguous",
     {{"completion_template", "{solution}{answer}"}},
     "task.completion_template",
     "directly follows"},
    {"completion sibling",
     {{"completion_template", "{answer} {sibling}"}},
     "task.completion_template",
     "not allowed"},
    {"brace", {{"completion_template", "{answer"}}, "task.completion_template", "not closed"},
};

static void s_refusals(void) {
    ap_task_config_t c;
    ap_task_config_defaults(&c);
    AP_CHECK(ap_task_config_validate(&c) == 0, "defaults refused: %s", ap_errmsg());
    for (size_t i = 0; i < AP_COUNT(s_bad); i++) {
        ap_task_config_defaults(&c);
        for (int k = 0; k < 4 && s_bad[i].sets[k][0]; k++)
            AP_CHECK(ap_task_config_set(&c, s_bad[i].sets[k][0], s_bad[i].sets[k][1]) == 0,
                     "%s: set %s: %s", s_bad[i].name, s_bad[i].sets[k][0], ap_errmsg());
        int rc = ap_task_config_validate(&c);
        AP_CHECK(rc < 0, "%s: accepted", s_bad[i].name);
        AP_CHECK(strstr(ap_errmsg(), s_bad[i].key) != NULL, "%s: lacks key %s: %s", s_bad[i].name,
                 s_bad[i].key, ap_errmsg());
        if (s_bad[i].detail)
            AP_CHECK(strstr(ap_errmsg(), s_bad[i].detail) != NULL, "%s: lacks '%s': %s",
                     s_bad[i].name, s_bad[i].detail, ap_errmsg());
        printf("refused %-22s %s\n", s_bad[i].name, ap_errmsg());
        /* ap_task_new refuses the same way */
        ap_task_t *t = ap_task_new(&c);
        AP_CHECK(t == NULL && strstr(ap_errmsg(), s_bad[i].key), "%s: task_new", s_bad[i].name);
        ap_task_destroy(&t);
    }
    /* parameters of other kinds are not checked (a dataset task ignores min_digits) */
    ap_task_config_defaults(&c);
    c.kind = "dataset";
    c.dataset = "x.jsonl";
    c.min_digits = -5;
    AP_CHECK(ap_task_config_validate(&c) == 0, "dataset with odd digits: %s", ap_errmsg());
    /* NULL strings are refused, not crashed on */
    ap_task_config_defaults(&c);
    c.kind = NULL;
    AP_CHECK(ap_task_config_validate(&c) < 0 && strstr(ap_errmsg(), "task.kind"), "NULL kind");
    ap_task_config_defaults(&c);
    c.privileged_template = NULL;
    AP_CHECK(ap_task_config_validate(&c) < 0 && strstr(ap_errmsg(), "task.privileged_template"),
             "NULL template: %s", ap_errmsg());
    ap_task_config_defaults(&c);
    c.verifier = NULL;
    AP_CHECK(ap_task_config_validate(&c) < 0 && strstr(ap_errmsg(), "task.verifier"),
             "NULL verifier");
}

static void s_set_and_dump(void) {
    ap_task_config_t c;
    ap_task_config_defaults(&c);
    AP_CHECK(ap_task_config_set(&c, "task.kind", "sort") == 0 && !strcmp(c.kind, "sort"), "kind");
    AP_CHECK(ap_task_config_set(&c, "max_length", "12") == 0 && c.max_length == 12, "int");
    AP_CHECK(ap_task_config_set(&c, "seed", "-9000000000") == 0 && c.seed == -9000000000LL, "ll");
    AP_CHECK(ap_task_config_set(&c, "reward_wrong", "-0.25") == 0 && c.reward_wrong == -0.25,
             "double");
    AP_CHECK(ap_task_config_set(&c, "task.bogus", "1") < 0 && strstr(ap_errmsg(), "task.bogus") &&
                 strstr(ap_errmsg(), "unknown key"),
             "unknown key: %s", ap_errmsg());
    AP_CHECK(ap_task_config_set(&c, "max_digits", "3x") < 0 &&
                 strstr(ap_errmsg(), "task.max_digits"),
             "bad int: %s", ap_errmsg());
    AP_CHECK(ap_task_config_set(&c, "max_digits", "") < 0, "empty int");
    AP_CHECK(ap_task_config_set(&c, "max_digits", "99999999999") < 0, "int overflow");
    AP_CHECK(ap_task_config_set(&c, "reward_correct", "1.0.0") < 0 &&
                 strstr(ap_errmsg(), "task.reward_correct"),
             "bad double");
    AP_CHECK(ap_task_config_validate(&c) == 0, "after sets: %s", ap_errmsg());
    c.prompt_template = "Q: \"{prompt}\"\n";
    char *dump = ap_task_config_dump(&c);
    const char *keys[] = {"kind: \"sort\"",
                          "max_length: 12",
                          "seed: -9000000000",
                          "reward_wrong: -0.25",
                          "prompt_template: \"Q: \\\"{prompt}\\\"\\n\"",
                          "privileged_template:",
                          "heldout_size: 256",
                          "on_bad_line: \"error\""};
    for (size_t i = 0; i < AP_COUNT(keys); i++)
        AP_CHECK(strstr(dump, keys[i]) != NULL, "dump lacks '%s':\n%s", keys[i], dump);
    printf("%s", dump);
    free(dump);
}

int main(void) {
    s_refusals();
    s_set_and_dump();
    return ap_test_result();
}
