/* kv.c: KV-cached inference for a batch of sequences, and ap_generate (sampler.h).
 *
 * One code path serves prefill and decode: a call feeds "rows" (slot, token), each at the next
 * position of its slot; all rows of a call go through every projection together (rows of
 * different sequences share one trip of the weights through the caches), RoPE'd keys and
 * values are written into the slot's cache, then each row attends over its own slot's cache up
 * to its position. Projections of up to 16 rows (decode steps) use a copy of the weights
 * packed once per weights version (ap_matmul_packed: sgemm would re-pack every matrix at every
 * step); larger row counts (prefill chunks) use sgemm. ap_generate prefills every distinct
 * prompt once (copies the cache to identical prompts), then decodes one token per active
 * sequence per step, compacting the active set as sequences finish.
 *
 * Cache layout, per layer and slot, per key/value head g: keys in tiles of 16 positions, each
 * tile transposed, kt [ml/16][hd][16], and values v [ml][hd]. Decoding reads more cache bytes
 * than it does arithmetic on them, so both passes walk memory sequentially: a query's scores
 * take one contiguous tile per 16 keys (16 lanes in registers, no horizontal reduction per
 * key), its output one value row per key. Scratch is sized for kv->R rows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/blas.h"
#include "apprentice/kernels.h"
#include "apprentice/sampler.h"
#include "model/model_impl.h"

struct ap_kv {
    const ap_model_t *m;
    int S, maxlen, R; /* slots, positions per slot, rows per chunk */
    int ml;           /* maxlen rounded up to a whole key tile (16) */
    int *len;         /* [S] positions cached */
    float *kt, *v;    /* [L, S, KV, ml/16, hd, 16] key tiles; [L, S, KV, ml, hd] values */
    /* per-chunk scratch, R rows */
    int *slot, *pos;                     /* [R] */
    float *x, *a, *rstd, *qkv, *ao, *gu, *act, *sc; /* sc: [ml] attention scores */
    float *logits;                       /* [R, V] */
    float *work;                         /* sampler scratch */
    /* weights packed for few-row products (blas.h), refreshed when the model's version moves */
    float *pk;
    size_t *pk_off;                      /* [4 L + 1]: qkv, o, gu, down per layer, then lm_head */
    uint64_t pk_version;                 /* model version packed; 0 = never */
    float *xt;                           /* [AP_PACK_MAX_ROWS * max(D, F)] packing scratch */
    /* ap_generate's results */
    int32_t *out_tok;
    float *out_lp;
    size_t out_cap; /* per-sequence capacity * S */
    int *active;    /* [S] */
};

enum { S_LANES = 16 }; /* register block: 16 keys (scores) or 16 head dims (output) */
enum { S_PACK_MIN_ROWS = 1 }; /* rows from which the packed weights beat OpenBLAS (all) */
enum { S_CHUNK_ROWS = 512 }; /* rows per chunk: scoring 32 x 13 rows in chunks of 128 took 12% longer */

static size_t s_kvd(const ap_model_t *m) { return (size_t)m->KV * m->hd; }

/* Start of (layer l, slot, kv head g) in kt or v: hd * ml floats either way. */
static float *s_block(const ap_kv_t *kv, float *base, int l, int slot, int g) {
    const ap_model_t *m = kv->m;
    return base + (((size_t)l * kv->S + slot) * m->KV + g) * m->hd * kv->ml;
}

