/* objective_config.c: the objectives' plain config structs: defaults (ALGORITHMS.md), range
 * checks, and the parser of the reference files' metadata config
 * {"objective": {NAME: {options}}, "K": K} (the lead binds the same structs to YAML).
 *
 * Options are described once per objective by a table (name, type, offset in the struct), so
 * the parser, the unknown-option check and docs/OBJECTIVES.md list the same names. */
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/objectives.h"

static const char *const s_names[AP_OBJ_COUNT] = {"gkd", "opd", "grpo", "opsd", "srpo"};

const char *ap_obj_name(ap_obj_kind_t k) {
    AP_ASSERT(k >= 0 && k < AP_OBJ_COUNT);
    return s_names[k];
}

/* ---- defaults ------------------------------------------------------------------------------ */

static void s_common(ap_obj_common_t *c) {
    c->enabled = 0, c->weight = 1.0, c->reduce = AP_REDUCE_TOKEN_MEAN, c->max_new_tokens = 0;
}

static void s_pg(ap_pg_config_t *p, int clip) {
    p->clip = clip, p->eps_low = 0.2, p->eps_high = 0.28, p->dual_clip = 0, p->max_is_ratio = 3.0;
}

void ap_obj_gkd_defaults(ap_gkd_config_t *c) {
    s_common(&c->c);
    c->beta = 0.5, c->tau = 1.0, c->support = AP_SUPPORT_AUTO, c->clip_token_kl = INFINITY;
}

void ap_obj_opd_defaults(ap_opd_config_t *c) {
    s_common(&c->c);
    s_pg(&c->pg, 0);
    c->kl_coef = 1.0, c->advantage_from_behavior = 0, c->floor_lambda = 0;
}

void ap_obj_grpo_defaults(ap_grpo_config_t *c) {
    s_common(&c->c);
    s_pg(&c->pg, 1);
    c->scale_rewards = AP_SCALE_GROUP, c->kl_ref = 0, c->dynamic_sampling = 1;
}

void ap_obj_opsd_defaults(ap_opsd_config_t *c) {
    s_common(&c->c);
    c->beta = 0.0, c->tau = 1.0, c->support = AP_SUPPORT_AUTO, c->clip_token_kl = INFINITY;
}

void ap_obj_srpo_defaults(ap_srpo_config_t *c) {
    s_common(&c->c);
    s_pg(&c->pg, 1);
    c->scale_rewards = AP_SCALE_GROUP, c->beta_H = 1.0, c->support = AP_SUPPORT_AUTO;
}

void ap_obj_config_defaults(ap_obj_config_t *c) {
    memset(c, 0, sizeof *c);
    ap_obj_gkd_defaults(&c->gkd);
    ap_obj_opd_defaults(&c->opd);
    ap_obj_grpo_defaults(&c->grpo);
    ap_obj_opsd_defaults(&c->opsd);
    ap_obj_srpo_defaults(&c->srpo);
    c->sampling_tau = 1.0, c->full_vocab_max = 1024, c->K = 0, c->monitors = 1;
}

/* ---- validation ---------------------------------------------------------------------------- */

static int s_check_common(const char *obj, const ap_obj_common_t *c, int uses_reduce) {
    if (!isfinite(c->weight)) return ap_err("objective %s: weight %g is not finite", obj, c->weight);
    if (uses_reduce && c->reduce == AP_REDUCE_CONST && c->max_new_tokens <= 0)
        return ap_err("objective %s: reduce const needs max_new_tokens > 0", obj);
    if (c->max_new_tokens < 0)
        return ap_err("objective %s: max_new_tokens %d < 0", obj, c->max_new_tokens);
    return 0;
}

static int s_check_pg(const char *obj, const ap_pg_config_t *p) {
    if (!(p->eps_low >= 0 && p->eps_low < 1))
        return ap_err("objective %s: eps_low %g outside [0, 1)", obj, p->eps_low);
    if (!(p->eps_high >= 0 && isfinite(p->eps_high)))
        return ap_err("objective %s: eps_high %g must be >= 0", obj, p->eps_high);
    if (!(p->dual_clip == 0 || (p->dual_clip > 1 && isfinite(p->dual_clip))))
        return ap_err("objective %s: dual_clip %g must be > 1 (or 0/null: off)", obj, p->dual_clip);
    if (!(p->max_is_ratio >= 1))
        return ap_err("objective %s: max_is_ratio %g must be >= 1 (or null: off)", obj,
                      p->max_is_ratio);
    return 0;
}

