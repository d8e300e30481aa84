/* test_verifier: exact and numeric verifiers over a table of cases (whitespace, leading
 * zeros, signs, decimals, long numbers, junk), rewards from the config, the feedback
 * sentences (including cut, UTF-8-safe quotes), and answers extracted through completion
 * templates by ap_task_verify. */
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/task.h"
#include "apprentice/tokenizer.h"
#include "apprentice/verifier.h"
#include "test.h"

/* s with \n and \t shown as escapes, for one-line case reports (static buffer). */
static const char *s_show(const char *s, int which) {
    static char buf[2][128];
    size_t k = 0;
    for (; *s && k < sizeof buf[0] - 3; s++) {
        if (*s == '\n' || *s == '\t') {
            buf[which][k++] = '\\';
            buf[which][k++] = *s == '\n' ? 'n' : 't';
        } else {
            buf[which][k++] = *s;
        }
    }
    buf[which][k] = 0;
    return buf[which];
}

typedef struct {
    int kind;
    const char *expected, *got;
    int correct;
    const char *feedback; /* exact expected feedback, NULL = don't check */
} s_case_t;

static const s_case_t s_cases[] = {
    {AP_VERIFIER_EXACT, "357", "357", 1, "correct"},
    {AP_VERIFIER_EXACT, "357", " 357\n", 1, "correct"},
    {AP_VERIFIER_EXACT, " 357\t", "357", 1, "correct"},
    {AP_VERIFIER_EXACT, "357", "375", 0, "expected 357, got 375"},
    {AP_VERIFIER_EXACT, "357", "0357", 0, "expected 357, got 0357"},
    {AP_VERIFIER_EXACT, "357", "3 57", 0, "expected 357, got 3 57"},
    {AP_VERIFIER_EXACT, "357", "", 0, "expected 357, got nothing"},
    {AP_VERIFIER_EXACT, "357", " \n ", 0, "expected 357, got nothing"},
    {AP_VERIFIER_EXACT, "cba", "CBA", 0, "expected cba, got CBA"},
    {AP_VERIFIER_EXACT, "", "", 1, "correct"},
    {AP_VERIFIER_EXACT, "héllo", "héllo ", 1, "correct"},
    {AP_VERIFIER_NUMERIC, "357", "357", 1, "correct"},
    {AP_VERIFIER_NUMERIC, "357", "0357", 1, "correct"},
    {AP_VERIFIER_NUMERIC, "357", "+357", 1, "correct"},
    {AP_VERIFIER_NUMERIC, "357", "357.000", 1, "correct"},
    {AP_VERIFIER_NUMERIC, "357", "357.", 1, "correct"},
    {AP_VERIFIER_NUMERIC, "357", " 357 \n", 1, "correct"},
    {AP_VERIFIER_NUMERIC, "0.5", ".5", 1, "correct"},
    {AP_VERIFIER_NUMERIC, "-0", "0", 1, "correct"},
    {AP_VERIFIER_NUMERIC, "0", "-0.00", 1, "correct"},
    {AP_VERIFIER_NUMERIC, "-12", "-012.0", 1, "correct"},
    {AP_VERIFIER_NUMERIC, "12345678901234567890123", "012345678901234567890123", 1, "correct"},
    {AP_VERIFIER_NUMERIC, "12345678901234567890123", "12345678901234567890124", 0, NULL},
    {AP_VERIFIER_NUMERIC, "357", "375", 0, "expected 357, got 375"},
    {AP_VERIFIER_NUMERIC, "357", "-357", 0, "expected 357, got -357"},
    {AP_VERIFIER_NUMERIC, "357", "357.1", 0, NULL},
    {AP_VERIFIER_NUMERIC, "1.5", "1.50001", 0, NULL},
    {AP_VERIFIER_NUMERIC, "357", "3a7", 0, "expected 357, got 3a7 (not a number)"},
    {AP_VERIFIER_NUMERIC, "357", "357 358", 0, "expected 357, got 357 358 (not a number)"},
    {AP_VERIFIER_NUMERIC, "357", "3e2", 0, NULL},
    {AP_VERIFIER_NUMERIC, "357", ".", 0, "expected 357, got . (not a number)"},
    {AP_VERIFIER_NUMERIC, "357", "-", 0, NULL},
    {AP_VERIFIER_NUMERIC, "357", "", 0, "expected 357, got nothing"},
    {AP_VERIFIER_NUMERIC, "1,000", "1,000", 1, "correct"}, /* expected not a number: exact */
    {AP_VERIFIER_NUMERIC, "abc", "ABC", 0, "expected abc, got ABC"},
};

