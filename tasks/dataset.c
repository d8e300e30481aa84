/* dataset.c: the JSON Lines loader (one example per line, every line checked, bad lines
 * refused or skipped and counted) and the ap_example_t helpers. */
#include "apprentice/dataset.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"

#define S_LOG_BAD_MAX 5       /* bad lines logged one by one before only counting */
#define S_UNKNOWN_KEYS_MAX 16 /* distinct unknown key names reported */

struct ap_dataset {
    char *path;       /* the file, for messages */
    ap_example_t *ex; /* [n] valid examples, in file order */
    int *line;        /* [n] their 1-based line numbers */
    int n;            /* valid examples */
    int cap;          /* allocated slots of ex and line */
    long bad;         /* bad lines skipped (policy skip) */
    long blank;       /* whitespace-only lines skipped */
    char *first_bad;  /* message of the first skipped line */
};

void ap_example_clear(ap_example_t *ex) {
    if (!ex) return;
    free(ex->prompt);
    free(ex->answer);
    free(ex->solution);
    free(ex->id);
    memset(ex, 0, sizeof *ex);
}

void ap_example_copy(ap_example_t *dst, const ap_example_t *src) {
    dst->prompt = src->prompt ? ap_strdup(src->prompt) : NULL;
    dst->answer = src->answer ? ap_strdup(src->answer) : NULL;
    dst->solution = src->solution ? ap_strdup(src->solution) : NULL;
    dst->id = src->id ? ap_strdup(src->id) : NULL;
}

int ap_dataset_bad_line_parse(const char *name, int *policy) {
    if (name && !strcmp(name, "error"))
        *policy = AP_BAD_LINE_ERROR;
    else if (name && !strcmp(name, "skip"))
        *policy = AP_BAD_LINE_SKIP;
    else
        return ap_err("unknown on_bad_line '%s' (error, skip)", name ? name : "(null)");
    return 0;
}

static const char *s_type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

static int s_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return 0;
    return 1;
}

/* Parse one line into *ex. 0, or -1 with ap_err("PATH:LINE: reason"). */
static int s_parse_line(const char *path, int lineno, const char *line, size_t len,
                        ap_example_t *ex, char **unknown, int *nunknown) {
    json_error_t jerr;
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root)
        return ap_err("%s:%d: bad JSON at column %d: %s", path, lineno, jerr.column, jerr.text);
    int rc = -1;
    memset(ex, 0, sizeof *ex);
    if (!json_is_object(root)) {
        ap_err("%s:%d: expected a JSON object {\"prompt\": ..., \"answer\": ...}, got %s", path,
               lineno, s_type_name(root));
        goto out;
    }
    json_t *prompt = json_object_get(root, "prompt");
    json_t *answer = json_object_get(root, "answer");
    json_t *solution = json_object_get(root, "solution");
    json_t *id = json_object_get(root, "id");
    if (!prompt) {
        ap_err("%s:%d: missing \"prompt\"", path, lineno);
        goto out;
    }
    if (!json_is_string(prompt)) {
        ap_err("%s:%d: \"prompt\" must be a string, got %s", path, lineno, s_type_name(prompt));
        goto out;
    }
    if (json_string_length(prompt) == 0) {
        ap_err("%s:%d: \"prompt\" is empty", path, lineno);
        goto out;
    }
    if (!answer) {
        ap_err("%s:%d: missing \"answer\"", path, lineno);
        goto out;
    }
    if (!json_is_string(answer)) {
        ap_err("%s:%d: \"answer\" must be a string, got %s (quote numbers: \"357\")", path, lineno,
               s_type_name(answer));
        goto out;
    }
    if (solution && !json_is_string(solution) && !json_is_null(solution)) {
        ap_err("%s:%d: \"solution\" must be a string or null, got %s", path, lineno,
               s_type_name(solution));
        goto out;
    }
    if (id && !json_is_string(id) && !json_is_integer(id)) {
        ap_err("%s:%d: \"id\" must be a string or an integer, got %s", path, lineno,
               s_type_name(id));
        goto out;
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        if (!strcmp(key, "prompt") || !strcmp(key, "answer") || !strcmp(key, "solution") ||
            !strcmp(key, "id"))
            continue;
        int known = 0;
        for (int i = 0; i < *nunknown; i++)
            known |= !strcmp(unknown[i], key);
        if (!known && *nunknown < S_UNKNOWN_KEYS_MAX) {
            unknown[(*nunknown)++] = ap_strdup(key);
            ap_log(AP_LOG_WARN,
                   "%s:%d: ignoring unknown key \"%s\" (known: prompt, answer, "
                   "solution, id)",
                   path, lineno, key);
        }
    }
    ex->prompt = ap_strdup(json_string_value(prompt));
    ex->answer = ap_strdup(json_string_value(answer));
    if (solution && json_is_string(solution)) ex->solution = ap_strdup(json_string_value(solution));
    if (id && json_is_string(id))
        ex->id = ap_strdup(json_string_value(id));
    else if (id)
        ex->id = ap_sprintf("%lld", (long long)json_integer_value(id));
    else
        ex->id = ap_sprintf("%s:%d", path, lineno);
    rc = 0;
