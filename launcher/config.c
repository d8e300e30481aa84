/* config.c: the run config: defaults, YAML file, --set overrides, validation, save.
 *
 * libcyaml 1.3 has no default values (an absent optional field is zero) and is lenient with
 * scalars ("3x" loads as 3). So a file is read in three passes:
 *   1. libyaml parses it into a document (syntax errors with line numbers);
 *   2. s_check walks the document against the libcyaml schema: unknown keys, duplicate keys,
 *      strict scalars (whole-string numbers, known booleans and enum values), with file:line and
 *      the dotted key in every message;
 *   3. libcyaml loads the same text into a zeroed struct, and s_merge copies exactly the fields
 *      present in the document onto the config being built (defaults first).
 * `--set a.b=v` is the same path on the one-line document "a: {b: v}".
 * The schema is written once (s_*_fields); docs and the docs test walk it too.
 */
#include "apprentice/config.h"

#include <cyaml/cyaml.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "apprentice/base.h"
#include "launcher/config_schema.h"

/* ---- libcyaml plumbing ---- */

typedef struct {
    char buf[1024];
} s_cylog_t;

static void s_cyaml_log(cyaml_log_t level, void *ctx, const char *fmt, va_list args) {
    s_cylog_t *log = ctx;
    if (level < CYAML_LOG_ERROR || !log) return;
    size_t n = strlen(log->buf);
    if (n + 2 < sizeof log->buf) vsnprintf(log->buf + n, sizeof log->buf - n, fmt, args);
}

static cyaml_config_t s_cyaml_config(s_cylog_t *log) {
    cyaml_config_t c = {
        .log_fn = s_cyaml_log,
        .log_ctx = log,
        .mem_fn = cyaml_mem,
        .log_level = CYAML_LOG_ERROR,
        .flags = CYAML_CFG_STYLE_BLOCK,
    };
    return c;
}

/* ---- pass 2: check the document against the schema ---- */

static const cyaml_schema_field_t *s_field(const cyaml_schema_field_t *fields, const char *key) {
    for (; fields->key; fields++)
        if (!strcmp(fields->key, key)) return fields;
    return NULL;
}

static void s_known_keys(const cyaml_schema_field_t *fields, char *out, size_t cap) {
    out[0] = 0;
    for (; fields->key; fields++)
        snprintf(out + strlen(out), cap - strlen(out), "%s%s", out[0] ? ", " : "", fields->key);
}

static int s_where(const char *origin, const yaml_node_t *node, char *out, size_t cap) {
    if (node && strchr(origin, '=') == NULL) /* a --set text has no useful line */
        return snprintf(out, cap, "%s:%zu", origin, node->start_mark.line + 1);
    return snprintf(out, cap, "%s", origin);
}

static int s_check_scalar(const char *origin, const char *key, const yaml_node_t *node,
                          const cyaml_schema_value_t *v) {
    char where[512];
    s_where(origin, node, where, sizeof where);
    if (node->type != YAML_SCALAR_NODE)
        return ap_err("%s: %s: expected a single value, not a %s", where, key,
                      node->type == YAML_MAPPING_NODE ? "mapping" : "list");
    const char *s = (const char *)node->data.scalar.value;
    char *end = NULL;
    errno = 0;
    switch (v->type) {
    case CYAML_INT:
    case CYAML_UINT: {
        long long x = strtoll(s, &end, 10);
        if (!*s || *end || errno)
            return ap_err("%s: %s: '%s' is not an integer", where, key, s);
        if (v->type == CYAML_UINT && x < 0)
            return ap_err("%s: %s: %s must not be negative", where, key, s);
        if (v->data_size == 4 && (x > INT32_MAX || x < INT32_MIN))
            return ap_err("%s: %s: %s is out of range", where, key, s);
        return 0;
    }
    case CYAML_FLOAT: {
        double x = strtod(s, &end); /* "inf" is allowed: options like clip_token_kl use it as off */
        if (!*s || *end || errno || isnan(x))
            return ap_err("%s: %s: '%s' is not a number", where, key, s);
        return 0;
    }
    case CYAML_BOOL: {
        static const char *ok[] = {"true", "false", "yes", "no", "on", "off"};
        for (size_t i = 0; i < AP_COUNT(ok); i++)
            if (!strcasecmp(s, ok[i])) return 0;
        return ap_err("%s: %s: '%s' is not a boolean (true or false)", where, key, s);
    }
    case CYAML_ENUM: {
        char allowed[512] = "";
        for (uint32_t i = 0; i < v->enumeration.count; i++) {
            if (!strcmp(s, v->enumeration.strings[i].str)) return 0;
            snprintf(allowed + strlen(allowed), sizeof allowed - strlen(allowed), "%s%s",
                     i ? ", " : "", v->enumeration.strings[i].str);
        }
        return ap_err("%s: %s: '%s' is not one of: %s", where, key, s, allowed);
    }
    case CYAML_STRING:
        return 0;
    default:
        return ap_err("%s: %s: unsupported schema type %d", where, key, (int)v->type);
    }
}