static void s_table(void) {
    for (size_t i = 0; i < AP_COUNT(s_cases); i++) {
        const s_case_t *c = &s_cases[i];
        ap_verifier_t v;
        ap_verifier_defaults(&v);
        v.kind = c->kind;
        ap_verdict_t r;
        memset(&r, 0x55, sizeof r);
        ap_verifier_check(&v, c->expected, c->got, &r);
        AP_CHECK(r.correct == c->correct, "case %zu (%s '%s' vs '%s'): correct %d", i,
                 ap_verifier_kind_name(c->kind), c->expected, c->got, r.correct);
        AP_CHECK(r.reward == (c->correct ? 1.0 : 0.0), "case %zu reward %g", i, r.reward);
        if (c->feedback)
            AP_CHECK(!strcmp(r.feedback, c->feedback), "case %zu feedback '%s' want '%s'", i,
                     r.feedback, c->feedback);
        AP_CHECK(strlen(r.feedback) < AP_FEEDBACK_MAX, "case %zu feedback length", i);
        printf("case %2zu %-7s '%s' '%s' -> %d  %s\n", i, ap_verifier_kind_name(c->kind),
               s_show(c->expected, 0), s_show(c->got, 1), r.correct, r.feedback);
    }
}

static void s_rewards_and_feedback(void) {
    ap_verifier_t v;
    ap_verifier_defaults(&v);
    AP_CHECK(v.kind == AP_VERIFIER_EXACT && v.reward_correct == 1.0 && v.reward_wrong == 0.0,
             "defaults");
    v.reward_correct = 2.5;
    v.reward_wrong = -0.5;
    ap_verdict_t r;
    ap_verifier_check(&v, "a", "a", &r);
    AP_CHECK(r.reward == 2.5 && r.correct, "configured correct reward %g", r.reward);
    ap_verifier_check(&v, "a", "b", &r);
    AP_CHECK(r.reward == -0.5 && !r.correct, "configured wrong reward %g", r.reward);
    ap_verifier_no_answer(&v, "357", "I think it is 357", &r);
    AP_CHECK(
        !r.correct && r.reward == -0.5 &&
            !strcmp(r.feedback, "expected 357, got I think it is 357 (not in the answer format)"),
        "no answer: '%s'", r.feedback);
    ap_verifier_no_answer(&v, "357", "", &r);
    AP_CHECK(!strcmp(r.feedback, "expected 357, got nothing"), "no answer empty: '%s'", r.feedback);

    /* long answers are cut to 48 characters + "...", never inside a UTF-8 character */
    char longgot[400] = "";
    for (int i = 0; i < 100; i++)
        strcat(longgot, "é");
    ap_verifier_check(&v, "x", longgot, &r);
    size_t pos = 0;
    int chars = 0, valid = 1;
    const char *fb = strstr(r.feedback, "got ") + 4;
    while (fb[pos]) {
        int32_t cp = ap_utf8_next(fb, &pos);
        if (cp < 0) {
            valid = 0;
            break;
        }
        chars++;
    }
    AP_CHECK(valid && chars == 48 + 3 && strstr(r.feedback, "..."), "cut feedback (%d chars): %s",
             chars, r.feedback);
    char longexp[200];
    memset(longexp, '7', 199);
    longexp[199] = 0;
    ap_verifier_check(&v, longexp, "1", &r);
    AP_CHECK(strstr(r.feedback, "..., got 1") && strlen(r.feedback) < AP_FEEDBACK_MAX,
             "long expected: %s", r.feedback);
    /* invalid UTF-8 from a completion is not copied into feedback */
    ap_verifier_check(&v, "1", "2\xFF\xFE", &r);
    pos = 0;
    valid = 1;
    while (r.feedback[pos])
        if (ap_utf8_next(r.feedback, &pos) < 0) valid = 0, pos++;
    AP_CHECK(valid, "feedback stays valid UTF-8: %s", r.feedback);

    int kind;
    AP_CHECK(ap_verifier_kind_parse("numeric", &kind) == 0 && kind == AP_VERIFIER_NUMERIC, "parse");
    AP_CHECK(ap_verifier_kind_parse("fuzzy", &kind) < 0 && strstr(ap_errmsg(), "fuzzy") &&
                 strstr(ap_errmsg(), "exact"),
             "unknown kind: %s", ap_errmsg());
    AP_CHECK(ap_verifier_is_number(" -3.50 ") && !ap_verifier_is_number("3.5.0") &&
                 !ap_verifier_is_number("") && !ap_verifier_is_number("+"),
             "is_number");
    /* every feedback character is in the documented alphabet (the vocabulary needs them) */
    const char *alpha = ap_verifier_feedback_alphabet();
    const char *sentences[] = {"correct", "expected , got nothing", " (not a number)",
                               " (not in the answer format)", "..."};
    for (size_t i = 0; i < AP_COUNT(sentences); i++)
        for (const char *p = sentences[i]; *p; p++)
            AP_CHECK(strchr(alpha, *p) != NULL, "'%c' of '%s' missing from the alphabet", *p,
                     sentences[i]);
}

