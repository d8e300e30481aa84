/* safetensors.h: read and write safetensors files (MODEL.md, "Checkpoint files").
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}
 * then the raw little-endian data; offsets are relative to the end of the header.
 *
 * The reader validates the whole header at open time and refuses, with a message naming the
 * file, the tensor and the reason: a header length past the file end, bad JSON, a missing or
 * malformed field, offsets outside the data, overlapping tensors, a shape whose element count
 * does not match its byte range. Unknown dtypes are kept (dtype AP_DT_OTHER) and refused when
 * a caller asks for the tensor as numbers.
 *
 * Usage:
 *   ap_st_t *st = ap_st_open("model.safetensors");
 *   if (!st) { fprintf(stderr, "%s\n", ap_errmsg()); ... }
 *   const ap_st_tensor_t *t = ap_st_find(st, "lm_head.weight");
 *   float *w = ...; ap_st_read_f32(st, "lm_head.weight", w, n);  // F32, F16, BF16 -> F32
 *   const char *cfg = ap_st_metadata(st, "config");              // NULL when absent
 *   ap_st_close(&st);
 *
 *   ap_stw_t *w = ap_stw_new();
 *   ap_stw_add_f32(w, "x", x, 2, (int64_t[]){3, 4});  // data is borrowed until ap_stw_write
 *   ap_stw_set_metadata(w, "step", "12");
 *   ap_stw_write(w, "out.safetensors");               // atomic: temp, fsync, rename
 *   ap_stw_destroy(&w);
 */
#ifndef APPRENTICE_SAFETENSORS_H
#define APPRENTICE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define AP_ST_MAX_DIMS 8

typedef enum {
    AP_DT_F32,
    AP_DT_F16,
    AP_DT_BF16,
    AP_DT_F64,
    AP_DT_I32,
    AP_DT_I64,
    AP_DT_U8,
    AP_DT_OTHER, /* a dtype we carry but cannot convert */
} ap_dtype_t;

typedef struct {
    char *name;
    ap_dtype_t dtype;
    char dtype_name[16];          /* as written in the file, e.g. "F32" */
    int ndim;
    int64_t shape[AP_ST_MAX_DIMS];
    int64_t numel;                /* product of shape (1 for a scalar) */
    const void *data;             /* into the mapped file; numel * element size bytes */
} ap_st_tensor_t;

typedef struct ap_st ap_st_t;

ap_st_t *ap_st_open(const char *path);
void ap_st_close(ap_st_t **st);
const char *ap_st_path(const ap_st_t *st);
int ap_st_count(const ap_st_t *st);
const ap_st_tensor_t *ap_st_at(const ap_st_t *st, int i);
const ap_st_tensor_t *ap_st_find(const ap_st_t *st, const char *name); /* NULL if absent */
const char *ap_st_metadata(const ap_st_t *st, const char *key);         /* NULL if absent */

/* Copy tensor `name` into out[0..n) converting to float (F32/F16/BF16/F64) or int32
 * (I32/I64 in range). Fails, naming file and tensor, when the tensor is absent, its dtype
 * cannot be converted, or its element count is not n. */
int ap_st_read_f32(const ap_st_t *st, const char *name, float *out, int64_t n);
int ap_st_read_i32(const ap_st_t *st, const char *name, int32_t *out, int64_t n);
/* Same, checking the exact shape too (ndim dims). */
int ap_st_read_f32_shaped(const ap_st_t *st, const char *name, float *out, int ndim,
                          const int64_t *shape);

size_t ap_dtype_size(ap_dtype_t dt); /* 0 for AP_DT_OTHER */
float ap_bf16_to_f32(uint16_t h);
float ap_f16_to_f32(uint16_t h);

typedef struct ap_stw ap_stw_t;
ap_stw_t *ap_stw_new(void);
void ap_stw_destroy(ap_stw_t **w);
void ap_stw_add(ap_stw_t *w, const char *name, ap_dtype_t dtype, const void *data, int ndim,
                const int64_t *shape);
void ap_stw_add_f32(ap_stw_t *w, const char *name, const float *data, int ndim,
                    const int64_t *shape);
void ap_stw_set_metadata(ap_stw_t *w, const char *key, const char *value);
int ap_stw_write(const ap_stw_t *w, const char *path);

#endif
