/* train.c: the training-time network: forward over a right-padded batch keeping what backward
 * needs, backward from any dlogits, cross-entropy (model.h; math in MODEL.md).
 *
 * Layout: the B sequences are N = B*T rows of a padded [B, T] matrix, so every projection is
 * one sgemm over N rows (q|k|v and gate|up are single fused matrices, model_impl.h). Padding
 * rows are kept exactly 0 throughout (zero embedding, zero attention output, and everything
 * after that maps 0 to 0), so they never touch valid rows or weight gradients. Attention is
 * two sgemms per (sequence, head, block of 64 query rows) over the keys up to the block's end,
 * so most of the masked upper triangle is never computed, with the causal softmax in between;
 * its weights are kept for backward. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/blas.h"
#include "apprentice/kernels.h"
#include "model/model_impl.h"

/* ---- activation arena ---------------------------------------------------------------------- */

static size_t s_round(size_t n) { return (n + 15) & ~(size_t)15; } /* 64-byte carving */

/* Carve the arena for (B, T) when `base` is set; return the floats needed either way. */
static size_t s_carve(ap_model_t *m, float *base, int B, int T) {
    size_t N = (size_t)B * T, D = (size_t)m->D, off = 0;
#define S_TAKE(ptr, count)                                                                         \
    do {                                                                                           \
        if (base) (ptr) = base + off;                                                              \
        off += s_round(count);                                                                     \
    } while (0)
    for (int l = 0; l < m->L; l++) {
        ap_layer_acts_t *la = m->la + l;
        S_TAKE(la->x, N * D);
        S_TAKE(la->rstd1, N);
        S_TAKE(la->a, N * D);
        S_TAKE(la->qkv, N * m->QKV);
        S_TAKE(la->att, (size_t)B * m->H * T * T);
        S_TAKE(la->ao, N * D);
        S_TAKE(la->h, N * D);
        S_TAKE(la->rstd2, N);
        S_TAKE(la->mn, N * D);
        S_TAKE(la->gu, N * 2 * m->F);
        S_TAKE(la->act, N * m->F);
    }
    S_TAKE(m->xL, N * D);
    S_TAKE(m->rstdf, N);
    S_TAKE(m->xf, N * D);
    S_TAKE(m->logits, N * m->V);
    S_TAKE(m->d_res, N * D);
    S_TAKE(m->d_tmp, N * D);
    S_TAKE(m->d_qkv, N * m->QKV);
    S_TAKE(m->d_gu, N * 2 * m->F);
    S_TAKE(m->d_act, N * m->F);
    S_TAKE(m->d_p, (size_t)T * T);
#undef S_TAKE
    return off;
}

void ap_model_reserve(ap_model_t *m, int max_batch, int max_seq) {
    AP_ASSERT(max_batch >= 1 && max_seq >= 1 && max_seq <= m->cfg.max_positions);
    if (!m->la) m->la = ap_calloc((size_t)m->L, sizeof *m->la);
    size_t need = s_carve(m, NULL, max_batch, max_seq);
    if (need > m->acts_cap) {
        if (m->acts) ap_log(AP_LOG_DEBUG, "model: activation arena grows to %zu MiB", need >> 18);
        free(m->acts);
        m->acts = ap_alloc_aligned(need * sizeof(float));
        m->acts_cap = need;
        m->B = m->T = 0;
        m->fwd_valid = 0;
    }
    if ((size_t)max_batch * max_seq > m->tok_cap) {
        m->tok_cap = (size_t)max_batch * max_seq;
        m->tok = ap_realloc(m->tok, m->tok_cap * sizeof *m->tok);
    }
    if (max_batch > m->lens_cap) {
        m->lens_cap = max_batch;
        m->lens = ap_realloc(m->lens, (size_t)max_batch * sizeof *m->lens);
    }
}

/* ---- forward -------------------------------------------------------------------------------- */

/* Rows per block in causal attention: block [r0, r1) only multiplies against keys [0, r1), so
 * the masked upper triangle is mostly skipped (T = 256: 62% of the full T x T work is done). */
enum { S_ATT_BLOCK = 64 };

/* Causal softmax of rows r0 <= i < r1 of s (leading dim ld, columns [0, r1) computed), in
 * place; columns i < j < r1 are set to 0. Columns >= r1 are never read. */
