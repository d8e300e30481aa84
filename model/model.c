/* model.c: the tensor table, the parameter arena and everything that walks it once: random
 * init, checkpoint load/save (HF names, safetensors + config.json), weight-transfer blobs,
 * clone, checksum (model.h). Forward/backward are in train.c, the optimizer in optim.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/safetensors.h"
#include "model/model_impl.h"

static void s_add(ap_model_t *m, size_t *off, int ndim, int64_t s0, int64_t s1, const char *fmt,
                  int layer) {
    ap_param_t *p = &m->table[m->ntensors++];
    snprintf(p->name, sizeof p->name, fmt, layer);
    p->ndim = ndim;
    p->shape[0] = s0;
    p->shape[1] = ndim == 2 ? s1 : 0;
    p->numel = (size_t)s0 * (size_t)(ndim == 2 ? s1 : 1);
    p->offset = *off;
    p->decay = ndim == 2;
    *off += p->numel;
}

/* Build the table (the one place that lists the tensors) and allocate the parameter arena
 * (zeroed). The config must be valid. */
static ap_model_t *s_alloc(const ap_model_config_t *c) {
    ap_model_t *m = ap_calloc(1, sizeof *m);
    m->cfg = *c;
    m->D = c->hidden_size, m->H = c->num_heads, m->KV = c->num_kv_heads, m->F = c->intermediate_size;
    m->V = c->vocab_size, m->L = c->num_layers, m->hd = m->D / m->H;
    m->QKV = (m->H + 2 * m->KV) * m->hd;
    int D = m->D, F = m->F, V = m->V, kvd = m->KV * m->hd;
    m->table = ap_calloc((size_t)(9 * m->L + 3), sizeof *m->table);
    m->lo = ap_calloc((size_t)m->L, sizeof *m->lo);
    size_t off = 0;
    m->off_embed = off;
    s_add(m, &off, 2, V, D, "model.embed_tokens.weight", 0);
    for (int l = 0; l < m->L; l++) {
        ap_layer_off_t *lo = &m->lo[l];
        lo->attn_norm = off;
        s_add(m, &off, 1, D, 0, "model.layers.%d.input_layernorm.weight", l);
        lo->qkv = off; /* q, k, v consecutive: one [QKV, D] matrix */
        s_add(m, &off, 2, D, D, "model.layers.%d.self_attn.q_proj.weight", l);
        s_add(m, &off, 2, kvd, D, "model.layers.%d.self_attn.k_proj.weight", l);
        s_add(m, &off, 2, kvd, D, "model.layers.%d.self_attn.v_proj.weight", l);
        lo->o = off;
        s_add(m, &off, 2, D, D, "model.layers.%d.self_attn.o_proj.weight", l);
        lo->mlp_norm = off;
        s_add(m, &off, 1, D, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        lo->gu = off; /* gate, up consecutive: one [2F, D] matrix */
        s_add(m, &off, 2, F, D, "model.layers.%d.mlp.gate_proj.weight", l);
        s_add(m, &off, 2, F, D, "model.layers.%d.mlp.up_proj.weight", l);
        lo->down = off;
        s_add(m, &off, 2, D, F, "model.layers.%d.mlp.down_proj.weight", l);
    }
    m->off_norm = off;
    s_add(m, &off, 1, D, 0, "model.norm.weight", 0);
    m->off_lm = m->off_embed;
    if (!c->tie_embeddings) {
        m->off_lm = off;
        s_add(m, &off, 2, V, D, "lm_head.weight", 0);
    }
    m->nfloats = off;
    AP_ASSERT((long long)off == ap_model_config_num_params(c));
    m->params = ap_alloc_aligned(off * sizeof(float));
    m->version = 1;

    /* RoPE tables, in double then rounded: cos/sin(pos * theta^(-2j/hd)) */
    int half = m->hd / 2, P = c->max_positions;
    m->rope_cos = ap_malloc((size_t)P * half * sizeof(float));
    m->rope_sin = ap_malloc((size_t)P * half * sizeof(float));
    for (int p = 0; p < P; p++)
        for (int j = 0; j < half; j++) {
            double a = p * pow((double)c->rope_theta, -2.0 * j / m->hd);
            m->rope_cos[(size_t)p * half + j] = (float)cos(a);
            m->rope_sin[(size_t)p * half + j] = (float)sin(a);
        }
    return m;
}

ap_model_t *ap_model_new(const ap_model_config_t *c, uint64_t seed) {
    if (ap_model_config_validate(c, "model config") < 0) return NULL;
    ap_model_t *m = s_alloc(c);
    ap_rng_t rng;
    ap_rng_seed(&rng, seed, 0x6d6f64656cULL /* "model" */);
    for (int i = 0; i < m->ntensors; i++) {
        const ap_param_t *p = &m->table[i];
        float *w = m->params + p->offset;
        for (size_t k = 0; k < p->numel; k++)
            w[k] = p->ndim == 2 ? (float)(0.02 * ap_rng_normal(&rng)) : 1.0f;
    }
    return m;
}

ap_model_t *ap_model_load(const char *dir) {
    char *cpath = ap_sprintf("%s/config.json", dir), *wpath = ap_sprintf("%s/model.safetensors", dir);
    ap_model_config_t c;
    ap_model_t *m = NULL;
    ap_st_t *st = NULL;
    if (ap_model_config_load(cpath, &c) < 0) goto out;
    if (!(st = ap_st_open(wpath))) goto out;
    m = s_alloc(&c);
    for (int i = 0; i < m->ntensors; i++) {
        const ap_param_t *p = &m->table[i];
        const ap_st_tensor_t *t = ap_st_find(st, p->name);
        if (t && t->dtype != AP_DT_F32 && t->dtype != AP_DT_F16 && t->dtype != AP_DT_BF16) {
            ap_err("%s: tensor '%s' has dtype %s; a model tensor must be F32, F16 or BF16", wpath,
                   p->name, t->dtype_name);
            ap_model_destroy(&m);
            goto out;
        }
        if (ap_st_read_f32_shaped(st, p->name, m->params + p->offset, p->ndim, p->shape) < 0) {
            ap_model_destroy(&m);
            goto out;
        }
    }
    int extra = 0;
    const char *first = NULL;
    for (int i = 0; i < ap_st_count(st); i++) {
        const char *name = ap_st_at(st, i)->name;
        if (ap_model_find(m, name) || (c.tie_embeddings && !strcmp(name, "lm_head.weight")))
            continue;
        if (!extra++) first = name;
    }
    if (extra)
        ap_log(AP_LOG_WARN, "%s: ignoring %d tensor(s) the model does not use (first: '%s')",
               wpath, extra, first);
out:
    ap_st_close(&st);
    free(cpath), free(wpath);
    return m;
}

int ap_model_save(const ap_model_t *m, const char *dir) {
    if (ap_mkdirs(dir) < 0) return -1;
    char *wpath = ap_sprintf("%s/model.safetensors", dir), *cpath = ap_sprintf("%s/config.json", dir);
    ap_stw_t *w = ap_stw_new();
    for (int i = 0; i < m->ntensors; i++) {
        const ap_param_t *p = &m->table[i];
        ap_stw_add_f32(w, p->name, m->params + p->offset, p->ndim, p->shape);
    }
    ap_stw_set_metadata(w, "format", "pt"); /* transformers refuses files without it */
    int rc = ap_stw_write(w, wpath);
    if (rc == 0) rc = ap_model_config_save(cpath, &m->cfg);
    if (rc < 0) ap_err("saving model to %s: %s", dir, ap_errmsg());
    ap_stw_destroy(&w);
    free(wpath), free(cpath);
    return rc;
}

ap_model_t *ap_model_from_blob(const ap_model_config_t *c, const void *blob, size_t bytes) {
    if (ap_model_config_validate(c, "model config") < 0) return NULL;
    ap_model_t *m = s_alloc(c);
    if (ap_model_set_blob(m, blob, bytes) < 0) ap_model_destroy(&m);
    return m;
}

ap_model_t *ap_model_clone(const ap_model_t *src) {
    ap_model_t *m = s_alloc(&src->cfg);
    memcpy(m->params, src->params, m->nfloats * sizeof(float));
    return m;
}

void ap_model_destroy(ap_model_t **mp) {
    if (!mp || !*mp) return;
    ap_model_t *m = *mp;
    free(m->table), free(m->lo);
    free(m->params), free(m->grads), free(m->m1), free(m->m2);
    free(m->rope_cos), free(m->rope_sin);
    free(m->acts), free(m->lens), free(m->tok), free(m->la);
    free(m);
    *mp = NULL;
}

const ap_model_config_t *ap_model_config(const ap_model_t *m) { return &m->cfg; }
int ap_model_num_tensors(const ap_model_t *m) { return m->ntensors; }

const ap_param_t *ap_model_tensor(const ap_model_t *m, int i) {
    AP_ASSERT(i >= 0 && i < m->ntensors);
    return &m->table[i];
}

const ap_param_t *ap_model_find(const ap_model_t *m, const char *name) {
    for (int i = 0; i < m->ntensors; i++)
        if (!strcmp(m->table[i].name, name)) return &m->table[i];
    return NULL;
}

size_t ap_model_num_floats(const ap_model_t *m) { return m->nfloats; }
float *ap_model_params(ap_model_t *m) {
    m->version++; /* the caller may write through it */
    return m->params;
}

float *ap_model_grads(ap_model_t *m) {
    if (!m->grads) m->grads = ap_alloc_aligned(m->nfloats * sizeof(float));
    return m->grads;
}

const void *ap_model_blob(const ap_model_t *m, size_t *bytes) {
    if (bytes) *bytes = m->nfloats * sizeof(float);
    return m->params;
}

int ap_model_set_blob(ap_model_t *m, const void *blob, size_t bytes) {
    if (bytes != m->nfloats * sizeof(float))
        return ap_err("weights blob of %zu bytes does not fit the model (%zu parameters = %zu "
                      "bytes)",
                      bytes, m->nfloats, m->nfloats * sizeof(float));
    memcpy(m->params, blob, bytes);
    m->version++;
    m->fwd_valid = 0; /* kept activations belong to the old weights */
    return 0;
}

uint64_t ap_model_checksum(const ap_model_t *m) {
    return ap_hash64(m->params, m->nfloats * sizeof(float), 0);
}
