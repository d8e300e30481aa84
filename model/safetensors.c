/* safetensors.c: the safetensors reader (mmap, full header validation) and atomic writer.
 * JSON goes through jansson. See include/apprentice/safetensors.h. */
#include "apprentice/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "apprentice/base.h"

/* A header longer than this is refused before it is read (HF caps it at 100 MB too). */
#define S_MAX_HEADER (100u << 20)

struct ap_st {
    char *path;
    void *map;    /* whole file, read-only */
    size_t size;  /* file size in bytes */
    int count;
    ap_st_tensor_t *tensors;
    json_t *metadata; /* the "__metadata__" object, or NULL */
};

static const struct {
    const char *name;
    ap_dtype_t dtype;
    size_t size;
} s_dtypes[] = {
    {"F32", AP_DT_F32, 4}, {"F16", AP_DT_F16, 2}, {"BF16", AP_DT_BF16, 2}, {"F64", AP_DT_F64, 8},
    {"I32", AP_DT_I32, 4}, {"I64", AP_DT_I64, 8}, {"U8", AP_DT_U8, 1},
};
/* Sizes of dtypes we carry but do not convert, so their byte ranges can still be checked. */
static const struct {
    const char *name;
    size_t size;
} s_other_dtypes[] = {{"I8", 1}, {"I16", 2}, {"U16", 2}, {"U32", 4}, {"U64", 8}, {"BOOL", 1},
                      {"F8_E4M3", 1}, {"F8_E5M2", 1}};

size_t ap_dtype_size(ap_dtype_t dt) {
    for (size_t i = 0; i < AP_COUNT(s_dtypes); i++)
        if (s_dtypes[i].dtype == dt) return s_dtypes[i].size;
    return 0;
}

static const char *s_dtype_name(ap_dtype_t dt) {
    for (size_t i = 0; i < AP_COUNT(s_dtypes); i++)
        if (s_dtypes[i].dtype == dt) return s_dtypes[i].name;
    return "?";
}

float ap_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float ap_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void s_free(ap_st_t *st) {
    if (!st) return;
    for (int i = 0; i < st->count; i++) free(st->tensors[i].name);
    free(st->tensors);
    if (st->metadata) json_decref(st->metadata);
    if (st->map && st->map != MAP_FAILED) munmap(st->map, st->size);
    free(st->path);
    free(st);
}

void ap_st_close(ap_st_t **st) {
    if (!st) return;
    s_free(*st);
    *st = NULL;
}

typedef struct {
    int64_t begin, end;
    int index;
} s_range_t;

