/* test_safetensors: round trip of the writer/reader, F16/BF16 conversion, and every malformed
 * file of MODEL.md refused with a message naming the file and the reason (never a crash: CI
 * also runs this under -DAP_SANITIZE=address,undefined). Also config.json refusals. */
#include <stdint.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/model_config.h"
#include "apprentice/safetensors.h"
#include "test.h"

static const char *s_dir;

/* Write a raw safetensors file: header text, then `datalen` bytes of data. */
static char *s_write_raw(const char *name, const char *header, int64_t claimed_len, size_t datalen) {
    char *path = ap_sprintf("%s/%s.safetensors", s_dir, name);
    FILE *f = fopen(path, "wb");
    uint64_t n = claimed_len >= 0 ? (uint64_t)claimed_len : strlen(header);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(n >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < datalen; i++) fputc(i & 0xff, f);
    fclose(f);
    return path;
}

static void s_expect_refused(const char *name, const char *header, int64_t claimed, size_t datalen,
                             const char *must_mention) {
    char *path = s_write_raw(name, header, claimed, datalen);
    ap_st_t *st = ap_st_open(path);
    AP_CHECK(st == NULL, "%s: malformed file was accepted", name);
    if (!st) {
        AP_CHECK(strstr(ap_errmsg(), path) != NULL, "%s: message does not name the file: %s", name,
                 ap_errmsg());
        AP_CHECK(strstr(ap_errmsg(), must_mention) != NULL, "%s: message lacks '%s': %s", name,
                 must_mention, ap_errmsg());
        printf("refused %-22s %s\n", name, ap_errmsg());
    }
    ap_st_close(&st);
    free(path);
}

static void s_round_trip(void) {
    float a[6] = {1, -2, 3.5f, 0, 1e-8f, 7};
    int32_t ids[3] = {5, -100, 7};
    uint16_t bf[2] = {0x3f80 /* 1.0 */, 0xc040 /* -3.0 */};
    uint16_t hf[3] = {0x3c00 /* 1.0 */, 0xc200 /* -3.0 */, 0x0001 /* smallest subnormal */};
    ap_stw_t *w = ap_stw_new();
    ap_stw_add_f32(w, "a", a, 2, (int64_t[]){2, 3});
    ap_stw_add(w, "ids", AP_DT_I32, ids, 1, (int64_t[]){3});
    ap_stw_add(w, "bf", AP_DT_BF16, bf, 1, (int64_t[]){2});
    ap_stw_add(w, "hf", AP_DT_F16, hf, 1, (int64_t[]){3});
    ap_stw_add_f32(w, "empty", a, 1, (int64_t[]){0});
    ap_stw_set_metadata(w, "config", "{\"x\": 1}");
    char *path = ap_sprintf("%s/ok.safetensors", s_dir);
    AP_CHECK(ap_stw_write(w, path) == 0, "write: %s", ap_errmsg());
    ap_stw_destroy(&w);
    AP_CHECK(w == NULL, "destroy NULLs the pointer");
    ap_st_t *st = ap_st_open(path);
    AP_CHECK(st != NULL, "open: %s", ap_errmsg());
    if (st) {
        float b[6];
        int32_t j[3];
        float c[3];
        AP_CHECK(ap_st_count(st) == 5, "count %d", ap_st_count(st));
        AP_CHECK(ap_st_read_f32(st, "a", b, 6) == 0 && !memcmp(a, b, sizeof a), "f32 round trip");
        AP_CHECK(ap_st_read_f32_shaped(st, "a", b, 2, (int64_t[]){3, 2}) < 0, "shape check");
        AP_CHECK(strstr(ap_errmsg(), "'a'") != NULL, "shape message names tensor: %s", ap_errmsg());
        AP_CHECK(ap_st_read_i32(st, "ids", j, 3) == 0 && !memcmp(ids, j, sizeof ids), "i32");
        AP_CHECK(ap_st_read_f32(st, "bf", c, 2) == 0 && c[0] == 1.0f && c[1] == -3.0f, "bf16");
        AP_CHECK(ap_st_read_f32(st, "hf", c, 3) == 0 && c[0] == 1.0f && c[1] == -3.0f &&
                     c[2] == 0x1p-24f,
                 "f16 %g %g %g", c[0], c[1], c[2]);
        AP_CHECK(ap_st_read_f32(st, "ids", c, 3) < 0, "i32 is not float");
        AP_CHECK(ap_st_read_f32(st, "nope", c, 3) < 0 && strstr(ap_errmsg(), "nope"), "missing");
        AP_CHECK(ap_st_read_f32(st, "a", b, 5) < 0, "wrong element count refused");
        const char *m = ap_st_metadata(st, "config");
        AP_CHECK(m && !strcmp(m, "{\"x\": 1}"), "metadata");
    }
    ap_st_close(&st);
    free(path);
}

