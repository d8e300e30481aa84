/* verifier.c: exact and numeric answer checking with rewards and feedback text. Numbers are
 * compared as canonical digit strings (sign, integer part without leading zeros, fraction
 * without trailing zeros), so any length compares exactly. */
#include "apprentice/verifier.h"

#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/tokenizer.h"

#define S_GOT_MAX_CHARS 48 /* characters of the answer quoted in feedback */

void ap_verifier_defaults(ap_verifier_t *v) {
    v->kind = AP_VERIFIER_EXACT;
    v->reward_correct = 1.0;
    v->reward_wrong = 0.0;
}

int ap_verifier_kind_parse(const char *name, int *kind) {
    if (name && !strcmp(name, "exact"))
        *kind = AP_VERIFIER_EXACT;
    else if (name && !strcmp(name, "numeric"))
        *kind = AP_VERIFIER_NUMERIC;
    else
        return ap_err("unknown verifier '%s' (exact, numeric)", name ? name : "(null)");
    return 0;
}

const char *ap_verifier_kind_name(int kind) {
    return kind == AP_VERIFIER_NUMERIC ? "numeric" : "exact";
}

const char *ap_verifier_feedback_alphabet(void) {
    return "correct expected, got nothing (not a number in the answer format)...";
}

static int s_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* [b, e) of s without surrounding ASCII whitespace. */
static void s_trim(const char *s, size_t *b, size_t *e) {
    size_t n = strlen(s), i = 0;
    while (i < n && s_space(s[i]))
        i++;
    while (n > i && s_space(s[n - 1]))
        n--;
    *b = i;
    *e = n;
}

/* Canonical form of the number in s[b, e) into a new string ("-12.5", "0"); NULL if not a
 * number. */
static char *s_canonical(const char *s, size_t b, size_t e) {
    int neg = 0;
    if (b < e && (s[b] == '+' || s[b] == '-')) neg = s[b++] == '-';
    size_t ib = b;
    while (b < e && s[b] >= '0' && s[b] <= '9')
        b++;
    size_t ie = b, fb = b, fe = b;
    if (b < e && s[b] == '.') {
        fb = ++b;
        while (b < e && s[b] >= '0' && s[b] <= '9')
            b++;
        fe = b;
    }
    if (b != e || (ie == ib && fe == fb)) return NULL; /* junk, or no digit at all */
    while (ib < ie && s[ib] == '0')
        ib++; /* leading zeros */
    while (fe > fb && s[fe - 1] == '0')
        fe--;                                        /* trailing fraction zeros */
    if (ib == ie && fe == fb) return ap_strdup("0"); /* -0 == 0 */
    return ap_sprintf("%s%.*s%s%.*s", neg ? "-" : "", ib == ie ? 1 : (int)(ie - ib),
                      ib == ie ? "0" : s + ib, fe > fb ? "." : "", (int)(fe - fb), s + fb);
}

int ap_verifier_is_number(const char *s) {
    size_t b, e;
    s_trim(s, &b, &e);
    char *c = s_canonical(s, b, e);
    free(c);
    return c != NULL;
}

/* Append at most `max` characters of s[b, e) (UTF-8 aware) to dst of capacity cap. */
static void s_quote(char *dst, size_t cap, const char *s, size_t b, size_t e, int max) {
    size_t len = strlen(dst), pos = b;
    int chars = 0;
    while (pos < e && chars < max) {
        size_t before = pos;
        if (ap_utf8_next(s, &pos) <= 0) { /* invalid byte: stop quoting rather than copy it */
            pos = before;
            break;
        }
        if (pos > e || len + (pos - before) + 4 >= cap) {
            pos = before;
            break;
        }
        memcpy(dst + len, s + before, pos - before);
        len += pos - before;
        chars++;
    }
    if (pos < e && len + 3 < cap) {
        memcpy(dst + len, "...", 3);
        len += 3;
    }
    dst[len] = 0;
}

static void s_feedback(ap_verdict_t *out, const char *expected, const char *got, size_t gb,
                       size_t ge, const char *note) {
    size_t eb, ee;
    s_trim(expected, &eb, &ee);
    out->feedback[0] = 0;
    strcpy(out->feedback, "expected ");
    s_quote(out->feedback, AP_FEEDBACK_MAX - 40, expected, eb, ee, S_GOT_MAX_CHARS);
    strcat(out->feedback, ", got ");
    if (gb == ge)
        strcat(out->feedback, "nothing");
    else
        s_quote(out->feedback, AP_FEEDBACK_MAX - 32, got, gb, ge, S_GOT_MAX_CHARS);
    if (note && gb != ge) strcat(out->feedback, note);
}

void ap_verifier_check(const ap_verifier_t *v, const char *expected, const char *got,
                       ap_verdict_t *out) {
    AP_ASSERT(v && expected && got && out);
    size_t eb, ee, gb, ge;
    s_trim(expected, &eb, &ee);
    s_trim(got, &gb, &ge);
    int correct = 0;
    const char *note = NULL;
    char *ce = v->kind == AP_VERIFIER_NUMERIC ? s_canonical(expected, eb, ee) : NULL;
    if (ce) {
        char *cg = s_canonical(got, gb, ge);
        if (cg)
            correct = !strcmp(ce, cg);
        else
            note = " (not a number)";
        free(cg);
        free(ce);
    } else {
        correct = ee - eb == ge - gb && !memcmp(expected + eb, got + gb, ee - eb);
    }
    out->correct = correct;
    out->reward = correct ? v->reward_correct : v->reward_wrong;
    if (correct)
        strcpy(out->feedback, "correct");
    else
        s_feedback(out, expected, got, gb, ge, note);
}

void ap_verifier_no_answer(const ap_verifier_t *v, const char *expected, const char *completion,
                           ap_verdict_t *out) {
    size_t gb, ge;
    s_trim(completion, &gb, &ge);
    out->correct = 0;
    out->reward = v->reward_wrong;
    s_feedback(out, expected, completion, gb, ge, " (not in the answer format)");
}