static void s_causal_softmax(float *s, int ld, int r0, int r1) {
    for (int i = r0; i < r1; i++) {
        float *r = s + (size_t)i * ld, mx = -INFINITY, sum = 0.0f;
        int n = i + 1;
#pragma omp simd reduction(max : mx)
        for (int j = 0; j < n; j++) mx = r[j] > mx ? r[j] : mx;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < n; j++) {
            r[j] = ap_expf(r[j] - mx);
            sum += r[j];
        }
        float inv = 1.0f / sum;
#pragma omp simd
        for (int j = 0; j < n; j++) r[j] *= inv;
        for (int j = n; j < r1; j++) r[j] = 0.0f;
    }
}

static void s_attention_forward(ap_model_t *m, ap_layer_acts_t *la) {
    int B = m->B, T = m->T, H = m->H, hd = m->hd, D = m->D, QKV = m->QKV, kvd = m->KV * hd;
    int group = m->H / m->KV;
    float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < B; b++) {
        int len = m->lens[b];
        float *rows = la->qkv + (size_t)b * T * QKV, *ao = la->ao + (size_t)b * T * D;
        /* RoPE on q and k of every valid row (pos = t) */
        for (int t = 0; t < len; t++) {
            const float *c = m->rope_cos + (size_t)t * (hd / 2), *s = m->rope_sin + (size_t)t * (hd / 2);
            ap_rope(rows + (size_t)t * QKV, H + m->KV, hd, c, s, 1);
        }
        for (int h = 0; h < H; h++) {
            int g = h / group;
            const float *q = rows + h * hd, *k = rows + D + g * hd, *v = rows + D + kvd + g * hd;
            float *p = la->att + ((size_t)b * H + h) * T * T;
            for (int r0 = 0; r0 < len; r0 += S_ATT_BLOCK) {
                int r1 = AP_MIN(len, r0 + S_ATT_BLOCK), nr = r1 - r0;
                float *pb = p + (size_t)r0 * T;
                ap_gemm(pb, T, q + (size_t)r0 * QKV, QKV, 0, k, QKV, 1, nr, r1, hd, scale, 0.0f); /* q k^T */
                s_causal_softmax(p, T, r0, r1);
                ap_gemm(ao + (size_t)r0 * D + h * hd, D, pb, T, 0, v, QKV, 0, nr, hd, r1, 1.0f, 0.0f); /* p v */
            }
        }
        if (len < T) memset(ao + (size_t)len * D, 0, (size_t)(T - len) * D * sizeof(float));
    }
}

float *ap_model_forward(ap_model_t *m, const int32_t *tokens, const int *lens, int B, int T) {
    if (B < 1 || T < 1) {
        ap_err("model forward: batch %d x %d is empty", B, T);
        return NULL;
    }
    if (T > m->cfg.max_positions) {
        ap_err("model forward: sequence length %d exceeds max_position_embeddings %d", T,
               m->cfg.max_positions);
        return NULL;
    }
    for (int b = 0; b < B; b++) {
        int len = lens ? lens[b] : T;
        if (len < 0 || len > T) {
            ap_err("model forward: length %d of sequence %d outside [0, %d]", len, b, T);
            return NULL;
        }
        for (int t = 0; t < len; t++) {
            int32_t id = tokens[(size_t)b * T + t];
            if (id < 0 || id >= m->V) {
                ap_err("model forward: token %d at [%d, %d] outside the vocabulary [0, %d)", id, b,
                       t, m->V);
                return NULL;
            }
        }
    }
    ap_model_reserve(m, B, T); /* no-op unless this batch is larger than any before */
    s_carve(m, m->acts, B, T);
    m->B = B, m->T = T;
    size_t N = (size_t)B * T, D = (size_t)m->D;
    for (int b = 0; b < B; b++) {
        int len = m->lens[b] = lens ? lens[b] : T;
        for (int t = 0; t < T; t++) {
            size_t r = (size_t)b * T + t;
            m->tok[r] = t < len ? tokens[r] : 0;
            float *x = m->la[0].x + r * D;
            if (t < len) memcpy(x, m->params + m->off_embed + (size_t)m->tok[r] * D, D * sizeof *x);
            else memset(x, 0, D * sizeof *x);
        }
    }
    const float eps = m->cfg.rms_norm_eps;
    for (int l = 0; l < m->L; l++) {
        ap_layer_acts_t *la = &m->la[l];
        const ap_layer_off_t *lo = &m->lo[l];
        const float *P = m->params;
        ap_rmsnorm(la->a, la->rstd1, la->x, P + lo->attn_norm, (int)N, m->D, eps);
        ap_matmul(la->qkv, la->a, P + lo->qkv, (int)N, m->D, m->QKV);
        s_attention_forward(m, la);
        memcpy(la->h, la->x, N * D * sizeof(float)); /* h = x + ao o^T */
        ap_gemm(la->h, m->D, la->ao, m->D, 0, P + lo->o, m->D, 1, (int)N, m->D, m->D, 1.0f, 1.0f);
        ap_rmsnorm(la->mn, la->rstd2, la->h, P + lo->mlp_norm, (int)N, m->D, eps);
        ap_matmul(la->gu, la->mn, P + lo->gu, (int)N, m->D, 2 * m->F);
        ap_swiglu(la->act, la->gu, (int)N, m->F);
        float *next = l + 1 < m->L ? m->la[l + 1].x : m->xL; /* next = h + act down^T */
        memcpy(next, la->h, N * D * sizeof(float));
        ap_gemm(next, m->D, la->act, m->F, 0, P + lo->down, m->F, 1, (int)N, m->D, m->F, 1.0f, 1.0f);
    }
    ap_rmsnorm(m->xf, m->rstdf, m->xL, m->params + m->off_norm, (int)N, m->D, eps);
    ap_matmul(m->logits, m->xf, m->params + m->off_lm, (int)N, m->D, m->V);
    m->fwd_valid = 1;
    return m->logits;
}