static void s_malformed(void) {
    /* the header length runs past the end of the file */
    s_expect_refused("header_past_end", "{}", 1000, 0, "past the end");
    s_expect_refused("header_huge", "{}", (int64_t)1 << 62, 0, "past the end");
    s_expect_refused("not_json", "{\"a\": {\"dtype\": ", -1, 0, "not valid JSON");
    s_expect_refused("not_object", "[1, 2]", -1, 0, "not a JSON object");
    s_expect_refused("offsets_outside",
                     "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", -1, 8,
                     "outside the data");
    s_expect_refused("offsets_reversed",
                     "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", -1, 16,
                     "'w'");
    s_expect_refused("overlap",
                     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                     -1, 16, "overlap");
    s_expect_refused("numel_mismatch",
                     "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", -1, 8,
                     "elements");
    s_expect_refused("bad_dtype", "{\"w\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                     -1, 8, "unknown dtype");
    s_expect_refused("no_shape", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", -1, 8,
                     "shape");
    s_expect_refused("negative_dim",
                     "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", -1, 8,
                     "shape");
    s_expect_refused("bad_metadata", "{\"__metadata__\": {\"a\": 3}}", -1, 0, "__metadata__");
    s_expect_refused("too_short", "", 0, 0, "");
    /* a file shorter than the 8-byte length prefix */
    char *path = ap_sprintf("%s/tiny.safetensors", s_dir);
    ap_file_write_atomic(path, "abc", 3);
    ap_st_t *st = ap_st_open(path);
    AP_CHECK(!st && strstr(ap_errmsg(), "too short"), "tiny file: %s", ap_errmsg());
    free(path);
    st = ap_st_open("/nonexistent/x.safetensors");
    AP_CHECK(!st && strstr(ap_errmsg(), "/nonexistent/x.safetensors"), "missing file");
}

static void s_config_case(const char *name, const char *json, const char *must_mention) {
    char *path = ap_sprintf("%s/%s.json", s_dir, name);
    ap_file_write_atomic(path, json, strlen(json));
    ap_model_config_t c;
    int rc = ap_model_config_load(path, &c);
    if (must_mention) {
        AP_CHECK(rc < 0, "%s: accepted", name);
        AP_CHECK(strstr(ap_errmsg(), must_mention) && strstr(ap_errmsg(), path),
                 "%s: message lacks '%s' or the path: %s", name, must_mention, ap_errmsg());
        if (rc < 0) printf("refused %-22s %s\n", name, ap_errmsg());
    } else {
        AP_CHECK(rc == 0, "%s: refused: %s", name, ap_errmsg());
    }
    free(path);
}

#define S_BASE "\"vocab_size\":10,\"hidden_size\":8,\"intermediate_size\":16,"                   \
               "\"num_hidden_layers\":1,\"num_attention_heads\":2,\"max_position_embeddings\":8"

static void s_config(void) {
    s_config_case("cfg_ok", "{" S_BASE ",\"torch_dtype\":\"float32\",\"head_dim\":4}", NULL);
    s_config_case("cfg_missing", "{\"vocab_size\":10}", "hidden_size");
    s_config_case("cfg_headdim", "{" S_BASE ",\"head_dim\":8}", "head_dim");
    s_config_case("cfg_rope_scaling", "{" S_BASE ",\"rope_scaling\":{\"type\":\"linear\"}}",
                  "rope_scaling");
    s_config_case("cfg_attn_bias", "{" S_BASE ",\"attention_bias\":true}", "attention_bias");
    s_config_case("cfg_mlp_bias", "{" S_BASE ",\"mlp_bias\":true}", "mlp_bias");
    s_config_case("cfg_act", "{" S_BASE ",\"hidden_act\":\"gelu\"}", "hidden_act");
    s_config_case("cfg_gqa", "{" S_BASE ",\"num_key_value_heads\":3}", "num_key_value_heads");
    s_config_case("cfg_not_json", "{" S_BASE, "line");
    s_config_case("cfg_negative", "{" S_BASE ",\"num_key_value_heads\":-1}", "num_key_value_heads");

    ap_model_config_t c, d;
    ap_model_config_defaults(&c);
    c.vocab_size = 64, c.hidden_size = 128, c.intermediate_size = 384, c.num_layers = 4;
    c.num_heads = 4, c.num_kv_heads = 2, c.tie_embeddings = 1;
    char *path = ap_sprintf("%s/cfg_rt.json", s_dir);
    AP_CHECK(ap_model_config_save(path, &c) == 0, "save");
    AP_CHECK(ap_model_config_load(path, &d) == 0, "load: %s", ap_errmsg());
    AP_CHECK(!memcmp(&c, &d, sizeof c), "config round trip");
    free(path);
}

int main(void) {
    s_dir = ap_test_tmpdir("safetensors");
    s_round_trip();
    s_malformed();
    s_config();
    return ap_test_result();
}
