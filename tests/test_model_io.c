/* test_model_io: checkpoints and weight transfer. Save -> load is bit-exact (tied and untied,
 * no lm_head written when tied); F16 and BF16 checkpoints load to exactly the converted
 * values; a missing tensor, a mis-shaped tensor and a non-float dtype are refused with a
 * message naming the file and the tensor; blobs round-trip and a wrong size is refused; the
 * training state (moments, step, rng, caller JSON) round-trips bit-exactly, and training resumed
 * from it continues exactly as an uninterrupted run. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/model.h"
#include "apprentice/safetensors.h"
#include "test.h"

static const char *s_dir;

static ap_model_config_t s_config(int tied) {
    ap_model_config_t c;
    ap_model_config_defaults(&c);
    c.vocab_size = 19, c.hidden_size = 24, c.intermediate_size = 40, c.num_layers = 2;
    c.num_heads = 4, c.num_kv_heads = tied ? 4 : 2, c.max_positions = 32, c.tie_embeddings = tied;
    return c;
}

static void s_round_trip(int tied) {
    ap_model_config_t c = s_config(tied);
    ap_model_t *m = ap_model_new(&c, 42);
    char *dir = ap_sprintf("%s/rt%d", s_dir, tied);
    AP_CHECK(ap_model_save(m, dir) == 0, "save: %s", ap_errmsg());
    ap_model_t *r = ap_model_load(dir);
    AP_CHECK(r != NULL, "load: %s", ap_errmsg());
    if (r) {
        AP_CHECK(ap_model_num_floats(r) == ap_model_num_floats(m), "same size");
        AP_CHECK(!memcmp(ap_model_params(r), ap_model_params(m),
                         ap_model_num_floats(m) * sizeof(float)),
                 "tied=%d: round trip is bit-exact", tied);
        AP_CHECK(ap_model_checksum(r) == ap_model_checksum(m), "checksums equal");
        const ap_model_config_t *rc = ap_model_config(r);
        AP_CHECK(rc->tie_embeddings == tied && rc->num_kv_heads == c.num_kv_heads &&
                     rc->rms_norm_eps == c.rms_norm_eps && rc->rope_theta == c.rope_theta,
                 "config round trip");
    }
    char *wpath = ap_sprintf("%s/model.safetensors", dir);
    ap_st_t *st = ap_st_open(wpath);
    AP_CHECK(st && (ap_st_find(st, "lm_head.weight") != NULL) == !tied,
             "lm_head stored iff untied (tied=%d)", tied);
    AP_CHECK(st && ap_st_metadata(st, "format") && !strcmp(ap_st_metadata(st, "format"), "pt"),
             "metadata format=pt for transformers");
    AP_CHECK(st && ap_st_count(st) == ap_model_num_tensors(m), "one tensor per table entry");
    ap_st_close(&st);
    printf("round trip tied=%d: %zu floats bit-exact, checksum %016llx\n", tied,
           ap_model_num_floats(m), (unsigned long long)ap_model_checksum(m));
    fflush(stdout);

    /* blobs: from_blob equals, set_blob refuses a wrong size */
    size_t bytes;
    const void *blob = ap_model_blob(m, &bytes);
    AP_CHECK(bytes == ap_model_num_floats(m) * sizeof(float), "blob size");
    ap_model_t *b = ap_model_from_blob(&c, blob, bytes);
    AP_CHECK(b && ap_model_checksum(b) == ap_model_checksum(m), "from_blob");
    AP_CHECK(ap_model_from_blob(&c, blob, bytes - 4) == NULL, "short blob refused");
    AP_CHECK(strstr(ap_errmsg(), "bytes") != NULL, "message: %s", ap_errmsg());
    AP_CHECK(b && ap_model_set_blob(b, blob, bytes + 4) < 0, "long blob refused");
    ap_model_t *cl = ap_model_clone(m);
    AP_CHECK(ap_model_checksum(cl) == ap_model_checksum(m), "clone");
    ap_model_destroy(&cl), ap_model_destroy(&b), ap_model_destroy(&r), ap_model_destroy(&m);
    free(wpath), free(dir);
}

/* Write `m`'s tensors to DIR with `dtype` (F16/BF16 by truncating conversion), optionally
 * dropping or reshaping one tensor; returns the values the loader must produce. */