static int s_check_div(const char *obj, double beta, double tau, double clip) {
    if (!(beta >= 0 && beta <= 1)) return ap_err("objective %s: beta %g outside [0, 1]", obj, beta);
    if (!(tau > 0 && isfinite(tau))) return ap_err("objective %s: tau %g must be > 0", obj, tau);
    if (isnan(clip)) return ap_err("objective %s: clip_token_kl is NaN", obj);
    return 0;
}

int ap_obj_config_validate(const ap_obj_config_t *c) {
    int any = c->gkd.c.enabled || c->opd.c.enabled || c->grpo.c.enabled || c->opsd.c.enabled ||
              c->srpo.c.enabled;
    if (!any) return ap_err("objectives: no objective is enabled");
    if (!(c->sampling_tau > 0 && isfinite(c->sampling_tau)))
        return ap_err("objectives: sampling temperature %g must be > 0", c->sampling_tau);
    if (c->full_vocab_max < 0) return ap_err("objectives: full_vocab_max %d < 0", c->full_vocab_max);
    if (c->K < 0) return ap_err("objectives: K %d < 0", c->K);
    if (c->gkd.c.enabled &&
        (s_check_common("gkd", &c->gkd.c, 1) < 0 ||
         s_check_div("gkd", c->gkd.beta, c->gkd.tau, c->gkd.clip_token_kl) < 0))
        return -1;
    if (c->opd.c.enabled) {
        if (s_check_common("opd", &c->opd.c, 1) < 0 || s_check_pg("opd", &c->opd.pg) < 0) return -1;
        if (!isfinite(c->opd.kl_coef)) return ap_err("objective opd: kl_coef is not finite");
        if (!(c->opd.floor_lambda >= 0 && c->opd.floor_lambda < 1))
            return ap_err("objective opd: floor_lambda %g outside [0, 1) (0/null: off)",
                          c->opd.floor_lambda);
    }
    if (c->grpo.c.enabled) {
        if (s_check_common("grpo", &c->grpo.c, 1) < 0 || s_check_pg("grpo", &c->grpo.pg) < 0)
            return -1;
        if (!(c->grpo.kl_ref >= 0 && isfinite(c->grpo.kl_ref)))
            return ap_err("objective grpo: kl_ref %g must be >= 0", c->grpo.kl_ref);
    }
    if (c->opsd.c.enabled &&
        (s_check_common("opsd", &c->opsd.c, 1) < 0 ||
         s_check_div("opsd", c->opsd.beta, c->opsd.tau, c->opsd.clip_token_kl) < 0))
        return -1;
    if (c->srpo.c.enabled) {
        if (s_check_common("srpo", &c->srpo.c, 0) < 0 || s_check_pg("srpo", &c->srpo.pg) < 0)
            return -1;
        if (!(c->srpo.beta_H >= 0 && isfinite(c->srpo.beta_H)))
            return ap_err("objective srpo: beta_H %g must be >= 0", c->srpo.beta_H);
    }
    /* One teacher kind serves its distributions at one temperature: srpo's self-teacher is at
     * temperature 1, so opsd sharing it must be too. */
    if (c->opsd.c.enabled && c->srpo.c.enabled && c->opsd.tau != 1.0)
        return ap_err("objectives: opsd tau %g and srpo (temperature 1) ask the self-teacher for "
                      "distributions at two temperatures",
                      c->opsd.tau);
    return 0;
}

/* ---- JSON ------------------------------------------------------------------------------------ */

typedef enum {
    S_NUM,      /* any JSON number */
    S_NUM_OFF,  /* number, or null: off (stored as `off`) */
    S_INT,      /* integer */
    S_BOOL,     /* true / false */
    S_SUPPORT,  /* "full" | "topk" | "topk_tail" | "auto" */
    S_REDUCE,   /* "token_mean" | "seq_mean" | "const" */
    S_SCALE,    /* "group" | "none" */
    S_ADVFROM,  /* "current" | "behavior" */
} s_type_t;

typedef struct {
    const char *name;
    s_type_t type;
    size_t offset; /* into the objective's struct */
    double off;    /* S_NUM_OFF: the value null stands for */
} s_opt_t;

#define S_COMMON(T)                                                                                \
    {"enabled", S_BOOL, offsetof(T, c.enabled), 0}, {"weight", S_NUM, offsetof(T, c.weight), 0},   \
        {"reduce", S_REDUCE, offsetof(T, c.reduce), 0},                                            \
        {"max_new_tokens", S_INT, offsetof(T, c.max_new_tokens), 0}