static int s_range_cmp(const void *a, const void *b) {
    const s_range_t *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* Parse one tensor entry; on error set ap_err (naming the tensor) and return -1. */
static int s_parse_entry(ap_st_t *st, const char *name, json_t *v, ap_st_tensor_t *t,
                         int64_t data_len, s_range_t *range) {
    const char *path = st->path;
    if (!json_is_object(v)) return ap_err("%s: tensor '%s': entry is not an object", path, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd)) return ap_err("%s: tensor '%s': missing or non-string dtype", path, name);
    if (!json_is_array(js)) return ap_err("%s: tensor '%s': missing or non-array shape", path, name);
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return ap_err("%s: tensor '%s': data_offsets must be [begin, end]", path, name);
    t->name = ap_strdup(name);
    const char *dn = json_string_value(jd);
    snprintf(t->dtype_name, sizeof t->dtype_name, "%s", dn);
    t->dtype = AP_DT_OTHER;
    size_t esize = 0;
    for (size_t i = 0; i < AP_COUNT(s_dtypes); i++)
        if (!strcmp(dn, s_dtypes[i].name)) t->dtype = s_dtypes[i].dtype, esize = s_dtypes[i].size;
    for (size_t i = 0; esize == 0 && i < AP_COUNT(s_other_dtypes); i++)
        if (!strcmp(dn, s_other_dtypes[i].name)) esize = s_other_dtypes[i].size;
    if (esize == 0) return ap_err("%s: tensor '%s': unknown dtype '%s'", path, name, dn);
    size_t nd = json_array_size(js);
    if (nd > AP_ST_MAX_DIMS)
        return ap_err("%s: tensor '%s': %zu dimensions (at most %d)", path, name, nd, AP_ST_MAX_DIMS);
    t->ndim = (int)nd;
    int64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return ap_err("%s: tensor '%s': shape[%zu] is not a non-negative integer", path, name, i);
        t->shape[i] = json_integer_value(d);
        if (t->shape[i] > 0 && numel > INT64_MAX / 16 / t->shape[i])
            return ap_err("%s: tensor '%s': shape overflows", path, name);
        numel *= t->shape[i];
    }
    t->numel = numel;
    json_t *jb = json_array_get(jo, 0), *je = json_array_get(jo, 1);
    if (!json_is_integer(jb) || !json_is_integer(je))
        return ap_err("%s: tensor '%s': data_offsets are not integers", path, name);
    int64_t b = json_integer_value(jb), e = json_integer_value(je);
    if (b < 0 || e < b || e > data_len)
        return ap_err("%s: tensor '%s': data_offsets [%lld, %lld] outside the data (%lld bytes)",
                      path, name, (long long)b, (long long)e, (long long)data_len);
    if ((int64_t)esize * numel != e - b)
        return ap_err("%s: tensor '%s': shape has %lld elements of %zu bytes but the byte range "
                      "holds %lld bytes",
                      path, name, (long long)numel, esize, (long long)(e - b));
    range->begin = b;
    range->end = e;
    return 0;
}

ap_st_t *ap_st_open(const char *path) {
    ap_st_t *st = ap_calloc(1, sizeof *st);
    st->path = ap_strdup(path);
    json_t *root = NULL;
    s_range_t *ranges = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ap_err("%s: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        ap_err("%s: %s", path, strerror(errno));
        close(fd);
        goto fail;
    }
    st->size = (size_t)sb.st_size;
    if (st->size < 8) {
        ap_err("%s: file of %zu bytes is too short for a safetensors header", path, st->size);
        close(fd);
        goto fail;
    }
    st->map = mmap(NULL, st->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (st->map == MAP_FAILED) {
        st->map = NULL;
        ap_err("%s: mmap: %s", path, strerror(errno));
        goto fail;
    }
    const unsigned char *p = st->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i];
    if (hlen > st->size - 8) {
        ap_err("%s: header length %llu runs past the end of the file (%zu bytes)", path,
               (unsigned long long)hlen, st->size);
        goto fail;
    }
    if (hlen > S_MAX_HEADER) {
        ap_err("%s: header length %llu exceeds the %u-byte limit", path, (unsigned long long)hlen,
               S_MAX_HEADER);
        goto fail;
    }
    json_error_t jerr;
    root = json_loadb((const char *)p + 8, hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        ap_err("%s: header is not valid JSON: %s (at byte %d)", path, jerr.text, jerr.position);
        goto fail;
    }
    if (!json_is_object(root)) {
        ap_err("%s: header is not a JSON object", path);
        goto fail;
    }
    int64_t data_len = (int64_t)(st->size - 8 - hlen);
    const unsigned char *data = p + 8 + hlen;
    size_t n = json_object_size(root);
    st->tensors = ap_calloc(n ? n : 1, sizeof *st->tensors);
    ranges = ap_calloc(n ? n : 1, sizeof *ranges);
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(val)) {
                ap_err("%s: __metadata__ is not an object", path);
                goto fail;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv)) {
                    ap_err("%s: __metadata__ value '%s' is not a string", path, mk);
                    goto fail;
                }
            }
            st->metadata = json_incref(val);
            continue;
        }
        ap_st_tensor_t *t = &st->tensors[st->count];
        s_range_t *r = &ranges[st->count];
        int bad = s_parse_entry(st, key, val, t, data_len, r);
        st->count++; /* count it even on failure so its name is freed */
        if (bad) goto fail;
        r->index = st->count - 1;
        t->data = data + r->begin;
    }
    qsort(ranges, (size_t)st->count, sizeof *ranges, s_range_cmp);
    int prev = -1; /* the non-empty range reaching furthest so far */
    for (int i = 0; i < st->count; i++) {
        if (ranges[i].end == ranges[i].begin) continue;
        if (prev >= 0 && ranges[i].begin < ranges[prev].end) {
            ap_err("%s: tensors '%s' and '%s' overlap (bytes [%lld, %lld) and [%lld, %lld))",
                   path, st->tensors[ranges[prev].index].name, st->tensors[ranges[i].index].name,
                   (long long)ranges[prev].begin, (long long)ranges[prev].end,
                   (long long)ranges[i].begin, (long long)ranges[i].end);
            goto fail;
        }
        if (prev < 0 || ranges[i].end > ranges[prev].end) prev = i;
    }
    free(ranges);
    json_decref(root);
    return st;