static int s_check_mapping(const char *origin, yaml_document_t *doc, const yaml_node_t *node,
                           const cyaml_schema_field_t *fields, const char *prefix) {
    char where[512];
    s_where(origin, node, where, sizeof where);
    if (node->type != YAML_MAPPING_NODE)
        return ap_err("%s: %s: expected a mapping of keys (write {} for all defaults)", where,
                      prefix[0] ? prefix : "top level");
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        yaml_node_t *v = yaml_document_get_node(doc, p->value);
        s_where(origin, k, where, sizeof where);
        if (k->type != YAML_SCALAR_NODE) return ap_err("%s: keys must be plain words", where);
        const char *key = (const char *)k->data.scalar.value;
        char dotted[256];
        snprintf(dotted, sizeof dotted, "%s%s%s", prefix, prefix[0] ? "." : "", key);
        for (yaml_node_pair_t *q = node->data.mapping.pairs.start; q < p; q++) {
            yaml_node_t *k2 = yaml_document_get_node(doc, q->key);
            if (k2->type == YAML_SCALAR_NODE && !strcmp((const char *)k2->data.scalar.value, key))
                return ap_err("%s: %s: key given twice", where, dotted);
        }
        const cyaml_schema_field_t *f = s_field(fields, key);
        if (!f) {
            char known[1024];
            s_known_keys(fields, known, sizeof known);
            return ap_err("%s: %s: unknown key (known here: %s)", where, dotted, known);
        }
        if (f->value.type == CYAML_MAPPING) {
            if (s_check_mapping(origin, doc, v, f->value.mapping.fields, dotted) < 0) return -1;
        } else if (f->value.type == CYAML_SEQUENCE) {
            if (v->type != YAML_SEQUENCE_NODE) {
                s_where(origin, v, where, sizeof where);
                return ap_err("%s: %s: expected a list ([a, b, ...])", where, dotted);
            }
            for (yaml_node_item_t *it = v->data.sequence.items.start;
                 it < v->data.sequence.items.top; it++)
                if (s_check_scalar(origin, dotted, yaml_document_get_node(doc, *it),
                                   f->value.sequence.entry) < 0)
                    return -1;
        } else if (s_check_scalar(origin, dotted, v, &f->value) < 0) {
            return -1;
        }
    }
    return 0;
}

/* ---- pass 3: move present fields from the loaded struct onto the config ---- */

static void s_free_sequence(const cyaml_schema_field_t *f, void *base) {
    void **ptr = (void **)((char *)base + f->data_offset);
    uint32_t count = 0;
    memcpy(&count, (char *)base + f->count_offset, AP_MIN(sizeof count, f->count_size));
    if (*ptr && f->value.sequence.entry->type == CYAML_STRING)
        for (uint32_t i = 0; i < count; i++) free(((char **)*ptr)[i]);
    free(*ptr);
    *ptr = NULL;
}

static void s_merge(yaml_document_t *doc, const yaml_node_t *node,
                    const cyaml_schema_field_t *fields, char *dst, char *src) {
    int saw_enabled = 0;
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        yaml_node_t *v = yaml_document_get_node(doc, p->value);
        const cyaml_schema_field_t *f = s_field(fields, (const char *)k->data.scalar.value);
        AP_ASSERT(f); /* s_check accepted the document */
        if (!strcmp(f->key, "enabled")) saw_enabled = 1;
        char *d = dst + f->data_offset, *s = src + f->data_offset;
        if (f->value.type == CYAML_MAPPING) {
            s_merge(doc, v, f->value.mapping.fields, d, s);
        } else if (f->value.type == CYAML_SEQUENCE) {
            s_free_sequence(f, dst);
            memcpy(d, s, sizeof(void *));
            memset(s, 0, sizeof(void *));
            memcpy(dst + f->count_offset, src + f->count_offset, f->count_size);
        } else if (f->value.flags & CYAML_FLAG_POINTER) { /* strings */
            char **dp = (char **)d, **sp = (char **)s;
            free(*dp);
            *dp = *sp ? *sp : ap_strdup("");
            *sp = NULL;
        } else {
            memcpy(d, s, f->value.data_size);
        }
    }
    /* A section with an `enabled` switch is turned on by being present. */
    const cyaml_schema_field_t *en = s_field(fields, "enabled");
    if (en && !saw_enabled) *(bool *)(dst + en->data_offset) = true;
}