size_t ap_model_activation_bytes(const ap_model_t *m) { return m->acts_cap * sizeof(float); }

float *ap_model_logits(ap_model_t *m) { return m->B ? m->logits : NULL; }

/* ---- backward ------------------------------------------------------------------------------- */

/* Attention backward for one layer: d_tmp holds dL/d(ao) [N, D]; writes dL/dqkv (pre-RoPE)
 * into d_qkv [N, QKV]. */
static void s_attention_backward(ap_model_t *m, ap_layer_acts_t *la) {
    int B = m->B, T = m->T, H = m->H, hd = m->hd, D = m->D, QKV = m->QKV, kvd = m->KV * hd;
    int group = m->H / m->KV;
    float scale = 1.0f / sqrtf((float)hd);
    memset(m->d_qkv, 0, (size_t)B * T * QKV * sizeof(float));
    for (int b = 0; b < B; b++) {
        int len = m->lens[b];
        if (len == 0) continue;
        const float *rows = la->qkv + (size_t)b * T * QKV, *dao = m->d_tmp + (size_t)b * T * D;
        float *drows = m->d_qkv + (size_t)b * T * QKV, *dp = m->d_p;
        for (int h = 0; h < H; h++) {
            int g = h / group;
            const float *q = rows + h * hd, *k = rows + D + g * hd, *v = rows + D + kvd + g * hd;
            const float *p = la->att + ((size_t)b * H + h) * T * T, *dout = dao + h * hd;
            float *dq = drows + h * hd, *dk = drows + D + g * hd, *dv = drows + D + kvd + g * hd;
            for (int r0 = 0; r0 < len; r0 += S_ATT_BLOCK) { /* row blocks, as forward */
                int r1 = AP_MIN(len, r0 + S_ATT_BLOCK), nr = r1 - r0;
                const float *pb = p + (size_t)r0 * T, *db = dout + (size_t)r0 * D;
                float *dpb = dp + (size_t)r0 * T;
                ap_gemm(dpb, T, db, D, 0, v, QKV, 1, nr, r1, hd, 1.0f, 0.0f); /* dP = dO v^T */
                ap_gemm(dv, QKV, pb, T, 1, db, D, 0, r1, hd, nr, 1.0f, 1.0f); /* dv += P^T dO */
                for (int i = r0; i < r1; i++) { /* dS = P * (dP - rowsum(P * dP)), causal */
                    const float *pr = p + (size_t)i * T;
                    float *dr = dp + (size_t)i * T, dot = 0.0f;
                    int n = i + 1;
#pragma omp simd reduction(+ : dot)
                    for (int j = 0; j < n; j++) dot += pr[j] * dr[j];
#pragma omp simd
                    for (int j = 0; j < n; j++) dr[j] = pr[j] * (dr[j] - dot);
                    for (int j = n; j < r1; j++) dr[j] = 0.0f;
                }
                ap_gemm(dq + (size_t)r0 * QKV, QKV, dpb, T, 0, k, QKV, 0, nr, hd, r1, scale, 1.0f); /* dq = dS k */
                ap_gemm(dk, QKV, dpb, T, 1, q + (size_t)r0 * QKV, QKV, 0, r1, hd, nr, scale, 1.0f); /* dk += dS^T q */
            }
        }
        for (int t = 0; t < len; t++) { /* undo RoPE: rotate the gradients back */
            const float *c = m->rope_cos + (size_t)t * (hd / 2), *s = m->rope_sin + (size_t)t * (hd / 2);
            ap_rope(drows + (size_t)t * QKV, H + m->KV, hd, c, s, -1);
        }
    }
}