fail:
    free(ranges);
    if (root) json_decref(root);
    s_free(st);
    return NULL;
}

const char *ap_st_path(const ap_st_t *st) { return st->path; }
int ap_st_count(const ap_st_t *st) { return st->count; }

const ap_st_tensor_t *ap_st_at(const ap_st_t *st, int i) {
    AP_ASSERT(i >= 0 && i < st->count);
    return &st->tensors[i];
}

const ap_st_tensor_t *ap_st_find(const ap_st_t *st, const char *name) {
    for (int i = 0; i < st->count; i++)
        if (!strcmp(st->tensors[i].name, name)) return &st->tensors[i];
    return NULL;
}

const char *ap_st_metadata(const ap_st_t *st, const char *key) {
    if (!st->metadata) return NULL;
    return json_string_value(json_object_get(st->metadata, key));
}

static const ap_st_tensor_t *s_lookup(const ap_st_t *st, const char *name, int64_t n) {
    const ap_st_tensor_t *t = ap_st_find(st, name);
    if (!t) {
        ap_err("%s: tensor '%s' is missing", st->path, name);
        return NULL;
    }
    if (t->numel != n) {
        ap_err("%s: tensor '%s' has %lld elements, expected %lld", st->path, name,
               (long long)t->numel, (long long)n);
        return NULL;
    }
    return t;
}

int ap_st_read_f32(const ap_st_t *st, const char *name, float *out, int64_t n) {
    const ap_st_tensor_t *t = s_lookup(st, name, n);
    if (!t) return -1;
    const unsigned char *d = t->data;
    switch (t->dtype) {
    case AP_DT_F32:
        memcpy(out, d, (size_t)n * 4);
        return 0;
    case AP_DT_F16:
    case AP_DT_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, d + 2 * i, 2);
            out[i] = t->dtype == AP_DT_F16 ? ap_f16_to_f32(h) : ap_bf16_to_f32(h);
        }
        return 0;
    case AP_DT_F64:
        for (int64_t i = 0; i < n; i++) {
            double x;
            memcpy(&x, d + 8 * i, 8);
            out[i] = (float)x;
        }
        return 0;
    default:
        return ap_err("%s: tensor '%s' has dtype %s; only F32, F16, BF16 and F64 convert to float",
                      st->path, name, t->dtype_name);
    }
}

int ap_st_read_f32_shaped(const ap_st_t *st, const char *name, float *out, int ndim,
                          const int64_t *shape) {
    const ap_st_tensor_t *t = ap_st_find(st, name);
    if (!t) return ap_err("%s: tensor '%s' is missing", st->path, name);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char want[128] = "", got[128] = "";
        for (int i = 0; i < ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? ", " : "",
                     (long long)shape[i]);
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "",
                     (long long)t->shape[i]);
        return ap_err("%s: tensor '%s' has shape [%s], expected [%s]", st->path, name, got, want);
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return ap_st_read_f32(st, name, out, n);
}