/* Apply one YAML document (file contents or a --set line) onto cfg. */
static int s_apply_text(ap_config_t *cfg, const char *text, size_t len, const char *origin) {
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        ap_err("%s:%zu: YAML syntax error: %s%s%s", origin, parser.problem_mark.line + 1,
               parser.problem ? parser.problem : "?", parser.context ? " " : "",
               parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return -1;
    }
    yaml_parser_delete(&parser);
    int rc = -1;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) { /* empty document: nothing to apply */
        rc = 0;
        goto out;
    }
    if (s_check_mapping(origin, &doc, root, ap_config_fields(), "") < 0) goto out;
    s_cylog_t log = {{0}};
    cyaml_config_t cc = s_cyaml_config(&log);
    ap_config_t *loaded = NULL;
    cyaml_err_t err = cyaml_load_data((const uint8_t *)text, len, &cc, ap_config_schema(),
                                      (cyaml_data_t **)&loaded, NULL);
    if (err != CYAML_OK) {
        for (char *nl; (nl = strchr(log.buf, '\n'));) *nl = ' ';
        ap_err("%s: %s: %s", origin, cyaml_strerror(err), log.buf);
        goto out;
    }
    s_merge(&doc, root, ap_config_fields(), (char *)cfg, (char *)loaded);
    cyaml_free(&cc, ap_config_schema(), loaded, 0);
    rc = 0;
out:
    yaml_document_delete(&doc);
    return rc;
}

int ap_config_set(ap_config_t *c, const char *assignment) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return ap_err("--set %s: expected key=value (e.g. sampling.temperature=0.7)", assignment);
    char origin[512];
    snprintf(origin, sizeof origin, "--set %s", assignment);
    /* "a.b.c=v" -> "a: {b: {c: v}}" */
    size_t cap = strlen(assignment) * 2 + 64;
    char *text = ap_malloc(cap), *w = text;
    int depth = 0;
    for (const char *p = assignment; p < eq;) {
        const char *dot = memchr(p, '.', (size_t)(eq - p));
        const char *end = dot ? dot : eq;
        if (end == p) {
            free(text);
            return ap_err("%s: empty key component", origin);
        }
        w += sprintf(w, "%.*s: ", (int)(end - p), p);
        if (dot) {
            *w++ = '{';
            depth++;
        }
        p = dot ? dot + 1 : eq;
    }
    w += sprintf(w, "%s", eq + 1);
    while (depth--) *w++ = '}';
    *w = 0;
    int rc = s_apply_text(c, text, strlen(text), origin);
    free(text);
    return rc;
}

/* ---- lifecycle ---- */

static void s_fill_null_strings(const cyaml_schema_field_t *fields, char *base) {
    for (; fields->key; fields++) {
        char *d = base + fields->data_offset;
        if (fields->value.type == CYAML_MAPPING)
            s_fill_null_strings(fields->value.mapping.fields, d);
        else if (fields->value.type == CYAML_STRING && (fields->value.flags & CYAML_FLAG_POINTER) &&
                 !*(char **)d)
            *(char **)d = ap_strdup("");
    }
}

ap_config_t *ap_config_new(void) {
    ap_config_t *c = ap_calloc(1, sizeof *c);
    ap_config_defaults(c);
    s_fill_null_strings(ap_config_fields(), (char *)c);
    return c;
}

void ap_config_destroy(ap_config_t **c) {
    if (!c || !*c) return;
    cyaml_config_t cc = s_cyaml_config(NULL);
    cyaml_free(&cc, ap_config_schema(), *c, 0);
    *c = NULL;
}

ap_config_t *ap_config_load(const char *path, const char *const *sets, int nsets) {
    ap_config_t *c = ap_config_new();
    char *text = NULL;
    size_t len = 0;
    if (path) {
        if (ap_file_read(path, &text, &len) < 0) goto fail;
        if (s_apply_text(c, text, len, path) < 0) goto fail;
    }
    for (int i = 0; i < nsets; i++)
        if (ap_config_set(c, sets[i]) < 0) goto fail;
    if (ap_config_validate(c, path ? path : "config") < 0) goto fail;
    free(text);
    return c;
fail:
    free(text);
    ap_config_destroy(&c);
    return NULL;
}

/* The resolved config as YAML, written from the schema (libcyaml's own emitter prints every
 * float as %.16e, which nobody wants to read). Reloads through the same strict path. */
typedef struct {
    char *s;
    size_t n, cap;
} s_buf_t;