ap_kv_t *ap_kv_new(const ap_model_t *m, int max_seqs, int max_len) {
    if (max_seqs < 1 || max_len < 1 || max_len > m->cfg.max_positions) {
        ap_err("KV cache: %d sequences of %d positions (need >= 1 and positions <= the model's "
               "max_position_embeddings %d)",
               max_seqs, max_len, m->cfg.max_positions);
        return NULL;
    }
    ap_kv_t *kv = ap_calloc(1, sizeof *kv);
    kv->m = m;
    kv->S = max_seqs, kv->maxlen = max_len;
    kv->R = AP_MAX(max_seqs, S_CHUNK_ROWS);
    kv->ml = (max_len + S_LANES - 1) / S_LANES * S_LANES;
    size_t R = (size_t)kv->R, D = (size_t)m->D, cache = (size_t)m->L * max_seqs * kv->ml * s_kvd(m);
    kv->len = ap_calloc((size_t)max_seqs, sizeof *kv->len);
    kv->kt = ap_alloc_aligned(cache * sizeof(float));
    kv->v = ap_alloc_aligned(cache * sizeof(float));
    kv->slot = ap_malloc(R * sizeof *kv->slot);
    kv->pos = ap_malloc(R * sizeof *kv->pos);
    kv->x = ap_alloc_aligned(R * D * sizeof(float));
    kv->a = ap_alloc_aligned(R * D * sizeof(float));
    kv->rstd = ap_alloc_aligned(R * sizeof(float));
    kv->qkv = ap_alloc_aligned(R * m->QKV * sizeof(float));
    kv->ao = ap_alloc_aligned(R * D * sizeof(float));
    kv->gu = ap_alloc_aligned(R * 2 * m->F * sizeof(float));
    kv->act = ap_alloc_aligned(R * m->F * sizeof(float));
    kv->sc = ap_alloc_aligned((size_t)kv->ml * sizeof(float));
    kv->logits = ap_alloc_aligned(R * m->V * sizeof(float));
    kv->work = ap_malloc(ap_sample_work_floats(m->V) * sizeof(float));
    kv->active = ap_malloc((size_t)max_seqs * sizeof *kv->active);
    kv->pk_off = ap_malloc(((size_t)4 * m->L + 1) * sizeof *kv->pk_off);
    kv->xt = ap_malloc((size_t)AP_PACK_MAX_ROWS * AP_MAX(m->D, m->F) * sizeof *kv->xt);
    return kv;
}

void ap_kv_destroy(ap_kv_t **kvp) {
    if (!kvp || !*kvp) return;
    ap_kv_t *kv = *kvp;
    free(kv->len), free(kv->kt), free(kv->v), free(kv->slot), free(kv->pos);
    free(kv->x), free(kv->a), free(kv->rstd), free(kv->qkv), free(kv->ao), free(kv->gu);
    free(kv->act), free(kv->sc), free(kv->logits), free(kv->work);
    free(kv->out_tok), free(kv->out_lp), free(kv->active);
    free(kv->pk), free(kv->pk_off), free(kv->xt);
    free(kv);
    *kvp = NULL;
}

void ap_kv_clear(ap_kv_t *kv) { memset(kv->len, 0, (size_t)kv->S * sizeof *kv->len); }

int ap_kv_len(const ap_kv_t *kv, int slot) {
    AP_ASSERT(slot >= 0 && slot < kv->S);
    return kv->len[slot];
}

int ap_kv_max_seqs(const ap_kv_t *kv) { return kv->S; }
int ap_kv_max_len(const ap_kv_t *kv) { return kv->maxlen; }

/* One row's attention, all heads: q [H*hd] at position pos of `slot` over cache[0..pos].
 * Scores: per key tile, four interleaved accumulators of 16 lanes over the head dims; the last
 * tile's lanes past pos read finite stale (or zeroed) entries and are ignored. */