#define S_PG(T)                                                                                    \
    {"clip", S_BOOL, offsetof(T, pg.clip), 0}, {"eps_low", S_NUM, offsetof(T, pg.eps_low), 0},     \
        {"eps_high", S_NUM, offsetof(T, pg.eps_high), 0},                                          \
        {"dual_clip", S_NUM_OFF, offsetof(T, pg.dual_clip), 0},                                    \
        {"max_is_ratio", S_NUM_OFF, offsetof(T, pg.max_is_ratio), INFINITY}

static const s_opt_t s_gkd_opts[] = {
    S_COMMON(ap_gkd_config_t),
    {"beta", S_NUM, offsetof(ap_gkd_config_t, beta), 0},
    {"tau", S_NUM, offsetof(ap_gkd_config_t, tau), 0},
    {"support", S_SUPPORT, offsetof(ap_gkd_config_t, support), 0},
    {"clip_token_kl", S_NUM_OFF, offsetof(ap_gkd_config_t, clip_token_kl), INFINITY},
    {NULL, 0, 0, 0}};
static const s_opt_t s_opd_opts[] = {
    S_COMMON(ap_opd_config_t),
    S_PG(ap_opd_config_t),
    {"kl_coef", S_NUM, offsetof(ap_opd_config_t, kl_coef), 0},
    {"advantage_from", S_ADVFROM, offsetof(ap_opd_config_t, advantage_from_behavior), 0},
    {"floor_lambda", S_NUM_OFF, offsetof(ap_opd_config_t, floor_lambda), 0},
    {NULL, 0, 0, 0}};
static const s_opt_t s_grpo_opts[] = {
    S_COMMON(ap_grpo_config_t),
    S_PG(ap_grpo_config_t),
    {"scale_rewards", S_SCALE, offsetof(ap_grpo_config_t, scale_rewards), 0},
    {"kl_ref", S_NUM, offsetof(ap_grpo_config_t, kl_ref), 0},
    {"dynamic_sampling", S_BOOL, offsetof(ap_grpo_config_t, dynamic_sampling), 0},
    {NULL, 0, 0, 0}};
static const s_opt_t s_opsd_opts[] = {
    S_COMMON(ap_opsd_config_t),
    {"beta", S_NUM, offsetof(ap_opsd_config_t, beta), 0},
    {"tau", S_NUM, offsetof(ap_opsd_config_t, tau), 0},
    {"support", S_SUPPORT, offsetof(ap_opsd_config_t, support), 0},
    {"clip_token_kl", S_NUM_OFF, offsetof(ap_opsd_config_t, clip_token_kl), INFINITY},
    {NULL, 0, 0, 0}};
static const s_opt_t s_srpo_opts[] = {
    S_COMMON(ap_srpo_config_t), /* reduce / max_new_tokens accepted and ignored */
    S_PG(ap_srpo_config_t),
    {"scale_rewards", S_SCALE, offsetof(ap_srpo_config_t, scale_rewards), 0},
    {"beta_H", S_NUM, offsetof(ap_srpo_config_t, beta_H), 0},
    {"support", S_SUPPORT, offsetof(ap_srpo_config_t, support), 0},
    {NULL, 0, 0, 0}};

static const s_opt_t *const s_tables[AP_OBJ_COUNT] = {s_gkd_opts, s_opd_opts, s_grpo_opts,
                                                     s_opsd_opts, s_srpo_opts};

static int s_enum(const char *origin, const char *obj, const char *opt, json_t *v,
                  const char *const *names, int n, int *out) {
    if (json_is_string(v))
        for (int i = 0; i < n; i++)
            if (!strcmp(json_string_value(v), names[i])) return *out = i, 0;
    char list[160] = "";
    for (int i = 0; i < n; i++) {
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, names[i], sizeof list - strlen(list) - 1);
    }
    return ap_err("%s: objective %s: option '%s' must be one of %s", origin, obj, opt, list);
}

