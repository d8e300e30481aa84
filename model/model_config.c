/* model_config.c: HF config.json <-> ap_model_config_t, with the refusals of MODEL.md. */
#include "apprentice/model_config.h"

#include <jansson.h>
#include <string.h>

#include "apprentice/base.h"

void ap_model_config_defaults(ap_model_config_t *c) {
    memset(c, 0, sizeof *c);
    c->max_positions = 256;
    c->rms_norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
}

int ap_model_config_validate(const ap_model_config_t *c, const char *origin) {
    const struct {
        const char *name;
        int value;
    } sizes[] = {{"vocab_size", c->vocab_size},
                 {"hidden_size", c->hidden_size},
                 {"intermediate_size", c->intermediate_size},
                 {"num_hidden_layers", c->num_layers},
                 {"num_attention_heads", c->num_heads},
                 {"num_key_value_heads", c->num_kv_heads},
                 {"max_position_embeddings", c->max_positions}};
    for (size_t i = 0; i < AP_COUNT(sizes); i++)
        if (sizes[i].value <= 0)
            return ap_err("%s: %s must be a positive integer (got %d)", origin, sizes[i].name,
                          sizes[i].value);
    if (c->hidden_size % c->num_heads)
        return ap_err("%s: num_attention_heads %d does not divide hidden_size %d", origin,
                      c->num_heads, c->hidden_size);
    if ((c->hidden_size / c->num_heads) % 2)
        return ap_err("%s: head dim hidden_size/num_attention_heads = %d must be even (RoPE)",
                      origin, c->hidden_size / c->num_heads);
    if (c->num_heads % c->num_kv_heads)
        return ap_err("%s: num_key_value_heads %d does not divide num_attention_heads %d", origin,
                      c->num_kv_heads, c->num_heads);
    if (!(c->rms_norm_eps > 0)) return ap_err("%s: rms_norm_eps must be positive", origin);
    if (!(c->rope_theta > 0)) return ap_err("%s: rope_theta must be positive", origin);
    return 0;
}

static int s_get_int(json_t *root, const char *path, const char *key, int *out, int required) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required) return ap_err("%s: field '%s' is missing", path, key);
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > (1 << 30))
        return ap_err("%s: field '%s' must be a positive integer", path, key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int s_get_float(json_t *root, const char *path, const char *key, float *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return ap_err("%s: field '%s' must be a number", path, key);
    *out = (float)json_number_value(v);
    return 0;
}

int ap_model_config_load(const char *path, ap_model_config_t *c) {
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return ap_err("%s: %s (line %d)", path, jerr.text, jerr.line);
    int rc = -1;
    if (!json_is_object(root)) {
        ap_err("%s: not a JSON object", path);
        goto out;
    }
    ap_model_config_defaults(c);
    c->rms_norm_eps = 1e-6f; /* HF's default when the field is absent */
    c->max_positions = 0;
    if (s_get_int(root, path, "vocab_size", &c->vocab_size, 1) < 0 ||
        s_get_int(root, path, "hidden_size", &c->hidden_size, 1) < 0 ||
        s_get_int(root, path, "intermediate_size", &c->intermediate_size, 1) < 0 ||
        s_get_int(root, path, "num_hidden_layers", &c->num_layers, 1) < 0 ||
        s_get_int(root, path, "num_attention_heads", &c->num_heads, 1) < 0 ||
        s_get_int(root, path, "max_position_embeddings", &c->max_positions, 1) < 0)
        goto out;
    c->num_kv_heads = c->num_heads;
    if (s_get_int(root, path, "num_key_value_heads", &c->num_kv_heads, 0) < 0 ||
        s_get_float(root, path, "rms_norm_eps", &c->rms_norm_eps) < 0 ||
        s_get_float(root, path, "rope_theta", &c->rope_theta) < 0)
        goto out;
    json_t *v = json_object_get(root, "tie_word_embeddings");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v)) {
            ap_err("%s: field 'tie_word_embeddings' must be true or false", path);
            goto out;
        }
        c->tie_embeddings = json_is_true(v);
    }
    /* Fields that would change the computation and that we do not support. */
    v = json_object_get(root, "head_dim");
    if (v && !json_is_null(v) &&
        (!json_is_integer(v) || json_integer_value(v) != c->hidden_size / c->num_heads)) {
        ap_err("%s: field 'head_dim' other than hidden_size/num_attention_heads (%d) is not "
               "supported",
               path, c->hidden_size / c->num_heads);
        goto out;
    }
    v = json_object_get(root, "rope_scaling");
    if (v && !json_is_null(v)) {
        ap_err("%s: field 'rope_scaling' must be null (RoPE scaling is not supported)", path);
        goto out;
    }
    const char *bias_fields[] = {"attention_bias", "mlp_bias"};
    for (size_t i = 0; i < AP_COUNT(bias_fields); i++) {
        v = json_object_get(root, bias_fields[i]);
        if (v && !json_is_null(v) && !json_is_false(v)) {
            ap_err("%s: field '%s' must be false (biases are not supported)", path, bias_fields[i]);
            goto out;
        }
    }
    v = json_object_get(root, "hidden_act");
    if (v && !json_is_null(v) && !(json_is_string(v) && !strcmp(json_string_value(v), "silu"))) {
        ap_err("%s: field 'hidden_act' must be \"silu\" (other activations are not supported)",
               path);
        goto out;
    }
    rc = ap_model_config_validate(c, path);
out:
    json_decref(root);
    return rc;
}

int ap_model_config_save(const char *path, const ap_model_config_t *c) {
    json_t *root = json_object();
    json_object_set_new(root, "architectures", json_pack("[s]", "LlamaForCausalLM"));
    json_object_set_new(root, "model_type", json_string("llama"));
    json_object_set_new(root, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(root, "hidden_size", json_integer(c->hidden_size));
    json_object_set_new(root, "intermediate_size", json_integer(c->intermediate_size));
    json_object_set_new(root, "num_hidden_layers", json_integer(c->num_layers));
    json_object_set_new(root, "num_attention_heads", json_integer(c->num_heads));
    json_object_set_new(root, "num_key_value_heads", json_integer(c->num_kv_heads));
    json_object_set_new(root, "max_position_embeddings", json_integer(c->max_positions));
    json_object_set_new(root, "rms_norm_eps", json_real(c->rms_norm_eps));
    json_object_set_new(root, "rope_theta", json_real(c->rope_theta));
    json_object_set_new(root, "tie_word_embeddings", json_boolean(c->tie_embeddings));
    json_object_set_new(root, "hidden_act", json_string("silu"));
    json_object_set_new(root, "torch_dtype", json_string("float32"));
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    AP_ASSERT(text);
    size_t n = strlen(text);
    text = ap_realloc(text, n + 2);
    text[n] = '\n';
    int rc = ap_file_write_atomic(path, text, n + 1);
    free(text);
    return rc;
}

long long ap_model_config_num_params(const ap_model_config_t *c) {
    long long D = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
    long long hd = D / c->num_heads, kv = (long long)c->num_kv_heads * hd;
    long long layer = 2 * D + D * D /*q*/ + 2 * kv * D + D * D /*o*/ + 3 * F * D;
    return V * D + (long long)c->num_layers * layer + D + (c->tie_embeddings ? 0 : V * D);
}
