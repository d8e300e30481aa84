/* test_template: each placeholder rendered, literal braces, unknown / disallowed placeholders
 * and stray braces refused at compile time naming the key and the placeholder, a missing
 * variable rendering nothing, answer extraction; and the task's per-trajectory privileged
 * context: {sibling} = first correct j != i, none correct -> h = 0, {feedback}, {solution}
 * absent -> h = 0, {prompt} = the rendered student prompt, token encoding with <bos>. */
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/task.h"
#include "apprentice/template.h"
#include "test.h"

static void s_render_each(void) {
    ap_template_vars_t v = {.prompt = "123+234=",
                            .answer = "357",
                            .solution = "3+4=7,2+3=5,1+2=3",
                            .feedback = "expected 357, got 375",
                            .sibling = "357"};
    struct {
        const char *tpl, *want;
        unsigned uses;
    } cases[] = {
        {"{prompt}", "123+234=", AP_TPL_PROMPT},
        {"answer: {answer} | {prompt}", "answer: 357 | 123+234=", AP_TPL_ANSWER | AP_TPL_PROMPT},
        {"{solution}\n{prompt}", "3+4=7,2+3=5,1+2=3\n123+234=", AP_TPL_SOLUTION | AP_TPL_PROMPT},
        {"feedback: {feedback}. {prompt}",
         "feedback: expected 357, got 375. 123+234=", AP_TPL_FEEDBACK | AP_TPL_PROMPT},
        {"a correct attempt: {sibling} | {prompt}",
         "a correct attempt: 357 | 123+234=", AP_TPL_SIBLING | AP_TPL_PROMPT},
        {"{answer}{answer}", "357357", AP_TPL_ANSWER},
        {"{{x}} {{{answer}}} }}{{", "{x} {357} }{", AP_TPL_ANSWER},
        {"no placeholders", "no placeholders", 0},
        {"", "", 0},
        {"é {prompt} ✓", "é 123+234= ✓", AP_TPL_PROMPT},
    };
    for (size_t i = 0; i < AP_COUNT(cases); i++) {
        ap_template_t *t = ap_template_new(cases[i].tpl, AP_TPL_ALL, "test");
        AP_CHECK(t != NULL, "'%s': %s", cases[i].tpl, ap_errmsg());
        if (!t) continue;
        char *out = NULL;
        int r = ap_template_render(t, &v, &out);
        AP_CHECK(r == 1 && out && !strcmp(out, cases[i].want), "'%s' -> '%s' want '%s'",
                 cases[i].tpl, out, cases[i].want);
        AP_CHECK(ap_template_uses(t) == cases[i].uses, "'%s' uses %x", cases[i].tpl,
                 ap_template_uses(t));
        AP_CHECK(!strcmp(ap_template_text(t), cases[i].tpl), "text kept");
        printf("render %-40s -> %s\n", cases[i].tpl, out);
        free(out);
        ap_template_destroy(&t);
        AP_CHECK(t == NULL, "destroy NULLs");
    }
    ap_template_t *t = ap_template_new("", AP_TPL_ALL, "k");
    AP_CHECK(t && ap_template_is_empty(t), "empty template");
    ap_template_destroy(&t);
    t = ap_template_new("a{answer}b{{c", AP_TPL_ALL, "k");
    char *lit = ap_template_literals(t);
    AP_CHECK(!strcmp(lit, "ab{c"), "literals '%s'", lit);
    AP_CHECK(ap_template_count(t, AP_TPL_ANSWER) == 1 && ap_template_count(t, AP_TPL_PROMPT) == 0,
             "count");
    free(lit);
    ap_template_destroy(&t);
}

static void s_missing_var(void) {
    ap_template_t *t = ap_template_new("{sibling} | {prompt}", AP_TPL_ALL, "k");
    ap_template_vars_t v = {.prompt = "1+1="};
    char *out = (char *)1;
    AP_CHECK(ap_template_render(t, &v, &out) == 0 && out == NULL,
             "missing sibling renders nothing");
    v.sibling = "";
    AP_CHECK(ap_template_render(t, &v, &out) == 1 && !strcmp(out, " | 1+1="),
             "empty sibling is a value");
    free(out);
    ap_template_destroy(&t);
}