int ap_st_read_i32(const ap_st_t *st, const char *name, int32_t *out, int64_t n) {
    const ap_st_tensor_t *t = s_lookup(st, name, n);
    if (!t) return -1;
    const unsigned char *d = t->data;
    if (t->dtype == AP_DT_I32) {
        memcpy(out, d, (size_t)n * 4);
        return 0;
    }
    if (t->dtype == AP_DT_I64) {
        for (int64_t i = 0; i < n; i++) {
            int64_t x;
            memcpy(&x, d + 8 * i, 8);
            if (x < INT32_MIN || x > INT32_MAX)
                return ap_err("%s: tensor '%s'[%lld] = %lld does not fit in int32", st->path, name,
                              (long long)i, (long long)x);
            out[i] = (int32_t)x;
        }
        return 0;
    }
    return ap_err("%s: tensor '%s' has dtype %s; expected I32 or I64", st->path, name, t->dtype_name);
}

/* ---- writer ---- */

typedef struct {
    char *name;
    ap_dtype_t dtype;
    const void *data;
    int ndim;
    int64_t shape[AP_ST_MAX_DIMS];
    size_t bytes;
} s_wtensor_t;

struct ap_stw {
    s_wtensor_t *t;
    int n, cap;
    json_t *meta;
};

ap_stw_t *ap_stw_new(void) {
    ap_stw_t *w = ap_calloc(1, sizeof *w);
    w->meta = json_object();
    return w;
}

void ap_stw_destroy(ap_stw_t **wp) {
    if (!wp || !*wp) return;
    ap_stw_t *w = *wp;
    for (int i = 0; i < w->n; i++) free(w->t[i].name);
    free(w->t);
    json_decref(w->meta);
    free(w);
    *wp = NULL;
}

void ap_stw_add(ap_stw_t *w, const char *name, ap_dtype_t dtype, const void *data, int ndim,
                const int64_t *shape) {
    AP_ASSERT(ndim >= 0 && ndim <= AP_ST_MAX_DIMS && ap_dtype_size(dtype) > 0);
    if (w->n == w->cap) w->t = ap_realloc(w->t, (size_t)(w->cap = w->cap ? 2 * w->cap : 16) * sizeof *w->t);
    s_wtensor_t *t = &w->t[w->n++];
    t->name = ap_strdup(name);
    t->dtype = dtype;
    t->data = data;
    t->ndim = ndim;
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= (t->shape[i] = shape[i]);
    t->bytes = (size_t)numel * ap_dtype_size(dtype);
}

void ap_stw_add_f32(ap_stw_t *w, const char *name, const float *data, int ndim,
                    const int64_t *shape) {
    ap_stw_add(w, name, AP_DT_F32, data, ndim, shape);
}

void ap_stw_set_metadata(ap_stw_t *w, const char *key, const char *value) {
    json_object_set_new(w->meta, key, json_string(value));
}

int ap_stw_write(const ap_stw_t *w, const char *path) {
    json_t *root = json_object();
    if (json_object_size(w->meta)) json_object_set(root, "__metadata__", w->meta);
    size_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const s_wtensor_t *t = &w->t[i];
        json_t *e = json_object(), *shape = json_array();
        for (int d = 0; d < t->ndim; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        json_object_set_new(e, "dtype", json_string(s_dtype_name(t->dtype)));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets",
                            json_pack("[I, I]", (json_int_t)off, (json_int_t)(off + t->bytes)));
        json_object_set_new(root, t->name, e);
        off += t->bytes;
    }
    char *hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    AP_ASSERT(hdr);
    size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8; /* pad with spaces: data 8-aligned */
    char *h = ap_malloc(padded);
    memcpy(h, hdr, hl);
    memset(h + hl, ' ', padded - hl);
    free(hdr);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(((uint64_t)padded >> (8 * i)) & 0xff);
    ap_afile_t *f = ap_afile_open(path);
    int rc = -1;
    if (!f) goto out;
    if (ap_afile_write(f, len8, 8) < 0 || ap_afile_write(f, h, padded) < 0) goto abort;
    for (int i = 0; i < w->n; i++)
        if (ap_afile_write(f, w->t[i].data, w->t[i].bytes) < 0) goto abort;
    rc = ap_afile_commit(&f);
    goto out;
abort:
    ap_afile_abort(&f);
out:
    free(h);
    return rc;
}