static float *s_write_variant(ap_model_t *m, const char *dir, ap_dtype_t dtype, const char *drop,
                              const char *reshape) {
    ap_mkdirs(dir);
    char *cpath = ap_sprintf("%s/config.json", dir), *wpath = ap_sprintf("%s/model.safetensors", dir);
    ap_model_config_save(cpath, ap_model_config(m));
    size_t nf = ap_model_num_floats(m);
    const float *W = ap_model_params(m);
    uint16_t *h = ap_malloc(nf * sizeof *h);
    float *expect = ap_malloc(nf * sizeof *expect);
    for (size_t k = 0; k < nf; k++) {
        uint32_t u;
        memcpy(&u, &W[k], 4);
        if (dtype == AP_DT_BF16) {
            h[k] = (uint16_t)(u >> 16);
            expect[k] = ap_bf16_to_f32(h[k]);
        } else { /* F16, normal range only: the weights are small but not tiny */
            uint32_t sign = (u >> 16) & 0x8000;
            int e = (int)((u >> 23) & 0xff) - 127 + 15;
            h[k] = e <= 0 ? (uint16_t)sign : (uint16_t)(sign | (uint32_t)e << 10 | ((u >> 13) & 0x3ff));
            expect[k] = ap_f16_to_f32(h[k]);
        }
    }
    ap_stw_t *w = ap_stw_new();
    int32_t dummy[4] = {0};
    for (int i = 0; i < ap_model_num_tensors(m); i++) {
        const ap_param_t *p = ap_model_tensor(m, i);
        if (drop && !strcmp(p->name, drop)) continue;
        if (reshape && !strcmp(p->name, reshape)) {
            int64_t s[2] = {p->shape[1] ? p->shape[1] : 1, p->shape[0]}; /* transposed */
            ap_stw_add(w, p->name, dtype, h + p->offset, 2, s);
            continue;
        }
        ap_stw_add(w, p->name, dtype, h + p->offset, p->ndim, p->shape);
    }
    ap_stw_add(w, "model.rotary_emb.inv_freq", AP_DT_I32, dummy, 1, (int64_t[]){4}); /* extra */
    ap_stw_set_metadata(w, "format", "pt");
    AP_CHECK(ap_stw_write(w, wpath) == 0, "write variant: %s", ap_errmsg());
    ap_stw_destroy(&w);
    free(h), free(cpath), free(wpath);
    return expect;
}

static void s_half_precision(void) {
    ap_model_config_t c = s_config(0);
    ap_model_t *m = ap_model_new(&c, 5);
    const ap_dtype_t dts[2] = {AP_DT_F16, AP_DT_BF16};
    const char *names[2] = {"F16", "BF16"};
    for (int i = 0; i < 2; i++) {
        char *dir = ap_sprintf("%s/%s", s_dir, names[i]);
        float *expect = s_write_variant(m, dir, dts[i], NULL, NULL);
        ap_model_t *r = ap_model_load(dir);
        AP_CHECK(r != NULL, "%s load: %s", names[i], ap_errmsg());
        if (r) {
            AP_CHECK(!memcmp(ap_model_params(r), expect, ap_model_num_floats(m) * sizeof(float)),
                     "%s converted exactly", names[i]);
            double worst = 0;
            for (size_t k = 0; k < ap_model_num_floats(m); k++)
                if (fabsf(ap_model_params(m)[k]) > 1e-4f) /* F16 normal range (test converter) */
                    worst = fmax(worst, fabs(ap_model_params(r)[k] - ap_model_params(m)[k]) /
                                        fabs(ap_model_params(m)[k]));
            AP_CHECK(worst < (i ? 1.0 / 128 : 1.0 / 1024), "%s precision %g", names[i], worst);
            printf("%s checkpoint loads exactly (rel. error vs F32 weights <= %.2g)\n", names[i], worst);
        }
        ap_model_destroy(&r);
        free(expect), free(dir);
    }
    /* refusals: missing, mis-shaped, wrong dtype */
    struct {
        const char *label, *drop, *reshape, *mention;
        ap_dtype_t dt;
    } bad[] = {
        {"missing", "model.layers.1.mlp.up_proj.weight", NULL, "is missing", AP_DT_BF16},
        {"misshaped", NULL, "model.layers.0.self_attn.k_proj.weight", "shape", AP_DT_BF16},
        {"lm_head missing", "lm_head.weight", NULL, "is missing", AP_DT_F16},
    };
    for (size_t i = 0; i < AP_COUNT(bad); i++) {
        char *dir = ap_sprintf("%s/bad%zu", s_dir, i);
        free(s_write_variant(m, dir, bad[i].dt, bad[i].drop, bad[i].reshape));
        ap_model_t *r = ap_model_load(dir);
        const char *tensor = bad[i].drop ? bad[i].drop : bad[i].reshape;
        AP_CHECK(r == NULL, "%s: accepted", bad[i].label);
        AP_CHECK(strstr(ap_errmsg(), "model.safetensors") && strstr(ap_errmsg(), tensor) &&
                     strstr(ap_errmsg(), bad[i].mention),
                 "%s: message must name file, tensor and reason: %s", bad[i].label, ap_errmsg());
        printf("refused %-16s %s\n", bad[i].label, ap_errmsg());
        ap_model_destroy(&r);
        free(dir);
    }
    /* a non-float dtype for a model tensor */
    char *dir = ap_sprintf("%s/dtype", s_dir);
    free(s_write_variant(m, dir, AP_DT_BF16, NULL, NULL));
    char *wpath = ap_sprintf("%s/model.safetensors", dir);
    ap_stw_t *w = ap_stw_new();
    size_t nf = ap_model_num_floats(m);
    int32_t *ints = ap_calloc(nf, sizeof *ints);
    for (int i = 0; i < ap_model_num_tensors(m); i++) {
        const ap_param_t *p = ap_model_tensor(m, i);
        ap_stw_add(w, p->name, i == 3 ? AP_DT_I32 : AP_DT_F32,
                   i == 3 ? (const void *)(ints + p->offset) : (const void *)(ap_model_params(m) + p->offset),
                   p->ndim, p->shape);
    }
    ap_stw_write(w, wpath);
    ap_stw_destroy(&w);
    ap_model_t *r = ap_model_load(dir);
    AP_CHECK(r == NULL && strstr(ap_errmsg(), ap_model_tensor(m, 3)->name) &&
                 strstr(ap_errmsg(), "I32"),
             "I32 tensor refused naming it: %s", ap_errmsg());
    printf("refused %-16s %s\n", "I32 dtype", ap_errmsg());
    fflush(stdout);
    free(ints), free(wpath), free(dir);
    ap_model_destroy(&m);
}

