/* verifier.h: decide whether an answer is right, give its reward and a feedback sentence
 * (docs/TASKS.md, "Verifiers").
 *
 * Kinds:
 *   exact    the answer equals the expected text after trimming ASCII whitespace at both ends
 *            (case- and byte-sensitive inside).
 *   numeric  both are decimal numbers ([+-]digits[.digits], also ".5" and "5.") and their
 *            values are equal: "0357" == "357" == "357.0" == "+357", "-0" == "0". Compared
 *            exactly on the digit strings (no float rounding, any length). No exponents, no
 *            thousands separators. When the *expected* text is not a number (a dataset
 *            mistake), it falls back to exact comparison.
 * Feedback (for self-distillation's {feedback}): "correct" when right, otherwise
 * "expected 357, got 375", "expected 357, got nothing", "expected 357, got 3a7 (not a
 * number)"; the "got" part is cut to 48 characters followed by "...".
 *
 * Usage:
 *   ap_verifier_t v;
 *   ap_verifier_defaults(&v);                 // exact, reward 1 / 0
 *   ap_verifier_kind_parse("numeric", &v.kind);
 *   ap_verdict_t r;
 *   ap_verifier_check(&v, "357", " 0357\n", &r);   // r.correct 1, r.reward 1, "correct"
 */
#ifndef APPRENTICE_VERIFIER_H
#define APPRENTICE_VERIFIER_H

typedef enum { AP_VERIFIER_EXACT = 0, AP_VERIFIER_NUMERIC = 1 } ap_verifier_kind_t;

typedef struct {
    int kind;              /* ap_verifier_kind_t */
    double reward_correct; /* reward of a correct answer (1) */
    double reward_wrong;   /* reward of a wrong or missing answer (0) */
} ap_verifier_t;

#define AP_FEEDBACK_MAX 160 /* bytes of ap_verdict_t.feedback, NUL included */

typedef struct {
    double reward;                  /* reward_correct or reward_wrong */
    int correct;                    /* 1 / 0 */
    char feedback[AP_FEEDBACK_MAX]; /* "correct" or "expected X, got Y" (UTF-8, never cut
                                       mid-character) */
} ap_verdict_t;

void ap_verifier_defaults(ap_verifier_t *v);
/* "exact" / "numeric" -> *kind. 0 / -1 (ap_err lists the kinds). */
int ap_verifier_kind_parse(const char *name, int *kind);
const char *ap_verifier_kind_name(int kind);

/* Judge `got` (an answer already extracted from a completion) against `expected`. */
void ap_verifier_check(const ap_verifier_t *v, const char *expected, const char *got,
                       ap_verdict_t *out);
/* A completion in which no answer could be found (it does not fit the completion template):
 * wrong, feedback "expected X, got Y (not in the answer format)". */
void ap_verifier_no_answer(const ap_verifier_t *v, const char *expected, const char *completion,
                           ap_verdict_t *out);
/* 1 when `s` parses as a number under the numeric rules above. */
int ap_verifier_is_number(const char *s);

/* Every literal character the feedback sentences can contain (a vocabulary must hold them
 * when a privileged template uses {feedback}). */
const char *ap_verifier_feedback_alphabet(void);

#endif