static void s_attend(const ap_kv_t *kv, float *out, const float *q, int l, int slot, int pos) {
    const ap_model_t *m = kv->m;
    int hd = m->hd, group = m->H / m->KV, n = pos + 1;
    float scale = 1.0f / sqrtf((float)hd), *sc = kv->sc;
    for (int h = 0; h < m->H; h++) {
        const float *qh = q + (size_t)h * hd, *Kt = s_block(kv, kv->kt, l, slot, h / group),
                    *V = s_block(kv, kv->v, l, slot, h / group);
        for (int j0 = 0; j0 < n; j0 += S_LANES) { /* sc[j0..j0+16) = tile . q */
            const float *kb = Kt + (size_t)j0 * hd;
            float a0[S_LANES] = {0}, a1[S_LANES] = {0}, a2[S_LANES] = {0}, a3[S_LANES] = {0};
            int i = 0;
            for (; i + 4 <= hd; i += 4) {
                const float *k0 = kb + (size_t)i * S_LANES;
                float q0 = qh[i], q1 = qh[i + 1], q2 = qh[i + 2], q3 = qh[i + 3];
#pragma omp simd
                for (int jj = 0; jj < S_LANES; jj++) {
                    a0[jj] += q0 * k0[jj];
                    a1[jj] += q1 * k0[S_LANES + jj];
                    a2[jj] += q2 * k0[2 * S_LANES + jj];
                    a3[jj] += q3 * k0[3 * S_LANES + jj];
                }
            }
            for (; i < hd; i++) {
#pragma omp simd
                for (int jj = 0; jj < S_LANES; jj++) a0[jj] += qh[i] * kb[(size_t)i * S_LANES + jj];
            }
#pragma omp simd
            for (int jj = 0; jj < S_LANES; jj++) sc[j0 + jj] = ((a0[jj] + a1[jj]) + (a2[jj] + a3[jj])) * scale;
        }
        float mx = -INFINITY, sum = 0.0f;
#pragma omp simd reduction(max : mx)
        for (int j = 0; j < n; j++) mx = sc[j] > mx ? sc[j] : mx;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < n; j++) {
            sc[j] = ap_expf(sc[j] - mx);
            sum += sc[j];
        }
        float inv = 1.0f / sum, *o = out + (size_t)h * hd;
        memset(o, 0, (size_t)hd * sizeof *o);
        for (int j = 0; j < n; j++) { /* o = softmax(sc) V */
            const float *vr = V + (size_t)j * hd;
            float p = sc[j] * inv;
#pragma omp simd
            for (int d = 0; d < hd; d++) o[d] += p * vr[d];
        }
    }
}

/* Copy positions [0, len) of every layer's cache from slot `src` to slot `dst`. */
static void s_copy_slot(ap_kv_t *kv, int dst, int src, int len) {
    const ap_model_t *m = kv->m;
    size_t tiles = (size_t)(len + S_LANES - 1) / S_LANES * S_LANES; /* whole key tiles */
    for (int l = 0; l < m->L; l++)
        for (int g = 0; g < m->KV; g++) {
            memcpy(s_block(kv, kv->kt, l, dst, g), s_block(kv, kv->kt, l, src, g),
                   tiles * m->hd * sizeof(float));
            memcpy(s_block(kv, kv->v, l, dst, g), s_block(kv, kv->v, l, src, g),
                   (size_t)len * m->hd * sizeof(float));
        }
}

/* The (in, out) shape of packed matrix k: 0 qkv, 1 o, 2 gu, 3 down per layer; 4 L = lm_head. */
static void s_pk_shape(const ap_model_t *m, int k, int *in, int *out) {
    int w = k == 4 * m->L ? 4 : k % 4;
    *in = w == 3 ? m->F : m->D;
    *out = w == 0 ? m->QKV : w == 1 ? m->D : w == 2 ? 2 * m->F : w == 3 ? m->D : m->V;
}

static const float *s_pk_src(const ap_model_t *m, int k) {
    if (k == 4 * m->L) return m->params + m->off_lm;
    const ap_layer_off_t *lo = &m->lo[k / 4];
    size_t off[4] = {lo->qkv, lo->o, lo->gu, lo->down};
    return m->params + off[k % 4];
}

/* Re-pack every projection when the weights changed since the last packing. */
static void s_pack_refresh(ap_kv_t *kv) {
    const ap_model_t *m = kv->m;
    if (kv->pk_version == m->version) return;
    size_t total = 0;
    for (int k = 0; k <= 4 * m->L; k++) {
        int in, out;
        s_pk_shape(m, k, &in, &out);
        kv->pk_off[k] = total;
        total += ap_pack_floats(in, out);
    }
    if (!kv->pk) kv->pk = ap_alloc_aligned(total * sizeof(float));
    for (int k = 0; k <= 4 * m->L; k++) {
        int in, out;
        s_pk_shape(m, k, &in, &out);
        ap_pack(kv->pk + kv->pk_off[k], s_pk_src(m, k), in, out);
    }
    kv->pk_version = m->version;
}

/* y[n, out] (+)= x[n, in] w^T for packed matrix k: few rows through the packed panels (one pass
 * over the weights, no per-call re-packing), more through sgemm. */
