/* task.c: task configs, the built-in generators, the train/held-out split, sharded samplers
 * with saveable cursors, template rendering for prompts / completions / privileged contexts,
 * verification, and the task's vocabulary.
 *
 * Generators describe one problem by a small struct (s_prob_t): operands for arithmetic,
 * code points for strings. Each can be drawn at random (the training and held-out streams)
 * or, for a small prompt space, enumerated by index (to pick an exact held-out set).
 *
 * Split (docs/TASKS.md): u(prompt) = mix(FNV-1a(prompt, heldout_seed)), held out iff u < T.
 *   - a space of at most S_SMALL_SPACE prompts (or a dataset) is enumerated and T is the
 *     (heldout_size+1)-th smallest u: exactly heldout_size held-out prompts;
 *   - a larger space reserves the fraction f = clamp(8 * heldout_size / space, 1%, 50%) of it
 *     (T = f * 2^64) and the held-out set is the first heldout_size distinct prompts of that
 *     bucket drawn from the held-out stream; the rest of the bucket is never used.
 * Training draws reject u < T, so a held-out prompt can never be trained on. */
#include "apprentice/task.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/template.h"

#define S_SMALL_SPACE 262144.0 /* enumerate spaces up to this many prompts */
#define S_MIN_FRACTION 0.01    /* smallest held-out bucket of a large space */
#define S_MAX_LENGTH 64        /* reverse/sort strings */
#define S_MAX_ALPHABET 256
#define S_MAX_HELDOUT 10000000
#define S_HELDOUT_STREAM 0x48454C444F5554ULL /* "HELDOUT" */
#define S_PERM_STREAM 0x5045524D00000000ULL  /* "PERM" ^ epoch */

enum { S_ADD, S_MUL, S_REV, S_SORT, S_DATA, S_NKINDS };
static const char *const s_kind_names[S_NKINDS] = {"addition", "multiplication", "reverse", "sort",
                                                   "dataset"};

/* One generated problem. */
typedef struct {
    uint64_t a, b;            /* arithmetic operands */
    uint32_t s[S_MAX_LENGTH]; /* reverse/sort: the string's code points */
    int len;                  /* its length */
} s_prob_t;

/* A set of 64-bit keys (open addressing; 0 is stored as a flag). */
typedef struct {
    uint64_t *keys; /* [cap] slots, 0 = empty */
    size_t cap;     /* slot count, a power of two */
    size_t n;       /* non-zero keys stored */
    int has_zero;   /* key 0 is in the set */
} s_set_t;

struct ap_task {
    int kind;                      /* S_ADD ... S_DATA */
    int dmin, dmax;                /* digits of operand a */
    int fmin, fmax;                /* digits of operand b (multiplication) */
    int lmin, lmax;                /* string lengths (reverse, sort) */
    uint32_t *alpha;               /* [nalpha] reverse/sort code points, in config order */
    int nalpha;                    /* alphabet size K */
    char *alphabet;                /* its text */
    ap_verifier_t verifier;        /* kind and rewards */
    ap_template_t *tpl_prompt;     /* prompt_template */
    ap_template_t *tpl_completion; /* completion_template */
    ap_template_t *tpl_priv;       /* privileged_template */
    uint64_t salt;                 /* heldout_seed: salt of the split hash */
    long long seed;                /* training seed */
    int heldout_size;              /* requested held-out prompts */
    uint64_t threshold;            /* held out iff u < threshold (hash split) */
    double space;                  /* distinct prompts of the source */
    ap_example_t *heldout;         /* [nheldout] the evaluation set */
    int nheldout;                  /* its size */
    ap_dataset_t *data;            /* dataset: the training file */
    ap_dataset_t *hdata;           /* dataset: the held-out file, or NULL (split by hash) */
    s_set_t hprompts;              /* dataset: prompt keys of the held-out file */
    long *train;                   /* dataset: [ntrain] indices into data of training lines */
    long ntrain;                   /* dataset: training lines */
    long excluded;                 /* dataset: lines dropped because their prompt is held out */
    uint64_t fingerprint;          /* identity for cursors */
};

struct ap_task_sampler {
    const ap_task_t *t;   /* borrowed */
    ap_task_cursor_t c;   /* position (plain data, checkpointed) */
    long *perm;           /* datasets: [ntrain] shuffle of the current epoch */
    long long perm_epoch; /* epoch `perm` belongs to, -1 = none */
};

/* ---------------------------------------------------------------- small helpers */

static uint64_t s_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t s_split_hash(uint64_t salt, const char *prompt) {
    return s_mix(ap_hash64(prompt, strlen(prompt), salt));
}

/* Key of a prompt in the held-out-file set (independent of the split salt). */
static uint64_t s_prompt_key(const char *prompt) {
    return s_mix(ap_hash64(prompt, strlen(prompt), 0x70726F6D7074ULL));
}

static void s_set_init(s_set_t *s, size_t expect) {
    s->cap = 16;
    while (s->cap < 2 * expect + 16)
        s->cap *= 2;
    s->keys = ap_calloc(s->cap, sizeof *s->keys);
    s->n = 0;
    s->has_zero = 0;
}

static void s_set_free(s_set_t *s) {
    free(s->keys);
    memset(s, 0, sizeof *s);
}

static int s_set_has(const s_set_t *s, uint64_t k) {
    if (!s->keys) return 0;
    if (k == 0) return s->has_zero;
    for (size_t i = (size_t)s_mix(k) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (s->keys[i] == k) return 1;
        if (s->keys[i] == 0) return 0;
    }
}

/* Insert; returns 1 when k was new. */
static int s_set_add(s_set_t *s, uint64_t k) {
    if (k == 0) {
        int was = s->has_zero;
        s->has_zero = 1;
        return !was;
    }
    if (2 * (s->n + 1) > s->cap) {
        s_set_t bigger;
        s_set_init(&bigger, s->cap);
        bigger.has_zero = s->has_zero;
        for (size_t i = 0; i < s->cap; i++)
            if (s->keys[i]) s_set_add(&bigger, s->keys[i]);
        free(s->keys);
        *s = bigger;
    }
    size_t i = (size_t)s_mix(k) & (s->cap - 1);
    while (s->keys[i] && s->keys[i] != k)
        i = (i + 1) & (s->cap - 1);
    if (s->keys[i] == k) return 0;
    s->keys[i] = k;
    s->n++;
    return 1;
}

static uint64_t s_pow10(int d) {
    uint64_t p = 1;
    for (int i = 0; i < d; i++)
        p *= 10;
    return p;
}
static uint64_t s_lo(int d) {
    return d <= 1 ? 0 : s_pow10(d - 1);
} /* smallest d-digit number */
static uint64_t s_hi(int d) {
    return s_pow10(d) - 1;
} /* largest */