/* ap_task_verify: the answer is found through the completion template. */
static void s_through_templates(void) {
    struct {
        const char *tpl, *completion;
        int correct;
    } cases[] = {
        {"{answer}", "357", 1},
        {"{answer}", " 357 ", 1},
        {"{answer}", "375", 0},
        {"The answer is {answer}.", "The answer is 357.", 1},
        {"The answer is {answer}.", "The answer is 357", 0}, /* suffix missing */
        {"The answer is {answer}.", "Answer: 357.", 0},      /* prefix missing */
        {"{solution} so {answer}", "3+4=7 so 1 so 357", 1},  /* last separator wins */
        {"{solution} so {answer}", "357", 0},
        {"{{{answer}}}", "{357}", 1},
        {"<{answer}> {solution}", "<357> because", 1},
        {"<{answer}> {solution}", "<375> because", 0},
    };
    for (size_t i = 0; i < AP_COUNT(cases); i++) {
        ap_task_config_t c;
        ap_task_config_defaults(&c);
        c.completion_template = (char *)cases[i].tpl;
        c.heldout_size = 0;
        ap_task_t *t = ap_task_new(&c);
        AP_CHECK(t != NULL, "task: %s", ap_errmsg());
        if (!t) continue;
        ap_example_t ex = {.prompt = "123+234=", .answer = "357", .solution = "x", .id = "t"};
        ap_verdict_t r;
        ap_task_verify(t, &ex, cases[i].completion, &r);
        AP_CHECK(r.correct == cases[i].correct, "template '%s' completion '%s': correct %d (%s)",
                 cases[i].tpl, cases[i].completion, r.correct, r.feedback);
        printf("template %-26s completion %-22s -> %d  %s\n", cases[i].tpl, cases[i].completion,
               r.correct, r.feedback);
        ap_task_destroy(&t);
    }
}

int main(void) {
    s_table();
    s_rewards_and_feedback();
    s_through_templates();
    return ap_test_result();
}