static void s_linear(ap_kv_t *kv, float *y, int accumulate, const float *x, int k, int n) {
    const ap_model_t *m = kv->m;
    int in, out;
    s_pk_shape(m, k, &in, &out);
    if (n >= S_PACK_MIN_ROWS && n <= AP_PACK_MAX_ROWS) {
        s_pack_refresh(kv);
        ap_matmul_packed(y, accumulate, x, kv->pk + kv->pk_off[k], n, in, out, kv->xt);
    } else {
        ap_gemm(y, out, x, in, 0, s_pk_src(m, k), in, 1, n, out, in, 1.0f, accumulate ? 1.0f : 0.0f);
    }
}

/* Feed n <= R rows (already validated; kv->len not yet advanced). Logits of rows with
 * want[r] (want NULL: all) are written, compacted in row order, to `logits`. */
static void s_chunk(ap_kv_t *kv, float *logits, const int *slots, const int32_t *tokens, int n,
                    const unsigned char *want) {
    const ap_model_t *m = kv->m;
    const float *P = m->params;
    int D = m->D, hd = m->hd, QKV = m->QKV, half = hd / 2;
    size_t kvd = s_kvd(m);
    for (int r = 0; r < n; r++) {
        kv->slot[r] = slots[r];
        kv->pos[r] = kv->len[slots[r]]++;
        memcpy(kv->x + (size_t)r * D, P + m->off_embed + (size_t)tokens[r] * D, (size_t)D * sizeof(float));
    }
    const float eps = m->cfg.rms_norm_eps;
    for (int l = 0; l < m->L; l++) {
        const ap_layer_off_t *lo = &m->lo[l];
        ap_rmsnorm(kv->a, kv->rstd, kv->x, P + lo->attn_norm, n, D, eps);
        s_linear(kv, kv->qkv, 0, kv->a, 4 * l + 0, n);
        for (int r = 0; r < n; r++) { /* RoPE, then k and v into the cache */
            float *row = kv->qkv + (size_t)r * QKV;
            int p = kv->pos[r];
            ap_rope(row, m->H + m->KV, hd, m->rope_cos + (size_t)p * half, m->rope_sin + (size_t)p * half, 1);
            for (int g = 0; g < m->KV; g++) {
                const float *k = row + D + (size_t)g * hd;
                float *kt = s_block(kv, kv->kt, l, kv->slot[r], g) + (size_t)(p / S_LANES) * hd * S_LANES +
                            p % S_LANES; /* tile p / 16, lane p % 16 */
                for (int i = 0; i < hd; i++) kt[(size_t)i * S_LANES] = k[i];
                memcpy(s_block(kv, kv->v, l, kv->slot[r], g) + (size_t)p * hd, row + D + kvd + (size_t)g * hd,
                       (size_t)hd * sizeof(float));
            }
        }
        for (int r = 0; r < n; r++)
            s_attend(kv, kv->ao + (size_t)r * D, kv->qkv + (size_t)r * QKV, l, kv->slot[r], kv->pos[r]);
        s_linear(kv, kv->x, 1, kv->ao, 4 * l + 1, n); /* x += ao o^T */
        ap_rmsnorm(kv->a, kv->rstd, kv->x, P + lo->mlp_norm, n, D, eps);
        s_linear(kv, kv->gu, 0, kv->a, 4 * l + 2, n);
        ap_swiglu(kv->act, kv->gu, n, m->F);
        s_linear(kv, kv->x, 1, kv->act, 4 * l + 3, n); /* x += act down^T */
    }
    if (!logits) return;
    int k = 0; /* gather the wanted rows, then one product */
    for (int r = 0; r < n; r++)
        if (!want || want[r]) {
            if (k != r) memcpy(kv->x + (size_t)k * D, kv->x + (size_t)r * D, (size_t)D * sizeof(float));
            k++;
        }
    if (k == 0) return;
    ap_rmsnorm(kv->a, kv->rstd, kv->x, P + m->off_norm, k, D, eps);
    s_linear(kv, logits, 0, kv->a, 4 * m->L, k);
}