static int s_kind_parse(const char *name) {
    for (int k = 0; k < S_NKINDS; k++)
        if (name && !strcmp(name, s_kind_names[k])) return k;
    return -1;
}

static int s_is_space(uint32_t cp) {
    return cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || cp == '\v' || cp == '\f' ||
           cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* Decode an alphabet into code points (*out, caller frees). -1 with ap_err naming the key. */
static int s_parse_alphabet(const char *text, uint32_t **out, int *n) {
    *out = NULL;
    *n = 0;
    if (!text || !*text) return ap_err("task.alphabet: must not be empty");
    uint32_t *cps = ap_malloc((strlen(text) + 1) * sizeof *cps);
    int k = 0;
    size_t pos = 0;
    for (;;) {
        size_t at = pos;
        int32_t cp = ap_utf8_next(text, &pos);
        if (cp == 0) break;
        char esc[32];
        if (cp < 0) {
            free(cps);
            return ap_err("task.alphabet: invalid UTF-8 at byte %zu", at);
        }
        if (s_is_space((uint32_t)cp) || cp < 0x20 || cp == 0x7F) {
            free(cps);
            return ap_err("task.alphabet: %s at position %d is whitespace or a control character "
                          "(answers are compared after trimming whitespace)",
                          ap_utf8_escape((uint32_t)cp, esc), k + 1);
        }
        for (int i = 0; i < k; i++)
            if (cps[i] == (uint32_t)cp) {
                free(cps);
                return ap_err("task.alphabet: %s appears twice (positions %d and %d)",
                              ap_utf8_escape((uint32_t)cp, esc), i + 1, k + 1);
            }
        cps[k++] = (uint32_t)cp;
    }
    if (k > S_MAX_ALPHABET) {
        free(cps);
        return ap_err("task.alphabet: %d characters, at most %d", k, S_MAX_ALPHABET);
    }
    *out = cps;
    *n = k;
    return 0;
}

/* ---------------------------------------------------------------- config */

void ap_task_config_defaults(ap_task_config_t *c) {
    memset(c, 0, sizeof *c);
    c->kind = "addition";
    c->min_digits = 1;
    c->max_digits = 3;
    c->factor_min_digits = 1;
    c->factor_max_digits = 1;
    c->min_length = 3;
    c->max_length = 8;
    c->alphabet = "abcdefghijklmnopqrstuvwxyz";
    c->dataset = "";
    c->heldout_dataset = "";
    c->on_bad_line = "error";
    c->heldout_size = 256;
    c->heldout_seed = 0;
    c->seed = 1;
    c->verifier = "exact";
    c->reward_correct = 1.0;
    c->reward_wrong = 0.0;
    c->prompt_template = "{prompt}";
    c->completion_template = "{answer}";
    c->privileged_template = "answer: {answer} | {prompt}";
}

/* Compile the three templates of a config (any may be NULL on return when failing). */
static int s_compile_templates(const ap_task_config_t *c, ap_template_t **p, ap_template_t **comp,
                               ap_template_t **priv) {
    *p = *comp = *priv = NULL;
    *p = ap_template_new(c->prompt_template, AP_TPL_PROMPT, "task.prompt_template");
    if (!*p) return -1;
    if (ap_template_count(*p, AP_TPL_PROMPT) < 1)
        return ap_err("task.prompt_template: must contain {prompt}");
    *comp = ap_template_new(c->completion_template, AP_TPL_ANSWER | AP_TPL_SOLUTION,
                            "task.completion_template");
    if (!*comp) return -1;
    if (ap_template_check_extractable(*comp, AP_TPL_ANSWER, "task.completion_template") < 0)
        return -1;
    *priv = ap_template_new(c->privileged_template, AP_TPL_ALL, "task.privileged_template");
    if (!*priv) return -1;
    return 0;
}

static int s_check_range(const char *lo_key, int lo, const char *hi_key, int hi, int min, int max) {
    if (lo < min || lo > max)
        return ap_err("task.%s: must be in %d..%d, got %d", lo_key, min, max, lo);
    if (hi < min || hi > max)
        return ap_err("task.%s: must be in %d..%d, got %d", hi_key, min, max, hi);
    if (hi < lo) return ap_err("task.%s: must be >= task.%s (%d < %d)", hi_key, lo_key, hi, lo);
    return 0;
}

int ap_task_config_validate(const ap_task_config_t *c) {
    int kind = s_kind_parse(c->kind);
    if (kind < 0)
        return ap_err("task.kind: unknown value '%s' (addition, multiplication, reverse, sort, "
                      "dataset)",
                      c->kind ? c->kind : "(null)");
    if (kind == S_ADD || kind == S_MUL) {
        if (s_check_range("min_digits", c->min_digits, "max_digits", c->max_digits, 1, 18) < 0)
            return -1;
    }
    if (kind == S_MUL) {
        if (s_check_range("factor_min_digits", c->factor_min_digits, "factor_max_digits",
                          c->factor_max_digits, 1, 18) < 0)
            return -1;
        if (c->max_digits + c->factor_max_digits > 19)
            return ap_err("task.factor_max_digits: max_digits + factor_max_digits must be <= 19 "
                          "(products must fit 64 bits), got %d + %d",
                          c->max_digits, c->factor_max_digits);
    }
    if (kind == S_REV || kind == S_SORT) {
        if (s_check_range("min_length", c->min_length, "max_length", c->max_length, 1,
                          S_MAX_LENGTH) < 0)
            return -1;
        uint32_t *cps;
        int n;
        if (s_parse_alphabet(c->alphabet, &cps, &n) < 0) return -1;
        free(cps);
    }
    if (kind == S_DATA) {
        if (!c->dataset || !*c->dataset)
            return ap_err("task.dataset: required when task.kind is dataset (a JSON Lines file)");
    }
    int policy;
    if (ap_dataset_bad_line_parse(c->on_bad_line, &policy) < 0)
        return ap_err("task.on_bad_line: %s", ap_errmsg());
    if (c->heldout_size < 0 || c->heldout_size > S_MAX_HELDOUT)
        return ap_err("task.heldout_size: must be in 0..%d, got %d", S_MAX_HELDOUT,
                      c->heldout_size);
    int vk;
    if (ap_verifier_kind_parse(c->verifier, &vk) < 0)
        return ap_err("task.verifier: %s", ap_errmsg());
    if (vk == AP_VERIFIER_NUMERIC && (kind == S_REV || kind == S_SORT))
        return ap_err("task.verifier: numeric cannot check %s answers (they are not numbers); use "
                      "exact",
                      c->kind);
    if (!isfinite(c->reward_correct)) return ap_err("task.reward_correct: must be a finite number");
    if (!isfinite(c->reward_wrong)) return ap_err("task.reward_wrong: must be a finite number");
    if (!(c->reward_correct > c->reward_wrong))
        return ap_err("task.reward_correct: must be greater than task.reward_wrong (%g <= %g)",
                      c->reward_correct, c->reward_wrong);
    ap_template_t *p, *comp, *priv;
    int rc = s_compile_templates(c, &p, &comp, &priv);
    ap_template_destroy(&p);
    ap_template_destroy(&comp);
    ap_template_destroy(&priv);
    return rc;
}

typedef enum { S_F_STR, S_F_INT, S_F_LL, S_F_DBL } s_ftype_t;
typedef struct {
    const char *key;
    s_ftype_t type;
    size_t off;
} s_field_t;
#define S_FIELD(name, type)                                                                        \
    { #name, type, offsetof(ap_task_config_t, name) }
static const s_field_t s_fields[] = {
    S_FIELD(kind, S_F_STR),
    S_FIELD(min_digits, S_F_INT),
    S_FIELD(max_digits, S_F_INT),
    S_FIELD(factor_min_digits, S_F_INT),
    S_FIELD(factor_max_digits, S_F_INT),
    S_FIELD(min_length, S_F_INT),
    S_FIELD(max_length, S_F_INT),
    S_FIELD(alphabet, S_F_STR),
    S_FIELD(dataset, S_F_STR),
    S_FIELD(heldout_dataset, S_F_STR),
    S_FIELD(on_bad_line, S_F_STR),
    S_FIELD(heldout_size, S_F_INT),
    S_FIELD(heldout_seed, S_F_LL),
    S_FIELD(seed, S_F_LL),
    S_FIELD(verifier, S_F_STR),
    S_FIELD(reward_correct, S_F_DBL),
    S_FIELD(reward_wrong, S_F_DBL),
    S_FIELD(prompt_template, S_F_STR),
    S_FIELD(completion_template, S_F_STR),
    S_FIELD(privileged_template, S_F_STR),
};

int ap_task_config_set(ap_task_config_t *c, const char *key, const char *value) {
    if (!strncmp(key, "task.", 5)) key += 5;
    for (size_t i = 0; i < AP_COUNT(s_fields); i++) {
        const s_field_t *f = &s_fields[i];
        if (strcmp(f->key, key)) continue;
        char *at = (char *)c + f->off, *end = NULL;
        errno = 0;
        switch (f->type) {
        case S_F_STR:
            *(char **)at = (char *)value;
            return 0;
        case S_F_INT: {
            long v = strtol(value, &end, 10);
            if (!*value || *end || errno || v < -2147483647L || v > 2147483647L)
                return ap_err("task.%s: '%s' is not an integer", key, value);
            *(int *)at = (int)v;
            return 0;
        }
        case S_F_LL: {
            long long v = strtoll(value, &end, 10);
            if (!*value || *end || errno)
                return ap_err("task.%s: '%s' is not an integer", key, value);
            *(long long *)at = v;
            return 0;
        }
        case S_F_DBL: {
            double v = strtod(value, &end);
            if (!*value || *end || errno)
                return ap_err("task.%s: '%s' is not a number", key, value);
            *(double *)at = v;
            return 0;
        }
        }
    }
    return ap_err("task.%s: unknown key", key);
}

char *ap_task_config_dump(const ap_task_config_t *c) {
    char *out = ap_strdup("task:\n");
    for (size_t i = 0; i < AP_COUNT(s_fields); i++) {
        const s_field_t *f = &s_fields[i];
        const char *at = (const char *)c + f->off;
        char *line = NULL;
        switch (f->type) {
        case S_F_STR: {
            const char *s = *(char *const *)at;
            json_t *j = json_string(s ? s : "");
            char *q = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
            line = ap_sprintf("  %s: %s\n", f->key, q ? q : "\"(not UTF-8)\"");
            free(q);
            json_decref(j);
            break;
        }
        case S_F_INT:
            line = ap_sprintf("  %s: %d\n", f->key, *(const int *)at);
            break;
        case S_F_LL:
            line = ap_sprintf("  %s: %lld\n", f->key, *(const long long *)at);
            break;
        case S_F_DBL:
            line = ap_sprintf("  %s: %.17g\n", f->key, *(const double *)at);
            break;
        }
        char *joined = ap_sprintf("%s%s", out, line);
        free(out);
        free(line);
        out = joined;
    }
    return out;
}

/* ---------------------------------------------------------------- generators */

/* Number of distinct prompts. */
static double s_space(const ap_task_t *t) {
    switch (t->kind) {
    case S_ADD: {
        double n = (double)(s_hi(t->dmax) - s_lo(t->dmin)) + 1;
        return n * n;
    }
    case S_MUL:
        return ((double)(s_hi(t->dmax) - s_lo(t->dmin)) + 1) *
               ((double)(s_hi(t->fmax) - s_lo(t->fmin)) + 1);
    case S_REV:
    case S_SORT: {
        double s = 0;
        for (int l = t->lmin; l <= t->lmax; l++)
            s += pow((double)t->nalpha, l);
        return s;
    }
    default:
        AP_ASSERT(0);
    }
}

/* A number with a digit count uniform in [dlo, dhi], then uniform among those numbers. */
static uint64_t s_draw_number(ap_rng_t *rng, int dlo, int dhi) {
    int d = dlo + (int)ap_rng_below(rng, (uint64_t)(dhi - dlo + 1));
    return s_lo(d) + ap_rng_below(rng, s_hi(d) - s_lo(d) + 1);
}

static void s_draw(const ap_task_t *t, ap_rng_t *rng, s_prob_t *p) {
    switch (t->kind) {
    case S_ADD:
        p->a = s_draw_number(rng, t->dmin, t->dmax);
        p->b = s_draw_number(rng, t->dmin, t->dmax);
        break;
    case S_MUL:
        p->a = s_draw_number(rng, t->dmin, t->dmax);
        p->b = s_draw_number(rng, t->fmin, t->fmax);
        break;
    case S_REV:
    case S_SORT:
        p->len = t->lmin + (int)ap_rng_below(rng, (uint64_t)(t->lmax - t->lmin + 1));
        for (int i = 0; i < p->len; i++)
            p->s[i] = t->alpha[ap_rng_below(rng, (uint64_t)t->nalpha)];
        break;
    default:
        AP_ASSERT(0);
    }
}

/* Problem number `idx` of the space (0 <= idx < space; small spaces only). */
static void s_from_index(const ap_task_t *t, uint64_t idx, s_prob_t *p) {
    switch (t->kind) {
    case S_ADD: {
        uint64_t lo = s_lo(t->dmin), n = s_hi(t->dmax) - lo + 1;
        p->a = lo + idx / n;
        p->b = lo + idx % n;
        break;
    }
    case S_MUL: {
        uint64_t lb = s_lo(t->fmin), nb = s_hi(t->fmax) - lb + 1;
        p->a = s_lo(t->dmin) + idx / nb;
        p->b = lb + idx % nb;
        break;
    }
    case S_REV:
    case S_SORT: {
        uint64_t K = (uint64_t)t->nalpha;
        int l = t->lmin;
        for (;; l++) {
            AP_ASSERT(l <= t->lmax);
            uint64_t count = (uint64_t)pow((double)K, l);
            if (idx < count) break;
            idx -= count;
        }
        p->len = l;
        for (int i = l - 1; i >= 0; i--) {
            p->s[i] = t->alpha[idx % K];
            idx /= K;
        }
        break;
    }
    default:
        AP_ASSERT(0);
    }
}

/* The string of a reverse/sort problem as UTF-8 into buf (cap >= 4 * S_MAX_LENGTH + 1). */
static void s_string(const uint32_t *cps, int len, char *buf) {
    size_t at = 0;
    for (int i = 0; i < len; i++)
        at += (size_t)ap_utf8_put(buf + at, cps[i]);
    buf[at] = 0;
}

#define S_PROMPT_CAP (4 * S_MAX_LENGTH + 32)

static void s_prompt(const ap_task_t *t, const s_prob_t *p, char *buf) {
    char str[4 * S_MAX_LENGTH + 1];
    switch (t->kind) {
    case S_ADD:
        snprintf(buf, S_PROMPT_CAP, "%llu+%llu=", (unsigned long long)p->a,
                 (unsigned long long)p->b);
        break;
    case S_MUL:
        snprintf(buf, S_PROMPT_CAP, "%llu*%llu=", (unsigned long long)p->a,
                 (unsigned long long)p->b);
        break;
    case S_REV:
    case S_SORT:
        s_string(p->s, p->len, str);
        snprintf(buf, S_PROMPT_CAP, "%s:%s=", t->kind == S_REV ? "reverse" : "sort", str);
        break;
    default:
        AP_ASSERT(0);
    }
}

static int s_cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Column addition, right to left: "3+4=7,2+3=5,1+2=3"; "8+7=15,5+6+1=12". */
static char *s_addition_solution(uint64_t a, uint64_t b) {
    char *out = ap_strdup("");
    int carry = 0;
    do {
        int x = (int)(a % 10), y = (int)(b % 10), s = x + y + carry;
        char *step = carry ? ap_sprintf("%s%d+%d+1=%d", *out ? "," : "", x, y, s)
                           : ap_sprintf("%s%d+%d=%d", *out ? "," : "", x, y, s);
        char *joined = ap_sprintf("%s%s", out, step);
        free(out);
        free(step);
        out = joined;
        carry = s >= 10;
        a /= 10;
        b /= 10;
    } while (a || b);
    return out;
}

/* Place-value products: "100*4=400,20*4=80,3*4=12,400+80+12=492" ("3*4=12" for one term). */
static char *s_multiplication_solution(uint64_t a, uint64_t b) {
    char *steps = ap_strdup(""), *sum = ap_strdup("");
    int terms = 0;
    uint64_t place = 1;
    while (place <= a / 10)
        place *= 10;
    for (uint64_t rest = a; place > 0; place /= 10) {
        uint64_t part = (rest / place) * place;
        rest -= part;
        if (part == 0 && !(a == 0 && place == 1)) continue;
        char *s =
            ap_sprintf("%s%s%llu*%llu=%llu", steps, terms ? "," : "", (unsigned long long)part,
                       (unsigned long long)b, (unsigned long long)(part * b));
        char *u = ap_sprintf("%s%s%llu", sum, terms ? "+" : "", (unsigned long long)(part * b));
        free(steps);
        free(sum);
        steps = s;
        sum = u;
        terms++;
    }
    char *out = terms > 1 ? ap_sprintf("%s,%s=%llu", steps, sum, (unsigned long long)(a * b))
                          : ap_strdup(steps);
    free(steps);
    free(sum);
    return out;
}

static void s_fill(const ap_task_t *t, const s_prob_t *p, ap_example_t *out) {
    char buf[S_PROMPT_CAP];
    s_prompt(t, p, buf);
    memset(out, 0, sizeof *out);
    out->prompt = ap_strdup(buf);
    out->id = ap_sprintf("%s:%s", s_kind_names[t->kind], buf);
    switch (t->kind) {
    case S_ADD:
        out->answer = ap_sprintf("%llu", (unsigned long long)(p->a + p->b));
        out->solution = s_addition_solution(p->a, p->b);
        break;
    case S_MUL:
        out->answer = ap_sprintf("%llu", (unsigned long long)(p->a * p->b));
        out->solution = s_multiplication_solution(p->a, p->b);
        break;
    case S_REV:
    case S_SORT: {
        uint32_t r[S_MAX_LENGTH];
        for (int i = 0; i < p->len; i++)
            r[i] = t->kind == S_REV ? p->s[p->len - 1 - i] : p->s[i];
        if (t->kind == S_SORT) qsort(r, (size_t)p->len, sizeof r[0], s_cmp_u32);
        char str[4 * S_MAX_LENGTH + 1];
        s_string(r, p->len, str);
        out->answer = ap_strdup(str);
        out->solution = NULL; /* no worked solution: {solution} renders nothing (h = 0) */
        break;
    }
    default:
        AP_ASSERT(0);
    }
}

/* Characters of the generator's prompts and answers, and of its solutions. */
static const char *s_gen_alphabet(int kind) {
    switch (kind) {
    case S_ADD:
        return "0123456789+=";
    case S_MUL:
        return "0123456789*=";
    case S_REV:
        return "reverse:=";
    case S_SORT:
        return "sort:=";
    default:
        return "";
    }
}
static const char *s_gen_solution_alphabet(int kind) {
    switch (kind) {
    case S_ADD:
        return "0123456789+=,";
    case S_MUL:
        return "0123456789*+=,";
    default:
        return "";
    }
}

/* ---------------------------------------------------------------- split */

static int s_cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Fix threshold and the held-out set of a generator. */
static int s_split_generator(ap_task_t *t) {
    int h = t->heldout_size;
    t->threshold = 0;
    if (h == 0) return 0;
    if ((double)h > t->space / 2)
        return ap_err(
            "task.heldout_size: %d is more than half of the %.0f distinct prompts of this "
            "task; lower it or widen the task",
            h, t->space);
    char buf[S_PROMPT_CAP];
    s_prob_t p;
    t->heldout = ap_calloc((size_t)h, sizeof *t->heldout);
    if (t->space <= S_SMALL_SPACE) {
        uint64_t n = (uint64_t)t->space;
        uint64_t *u = ap_malloc(n * sizeof *u), *sorted = ap_malloc(n * sizeof *sorted);
        for (uint64_t i = 0; i < n; i++) {
            s_from_index(t, i, &p);
            s_prompt(t, &p, buf);
            u[i] = sorted[i] = s_split_hash(t->salt, buf);
        }
        qsort(sorted, n, sizeof *sorted, s_cmp_u64);
        t->threshold = sorted[h]; /* exactly h prompts have u below it (u distinct) */
        for (uint64_t i = 0; i < n && t->nheldout < h; i++)
            if (u[i] < t->threshold) {
                s_from_index(t, i, &p);
                s_fill(t, &p, &t->heldout[t->nheldout++]);
            }
        free(u);
        free(sorted);
        if (t->nheldout != h)
            return ap_err("task.heldout_size: only %d of %d held-out prompts found (split hash "
                          "collision); change task.heldout_seed",
                          t->nheldout, h);
        return 0;
    }
    double frac = AP_MIN(0.5, AP_MAX(S_MIN_FRACTION, 8.0 * h / t->space));
    t->threshold = (uint64_t)(frac * 18446744073709551616.0);
    ap_rng_t rng;
    ap_rng_seed(&rng, t->salt, S_HELDOUT_STREAM);
    s_set_t seen;
    s_set_init(&seen, (size_t)h);
    double cap = 100.0 * h / frac + 100000;
    for (double tries = 0; t->nheldout < h && tries < cap; tries++) {
        s_draw(t, &rng, &p);
        s_prompt(t, &p, buf);
        uint64_t u = s_split_hash(t->salt, buf);
        if (u < t->threshold && s_set_add(&seen, u)) s_fill(t, &p, &t->heldout[t->nheldout++]);
    }
    s_set_free(&seen);
    if (t->nheldout < h)
        return ap_err("task.heldout_size: found only %d distinct held-out prompts of %d requested "
                      "in %.0f draws; lower it",
                      t->nheldout, h, cap);
    return 0;
}

typedef struct {
    uint64_t u;
    long i; /* example index */
    const char *prompt;
} s_key_t;

static int s_cmp_key(const void *a, const void *b) {
    const s_key_t *x = a, *y = b;
    if (x->u != y->u) return (x->u > y->u) - (x->u < y->u);
    int c = strcmp(x->prompt, y->prompt);
    if (c) return c;
    return (x->i > y->i) - (x->i < y->i);
}

/* Fix the split of a dataset task: held-out file, or the hash threshold over distinct prompts. */
static int s_split_dataset(ap_task_t *t) {
    long n = ap_dataset_size(t->data);
    int h = t->heldout_size;
    t->train = ap_malloc((size_t)n * sizeof *t->train);
    if (t->hdata) {
        long hn = ap_dataset_size(t->hdata);
        s_set_init(&t->hprompts, (size_t)hn);
        for (long i = 0; i < hn; i++)
            s_set_add(&t->hprompts, s_prompt_key(ap_dataset_get(t->hdata, (int)i)->prompt));
        t->nheldout = (int)AP_MIN((long)h, hn);
        t->heldout = ap_calloc((size_t)(t->nheldout ? t->nheldout : 1), sizeof *t->heldout);
        for (int i = 0; i < t->nheldout; i++)
            ap_example_copy(&t->heldout[i], ap_dataset_get(t->hdata, i));
        for (long i = 0; i < n; i++) {
            if (s_set_has(&t->hprompts, s_prompt_key(ap_dataset_get(t->data, (int)i)->prompt)))
                t->excluded++;
            else
                t->train[t->ntrain++] = i;
        }
        s_set_t all;
        s_set_init(&all, (size_t)(n + hn));
        for (long i = 0; i < n; i++)
            s_set_add(&all, s_prompt_key(ap_dataset_get(t->data, (int)i)->prompt));
        for (long i = 0; i < hn; i++)
            s_set_add(&all, s_prompt_key(ap_dataset_get(t->hdata, (int)i)->prompt));
        t->space = (double)all.n + all.has_zero;
        s_set_free(&all);
    } else {
        s_key_t *k = ap_malloc((size_t)n * sizeof *k);
        for (long i = 0; i < n; i++) {
            k[i].prompt = ap_dataset_get(t->data, (int)i)->prompt;
            k[i].u = s_split_hash(t->salt, k[i].prompt);
            k[i].i = i;
        }
        qsort(k, (size_t)n, sizeof *k, s_cmp_key);
        long distinct = 0;
        uint64_t threshold = UINT64_MAX;
        for (long i = 0; i < n; i++) {
            if (i > 0 && !strcmp(k[i].prompt, k[i - 1].prompt)) continue;
            if (distinct == h) threshold = k[i].u; /* the (h+1)-th smallest distinct u */
            distinct++;
        }
        free(k);
        t->space = (double)distinct;
        if (h > 0 && (double)h > t->space / 2) {
            return ap_err("task.heldout_size: %d is more than half of the %ld distinct prompts of "
                          "%s; lower it or give task.heldout_dataset",
                          h, distinct, ap_dataset_path(t->data));
        }
        t->threshold = h > 0 ? threshold : 0;
        t->heldout = ap_calloc((size_t)(h ? h : 1), sizeof *t->heldout);
        s_set_t seen;
        s_set_init(&seen, (size_t)h);
        for (long i = 0; i < n; i++) {
            const ap_example_t *ex = ap_dataset_get(t->data, (int)i);
            if (s_split_hash(t->salt, ex->prompt) < t->threshold) {
                t->excluded++;
                if (s_set_add(&seen, s_prompt_key(ex->prompt)))
                    ap_example_copy(&t->heldout[t->nheldout++], ex);
            } else {
                t->train[t->ntrain++] = i;
            }
        }
        s_set_free(&seen);
        if (t->nheldout != h) /* two distinct prompts with one 64-bit split hash: ~2^-64 */
            return ap_err("task.heldout_size: split hash collision in %s; change task.heldout_seed",
                          ap_dataset_path(t->data));
    }
    if (t->ntrain == 0)
        return ap_err("%s: no training example left after the split (%ld held out)",
                      ap_dataset_path(t->data), t->excluded);
    return 0;
}

/* ---------------------------------------------------------------- task */

static void s_fingerprint(ap_task_t *t) {
    uint64_t h = ap_hash64(s_kind_names[t->kind], strlen(s_kind_names[t->kind]), 0);
    int64_t nums[] = {t->kind, t->dmin, t->dmax, t->fmin,
                      t->fmax, t->lmin, t->lmax, t->heldout_size};
    h = ap_hash64(nums, sizeof nums, h);
    h = ap_hash64(&t->salt, sizeof t->salt, h);
    h = ap_hash64(&t->threshold, sizeof t->threshold, h);
    if (t->alphabet) h = ap_hash64(t->alphabet, strlen(t->alphabet), h);
    for (long i = 0; t->data && i < t->ntrain; i++) {
        const ap_example_t *ex = ap_dataset_get(t->data, (int)t->train[i]);
        h = ap_hash64(ex->prompt, strlen(ex->prompt) + 1, h);
        h = ap_hash64(ex->answer, strlen(ex->answer) + 1, h);
    }
    t->fingerprint = h;
}

ap_task_t *ap_task_new(const ap_task_config_t *c) {
    if (ap_task_config_validate(c) < 0) return NULL;
    ap_task_t *t = ap_calloc(1, sizeof *t);
    t->kind = s_kind_parse(c->kind);
    t->dmin = c->min_digits, t->dmax = c->max_digits;
    t->fmin = c->factor_min_digits, t->fmax = c->factor_max_digits;
    t->lmin = c->min_length, t->lmax = c->max_length;
    t->salt = (uint64_t)c->heldout_seed;
    t->seed = c->seed;
    t->heldout_size = c->heldout_size;
    ap_verifier_defaults(&t->verifier);
    ap_verifier_kind_parse(c->verifier, &t->verifier.kind);
    t->verifier.reward_correct = c->reward_correct;
    t->verifier.reward_wrong = c->reward_wrong;
    int rc = s_compile_templates(c, &t->tpl_prompt, &t->tpl_completion, &t->tpl_priv);
    AP_ASSERT(rc == 0); /* validated above */
    if (t->kind == S_REV || t->kind == S_SORT) {
        rc = s_parse_alphabet(c->alphabet, &t->alpha, &t->nalpha);
        AP_ASSERT(rc == 0);
        t->alphabet = ap_strdup(c->alphabet);
    }
    if (t->kind == S_DATA) {
        int policy;
        ap_dataset_bad_line_parse(c->on_bad_line, &policy);
        t->data = ap_dataset_load(c->dataset, policy);
        if (!t->data) goto fail;
        if (c->heldout_dataset && *c->heldout_dataset) {
            t->hdata = ap_dataset_load(c->heldout_dataset, policy);
            if (!t->hdata) goto fail;
        }
        if (s_split_dataset(t) < 0) goto fail;
        if (t->excluded && t->hdata)
            ap_log(AP_LOG_INFO, "%s: %ld training lines dropped: their prompt is in %s", c->dataset,
                   t->excluded, c->heldout_dataset);
    } else {
        t->space = s_space(t);
        if (s_split_generator(t) < 0) goto fail;
    }
    s_fingerprint(t);
    return t;
fail:;
    char *msg = ap_strdup(ap_errmsg());
    ap_task_destroy(&t);
    ap_err("%s", msg);
    free(msg);
    return NULL;
}

void ap_task_destroy(ap_task_t **tp) {
    if (!tp || !*tp) return;
    ap_task_t *t = *tp;
    ap_template_destroy(&t->tpl_prompt);
    ap_template_destroy(&t->tpl_completion);
    ap_template_destroy(&t->tpl_priv);
    free(t->alpha);
    free(t->alphabet);
    for (int i = 0; i < t->nheldout; i++)
        ap_example_clear(&t->heldout[i]);
    free(t->heldout);
    ap_dataset_destroy(&t->data);
    ap_dataset_destroy(&t->hdata);
    s_set_free(&t->hprompts);
    free(t->train);
    free(t);
    *tp = NULL;
}

const char *ap_task_kind(const ap_task_t *t) {
    return s_kind_names[t->kind];
}
const ap_verifier_t *ap_task_verifier(const ap_task_t *t) {
    return &t->verifier;
}
uint64_t ap_task_fingerprint(const ap_task_t *t) {
    return t->fingerprint;
}
double ap_task_space(const ap_task_t *t) {
    return t->space;
}
long ap_task_train_size(const ap_task_t *t) {
    return t->kind == S_DATA ? t->ntrain : -1;
}
long ap_task_train_excluded(const ap_task_t *t) {
    return t->excluded;
}
int ap_task_heldout_count(const ap_task_t *t) {
    return t->nheldout;
}

void ap_task_heldout_get(const ap_task_t *t, int i, ap_example_t *out) {
    AP_ASSERT(i >= 0 && i < t->nheldout);
    ap_example_copy(out, &t->heldout[i]);
}

int ap_task_is_heldout(const ap_task_t *t, const char *prompt) {
    if (t->hdata) return s_set_has(&t->hprompts, s_prompt_key(prompt));
    return s_split_hash(t->salt, prompt) < t->threshold;
}

/* ---------------------------------------------------------------- sampler */

/* Length of actor k's shard of one epoch (datasets). */
static long long s_shard_len(const ap_task_t *t, int actor, int num_actors) {
    if (actor >= t->ntrain) return 1; /* more actors than examples: one each, wrapped */
    return (t->ntrain - 1 - actor) / num_actors + 1;
}

ap_task_sampler_t *ap_task_sampler_new(const ap_task_t *t, int actor, int num_actors) {
    AP_ASSERT(t && num_actors >= 1 && actor >= 0 && actor < num_actors);
    ap_task_sampler_t *s = ap_calloc(1, sizeof *s);
    s->t = t;
    s->c.task = t->fingerprint;
    s->c.seed = t->seed;
    s->c.actor = actor;
    s->c.num_actors = num_actors;
    ap_rng_seed(&s->c.rng, (uint64_t)t->seed, (uint64_t)actor + 1);
    s->perm_epoch = -1;
    return s;
}

void ap_task_sampler_destroy(ap_task_sampler_t **sp) {
    if (!sp || !*sp) return;
    free((*sp)->perm);
    free(*sp);
    *sp = NULL;
}

/* The shuffle of the training examples for `epoch`: the same for every actor. */
static void s_ensure_perm(ap_task_sampler_t *s, long long epoch) {
    const ap_task_t *t = s->t;
    if (s->perm_epoch == epoch) return;
    if (!s->perm) s->perm = ap_malloc((size_t)t->ntrain * sizeof *s->perm);
    for (long i = 0; i < t->ntrain; i++)
        s->perm[i] = i;
    ap_rng_t rng;
    ap_rng_seed(&rng, (uint64_t)t->seed, S_PERM_STREAM ^ (uint64_t)epoch);
    for (long i = t->ntrain - 1; i > 0; i--) {
        long j = (long)ap_rng_below(&rng, (uint64_t)i + 1);
        long tmp = s->perm[i];
        s->perm[i] = s->perm[j];
        s->perm[j] = tmp;
    }
    s->perm_epoch = epoch;
}

void ap_task_sampler_next(ap_task_sampler_t *s, ap_example_t *out) {
    const ap_task_t *t = s->t;
    ap_task_cursor_t *c = &s->c;
    if (t->kind == S_DATA) {
        if (c->pos >= s_shard_len(t, c->actor, c->num_actors)) {
            c->epoch++;
            c->pos = 0;
        }
        s_ensure_perm(s, c->epoch);
        long j = c->actor < t->ntrain ? (long)(c->actor + c->pos * c->num_actors)
                                      : (long)(c->actor % t->ntrain);
        ap_example_copy(out, ap_dataset_get(t->data, (int)t->train[s->perm[j]]));
        c->pos++;
        c->drawn++;
        return;
    }
    s_prob_t p;
    char buf[S_PROMPT_CAP];
    for (long tries = 0;; tries++) {
        AP_ASSERTF(tries < 100000000L, "task %s: no training prompt outside the held-out set",
                   s_kind_names[t->kind]);
        s_draw(t, &c->rng, &p);
        s_prompt(t, &p, buf);
        if (s_split_hash(t->salt, buf) >= t->threshold) break;
    }
    s_fill(t, &p, out);
    c->drawn++;
}

void ap_task_sampler_cursor(const ap_task_sampler_t *s, ap_task_cursor_t *c) {
    *c = s->c;
}

int ap_task_sampler_restore(ap_task_sampler_t *s, const ap_task_cursor_t *c) {
    const ap_task_t *t = s->t;
    if (c->task != t->fingerprint)
        return ap_err("task cursor: saved for another task definition (fingerprint %016llx, this "
                      "task %016llx): the task config or its data changed",
                      (unsigned long long)c->task, (unsigned long long)t->fingerprint);
    if (c->seed != t->seed)
        return ap_err("task cursor: saved with task.seed %lld, this run has %lld", c->seed,
                      t->seed);
    if (c->actor != s->c.actor || c->num_actors != s->c.num_actors)
        return ap_err("task cursor: saved by actor %d of %d, this sampler is actor %d of %d",
                      c->actor, c->num_actors, s->c.actor, s->c.num_actors);
    if (c->drawn < 0 || c->epoch < 0 || c->pos < 0)
        return ap_err("task cursor: negative position (drawn %lld, epoch %lld, pos %lld)", c->drawn,
                      c->epoch, c->pos);
    if (t->kind == S_DATA && c->pos > s_shard_len(t, c->actor, c->num_actors))
        return ap_err("task cursor: position %lld is past the shard's %lld examples", c->pos,
                      s_shard_len(t, c->actor, c->num_actors));
    if (!(c->rng.s[0] | c->rng.s[1] | c->rng.s[2] | c->rng.s[3]))
        return ap_err("task cursor: rng state is all zero");
    s->c = *c;
    return 0;
}

char *ap_task_cursor_to_json(const ap_task_cursor_t *c) {
    return ap_sprintf("{\"task\": \"%016llx\", \"seed\": %lld, \"actor\": %d, \"num_actors\": %d, "
                      "\"rng\": [\"%016llx\", \"%016llx\", \"%016llx\", \"%016llx\"], "
                      "\"drawn\": %lld, \"epoch\": %lld, \"pos\": %lld}",
                      (unsigned long long)c->task, c->seed, c->actor, c->num_actors,
                      (unsigned long long)c->rng.s[0], (unsigned long long)c->rng.s[1],
                      (unsigned long long)c->rng.s[2], (unsigned long long)c->rng.s[3], c->drawn,
                      c->epoch, c->pos);
}

static int s_hex64(json_t *v, uint64_t *out) {
    if (!json_is_string(v)) return -1;
    const char *s = json_string_value(v);
    if (strlen(s) != 16) return -1;
    uint64_t x = 0;
    for (int i = 0; i < 16; i++) {
        char ch = s[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (d < 0) return -1;
        x = x << 4 | (uint64_t)d;
    }
    *out = x;
    return 0;
}

int ap_task_cursor_from_json(const char *text, const char *origin, ap_task_cursor_t *c) {
    json_error_t jerr;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return ap_err("%s: task cursor: bad JSON: %s", origin, jerr.text);
    ap_task_cursor_t r;
    memset(&r, 0, sizeof r);
    int rc = -1;
    const char *bad = NULL;
    json_t *rng = json_object_get(root, "rng");
    if (s_hex64(json_object_get(root, "task"), &r.task) < 0)
        bad = "task (16 hex digits)";
    else if (!json_is_integer(json_object_get(root, "seed")))
        bad = "seed";
    else if (!json_is_integer(json_object_get(root, "actor")))
        bad = "actor";
    else if (!json_is_integer(json_object_get(root, "num_actors")))
        bad = "num_actors";
    else if (!json_is_array(rng) || json_array_size(rng) != 4)
        bad = "rng (4 hex strings)";
    else if (!json_is_integer(json_object_get(root, "drawn")))
        bad = "drawn";
    else if (!json_is_integer(json_object_get(root, "epoch")))
        bad = "epoch";
    else if (!json_is_integer(json_object_get(root, "pos")))
        bad = "pos";
    for (int i = 0; !bad && i < 4; i++)
        if (s_hex64(json_array_get(rng, (size_t)i), &r.rng.s[i]) < 0) bad = "rng (4 hex strings)";
    if (!bad) {
        json_int_t actor = json_integer_value(json_object_get(root, "actor"));
        json_int_t num = json_integer_value(json_object_get(root, "num_actors"));
        if (num < 1 || num > 1000000 || actor < 0 || actor >= num) bad = "actor / num_actors";
        r.seed = json_integer_value(json_object_get(root, "seed"));
        r.actor = (int)actor;
        r.num_actors = (int)num;
        r.drawn = json_integer_value(json_object_get(root, "drawn"));
        r.epoch = json_integer_value(json_object_get(root, "epoch"));
        r.pos = json_integer_value(json_object_get(root, "pos"));
    }
    if (bad)
        ap_err("%s: task cursor: field %s is missing or invalid", origin, bad);
    else {
        *c = r;
        rc = 0;
    }
    json_decref(root);
    return rc;
}

/* ---------------------------------------------------------------- rendering */

char *ap_task_render_prompt(const ap_task_t *t, const ap_example_t *ex) {
    ap_template_vars_t v = {.prompt = ex->prompt};
    char *out;
    int ok = ap_template_render(t->tpl_prompt, &v, &out);
    AP_ASSERT(ok == 1);
    return out;
}

char *ap_task_render_completion(const ap_task_t *t, const ap_example_t *ex) {
    ap_template_vars_t v = {.answer = ex->answer, .solution = ex->solution ? ex->solution : ""};
    char *out;
    int ok = ap_template_render(t->tpl_completion, &v, &out);
    AP_ASSERT(ok == 1);
    return out;
}

int ap_task_render_privileged(const ap_task_t *t, const ap_example_t *ex,
                              const ap_task_rollout_t *group, int G, int i, char **context) {
    AP_ASSERT(context && G >= 0 && (group || G == 0) && (G == 0 || (i >= 0 && i < G)));
    *context = NULL;
    if (ap_template_is_empty(t->tpl_priv)) return 0;
    ap_template_vars_t v = {.answer = ex->answer, .solution = ex->solution};
    if (G > 0) {
        v.feedback = group[i].feedback;
        for (int j = 0; j < G && !v.sibling; j++)
            if (j != i && group[j].correct && group[j].completion) v.sibling = group[j].completion;
    }
    char *prompt = NULL;
    if (ap_template_uses(t->tpl_priv) & AP_TPL_PROMPT) prompt = ap_task_render_prompt(t, ex);
    v.prompt = prompt;
    int h = ap_template_render(t->tpl_priv, &v, context);
    free(prompt);
    return h;
}

void ap_task_verify(const ap_task_t *t, const ap_example_t *ex, const char *completion,
                    ap_verdict_t *out) {
    char *answer = NULL;
    if (ap_template_extract(t->tpl_completion, AP_TPL_ANSWER, completion, &answer) == 1)
        ap_verifier_check(&t->verifier, ex->answer, answer, out);
    else
        ap_verifier_no_answer(&t->verifier, ex->answer, completion, out);
    free(answer);
}

/* ---------------------------------------------------------------- tokens */

static void s_add(ap_tokenizer_builder_t *b, const char *text, const char *origin) {
    int rc = ap_tokenizer_builder_add(b, text, origin);
    AP_ASSERTF(rc == 0, "%s", ap_errmsg()); /* all text was validated as UTF-8 on the way in */
}

static void s_add_template(ap_tokenizer_builder_t *b, const ap_template_t *tpl) {
    char *lit = ap_template_literals(tpl);
    s_add(b, lit, "template");
    free(lit);
}

static void s_add_examples(ap_tokenizer_builder_t *b, const ap_dataset_t *d, int with_solution) {
    for (int i = 0; d && i < ap_dataset_size(d); i++) {
        const ap_example_t *ex = ap_dataset_get(d, i);
        s_add(b, ex->prompt, ex->id);
        s_add(b, ex->answer, ex->id);
        if (with_solution && ex->solution) s_add(b, ex->solution, ex->id);
    }
}

ap_tokenizer_t *ap_task_build_tokenizer(const ap_task_t *t) {
    ap_tokenizer_builder_t *b = ap_tokenizer_builder_new();
    unsigned uses = ap_template_uses(t->tpl_completion) | ap_template_uses(t->tpl_priv);
    int with_solution = (uses & AP_TPL_SOLUTION) != 0;
    s_add_template(b, t->tpl_prompt);
    s_add_template(b, t->tpl_completion);
    s_add_template(b, t->tpl_priv);
    if (ap_template_uses(t->tpl_priv) & AP_TPL_FEEDBACK)
        s_add(b, ap_verifier_feedback_alphabet(), "feedback");
    if (t->kind == S_DATA) {
        s_add_examples(b, t->data, with_solution);
        s_add_examples(b, t->hdata, with_solution);
    } else {
        s_add(b, s_gen_alphabet(t->kind), "generator");
        if (t->alphabet) s_add(b, t->alphabet, "task.alphabet");
        if (with_solution) s_add(b, s_gen_solution_alphabet(t->kind), "generator solutions");
    }
    return ap_tokenizer_builder_build(&b);
}

int ap_task_check_tokenizer(const ap_task_t *t, const ap_tokenizer_t *tok, const char *tok_name) {
    ap_tokenizer_t *need = ap_task_build_tokenizer(t);
    if (!need) return -1;
    int rc = 0;
    for (int id = 0; id < ap_tokenizer_vocab_size(need) && rc == 0; id++) {
        if (ap_tokenizer_is_special(need, id)) continue;
        const char *ch = ap_tokenizer_token(need, id);
        if (ap_tokenizer_encode(tok, ch, 0, "", NULL, 0) < 0) {
            size_t pos = 0;
            char esc[32];
            rc = ap_err("%s: the vocabulary lacks %s, which task '%s' produces (it was built for "
                        "another task or other templates: rebuild vocab.json)",
                        tok_name, ap_utf8_escape((uint32_t)ap_utf8_next(ch, &pos), esc),
                        s_kind_names[t->kind]);
        }
    }
    ap_tokenizer_destroy(&need);
    return rc;
}

int32_t *ap_task_encode_prompt(const ap_task_t *t, const ap_tokenizer_t *tok,
                               const ap_example_t *ex, int *n) {
    char *prompt = ap_task_render_prompt(t, ex);
    char *origin = ap_sprintf("%s: prompt", ex->id ? ex->id : "example");
    int32_t *ids = ap_tokenizer_encode_alloc(tok, prompt, AP_TOK_BOS, origin, n);
    free(origin);
    free(prompt);
    return ids;
}

int32_t *ap_task_encode_example(const ap_task_t *t, const ap_tokenizer_t *tok,
                                const ap_example_t *ex, int *n, int *n_prompt) {
    int np, nc;
    int32_t *p = ap_task_encode_prompt(t, tok, ex, &np);
    if (!p) return NULL;
    char *comp = ap_task_render_completion(t, ex);
    char *origin = ap_sprintf("%s: completion", ex->id ? ex->id : "example");
    int32_t *c = ap_tokenizer_encode_alloc(tok, comp, AP_TOK_EOS, origin, &nc);
    free(origin);
    free(comp);
    if (!c) {
        free(p);
        return NULL;
    }
    p = ap_realloc(p, (size_t)(np + nc) * sizeof *p);
    memcpy(p + np, c, (size_t)nc * sizeof *c);
    free(c);
    *n = np + nc;
    *n_prompt = np;
    return p;
}

int ap_task_encode_privileged(const ap_task_t *t, const ap_tokenizer_t *tok, const ap_example_t *ex,
                              const ap_task_rollout_t *group, int G, int i, int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    char *ctx;
    int h = ap_task_render_privileged(t, ex, group, G, i, &ctx);
    if (h == 0) return 0;
    char *origin = ap_sprintf("%s: privileged context", ex->id ? ex->id : "example");
    *ids = ap_tokenizer_encode_alloc(tok, ctx, AP_TOK_BOS, origin, n);
    free(origin);
    free(ctx);
    return *ids ? 1 : -1;
}
