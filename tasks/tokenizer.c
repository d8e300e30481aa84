/* tokenizer.c: the character-level vocabulary (kind "char") behind ap_tokenizer_t, its
 * vocab.json file, content hash, and encode/decode; plus the small UTF-8 helpers the task
 * module shares. A later BPE kind adds a branch on `kind` in the public functions.
 *
 * vocab.json (written with jansson, read back with every field checked):
 *   {"type": "apprentice.char_vocab", "version": 1, "size": V,
 *    "specials": ["<pad>", "<bos>", "<eos>"], "chars": ["\n", " ", "+", "0", ...],
 *    "hash": "16 hex digits"}
 * ids: specials first (0, 1, 2, then any extra), then `chars` in file order, which must be
 * strictly increasing code points (the build sorts them, so a vocabulary is reproducible
 * from its text). The hash covers the kind and every token string in id order. */
#include "apprentice/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"

#define S_MAX_CP 0x10FFFF
#define S_FILE_TYPE "apprentice.char_vocab"
#define S_FILE_VERSION 1

enum { S_KIND_CHAR = 1 };

static const char *const s_default_specials[] = {"<pad>", "<bos>", "<eos>"};

struct ap_tokenizer {
    int kind;           /* S_KIND_CHAR */
    int nspecial;       /* number of special tokens, ids [0, nspecial) */
    char **specials;    /* [nspecial] names, "<pad>" ... */
    int nchar;          /* number of character tokens, ids [nspecial, nspecial + nchar) */
    uint32_t *chars;    /* [nchar] code points, strictly increasing */
    char (*text)[5];    /* [nchar] UTF-8 of each character, NUL-terminated */
    int32_t ascii[128]; /* id of each ASCII character, -1 when absent: the fast path */
    uint64_t hash;      /* content hash */
};

struct ap_tokenizer_builder {
    uint8_t *seen; /* bitmap over code points [0, S_MAX_CP] */
    int count;     /* distinct code points set */
};

/* ---------------------------------------------------------------- UTF-8 */

int32_t ap_utf8_next(const char *s, size_t *pos) {
    const unsigned char *p = (const unsigned char *)s + *pos;
    uint32_t c = p[0];
    if (c == 0) return 0;
    int len;
    uint32_t cp, min;
    if (c < 0x80) {
        *pos += 1;
        return (int32_t)c;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return -1;
    }
    for (int i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) return -1; /* also stops at the NUL terminator */
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min || cp > S_MAX_CP || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
    *pos += (size_t)len;
    return (int32_t)cp;
}