/* Check rows before anything changes: ids, slots, room in each slot. */
static int s_validate(const ap_kv_t *kv, const int *slots, const int32_t *tokens, int n) {
    int *add = ap_calloc((size_t)kv->S, sizeof *add), rc = 0;
    for (int r = 0; r < n && rc == 0; r++) {
        if (slots[r] < 0 || slots[r] >= kv->S)
            rc = ap_err("KV forward: row %d: slot %d outside [0, %d)", r, slots[r], kv->S);
        else if (tokens[r] < 0 || tokens[r] >= kv->m->V)
            rc = ap_err("KV forward: row %d: token %d outside the vocabulary [0, %d)", r, tokens[r],
                        kv->m->V);
        else if (kv->len[slots[r]] + ++add[slots[r]] > kv->maxlen)
            rc = ap_err("KV forward: slot %d would exceed the cache's %d positions", slots[r],
                        kv->maxlen);
    }
    free(add);
    return rc;
}

int ap_kv_forward(ap_kv_t *kv, float *logits, const int *slots, const int32_t *tokens,
                  const unsigned char *want, int n) {
    if (n < 0 || s_validate(kv, slots, tokens, n) < 0) return -1;
    size_t done = 0; /* logits rows written */
    for (int r0 = 0; r0 < n; r0 += kv->R) {
        int c = AP_MIN(kv->R, n - r0);
        s_chunk(kv, logits ? logits + done * kv->m->V : NULL, slots + r0, tokens + r0, c,
                want ? want + r0 : NULL);
        for (int r = 0; r < c; r++)
            done += !want || want[r0 + r];
    }
    return 0;
}

int ap_kv_copy(ap_kv_t *kv, int dst, int src) {
    if (dst < 0 || dst >= kv->S || src < 0 || src >= kv->S)
        return ap_err("KV copy: slot %d to %d, outside [0, %d)", src, dst, kv->S);
    if (dst != src) s_copy_slot(kv, dst, src, kv->len[src]);
    kv->len[dst] = kv->len[src];
    return 0;
}

/* ---- generation ----------------------------------------------------------------------------- */

/* Record token `tok` (log-prob lp) for slot i; 1 if the sequence goes on. */
static int s_record(ap_kv_t *kv, ap_completion_t *out, int i, int max_new, int32_t tok, float lp,
                    int32_t eos) {
    ap_completion_t *c = &out[i];
    kv->out_tok[(size_t)i * max_new + c->n] = tok;
    kv->out_lp[(size_t)i * max_new + c->n] = lp;
    c->n++;
    if (eos >= 0 && tok == eos) c->finish = AP_FINISH_EOS;
    else if (c->n >= max_new || kv->len[i] >= kv->maxlen) c->finish = AP_FINISH_LENGTH;
    else return 1;
    return 0;
}

