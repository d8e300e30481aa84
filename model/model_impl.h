/* model_impl.h: the inside of ap_model_t, shared by the model's own files only (model.c:
 * table, arenas, checkpoints; train.c: forward/backward; optim.c: AdamW and training state;
 * kv.c: KV-cache decoding). Nothing outside model/ includes this. */
#ifndef APPRENTICE_MODEL_IMPL_H
#define APPRENTICE_MODEL_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "apprentice/model.h"

/* Offsets (floats) of one layer's tensors in every arena. q, k, v are consecutive rows of one
 * [QKV, D] matrix and gate, up of one [2F, D] matrix (HF order makes them adjacent), so each
 * pair/triple is one GEMM. */
typedef struct {
    size_t attn_norm; /* [D] */
    size_t qkv;       /* [QKV, D] = q_proj [H*hd] ; k_proj [KV*hd] ; v_proj [KV*hd] rows */
    size_t o;         /* [D, D] */
    size_t mlp_norm;  /* [D] */
    size_t gu;        /* [2F, D] = gate_proj ; up_proj rows */
    size_t down;      /* [D, F] */
} ap_layer_off_t;

/* What a forward keeps for backward, per layer; pointers into the activation arena. N = B*T
 * rows in the padded [B, T] layout; padding rows are exactly 0 in every buffer. */
typedef struct {
    float *x;     /* [N, D] residual stream entering the layer */
    float *rstd1; /* [N] attention RMSNorm 1/rms */
    float *a;     /* [N, D] normed input of q/k/v */
    float *qkv;   /* [N, QKV] q | k | v, q and k after RoPE */
    float *att;   /* [B, H, T, T] softmax weights (row i valid for cols <= i < len) */
    float *ao;    /* [N, D] attention output, heads concatenated (input of o_proj) */
    float *h;     /* [N, D] residual after attention */
    float *rstd2; /* [N] MLP RMSNorm 1/rms */
    float *mn;    /* [N, D] normed input of gate/up */
    float *gu;    /* [N, 2F] gate | up pre-activations */
    float *act;   /* [N, F] silu(gate) * up (input of down_proj) */
} ap_layer_acts_t;

struct ap_model {
    ap_model_config_t cfg;
    int D, H, KV, hd, F, V, L, QKV; /* QKV = (H + 2 KV) hd */

    ap_param_t *table; /* the tensor list, HF order */
    int ntensors;
    size_t nfloats;
    ap_layer_off_t *lo; /* [L] */
    size_t off_embed, off_norm, off_lm; /* off_lm == off_embed when tied */

    float *params, *grads, *m1, *m2; /* arenas; grads/m1/m2 NULL until first needed */
    long step;                       /* optimizer steps taken */
    uint64_t version;                /* bumped by anything that may change the parameters
                                        (step, set_blob, the writable ap_model_params), so
                                        derived copies (KV-engine packed weights) can refresh */

    float *rope_cos, *rope_sin; /* [max_positions, hd/2] */

    /* activation arena, carved per forward for its (B, T) */
    float *acts;
    size_t acts_cap; /* floats */
    int B, T;        /* shape of the last forward; 0 = none */
    int *lens;       /* [B] of the last forward */
    int lens_cap;
    int32_t *tok;    /* [N] token ids of the last forward (0 at padding) */
    size_t tok_cap;
    int fwd_valid;   /* activations belong to the current weights and a forward */
    ap_layer_acts_t *la; /* [L] */
    float *xL, *rstdf, *xf, *logits; /* [N,D] [N] [N,D] [N,V] */
    float *d_res, *d_tmp, *d_qkv, *d_gu, *d_act, *d_p; /* backward scratch; d_p [T, T] */
};

/* Parameter pointers of layer l in arena `base` (params, grads, m1 or m2). */
static inline float *ap_model_at(float *base, size_t off) { return base + off; }

#endif