static int s_set(const char *origin, const char *obj, const s_opt_t *o, json_t *v, char *base) {
    void *p = base + o->offset;
    switch (o->type) {
    case S_NUM:
    case S_NUM_OFF:
        if (o->type == S_NUM_OFF && json_is_null(v)) return *(double *)p = o->off, 0;
        if (!json_is_number(v))
            return ap_err("%s: objective %s: option '%s' must be a number", origin, obj, o->name);
        *(double *)p = json_number_value(v);
        if (o->type == S_NUM_OFF && *(double *)p == 0) *(double *)p = o->off;
        return 0;
    case S_INT:
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1 << 30)
            return ap_err("%s: objective %s: option '%s' must be a non-negative integer", origin,
                          obj, o->name);
        return *(int *)p = (int)json_integer_value(v), 0;
    case S_BOOL:
        if (!json_is_boolean(v))
            return ap_err("%s: objective %s: option '%s' must be true or false", origin, obj,
                          o->name);
        return *(int *)p = json_is_true(v), 0;
    case S_SUPPORT: {
        static const char *const n[] = {"auto", "full", "topk", "topk_tail"};
        int i = 0;
        if (s_enum(origin, obj, o->name, v, n, 4, &i) < 0) return -1;
        return *(ap_support_t *)p = (ap_support_t)i, 0;
    }
    case S_REDUCE: {
        static const char *const n[] = {"token_mean", "seq_mean", "const"};
        int i = 0;
        if (s_enum(origin, obj, o->name, v, n, 3, &i) < 0) return -1;
        return *(ap_reduce_t *)p = (ap_reduce_t)i, 0;
    }
    case S_SCALE: {
        static const char *const n[] = {"group", "none"};
        int i = 0;
        if (s_enum(origin, obj, o->name, v, n, 2, &i) < 0) return -1;
        return *(ap_scale_t *)p = (ap_scale_t)i, 0;
    }
    case S_ADVFROM: {
        static const char *const n[] = {"current", "behavior"};
        return s_enum(origin, obj, o->name, v, n, 2, (int *)p);
    }
    }
    return ap_err("%s: objective %s: option '%s': internal type error", origin, obj, o->name);
}

static char *s_struct(ap_obj_config_t *c, int k) {
    switch (k) {
    case AP_OBJ_GKD: return (char *)&c->gkd;
    case AP_OBJ_OPD: return (char *)&c->opd;
    case AP_OBJ_GRPO: return (char *)&c->grpo;
    case AP_OBJ_OPSD: return (char *)&c->opsd;
    default: return (char *)&c->srpo;
    }
}

int ap_obj_config_from_json(ap_obj_config_t *c, const char *json, const char *origin) {
    ap_obj_config_defaults(c);
    json_error_t jerr;
    json_t *root = json_loads(json, 0, &jerr);
    if (!root) return ap_err("%s: config JSON line %d: %s", origin, jerr.line, jerr.text);
    int rc = -1;
    const char *key;
    json_t *val;
    if (!json_is_object(root)) {
        ap_err("%s: config must be a JSON object", origin);
        goto done;
    }
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "K")) {
            if (!json_is_integer(val) || json_integer_value(val) < 1 ||
                json_integer_value(val) > 1 << 24) {
                ap_err("%s: 'K' must be a positive integer", origin);
                goto done;
            }
            c->K = (int)json_integer_value(val);
        } else if (!strcmp(key, "objective")) {
            if (!json_is_object(val)) {
                ap_err("%s: 'objective' must be an object of objectives", origin);
                goto done;
            }
            const char *name;
            json_t *opts;
            json_object_foreach(val, name, opts) {
                int k = 0;
                while (k < AP_OBJ_COUNT && strcmp(name, s_names[k])) k++;
                if (k == AP_OBJ_COUNT) {
                    ap_err("%s: unknown objective '%s' (gkd, opd, grpo, opsd, srpo)", origin, name);
                    goto done;
                }
                if (!json_is_object(opts)) {
                    ap_err("%s: objective %s: options must be an object", origin, name);
                    goto done;
                }
                char *base = s_struct(c, k);
                ((ap_obj_common_t *)base)->enabled = 1; /* c is the first member of each */
                const char *oname;
                json_t *ov;
                json_object_foreach(opts, oname, ov) {
                    const s_opt_t *o = s_tables[k];
                    while (o->name && strcmp(o->name, oname)) o++;
                    if (!o->name) {
                        ap_err("%s: objective %s: unknown option '%s'", origin, name, oname);
                        goto done;
                    }
                    if (s_set(origin, name, o, ov, base) < 0) goto done;
                }
            }
        } else {
            ap_err("%s: unknown config key '%s' (objective, K)", origin, key);
            goto done;
        }
    }
    if (ap_obj_config_validate(c) < 0) {
        ap_err("%s: %s", origin, ap_errmsg());
        goto done;
    }
    rc = 0;
done:
    json_decref(root);
    return rc;
}