int ap_generate(ap_kv_t *kv, ap_completion_t *out, const int32_t *const *prompts,
                const int *prompt_lens, int S, int max_new, int32_t eos, const ap_sampling_t *sp,
                ap_rng_t *rng) {
    const ap_model_t *m = kv->m;
    int V = m->V;
    if (S < 1 || S > kv->S) return ap_err("generate: %d sequences for a cache of %d", S, kv->S);
    if (max_new < 0) return ap_err("generate: max_new %d < 0", max_new);
    if (ap_sampling_validate(sp) < 0) return -1;
    for (int i = 0; i < S; i++) {
        if (prompt_lens[i] < 1 || prompt_lens[i] > kv->maxlen)
            return ap_err("generate: prompt %d has %d tokens (1 to %d allowed)", i, prompt_lens[i],
                          kv->maxlen);
        for (int t = 0; t < prompt_lens[i]; t++)
            if (prompts[i][t] < 0 || prompts[i][t] >= V)
                return ap_err("generate: prompt %d token %d is %d, outside the vocabulary [0, %d)",
                              i, t, prompts[i][t], V);
    }
    size_t cap = (size_t)S * (size_t)AP_MAX(max_new, 1);
    if (cap > kv->out_cap) {
        kv->out_cap = cap;
        kv->out_tok = ap_realloc(kv->out_tok, cap * sizeof *kv->out_tok);
        kv->out_lp = ap_realloc(kv->out_lp, cap * sizeof *kv->out_lp);
    }
    for (int i = 0; i < S; i++) {
        out[i].tokens = kv->out_tok + (size_t)i * max_new;
        out[i].logprobs = kv->out_lp + (size_t)i * max_new;
        out[i].n = 0;
        out[i].finish = AP_FINISH_LENGTH;
    }
    ap_kv_clear(kv);
    if (max_new == 0) return 0;

    /* prefill: each distinct prompt once; `src[i]` = the slot whose prefill i reuses */
    int *src = ap_malloc((size_t)S * sizeof *src), *row_slot = ap_malloc((size_t)kv->R * sizeof *row_slot);
    int32_t *row_tok = ap_malloc((size_t)kv->R * sizeof *row_tok);
    unsigned char *want = ap_malloc((size_t)kv->R);
    float *first = ap_malloc((size_t)S * V * sizeof *first); /* last-prompt-row logits per slot */
    int rc = -1;
    for (int i = 0; i < S; i++) {
        src[i] = i;
        for (int j = 0; j < i && src[i] == i; j++)
            if (src[j] == j && prompt_lens[j] == prompt_lens[i] &&
                (prompts[j] == prompts[i] ||
                 !memcmp(prompts[j], prompts[i], (size_t)prompt_lens[i] * sizeof(int32_t))))
                src[i] = j;
    }
    int n = 0, nwant = 0;
    int *want_slot = ap_malloc((size_t)kv->R * sizeof *want_slot);
    for (int i = 0; i <= S; i++) {
        for (int t = 0; i < S && src[i] == i && t < prompt_lens[i]; t++) {
            row_slot[n] = i, row_tok[n] = prompts[i][t], want[n] = t == prompt_lens[i] - 1;
            if (want[n]) want_slot[nwant++] = i;
            if (++n == kv->R) { /* flush a full chunk */
                s_chunk(kv, kv->logits, row_slot, row_tok, n, want);
                for (int w = 0; w < nwant; w++)
                    memcpy(first + (size_t)want_slot[w] * V, kv->logits + (size_t)w * V, (size_t)V * sizeof(float));
                n = nwant = 0;
            }
        }
        if (i == S && n > 0) {
            s_chunk(kv, kv->logits, row_slot, row_tok, n, want);
            for (int w = 0; w < nwant; w++)
                memcpy(first + (size_t)want_slot[w] * V, kv->logits + (size_t)w * V, (size_t)V * sizeof(float));
        }
    }
    for (int i = 0; i < S; i++) {
        if (src[i] == i) continue;
        int j = src[i], len = prompt_lens[i];
        s_copy_slot(kv, i, j, len);
        kv->len[i] = len;
        memcpy(first + (size_t)i * V, first + (size_t)j * V, (size_t)V * sizeof(float));
    }
    /* first tokens, then one decode step per round over the active set */
    int nact = 0;
    for (int i = 0; i < S; i++) {
        float lp;
        int32_t tok = ap_sample_token(first + (size_t)i * V, V, sp, rng, &lp, kv->work);
        if (tok < 0) {
            ap_err("generate: sequence %d, completion token 0: %s", i, ap_errmsg());
            goto out;
        }
        if (s_record(kv, out, i, max_new, tok, lp, eos)) kv->active[nact++] = i;
    }
    while (nact > 0) {
        for (int r = 0; r < nact; r++) { /* nact <= S <= R: one chunk */
            int i = kv->active[r];
            row_slot[r] = i;
            row_tok[r] = out[i].tokens[out[i].n - 1];
        }
        s_chunk(kv, kv->logits, row_slot, row_tok, nact, NULL);
        int keep = 0;
        for (int r = 0; r < nact; r++) {
            int i = kv->active[r];
            float lp;
            int32_t tok = ap_sample_token(kv->logits + (size_t)r * V, V, sp, rng, &lp, kv->work);
            if (tok < 0) {
                ap_err("generate: sequence %d, completion token %d: %s", i, out[i].n, ap_errmsg());
                goto out;
            }
            if (s_record(kv, out, i, max_new, tok, lp, eos)) kv->active[keep++] = i;
        }
        nact = keep;
    }
    rc = 0;
out:
    free(src), free(row_slot), free(row_tok), free(want), free(first), free(want_slot);
    return rc;
}