static void s_put(s_buf_t *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->n + (size_t)need + 1 > b->cap) b->s = ap_realloc(b->s, b->cap = (b->n + (size_t)need + 1) * 2);
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)need;
}

static void s_put_scalar(s_buf_t *b, const cyaml_schema_value_t *v, const char *p) {
    switch (v->type) {
    case CYAML_INT:
    case CYAML_UINT: {
        int64_t x = 0;
        if (v->data_size == 4) { int32_t y; memcpy(&y, p, 4); x = y; }
        else memcpy(&x, p, 8);
        s_put(b, "%lld", (long long)x);
        break;
    }
    case CYAML_FLOAT:
        if (v->data_size == 4) { float y; memcpy(&y, p, 4); s_put(b, "%.9g", (double)y); }
        else { double y; memcpy(&y, p, 8); s_put(b, "%.12g", y); }
        break;
    case CYAML_BOOL: {
        int64_t x = 0;
        memcpy(&x, p, AP_MIN(v->data_size, sizeof x));
        s_put(b, "%s", x ? "true" : "false");
        break;
    }
    case CYAML_ENUM: {
        int x;
        memcpy(&x, p, sizeof x);
        const char *name = "?";
        for (uint32_t i = 0; i < v->enumeration.count; i++)
            if (v->enumeration.strings[i].val == x) name = v->enumeration.strings[i].str;
        s_put(b, "%s", name);
        break;
    }
    case CYAML_STRING: {
        const char *str = *(char *const *)p;
        s_put(b, "\"");
        for (; str && *str; str++) {
            if (*str == '"' || *str == '\\') s_put(b, "\\%c", *str);
            else if (*str == '\n') s_put(b, "\\n");
            else if (*str == '\t') s_put(b, "\\t");
            else s_put(b, "%c", *str);
        }
        s_put(b, "\"");
        break;
    }
    default:
        AP_ASSERTF(0, "config emitter: unsupported schema type %d", (int)v->type);
    }
}

static void s_emit(s_buf_t *b, const cyaml_schema_field_t *f, const char *base, int indent) {
    for (; f->key; f++) {
        const char *p = base + f->data_offset;
        s_put(b, "%*s%s:", indent, "", f->key);
        if (f->value.type == CYAML_MAPPING) {
            s_put(b, "\n");
            s_emit(b, f->value.mapping.fields, p, indent + 2);
            continue;
        }
        s_put(b, " ");
        if (f->value.type == CYAML_SEQUENCE) {
            uint64_t count = 0;
            memcpy(&count, base + f->count_offset, AP_MIN(sizeof count, (size_t)f->count_size));
            const char *items = *(char *const *)p;
            const cyaml_schema_value_t *e = f->value.sequence.entry;
            size_t stride = (e->flags & CYAML_FLAG_POINTER) ? sizeof(void *) : e->data_size;
            s_put(b, "[");
            for (uint64_t i = 0; i < count; i++) {
                if (i) s_put(b, ", ");
                s_put_scalar(b, e, items + i * stride);
            }
            s_put(b, "]");
        } else {
            s_put_scalar(b, &f->value, p);
        }
        s_put(b, "\n");
    }
}

char *ap_config_to_yaml(const ap_config_t *c) {
    s_buf_t b = {0};
    s_put(&b, "# apprentice config (resolved: defaults, file, --set overrides)\n");
    s_emit(&b, ap_config_fields(), (const char *)c, 0);
    return b.s;
}

int ap_config_save(const ap_config_t *c, const char *path) {
    char *y = ap_config_to_yaml(c);
    int rc = ap_file_write_atomic(path, y, strlen(y));
    free(y);
    return rc;
}

/* ---- keys, for docs ---- */

static void s_collect(const cyaml_schema_field_t *f, const char *prefix, char ***keys, int *n,
                      int *cap) {
    for (; f->key; f++) {
        char dotted[256];
        snprintf(dotted, sizeof dotted, "%s%s%s", prefix, prefix[0] ? "." : "", f->key);
        if (f->value.type == CYAML_MAPPING) {
            s_collect(f->value.mapping.fields, dotted, keys, n, cap);
            continue;
        }
        if (*n + 2 > *cap) *keys = ap_realloc(*keys, (size_t)(*cap = *cap * 2 + 64) * sizeof **keys);
        (*keys)[(*n)++] = ap_strdup(dotted);
    }
}

const char *const *ap_config_keys(void) {
    static char **keys;
    if (!keys) { /* built once per process; lives as long as the process */
        int n = 0, cap = 0;
        s_collect(ap_config_fields(), "", &keys, &n, &cap);
        keys[n] = NULL;
    }
    return (const char *const *)keys;
}
