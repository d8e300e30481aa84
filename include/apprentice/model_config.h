/* model_config.h: the network's hyper-parameters, read from and written to a Hugging Face
 * `config.json` (MODEL.md, "Config"), through jansson.
 *
 * Loading refuses, naming the file and the field: missing or non-positive sizes, H not
 * dividing D, an odd head dim, KV not dividing H, and fields that would change the computation
 * in ways we do not support (head_dim other than D/H, a non-null rope_scaling, attention_bias
 * or mlp_bias true, hidden_act other than silu). Other extra HF fields are ignored.
 *
 * Usage:
 *   ap_model_config_t c;
 *   if (ap_model_config_load("ckpt/config.json", &c) < 0) puts(ap_errmsg());
 *   c.num_layers = 2; ap_model_config_save("out/config.json", &c);
 */
#ifndef APPRENTICE_MODEL_CONFIG_H
#define APPRENTICE_MODEL_CONFIG_H

typedef struct {
    int vocab_size;        /* V */
    int hidden_size;       /* D */
    int intermediate_size; /* F, SwiGLU width */
    int num_layers;        /* L, num_hidden_layers */
    int num_heads;         /* H, query heads; head dim D / H */
    int num_kv_heads;      /* KV, key/value heads (GQA); H % KV == 0 */
    int max_positions;     /* max_position_embeddings */
    float rms_norm_eps;    /* absent in a file: 1e-6 (HF); ours write 1e-5 */
    float rope_theta;      /* default 10000 */
    int tie_embeddings;    /* 1: logits use the embedding matrix, no lm_head stored */
} ap_model_config_t;

/* Our defaults for a new model (eps 1e-5, theta 10000, untied, KV = H once H is set). */
void ap_model_config_defaults(ap_model_config_t *c);
/* Check the invariants; `origin` names the source in the message. 0 / -1 (ap_err set). */
int ap_model_config_validate(const ap_model_config_t *c, const char *origin);
int ap_model_config_load(const char *path, ap_model_config_t *c);
int ap_model_config_save(const char *path, const ap_model_config_t *c); /* atomic */
static inline int ap_model_config_head_dim(const ap_model_config_t *c) {
    return c->hidden_size / c->num_heads;
}
/* Number of parameters (floats) the config implies. */
long long ap_model_config_num_params(const ap_model_config_t *c);

#endif