out:
    json_decref(root);
    return rc;
}

ap_dataset_t *ap_dataset_load(const char *path, int on_bad_line) {
    AP_ASSERT(on_bad_line == AP_BAD_LINE_ERROR || on_bad_line == AP_BAD_LINE_SKIP);
    FILE *f = fopen(path, "rb");
    if (!f) {
        ap_err("%s: cannot open dataset: %s", path, strerror(errno));
        return NULL;
    }
    ap_dataset_t *d = ap_calloc(1, sizeof *d);
    d->path = ap_strdup(path);
    char *unknown[S_UNKNOWN_KEYS_MAX];
    int nunknown = 0;
    char *line = NULL;
    size_t linecap = 0;
    ssize_t got;
    int lineno = 0, failed = 0;
    while ((got = getline(&line, &linecap, f)) >= 0) {
        lineno++;
        char *text = line;
        size_t len = (size_t)got;
        if (lineno == 1 && len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) text += 3, len -= 3;
        if (s_blank(text, len)) {
            d->blank++;
            continue;
        }
        ap_example_t ex;
        if (s_parse_line(path, lineno, text, len, &ex, unknown, &nunknown) < 0) {
            if (on_bad_line == AP_BAD_LINE_ERROR) {
                failed = 1;
                break;
            }
            if (!d->first_bad) d->first_bad = ap_strdup(ap_errmsg());
            if (d->bad < S_LOG_BAD_MAX)
                ap_log(AP_LOG_WARN, "skipping bad line: %s", ap_errmsg());
            else if (d->bad == S_LOG_BAD_MAX)
                ap_log(AP_LOG_WARN, "%s: more bad lines: skipping without logging each", path);
            d->bad++;
            continue;
        }
        if (d->n == d->cap) {
            d->cap = d->cap ? 2 * d->cap : 256;
            d->ex = ap_realloc(d->ex, (size_t)d->cap * sizeof *d->ex);
            d->line = ap_realloc(d->line, (size_t)d->cap * sizeof *d->line);
        }
        d->ex[d->n] = ex;
        d->line[d->n] = lineno;
        d->n++;
    }
    int read_error = ferror(f);
    fclose(f);
    free(line);
    for (int i = 0; i < nunknown; i++)
        free(unknown[i]);
    if (!failed && read_error) {
        ap_err("%s: read error after line %d", path, lineno);
        failed = 1;
    }
    if (!failed && d->n == 0) {
        if (d->bad)
            ap_err("%s: no valid example (%ld bad lines skipped; first: %s)", path, d->bad,
                   d->first_bad);
        else
            ap_err("%s: no examples (the file is empty)", path);
        failed = 1;
    }
    if (failed) {
        char *msg = ap_strdup(ap_errmsg());
        ap_dataset_destroy(&d);
        ap_err("%s", msg);
        free(msg);
        return NULL;
    }
    if (d->bad) ap_log(AP_LOG_WARN, "%s: %d examples, %ld bad lines skipped", path, d->n, d->bad);
    return d;
}

void ap_dataset_destroy(ap_dataset_t **dp) {
    if (!dp || !*dp) return;
    ap_dataset_t *d = *dp;
    for (int i = 0; i < d->n; i++)
        ap_example_clear(&d->ex[i]);
    free(d->ex);
    free(d->line);
    free(d->path);
    free(d->first_bad);
    free(d);
    *dp = NULL;
}

int ap_dataset_size(const ap_dataset_t *d) {
    return d->n;
}
const ap_example_t *ap_dataset_get(const ap_dataset_t *d, int i) {
    AP_ASSERT(i >= 0 && i < d->n);
    return &d->ex[i];
}
int ap_dataset_line(const ap_dataset_t *d, int i) {
    AP_ASSERT(i >= 0 && i < d->n);
    return d->line[i];
}
const char *ap_dataset_path(const ap_dataset_t *d) {
    return d->path;
}
long ap_dataset_bad_lines(const ap_dataset_t *d) {
    return d->bad;
}
long ap_dataset_blank_lines(const ap_dataset_t *d) {
    return d->blank;
}
const char *ap_dataset_first_bad(const ap_dataset_t *d) {
    return d->first_bad;
}
