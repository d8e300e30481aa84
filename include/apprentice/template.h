/* template.h: prompt, completion and privileged-context templates (docs/TASKS.md).
 *
 * A template is text with placeholders {prompt} {answer} {solution} {feedback} {sibling};
 * "{{" and "}}" are literal braces. It is compiled once at config time, where an unknown
 * placeholder, one not allowed in that template, or a stray brace is an error naming the
 * config key, the placeholder and its position. Rendering substitutes the variables; when a
 * variable the template uses is unavailable (NULL) nothing is rendered and the call returns 0:
 * that is how a privileged template needing {sibling} yields "no context" (h = 0) for a
 * trajectory without a correct sibling.
 *
 * Usage:
 *   ap_template_t *t = ap_template_new("answer: {answer} | {prompt}", AP_TPL_ALL,
 *                                      "task.privileged_template");
 *   if (!t) die(ap_errmsg());            // e.g. "...: unknown placeholder {answr} at position 9"
 *   ap_template_vars_t v = {.prompt = "123+234=", .answer = "357"};
 *   char *s;
 *   if (ap_template_render(t, &v, &s) == 1) { use(s); free(s); }   // "answer: 357 | 123+234="
 *   ap_template_destroy(&t);
 */
#ifndef APPRENTICE_TEMPLATE_H
#define APPRENTICE_TEMPLATE_H

typedef struct ap_template ap_template_t;

/* Placeholder bits (for `allowed` and ap_template_uses()). */
enum {
    AP_TPL_PROMPT = 1 << 0,
    AP_TPL_ANSWER = 1 << 1,
    AP_TPL_SOLUTION = 1 << 2,
    AP_TPL_FEEDBACK = 1 << 3,
    AP_TPL_SIBLING = 1 << 4,
    AP_TPL_ALL = (1 << 5) - 1,
};

/* The values of the placeholders; NULL = unavailable. Borrowed by the render call. */
typedef struct {
    const char *prompt;   /* {prompt} */
    const char *answer;   /* {answer} */
    const char *solution; /* {solution}: privileged text of the example, if any */
    const char *feedback; /* {feedback}: the verifier's message for this trajectory */
    const char *sibling;  /* {sibling}: a correct completion of another trajectory of the group */
} ap_template_vars_t;

/* Compile `text`; `allowed` is a mask of AP_TPL_*; `key` names the config key in errors.
 * NULL + ap_err on an unknown or disallowed placeholder or a stray brace. */
ap_template_t *ap_template_new(const char *text, unsigned allowed, const char *key);
void ap_template_destroy(ap_template_t **t);

const char *ap_template_text(const ap_template_t *t); /* the source text, borrowed */
unsigned ap_template_uses(const ap_template_t *t);    /* mask of the placeholders it contains */
int ap_template_count(const ap_template_t *t, unsigned placeholder); /* occurrences of one */
int ap_template_is_empty(const ap_template_t *t);                    /* "" */
/* All literal text of the template, concatenated (for building a vocabulary). Caller frees. */
char *ap_template_literals(const ap_template_t *t);

/* Render into a new string (*out, caller frees) and return 1; return 0 with *out = NULL when
 * a placeholder the template uses has a NULL value. */
int ap_template_render(const ap_template_t *t, const ap_template_vars_t *v, char **out);

/* Check that ap_template_extract() can find `placeholder` in any rendering: it occurs exactly
 * once, and any placeholder before/after it is separated from it by literal text.
 * 0 / -1 with ap_err naming `key`. */
int ap_template_check_extractable(const ap_template_t *t, unsigned placeholder, const char *key);
/* The inverse of rendering for one placeholder: the text that `placeholder` stood for in
 * `text`. Literal text right before it is searched from the end (the last occurrence: a
 * rationale before "= {answer}" may itself contain "="), literal text right after it from
 * there on. Returns 1 with *out (caller frees), 0 with *out = NULL when `text` does not fit. */
int ap_template_extract(const ap_template_t *t, unsigned placeholder, const char *text, char **out);

#endif