void ap_model_backward(ap_model_t *m, const float *dlogits) {
    AP_ASSERTF(m->fwd_valid, "ap_model_backward needs a forward with the current weights first");
    size_t N = (size_t)m->B * m->T, D = (size_t)m->D;
    int n = (int)N;
    float *G = ap_model_grads(m);
    const float *P = m->params;
    /* logits = xf W^T */
    ap_matmul_backward(m->d_tmp, 0, G + m->off_lm, dlogits, m->xf, P + m->off_lm, n, m->D, m->V);
    for (int b = 0; b < m->B; b++) /* padding rows of dlogits are ignored */
        if (m->lens[b] < m->T)
            memset(m->d_tmp + ((size_t)b * m->T + m->lens[b]) * D, 0,
                   (size_t)(m->T - m->lens[b]) * D * sizeof(float));
    memset(m->d_res, 0, N * D * sizeof(float));
    ap_rmsnorm_backward(m->d_res, G + m->off_norm, m->d_tmp, m->xL, m->rstdf, P + m->off_norm, n,
                        m->D);
    for (int l = m->L - 1; l >= 0; l--) {
        ap_layer_acts_t *la = &m->la[l];
        const ap_layer_off_t *lo = &m->lo[l];
        /* MLP: next = h + swiglu(mn gu^T) down^T; d_res is dL/dnext and becomes dL/dh */
        ap_matmul_backward(m->d_act, 0, G + lo->down, m->d_res, la->act, P + lo->down, n, m->F, m->D);
        ap_swiglu_backward(m->d_gu, m->d_act, la->gu, n, m->F);
        ap_matmul_backward(m->d_tmp, 0, G + lo->gu, m->d_gu, la->mn, P + lo->gu, n, m->D, 2 * m->F);
        ap_rmsnorm_backward(m->d_res, G + lo->mlp_norm, m->d_tmp, la->h, la->rstd2,
                            P + lo->mlp_norm, n, m->D);
        /* attention: h = x + attn(a) o^T; d_res becomes dL/dx */
        ap_matmul_backward(m->d_tmp, 0, G + lo->o, m->d_res, la->ao, P + lo->o, n, m->D, m->D);
        s_attention_backward(m, la);
        ap_matmul_backward(m->d_tmp, 0, G + lo->qkv, m->d_qkv, la->a, P + lo->qkv, n, m->D, m->QKV);
        ap_rmsnorm_backward(m->d_res, G + lo->attn_norm, m->d_tmp, la->x, la->rstd1,
                            P + lo->attn_norm, n, m->D);
    }
    float *gE = G + m->off_embed; /* embedding rows of the valid tokens */
    for (int b = 0; b < m->B; b++)
        for (int t = 0; t < m->lens[b]; t++) {
            size_t r = (size_t)b * m->T + t;
            float *ge = gE + (size_t)m->tok[r] * D;
            const float *d = m->d_res + r * D;
#pragma omp simd
            for (size_t i = 0; i < D; i++) ge[i] += d[i];
        }
}

void ap_model_zero_grad(ap_model_t *m) {
    memset(ap_model_grads(m), 0, m->nfloats * sizeof(float));
}

/* ---- cross-entropy -------------------------------------------------------------------------- */

int ap_cross_entropy(float *dlogits, float *loss, const float *logits, const int32_t *targets,
                     int n, int V) {
    int count = 0;
    for (int r = 0; r < n; r++) {
        if (targets[r] == -100) continue;
        if (targets[r] < 0 || targets[r] >= V)
            return ap_err("cross-entropy: target %d at row %d is neither -100 nor in [0, %d)",
                          targets[r], r, V);
        count++;
    }
    double total = 0.0;
    float inv = count ? 1.0f / (float)count : 0.0f;
    for (int r = 0; r < n; r++) {
        const float *z = logits + (size_t)r * V;
        float *dz = dlogits ? dlogits + (size_t)r * V : NULL;
        int32_t y = targets[r];
        if (y == -100) {
            if (dz) memset(dz, 0, (size_t)V * sizeof *dz);
            continue;
        }
        float lse = ap_logsumexp(z, V, 1.0f), zy = z[y];
        total += (double)lse - zy;
        if (dz) {
#pragma omp simd
            for (int i = 0; i < V; i++) dz[i] = ap_expf(z[i] - lse) * inv;
            dz[y] -= inv;
        }
    }
    *loss = count ? (float)(total / count) : 0.0f;
    return 0;
}