int ap_utf8_put(char *buf, uint32_t cp) {
    AP_ASSERT(cp <= S_MAX_CP);
    if (cp < 0x80) {
        buf[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        buf[0] = (char)(0xC0 | (cp >> 6));
        buf[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        buf[0] = (char)(0xE0 | (cp >> 12));
        buf[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        buf[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    buf[0] = (char)(0xF0 | (cp >> 18));
    buf[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    buf[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    buf[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

char *ap_utf8_escape(uint32_t cp, char buf[32]) {
    switch (cp) {
    case '\n':
        snprintf(buf, 32, "'\\n'");
        return buf;
    case '\t':
        snprintf(buf, 32, "'\\t'");
        return buf;
    case '\r':
        snprintf(buf, 32, "'\\r'");
        return buf;
    case '\'':
        snprintf(buf, 32, "'\\''");
        return buf;
    case '\\':
        snprintf(buf, 32, "'\\\\'");
        return buf;
    default:
        break;
    }
    if (cp < 0x20 || cp == 0x7F) {
        snprintf(buf, 32, "'\\x%02x'", (unsigned)cp);
    } else if (cp < 0x7F) {
        snprintf(buf, 32, "'%c'", (char)cp);
    } else {
        /* Show the glyph too, unless it is invisible (C1 controls, spaces/format marks). */
        int visible = cp >= 0xA0 && !(cp >= 0x2000 && cp <= 0x206F) &&
                      !(cp >= 0xFE00 && cp <= 0xFE0F) && cp != 0xFEFF && cp <= S_MAX_CP &&
                      !(cp >= 0xD800 && cp <= 0xDFFF);
        if (visible) {
            char g[5] = {0};
            ap_utf8_put(g, cp);
            snprintf(buf, 32, "U+%04X '%s'", (unsigned)cp, g);
        } else {
            snprintf(buf, 32, "U+%04X", (unsigned)cp);
        }
    }
    return buf;
}

/* ---------------------------------------------------------------- builder */

ap_tokenizer_builder_t *ap_tokenizer_builder_new(void) {
    ap_tokenizer_builder_t *b = ap_calloc(1, sizeof *b);
    b->seen = ap_calloc(S_MAX_CP / 8 + 1, 1);
    return b;
}

int ap_tokenizer_builder_add(ap_tokenizer_builder_t *b, const char *text, const char *origin) {
    AP_ASSERT(b && text);
    size_t pos = 0;
    for (;;) {
        size_t at = pos;
        int32_t cp = ap_utf8_next(text, &pos);
        if (cp == 0) return 0;
        if (cp < 0) return ap_err("%s: invalid UTF-8 at byte %zu", origin ? origin : "text", at);
        uint8_t bit = (uint8_t)(1u << (cp & 7));
        if (!(b->seen[cp >> 3] & bit)) {
            b->seen[cp >> 3] |= bit;
            b->count++;
        }
    }
}

int ap_tokenizer_builder_count(const ap_tokenizer_builder_t *b) {
    return b->count;
}

void ap_tokenizer_builder_destroy(ap_tokenizer_builder_t **b) {
    if (!b || !*b) return;
    free((*b)->seen);
    free(*b);
    *b = NULL;
}

/* A tokenizer of kind char with the default specials and the given sorted code points
 * (ownership of `chars` moves in). Fills the derived tables and the hash. */
static ap_tokenizer_t *s_make_char(char **specials, int nspecial, uint32_t *chars, int nchar) {
    ap_tokenizer_t *t = ap_calloc(1, sizeof *t);
    t->kind = S_KIND_CHAR;
    t->nspecial = nspecial;
    t->specials = specials;
    t->nchar = nchar;
    t->chars = chars;
    t->text = ap_calloc((size_t)(nchar ? nchar : 1), sizeof *t->text);
    for (int i = 0; i < 128; i++)
        t->ascii[i] = -1;
    uint64_t h = ap_hash64("char", 4, 0);
    const unsigned char sep = 0xFF; /* never a byte of UTF-8: the serialization is unambiguous */
    for (int i = 0; i < nspecial; i++) {
        h = ap_hash64(specials[i], strlen(specials[i]), h);
        h = ap_hash64(&sep, 1, h);
    }
    for (int i = 0; i < nchar; i++) {
        ap_utf8_put(t->text[i], chars[i]);
        if (chars[i] < 128) t->ascii[chars[i]] = nspecial + i;
        h = ap_hash64(t->text[i], strlen(t->text[i]), h);
        h = ap_hash64(&sep, 1, h);
    }
    /* splitmix64 finalizer: FNV-1a of similar vocabularies differs in few bits */
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ULL;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBULL;
    t->hash = h ^ (h >> 31);
    return t;
}

static char **s_default_special_names(void) {
    char **s = ap_malloc(AP_COUNT(s_default_specials) * sizeof *s);
    for (size_t i = 0; i < AP_COUNT(s_default_specials); i++)
        s[i] = ap_strdup(s_default_specials[i]);
    return s;
}

ap_tokenizer_t *ap_tokenizer_builder_build(ap_tokenizer_builder_t **bp) {
    AP_ASSERT(bp && *bp);
    ap_tokenizer_builder_t *b = *bp;
    if (b->count == 0) {
        ap_tokenizer_builder_destroy(bp);
        ap_err("vocabulary: no characters were added");
        return NULL;
    }
    uint32_t *chars = ap_malloc((size_t)b->count * sizeof *chars);
    int n = 0;
    for (uint32_t cp = 1; cp <= S_MAX_CP; cp++)
        if (b->seen[cp >> 3] & (1u << (cp & 7))) chars[n++] = cp;
    AP_ASSERT(n == b->count);
    ap_tokenizer_builder_destroy(bp);
    return s_make_char(s_default_special_names(), (int)AP_COUNT(s_default_specials), chars, n);
}

void ap_tokenizer_destroy(ap_tokenizer_t **tp) {
    if (!tp || !*tp) return;
    ap_tokenizer_t *t = *tp;
    for (int i = 0; i < t->nspecial; i++)
        free(t->specials[i]);
    free(t->specials);
    free(t->chars);
    free(t->text);
    free(t);
    *tp = NULL;
}

/* ---------------------------------------------------------------- identity */

int ap_tokenizer_vocab_size(const ap_tokenizer_t *t) {
    return t->nspecial + t->nchar;
}
const char *ap_tokenizer_kind(const ap_tokenizer_t *t) {
    (void)t;
    return "char";
}
uint64_t ap_tokenizer_hash(const ap_tokenizer_t *t) {
    return t->hash;
}

char *ap_tokenizer_hash_hex(const ap_tokenizer_t *t, char *buf) {
    snprintf(buf, 17, "%016llx", (unsigned long long)t->hash);
    return buf;
}

int ap_tokenizer_check_hash(const ap_tokenizer_t *t, const char *t_name, uint64_t other_hash,
                            const char *other_name) {
    if (t->hash == other_hash) return 0;
    return ap_err("tokenizer mismatch: %s has vocabulary %016llx (V=%d), %s has %016llx: both must "
                  "be made from the same vocab.json",
                  t_name, (unsigned long long)t->hash, ap_tokenizer_vocab_size(t), other_name,
                  (unsigned long long)other_hash);
}

int ap_tokenizer_check_same(const ap_tokenizer_t *a, const char *a_name, const ap_tokenizer_t *b,
                            const char *b_name) {
    if (a->hash == b->hash) return 0;
    return ap_err("tokenizer mismatch: %s has vocabulary %016llx (V=%d), %s has %016llx (V=%d): "
                  "both must be made from the same vocab.json",
                  a_name, (unsigned long long)a->hash, ap_tokenizer_vocab_size(a), b_name,
                  (unsigned long long)b->hash, ap_tokenizer_vocab_size(b));
}

int32_t ap_tokenizer_pad(const ap_tokenizer_t *t) {
    (void)t;
    return AP_TOK_PAD_ID;
}
int32_t ap_tokenizer_bos(const ap_tokenizer_t *t) {
    (void)t;
    return AP_TOK_BOS_ID;
}
int32_t ap_tokenizer_eos(const ap_tokenizer_t *t) {
    (void)t;
    return AP_TOK_EOS_ID;
}
int ap_tokenizer_is_special(const ap_tokenizer_t *t, int32_t id) {
    return id >= 0 && id < t->nspecial;
}

const char *ap_tokenizer_token(const ap_tokenizer_t *t, int32_t id) {
    if (id < 0 || id >= ap_tokenizer_vocab_size(t)) return NULL;
    if (id < t->nspecial) return t->specials[id];
    return t->text[id - t->nspecial];
}

/* ---------------------------------------------------------------- encode / decode */

/* Id of code point cp, -1 when absent. */
static int32_t s_lookup(const ap_tokenizer_t *t, uint32_t cp) {
    if (cp < 128) return t->ascii[cp];
    int lo = 0, hi = t->nchar - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (t->chars[mid] == cp) return t->nspecial + mid;
        if (t->chars[mid] < cp)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

int ap_tokenizer_encode(const ap_tokenizer_t *t, const char *text, int flags, const char *origin,
                        int32_t *out, int cap) {
    AP_ASSERT(t && text && cap >= 0 && (out || cap == 0));
    if (!origin) origin = "text";
    int n = 0;
    if (flags & AP_TOK_BOS) {
        if (n < cap) out[n] = ap_tokenizer_bos(t);
        n++;
    }
    size_t pos = 0;
    for (int index = 1;; index++) {
        size_t at = pos;
        int32_t cp = ap_utf8_next(text, &pos);
        if (cp == 0) break;
        if (cp < 0) return ap_err("%s: invalid UTF-8 at byte %zu", origin, at);
        int32_t id = s_lookup(t, (uint32_t)cp);
        if (id < 0) {
            char esc[32], hex[17];
            return ap_err(
                "%s: character %s at position %d (byte %zu) is not in the vocabulary "
                "(%s, %d tokens): rebuild vocab.json if the task or its templates changed",
                origin, ap_utf8_escape((uint32_t)cp, esc), index, at, ap_tokenizer_hash_hex(t, hex),
                ap_tokenizer_vocab_size(t));
        }
        if (n < cap) out[n] = id;
        n++;
    }
    if (flags & AP_TOK_EOS) {
        if (n < cap) out[n] = ap_tokenizer_eos(t);
        n++;
    }
    return n;
}

int32_t *ap_tokenizer_encode_alloc(const ap_tokenizer_t *t, const char *text, int flags,
                                   const char *origin, int *n) {
    int need = ap_tokenizer_encode(t, text, flags, origin, NULL, 0);
    if (need < 0) return NULL;
    int32_t *ids = ap_malloc((size_t)(need ? need : 1) * sizeof *ids);
    int got = ap_tokenizer_encode(t, text, flags, origin, ids, need);
    AP_ASSERT(got == need);
    *n = need;
    return ids;
}

char *ap_tokenizer_decode(const ap_tokenizer_t *t, const int32_t *ids, int n, int flags) {
    AP_ASSERT(t && n >= 0 && (ids || n == 0));
    int V = ap_tokenizer_vocab_size(t);
    size_t len = 0;
    int end = n;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= V) {
            ap_err("decode: token %d at index %d is outside the vocabulary [0, %d)", ids[i], i, V);
            return NULL;
        }
        if ((flags & AP_TOK_STOP_EOS) && ids[i] == ap_tokenizer_eos(t)) {
            end = i;
            break;
        }
        if (ids[i] < t->nspecial && !(flags & AP_TOK_SPECIALS)) continue;
        len += strlen(ap_tokenizer_token(t, ids[i]));
    }
    char *s = ap_malloc(len + 1);
    size_t at = 0;
    for (int i = 0; i < end; i++) {
        if (ids[i] < t->nspecial && !(flags & AP_TOK_SPECIALS)) continue;
        const char *piece = ap_tokenizer_token(t, ids[i]);
        size_t k = strlen(piece);
        memcpy(s + at, piece, k);
        at += k;
    }
    s[at] = 0;
    return s;
}

/* ---------------------------------------------------------------- files */

int ap_tokenizer_save(const ap_tokenizer_t *t, const char *path) {
    json_t *root = json_object();
    char hex[17];
    json_object_set_new(root, "type", json_string(S_FILE_TYPE));
    json_object_set_new(root, "version", json_integer(S_FILE_VERSION));
    json_object_set_new(root, "size", json_integer(ap_tokenizer_vocab_size(t)));
    json_t *sp = json_array();
    for (int i = 0; i < t->nspecial; i++)
        json_array_append_new(sp, json_string(t->specials[i]));
    json_object_set_new(root, "specials", sp);
    json_t *ch = json_array();
    for (int i = 0; i < t->nchar; i++)
        json_array_append_new(ch, json_string(t->text[i]));
    json_object_set_new(root, "chars", ch);
    json_object_set_new(root, "hash", json_string(ap_tokenizer_hash_hex(t, hex)));
    char *text = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(root);
    AP_ASSERT(text);
    size_t n = strlen(text);
    char *withnl = ap_malloc(n + 2);
    memcpy(withnl, text, n);
    withnl[n] = '\n';
    withnl[n + 1] = 0;
    free(text);
    int rc = ap_file_write_atomic(path, withnl, n + 1);
    free(withnl);
    return rc;
}

int ap_tokenizer_save_dir(const ap_tokenizer_t *t, const char *dir) {
    if (ap_mkdirs(dir) < 0) return -1;
    char *path = ap_sprintf("%s/%s", dir, AP_VOCAB_FILE);
    int rc = ap_tokenizer_save(t, path);
    free(path);
    return rc;
}

static ap_tokenizer_t *s_fail(json_t *root, char **specials, int nspecial, uint32_t *chars) {
    json_decref(root);
    for (int i = 0; i < nspecial; i++)
        free(specials[i]);
    free(specials);
    free(chars);
    return NULL;
}

ap_tokenizer_t *ap_tokenizer_load(const char *path) {
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (!ap_path_exists(path))
            ap_err("%s: no such file (a model directory's vocabulary)", path);
        else
            ap_err("%s: line %d: %s", path, jerr.line, jerr.text);
        return NULL;
    }
    char **specials = NULL;
    uint32_t *chars = NULL;
    int nspecial = 0;
    if (!json_is_object(root)) {
        ap_err("%s: not a JSON object", path);
        return s_fail(root, specials, nspecial, chars);
    }
    json_t *type = json_object_get(root, "type");
    if (!json_is_string(type) || strcmp(json_string_value(type), S_FILE_TYPE) != 0) {
        ap_err("%s: field 'type' must be \"%s\"", path, S_FILE_TYPE);
        return s_fail(root, specials, nspecial, chars);
    }
    json_t *version = json_object_get(root, "version");
    if (!json_is_integer(version) || json_integer_value(version) != S_FILE_VERSION) {
        ap_err("%s: field 'version' must be %d", path, S_FILE_VERSION);
        return s_fail(root, specials, nspecial, chars);
    }
    json_t *sp = json_object_get(root, "specials");
    if (!json_is_array(sp) || json_array_size(sp) < AP_COUNT(s_default_specials) ||
        json_array_size(sp) > 1024) {
        ap_err(
            "%s: field 'specials' must be an array starting with \"<pad>\", \"<bos>\", \"<eos>\"",
            path);
        return s_fail(root, specials, nspecial, chars);
    }
    specials = ap_calloc(json_array_size(sp), sizeof *specials);
    for (size_t i = 0; i < json_array_size(sp); i++) {
        json_t *s = json_array_get(sp, i);
        if (!json_is_string(s) || json_string_length(s) == 0 ||
            strlen(json_string_value(s)) != json_string_length(s)) {
            ap_err("%s: specials[%zu] must be a non-empty string", path, i);
            return s_fail(root, specials, nspecial, chars);
        }
        if (i < AP_COUNT(s_default_specials) &&
            strcmp(json_string_value(s), s_default_specials[i])) {
            ap_err("%s: specials[%zu] must be \"%s\" (fixed id %zu), got \"%s\"", path, i,
                   s_default_specials[i], i, json_string_value(s));
            return s_fail(root, specials, nspecial, chars);
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(specials[j], json_string_value(s))) {
                ap_err("%s: specials[%zu] \"%s\" repeats specials[%zu]", path, i,
                       json_string_value(s), j);
                return s_fail(root, specials, nspecial, chars);
            }
        specials[nspecial++] = ap_strdup(json_string_value(s));
    }
    json_t *ch = json_object_get(root, "chars");
    if (!json_is_array(ch) || json_array_size(ch) == 0 || json_array_size(ch) > S_MAX_CP) {
        ap_err("%s: field 'chars' must be a non-empty array of one-character strings", path);
        return s_fail(root, specials, nspecial, chars);
    }
    int nchar = (int)json_array_size(ch);
    chars = ap_malloc((size_t)nchar * sizeof *chars);
    for (int i = 0; i < nchar; i++) {
        json_t *s = json_array_get(ch, (size_t)i);
        const char *str = json_is_string(s) ? json_string_value(s) : NULL;
        size_t pos = 0;
        int32_t cp = str ? ap_utf8_next(str, &pos) : -1;
        if (!str || cp <= 0 || str[pos] != 0 || strlen(str) != json_string_length(s)) {
            ap_err("%s: chars[%d] must be a string of exactly one character", path, i);
            return s_fail(root, specials, nspecial, chars);
        }
        if (i > 0 && (uint32_t)cp <= chars[i - 1]) {
            char e1[32], e2[32];
            ap_err("%s: chars[%d] %s does not come after chars[%d] %s (chars must be sorted by "
                   "code point, without repeats)",
                   path, i, ap_utf8_escape((uint32_t)cp, e1), i - 1,
                   ap_utf8_escape(chars[i - 1], e2));
            return s_fail(root, specials, nspecial, chars);
        }
        chars[i] = (uint32_t)cp;
    }
    json_t *size = json_object_get(root, "size");
    if (!json_is_integer(size) || json_integer_value(size) != nspecial + nchar) {
        ap_err("%s: field 'size' must equal the number of tokens, %d", path, nspecial + nchar);
        return s_fail(root, specials, nspecial, chars);
    }
    json_t *hash = json_object_get(root, "hash");
    if (!json_is_string(hash)) {
        ap_err("%s: field 'hash' (16 hex digits) is missing", path);
        return s_fail(root, specials, nspecial, chars);
    }
    char *stored = ap_strdup(json_string_value(hash));
    json_decref(root);
    ap_tokenizer_t *t = s_make_char(specials, nspecial, chars, nchar);
    char hex[17];
    ap_tokenizer_hash_hex(t, hex);
    if (strcmp(stored, hex) != 0) {
        ap_err("%s: stored hash \"%s\" does not match the content (%s): the file was edited; "
               "rebuild it rather than editing it",
               path, stored, hex);
        free(stored);
        ap_tokenizer_destroy(&t);
        return NULL;
    }
    free(stored);
    return t;
}

ap_tokenizer_t *ap_tokenizer_load_dir(const char *dir) {
    char *path = ap_sprintf("%s/%s", dir, AP_VOCAB_FILE);
    ap_tokenizer_t *t = NULL;
    if (ap_path_exists(path)) {
        t = ap_tokenizer_load(path);
    } else {
        char *hf = ap_sprintf("%s/tokenizer.json", dir);
        if (ap_path_exists(hf))
            ap_err("%s: has an HF tokenizer.json but no %s; BPE tokenizers are not supported yet",
                   dir, AP_VOCAB_FILE);
        else
            ap_err("%s: no %s (build one with `apprentice vocab`)", dir, AP_VOCAB_FILE);
        free(hf);
    }
    free(path);
    return t;
}