static void s_refused(const char *tpl, unsigned allowed, const char *m1, const char *m2) {
    ap_template_t *t = ap_template_new(tpl, allowed, "task.privileged_template");
    AP_CHECK(t == NULL, "'%s' accepted", tpl);
    AP_CHECK(strstr(ap_errmsg(), "task.privileged_template") != NULL, "no key: %s", ap_errmsg());
    AP_CHECK(strstr(ap_errmsg(), m1) != NULL, "'%s': lacks '%s': %s", tpl, m1, ap_errmsg());
    if (m2) AP_CHECK(strstr(ap_errmsg(), m2) != NULL, "'%s': lacks '%s': %s", tpl, m2, ap_errmsg());
    printf("refused %-24s %s\n", tpl, ap_errmsg());
    ap_template_destroy(&t);
}

static void s_errors(void) {
    s_refused("hint: {answr} | {prompt}", AP_TPL_ALL, "unknown placeholder {answr}", "position 7");
    s_refused("{Prompt}", AP_TPL_ALL, "{Prompt}", "known: {prompt}");
    s_refused("{ prompt }", AP_TPL_ALL, "{ prompt }", NULL);
    s_refused("{}", AP_TPL_ALL, "unknown placeholder {}", NULL);
    s_refused("{answer} {prompt}", AP_TPL_PROMPT, "{answer}", "not allowed");
    s_refused("{prompt", AP_TPL_ALL, "not closed", "position 1");
    s_refused("a {b {prompt}", AP_TPL_ALL, "not closed", "position 3");
    s_refused("a } b", AP_TPL_ALL, "stray '}'", "position 3");
    s_refused("{answer}}", AP_TPL_ALL, "stray '}'", "position 9");
    ap_template_t *t = ap_template_new(NULL, AP_TPL_ALL, "task.prompt_template");
    AP_CHECK(t == NULL && strstr(ap_errmsg(), "task.prompt_template"), "NULL: %s", ap_errmsg());
}

static void s_extract(void) {
    struct {
        const char *tpl, *text, *want; /* want NULL: no match */
    } cases[] = {
        {"{answer}", " 357 ", " 357 "},
        {"= {answer}", "= 357", "357"},
        {"= {answer}", "357", NULL},
        {"{answer}.", "357.", "357"},
        {"{answer}.", "357", NULL},
        {"[{answer}]", "[357]", "357"},
        {"[{answer}]", "[357", NULL},
        {"{solution} => {answer}", "a => b => 357", "357"},
        {"{solution} => {answer}", "357", NULL},
        {"{answer} because {solution}", "357 because 3+4=7", "357"},
        {"{answer} because {solution}", "357", NULL},
        {"ab{answer}ba", "aba", NULL}, /* prefix and suffix overlap */
        {"ab{answer}ba", "abba", ""},
    };
    for (size_t i = 0; i < AP_COUNT(cases); i++) {
        ap_template_t *t = ap_template_new(cases[i].tpl, AP_TPL_ALL, "k");
        AP_CHECK(ap_template_check_extractable(t, AP_TPL_ANSWER, "k") == 0, "%s: %s", cases[i].tpl,
                 ap_errmsg());
        char *out = NULL;
        int r = ap_template_extract(t, AP_TPL_ANSWER, cases[i].text, &out);
        if (cases[i].want)
            AP_CHECK(r == 1 && !strcmp(out, cases[i].want), "extract %s from '%s': '%s' want '%s'",
                     cases[i].tpl, cases[i].text, out, cases[i].want);
        else
            AP_CHECK(r == 0 && out == NULL, "extract %s from '%s': matched '%s'", cases[i].tpl,
                     cases[i].text, out);
        free(out);
        ap_template_destroy(&t);
    }
    const char *bad[] = {"{solution}{answer}", "{answer}{solution}", "{answer} {answer}", "none"};
    const char *why[] = {"directly follows", "directly followed", "exactly once", "exactly once"};
    for (size_t i = 0; i < AP_COUNT(bad); i++) {
        ap_template_t *t = ap_template_new(bad[i], AP_TPL_ALL, "k");
        AP_CHECK(ap_template_check_extractable(t, AP_TPL_ANSWER, "task.completion_template") < 0 &&
                     strstr(ap_errmsg(), why[i]) && strstr(ap_errmsg(), "task.completion_template"),
                 "'%s' extractable? %s", bad[i], ap_errmsg());
        ap_template_destroy(&t);
    }
}

