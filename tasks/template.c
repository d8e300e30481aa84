/* template.c: compile a template into a list of parts (literal text or a placeholder), render
 * it over ap_template_vars_t, and extract one placeholder's value back out of a rendering
 * (the verifier's view of a completion). */
#include "apprentice/template.h"

#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"

static const struct {
    const char *name;
    unsigned bit;
} s_names[] = {{"prompt", AP_TPL_PROMPT},
               {"answer", AP_TPL_ANSWER},
               {"solution", AP_TPL_SOLUTION},
               {"feedback", AP_TPL_FEEDBACK},
               {"sibling", AP_TPL_SIBLING}};

typedef struct {
    unsigned var; /* 0 = literal, else one AP_TPL_* bit */
    char *lit;    /* literal text (var == 0) */
} s_part_t;

struct ap_template {
    char *text;      /* source */
    s_part_t *parts; /* [nparts] literals and placeholders; adjacent literals merged */
    int nparts;      /* part count */
    unsigned uses;   /* mask of placeholders present */
};

static const char *s_var_name(unsigned bit) {
    for (size_t i = 0; i < AP_COUNT(s_names); i++)
        if (s_names[i].bit == bit) return s_names[i].name;
    return "?";
}

/* "{prompt} {answer}" for a mask: into a new string. */
static char *s_mask_names(unsigned mask) {
    char buf[128] = "";
    for (size_t i = 0; i < AP_COUNT(s_names); i++)
        if (mask & s_names[i].bit) {
            if (buf[0]) strcat(buf, " ");
            strcat(buf, "{");
            strcat(buf, s_names[i].name);
            strcat(buf, "}");
        }
    return ap_strdup(buf[0] ? buf : "(none)");
}

static void s_push(ap_template_t *t, unsigned var, const char *lit, size_t litlen) {
    if (var == 0 && litlen == 0) return;
    /* merge adjacent literals */
    if (var == 0 && t->nparts > 0 && t->parts[t->nparts - 1].var == 0) {
        s_part_t *p = &t->parts[t->nparts - 1];
        size_t old = strlen(p->lit);
        p->lit = ap_realloc(p->lit, old + litlen + 1);
        memcpy(p->lit + old, lit, litlen);
        p->lit[old + litlen] = 0;
        return;
    }
    t->parts = ap_realloc(t->parts, (size_t)(t->nparts + 1) * sizeof *t->parts);
    s_part_t *p = &t->parts[t->nparts++];
    p->var = var;
    p->lit = NULL;
    if (var == 0) {
        p->lit = ap_malloc(litlen + 1);
        memcpy(p->lit, lit, litlen);
        p->lit[litlen] = 0;
    }
}

ap_template_t *ap_template_new(const char *text, unsigned allowed, const char *key) {
    if (!key) key = "template";
    if (!text) {
        ap_err("%s: missing (use \"\" for an empty template)", key);
        return NULL;
    }
    ap_template_t *t = ap_calloc(1, sizeof *t);
    t->text = ap_strdup(text);
    size_t i = 0, lit = 0; /* lit: start of the pending literal run */
    while (text[i]) {
        char c = text[i];
        if ((c == '{' && text[i + 1] == '{') || (c == '}' && text[i + 1] == '}')) {
            s_push(t, 0, text + lit, i - lit + 1); /* keep one brace */
            i += 2;
            lit = i;
            continue;
        }
        if (c == '}') {
            ap_err("%s: stray '}' at position %zu (write '}}' for a literal brace)", key, i + 1);
            ap_template_destroy(&t);
            return NULL;
        }
        if (c != '{') {
            i++;
            continue;
        }
        size_t close = i + 1;
        while (text[close] && text[close] != '}' && text[close] != '{')
            close++;
        if (text[close] != '}') {
            ap_err("%s: '{' at position %zu is not closed (write '{{' for a literal brace)", key,
                   i + 1);
            ap_template_destroy(&t);
            return NULL;
        }
        size_t nlen = close - i - 1;
        unsigned bit = 0;
        for (size_t k = 0; k < AP_COUNT(s_names); k++)
            if (strlen(s_names[k].name) == nlen && !memcmp(s_names[k].name, text + i + 1, nlen))
                bit = s_names[k].bit;
        if (!bit) {
            char *known = s_mask_names(AP_TPL_ALL);
            ap_err("%s: unknown placeholder {%.*s} at position %zu (known: %s)", key, (int)nlen,
                   text + i + 1, i + 1, known);
            free(known);
            ap_template_destroy(&t);
            return NULL;
        }
        if (!(bit & allowed)) {
            char *ok = s_mask_names(allowed);
            ap_err("%s: placeholder {%s} at position %zu is not allowed in this template "
                   "(allowed: %s)",
                   key, s_var_name(bit), i + 1, ok);
            free(ok);
            ap_template_destroy(&t);
            return NULL;
        }
        s_push(t, 0, text + lit, i - lit);
        s_push(t, bit, NULL, 0);
        t->uses |= bit;
        i = close + 1;
        lit = i;
    }
    s_push(t, 0, text + lit, i - lit);
    return t;
}

void ap_template_destroy(ap_template_t **tp) {
    if (!tp || !*tp) return;
    ap_template_t *t = *tp;
    for (int i = 0; i < t->nparts; i++)
        free(t->parts[i].lit);
    free(t->parts);
    free(t->text);
    free(t);
    *tp = NULL;
}

const char *ap_template_text(const ap_template_t *t) {
    return t->text;
}
unsigned ap_template_uses(const ap_template_t *t) {
    return t->uses;
}
int ap_template_is_empty(const ap_template_t *t) {
    return t->nparts == 0;
}