/* Train a few SFT steps on fixed data. */
static void s_train(ap_model_t *m, int steps, ap_rng_t *rng) {
    enum { B = 2, T = 6 };
    int V = ap_model_config(m)->vocab_size;
    ap_adamw_t o;
    ap_adamw_defaults(&o);
    o.weight_decay = 0.1f;
    ap_lr_schedule_t s = {.peak_lr = 1e-2f, .min_lr = 1e-3f, .warmup_steps = 2, .total_steps = 8};
    for (int i = 0; i < steps; i++) {
        int32_t tok[B * T], tgt[B * T];
        for (int k = 0; k < B * T; k++) tok[k] = (int32_t)ap_rng_below(rng, (uint64_t)V);
        for (int k = 0; k < B * T; k++) tgt[k] = k % T == T - 1 ? -100 : tok[k + 1];
        ap_model_zero_grad(m);
        float *z = ap_model_forward(m, tok, NULL, B, T), loss;
        ap_cross_entropy(z, &loss, z, tgt, B * T, V);
        ap_model_backward(m, z);
        ap_model_step(m, &o, ap_lr_at(&s, ap_model_step_count(m)));
    }
}

static void s_training_state(void) {
    ap_model_config_t c = s_config(1);
    ap_model_t *a = ap_model_new(&c, 9), *ref = ap_model_new(&c, 9);
    ap_rng_t ra, rr;
    ap_rng_seed(&ra, 1, 2);
    ap_rng_seed(&rr, 1, 2);
    s_train(ref, 6, &rr); /* uninterrupted */
    s_train(a, 3, &ra);
    char *dir = ap_sprintf("%s/ckpt", s_dir);
    const char *user = "{\"policy_version\": 3, \"cursor\": [1, 2]}";
    AP_CHECK(ap_model_save(a, dir) == 0 && ap_model_save_state(a, dir, &ra, user) == 0, "save: %s",
             ap_errmsg());
    ap_model_t *b = ap_model_load(dir);
    ap_rng_t rb;
    char *got = NULL;
    AP_CHECK(b && ap_model_load_state(b, dir, &rb, &got) == 0, "load state: %s", ap_errmsg());
    if (!b) return;
    AP_CHECK(got && !strcmp(got, user), "user JSON round trip: %s", got ? got : "(null)");
    AP_CHECK(!memcmp(&rb, &ra, sizeof rb), "rng state round trip");
    AP_CHECK(ap_model_step_count(b) == 3, "step count");
    s_train(b, 3, &rb); /* resume */
    AP_CHECK(!memcmp(ap_model_params(b), ap_model_params(ref), ap_model_num_floats(b) * sizeof(float)),
             "resumed training is bit-identical to uninterrupted training");
    printf("training state: resumed run bit-identical after 3 + 3 steps (checksum %016llx)\n",
           (unsigned long long)ap_model_checksum(b));
    /* a state for a different model is refused naming the tensor */
    ap_model_config_t c2 = s_config(0);
    ap_model_t *other = ap_model_new(&c2, 1);
    AP_CHECK(ap_model_load_state(other, dir, NULL, NULL) < 0 &&
                 strstr(ap_errmsg(), "training_state.safetensors") &&
                 strstr(ap_errmsg(), "exp_avg."),
             "mismatched state refused: %s", ap_errmsg());
    printf("refused %-16s %s\n", "other model", ap_errmsg());
    AP_CHECK(ap_model_load_state(other, s_dir, NULL, NULL) < 0, "absent state file refused");
    free(got), free(dir);
    ap_model_destroy(&a), ap_model_destroy(&b), ap_model_destroy(&ref), ap_model_destroy(&other);
}

int main(void) {
    s_dir = ap_strdup(ap_test_tmpdir("model-io"));
    s_round_trip(0);
    s_round_trip(1);
    s_half_precision();
    s_training_state();
    return ap_test_result();
}