/* ---- the task's per-trajectory privileged context ---- */

static ap_task_t *s_task(const char *kind, const char *prompt_tpl, const char *priv) {
    ap_task_config_t c;
    ap_task_config_defaults(&c);
    c.kind = (char *)kind;
    c.prompt_template = (char *)prompt_tpl;
    c.privileged_template = (char *)priv;
    c.heldout_size = 0;
    ap_task_t *t = ap_task_new(&c);
    AP_CHECK(t != NULL, "task: %s", ap_errmsg());
    return t;
}

static void s_privileged(void) {
    ap_example_t ex = {.prompt = "123+234=",
                       .answer = "357",
                       .solution = "3+4=7,2+3=5,1+2=3",
                       .id = "addition:123+234="};
    /* the brief's example: teacher sees "answer: 357 | 123+234=", student "123+234=" */
    ap_task_t *t = s_task("addition", "{prompt}", "answer: {answer} | {prompt}");
    char *p = ap_task_render_prompt(t, &ex), *ctx = NULL;
    AP_CHECK(!strcmp(p, "123+234="), "student prompt '%s'", p);
    int h = ap_task_render_privileged(t, &ex, NULL, 0, 0, &ctx);
    AP_CHECK(h == 1 && !strcmp(ctx, "answer: 357 | 123+234="), "teacher context '%s'", ctx);
    printf("student '%s'  teacher '%s'  h=%d\n", p, ctx, h);
    free(p);
    free(ctx);
    ap_task_destroy(&t);

    /* {prompt} in the privileged template is the rendered student prompt */
    t = s_task("addition", "Q: {prompt}\nA: ", "hint {answer}\n{prompt}");
    h = ap_task_render_privileged(t, &ex, NULL, 0, 0, &ctx);
    AP_CHECK(h == 1 && !strcmp(ctx, "hint 357\nQ: 123+234=\nA: "), "rendered prompt inside: '%s'",
             ctx);
    free(ctx);
    ap_task_destroy(&t);

    /* {sibling}: first correct j != i; none -> h = 0 */
    t = s_task("addition", "{prompt}", "correct: {sibling} | {prompt}");
    ap_task_rollout_t g[4] = {{"375", 0, "expected 357, got 375"},
                              {"357", 1, "correct"},
                              {"0357", 1, "correct"},
                              {"", 0, "expected 357, got nothing"}};
    const char *want[4] = {"correct: 357 | 123+234=", "correct: 0357 | 123+234=",
                           "correct: 357 | 123+234=", "correct: 357 | 123+234="};
    for (int i = 0; i < 4; i++) {
        h = ap_task_render_privileged(t, &ex, g, 4, i, &ctx);
        AP_CHECK(h == 1 && !strcmp(ctx, want[i]), "sibling of %d: '%s' want '%s'", i, ctx, want[i]);
        free(ctx);
    }
    /* the only correct trajectory cannot be its own sibling */
    ap_task_rollout_t one[3] = {{"375", 0, "x"}, {"357", 1, "correct"}, {"1", 0, "y"}};
    h = ap_task_render_privileged(t, &ex, one, 3, 1, &ctx);
    AP_CHECK(h == 0 && ctx == NULL, "sole correct: h %d", h);
    h = ap_task_render_privileged(t, &ex, one, 3, 0, &ctx);
    AP_CHECK(h == 1 && !strcmp(ctx, "correct: 357 | 123+234="), "others see it: '%s'", ctx);
    free(ctx);
    ap_task_rollout_t none[3] = {{"375", 0, "x"}, {"1", 0, "y"}, {"", 0, "z"}};
    for (int i = 0; i < 3; i++) {
        ctx = (char *)1;
        h = ap_task_render_privileged(t, &ex, none, 3, i, &ctx);
        AP_CHECK(h == 0 && ctx == NULL, "no correct sibling -> h 0 (traj %d: %d)", i, h);
    }
    h = ap_task_render_privileged(t, &ex, NULL, 0, 0, &ctx);
    AP_CHECK(h == 0, "no group -> no sibling -> h 0");
    /* tokens: <bos> + context, or nothing */
    ap_tokenizer_t *tok = ap_task_build_tokenizer(t);
    int32_t *ids;
    int n;
    h = ap_task_encode_privileged(t, tok, &ex, g, 4, 0, &ids, &n);
    char *back = ids ? ap_tokenizer_decode(tok, ids, n, AP_TOK_SPECIALS) : NULL;
    AP_CHECK(h == 1 && back && !strcmp(back, "<bos>correct: 357 | 123+234="), "tokens: '%s'", back);
    printf("privileged tokens: %d ids, '%s'\n", n, back);
    free(back);
    free(ids);
    h = ap_task_encode_privileged(t, tok, &ex, none, 3, 0, &ids, &n);
    AP_CHECK(h == 0 && ids == NULL && n == 0, "tokens h=0");
    /* a sibling holding a character outside the vocabulary: -1, named */
    ap_task_rollout_t odd[2] = {{"x", 0, "f"}, {"35%", 1, "correct"}};
    h = ap_task_encode_privileged(t, tok, &ex, odd, 2, 0, &ids, &n);
    AP_CHECK(h == -1 && strstr(ap_errmsg(), "privileged context") && strstr(ap_errmsg(), "'%'"),
             "odd sibling: %s", ap_errmsg());
    ap_tokenizer_destroy(&tok);
    ap_task_destroy(&t);

    /* {feedback} of this trajectory */
    t = s_task("addition", "{prompt}", "{feedback}. {prompt}");
    h = ap_task_render_privileged(t, &ex, g, 4, 0, &ctx);
    AP_CHECK(h == 1 && !strcmp(ctx, "expected 357, got 375. 123+234="), "feedback: '%s'", ctx);
    free(ctx);
    h = ap_task_render_privileged(t, &ex, NULL, 0, 0, &ctx);
    AP_CHECK(h == 0, "no rollout -> no feedback -> h 0");
    tok = ap_task_build_tokenizer(t);
    h = ap_task_encode_privileged(t, tok, &ex, g, 4, 3, &ids, &n);
    AP_CHECK(h == 1, "feedback characters are in the task's vocabulary: %s", ap_errmsg());
    free(ids);
    ap_tokenizer_destroy(&tok);
    ap_task_destroy(&t);

    /* {solution}: present for addition, absent for reverse -> h = 0 */
    t = s_task("addition", "{prompt}", "{solution} | {prompt}");
    h = ap_task_render_privileged(t, &ex, NULL, 0, 0, &ctx);
    AP_CHECK(h == 1 && !strcmp(ctx, "3+4=7,2+3=5,1+2=3 | 123+234="), "solution: '%s'", ctx);
    free(ctx);
    ap_task_destroy(&t);
    t = s_task("reverse", "{prompt}", "{solution} | {prompt}");
    ap_example_t rex = {.prompt = "reverse:abc=", .answer = "cba", .solution = NULL, .id = "r"};
    h = ap_task_render_privileged(t, &rex, NULL, 0, 0, &ctx);
    AP_CHECK(h == 0 && ctx == NULL, "reverse has no solution -> h 0");
    ap_task_destroy(&t);

    /* an empty privileged template: never a context */
    t = s_task("addition", "{prompt}", "");
    h = ap_task_render_privileged(t, &ex, g, 4, 0, &ctx);
    AP_CHECK(h == 0 && ctx == NULL, "empty privileged template -> h 0");
    ap_task_destroy(&t);
}

int main(void) {
    s_render_each();
    s_missing_var();
    s_errors();
    s_extract();
    s_privileged();
    return ap_test_result();
}