int ap_template_count(const ap_template_t *t, unsigned placeholder) {
    int n = 0;
    for (int i = 0; i < t->nparts; i++)
        n += t->parts[i].var == placeholder;
    return n;
}

char *ap_template_literals(const ap_template_t *t) {
    size_t len = 0;
    for (int i = 0; i < t->nparts; i++)
        if (!t->parts[i].var) len += strlen(t->parts[i].lit);
    char *s = ap_malloc(len + 1);
    s[0] = 0;
    for (int i = 0; i < t->nparts; i++)
        if (!t->parts[i].var) strcat(s, t->parts[i].lit);
    return s;
}

static const char *s_value(const ap_template_vars_t *v, unsigned bit) {
    switch (bit) {
    case AP_TPL_PROMPT:
        return v->prompt;
    case AP_TPL_ANSWER:
        return v->answer;
    case AP_TPL_SOLUTION:
        return v->solution;
    case AP_TPL_FEEDBACK:
        return v->feedback;
    case AP_TPL_SIBLING:
        return v->sibling;
    default:
        AP_ASSERTF(0, "bad placeholder bit %u", bit);
    }
}

int ap_template_render(const ap_template_t *t, const ap_template_vars_t *v, char **out) {
    AP_ASSERT(t && v && out);
    *out = NULL;
    size_t len = 0;
    for (int i = 0; i < t->nparts; i++) {
        const char *s = t->parts[i].var ? s_value(v, t->parts[i].var) : t->parts[i].lit;
        if (!s) return 0;
        len += strlen(s);
    }
    char *r = ap_malloc(len + 1);
    size_t at = 0;
    for (int i = 0; i < t->nparts; i++) {
        const char *s = t->parts[i].var ? s_value(v, t->parts[i].var) : t->parts[i].lit;
        size_t k = strlen(s);
        memcpy(r + at, s, k);
        at += k;
    }
    r[at] = 0;
    *out = r;
    return 1;
}

/* Index of the one part holding `placeholder`, -1 when absent or repeated. */
static int s_find_once(const ap_template_t *t, unsigned placeholder) {
    int at = -1;
    for (int i = 0; i < t->nparts; i++)
        if (t->parts[i].var == placeholder) {
            if (at >= 0) return -1;
            at = i;
        }
    return at;
}

int ap_template_check_extractable(const ap_template_t *t, unsigned placeholder, const char *key) {
    int n = ap_template_count(t, placeholder);
    if (n != 1)
        return ap_err("%s: must contain {%s} exactly once (found %d)", key, s_var_name(placeholder),
                      n);
    int at = s_find_once(t, placeholder);
    /* parts are merged, so a neighbour that is a placeholder means no literal in between */
    if (at > 0 && t->parts[at - 1].var)
        return ap_err("%s: {%s} directly follows {%s}: put literal text between them so the "
                      "verifier can find where {%s} starts",
                      key, s_var_name(placeholder), s_var_name(t->parts[at - 1].var),
                      s_var_name(placeholder));
    if (at + 1 < t->nparts && t->parts[at + 1].var)
        return ap_err("%s: {%s} is directly followed by {%s}: put literal text between them so "
                      "the verifier can find where {%s} ends",
                      key, s_var_name(placeholder), s_var_name(t->parts[at + 1].var),
                      s_var_name(placeholder));
    return 0;
}

/* Last occurrence of `needle` in hay[0, limit), or NULL. */
static const char *s_rfind(const char *hay, size_t limit, const char *needle) {
    size_t n = strlen(needle);
    if (n > limit) return NULL;
    for (size_t i = limit - n + 1; i-- > 0;)
        if (!memcmp(hay + i, needle, n)) return hay + i;
    return NULL;
}

int ap_template_extract(const ap_template_t *t, unsigned placeholder, const char *text,
                        char **out) {
    AP_ASSERT(t && text && out);
    *out = NULL;
    int at = s_find_once(t, placeholder);
    if (at < 0) return 0;
    size_t len = strlen(text);
    int var_before = 0, var_after = 0;
    for (int i = 0; i < at; i++)
        var_before |= t->parts[i].var != 0;
    for (int i = at + 1; i < t->nparts; i++)
        var_after |= t->parts[i].var != 0;
    const char *before = at > 0 ? t->parts[at - 1].lit : NULL;            /* literal or NULL */
    const char *after = at + 1 < t->nparts ? t->parts[at + 1].lit : NULL; /* literal or NULL */
    size_t start = 0, end = len;
    if (!var_after && after) { /* a fixed suffix: the text must end with it */
        size_t k = strlen(after);
        if (k > len || memcmp(text + len - k, after, k)) return 0;
        end = len - k;
    }
    if (!var_before && before) { /* a fixed prefix: the text must start with it */
        size_t k = strlen(before);
        if (k > end || memcmp(text, before, k)) return 0;
        start = k;
    } else if (before) { /* after a placeholder: the last occurrence of the separator */
        const char *p = s_rfind(text, end, before);
        if (!p) return 0;
        start = (size_t)(p - text) + strlen(before);
    }
    if (var_after && after) { /* followed by a placeholder: the first occurrence of the separator */
        const char *p = strstr(text + start, after);
        if (!p) return 0;
        end = (size_t)(p - text);
    }
    if (start > end) return 0;
    char *r = ap_malloc(end - start + 1);
    memcpy(r, text + start, end - start);
    r[end - start] = 0;
    *out = r;
    return 1;
}
