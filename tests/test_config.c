/* test_config: YAML config loading: defaults, file values, --set overrides, every refusal with
 * origin, key and reason; save -> load round trip; every schema key documented in
 * docs/CONFIG.md; every shipped config in configs/ loads. */
#include <dirent.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/config.h"
#include "test.h"

static const char *s_dir;

static char *s_write(const char *name, const char *text) {
    char *path = ap_sprintf("%s/%s.yaml", s_dir, name);
    AP_ASSERT(ap_file_write_atomic(path, text, strlen(text)) == 0);
    return path;
}

/* The file must be refused with a message containing the path, each of `mentions`. */
static void s_refused(const char *name, const char *text, const char *m1, const char *m2) {
    char *path = s_write(name, text);
    ap_config_t *c = ap_config_load(path, NULL, 0);
    AP_CHECK(c == NULL, "%s: accepted", name);
    const char *msg = ap_errmsg();
    AP_CHECK(strstr(msg, path) != NULL, "%s: message lacks the path: %s", name, msg);
    AP_CHECK(!m1 || strstr(msg, m1), "%s: message lacks '%s': %s", name, m1, msg);
    AP_CHECK(!m2 || strstr(msg, m2), "%s: message lacks '%s': %s", name, m2, msg);
    printf("refused %-16s %s\n", name, msg);
    ap_config_destroy(&c);
    free(path);
}

static void s_loading(void) {
    char *path = s_write("ok", "run:\n  name: exp1\n  max_steps: 7\n"
                               "sampling: {temperature: 0.7, group_size: 4}\n"
                               "optimizer:\n  schedule: constant\n  lr: 3e-4\n"
                               "model: {student: 'models/s'}\n");
    const char *sets[] = {"sampling.top_p=0.9", "run.max_minutes=2.5"};
    ap_config_t *c = ap_config_load(path, sets, 2);
    AP_CHECK(c != NULL, "load: %s", ap_errmsg());
    if (c) {
        AP_CHECK(!strcmp(c->run.name, "exp1") && c->run.max_steps == 7, "run section");
        AP_CHECK(c->sampling.temperature == 0.7 && c->sampling.group_size == 4, "flow mapping");
        AP_CHECK(c->sampling.max_new_tokens == 16, "absent key keeps its default (%d)",
                 c->sampling.max_new_tokens);
        AP_CHECK(c->optimizer.schedule == AP_SCHEDULE_CONSTANT && c->optimizer.lr == 3e-4, "enum");
        AP_CHECK(c->optimizer.beta2 == 0.999, "default beta2");
        AP_CHECK(!strcmp(c->model.student, "models/s") && !strcmp(c->model.teacher, ""),
                 "strings");
        AP_CHECK(c->sampling.top_p == 0.9 && c->run.max_minutes == 2.5, "--set overrides");
        AP_CHECK(!strcmp(c->run.dir, "runs"), "default string kept");

        /* save -> load gives the same values */
        char *saved = ap_sprintf("%s/saved.yaml", s_dir);
        AP_CHECK(ap_config_save(c, saved) == 0, "save: %s", ap_errmsg());
        ap_config_t *d = ap_config_load(saved, NULL, 0);
        AP_CHECK(d != NULL, "reload: %s", ap_errmsg());
        if (d) {
            char *a = ap_config_to_yaml(c), *b = ap_config_to_yaml(d);
            AP_CHECK(!strcmp(a, b), "round trip differs:\n%s\n---\n%s", a, b);
            free(a), free(b);
        }
        ap_config_destroy(&d);
        AP_CHECK(d == NULL, "destroy NULLs");
        free(saved);
    }
    ap_config_destroy(&c);
    free(path);

    /* an empty file is all defaults */
    path = s_write("empty", "");
    c = ap_config_load(path, NULL, 0);
    AP_CHECK(c && c->batch.size == 32, "empty file: %s", c ? "" : ap_errmsg());
    ap_config_destroy(&c);
    free(path);
}

static void s_refusals(void) {
    s_refused("unknown_top", "bogus: 1\n", "bogus", "unknown key");
    s_refused("unknown_nested", "run:\n  name: a\n  max_step: 3\n", "run.max_step", ":3:");
    s_refused("not_int", "run:\n  max_steps: 3x\n", "run.max_steps", "not an integer");
    s_refused("not_number", "sampling:\n  temperature: hot\n", "sampling.temperature", "not a number");
    s_refused("not_bool", "run:\n  sync: maybe\n", "run.sync", "boolean");
    s_refused("bad_enum", "optimizer:\n  schedule: linear\n", "optimizer.schedule", "cosine");
    s_refused("range", "sampling:\n  temperature: 0\n", "sampling.temperature", "positive");
    s_refused("range_frac", "batch:\n  on_policy_fraction: 1.5\n", "batch.on_policy_fraction",
              "[0, 1]");
    s_refused("duplicate", "run:\n  seed: 1\n  seed: 2\n", "run.seed", "twice");
    s_refused("syntax", "run:\n  name: [a,\n", "syntax", NULL);
    s_refused("section_scalar", "sampling: 3\n", "sampling", "mapping");
    s_refused("list_for_scalar", "run:\n  seed: [1, 2]\n", "run.seed", "single value");
    s_refused("overflow", "run:\n  seed: 99999999999\n", "run.seed", "range");

    /* --set refusals name the override */
    const char *bad[] = {"sampling.nope=1", "sampling.top_k", "=3", "run..name=x",
                         "sampling.top_k=-1"};
    for (size_t i = 0; i < AP_COUNT(bad); i++) {
        ap_config_t *c = ap_config_load(NULL, &bad[i], 1);
        AP_CHECK(c == NULL, "--set %s accepted", bad[i]);
        AP_CHECK(strstr(ap_errmsg(), "--set") || strstr(ap_errmsg(), "top_k"),
                 "--set message: %s", ap_errmsg());
        printf("refused --set %-14s %s\n", bad[i], ap_errmsg());
        ap_config_destroy(&c);
    }
}

static void s_docs(void) {
    const char *src = getenv("AP_SOURCE_DIR");
    char *path = ap_sprintf("%s/docs/CONFIG.md", src ? src : AP_SOURCE_DIR);
    char *doc = NULL;
    AP_CHECK(ap_file_read(path, &doc, NULL) == 0, "%s", ap_errmsg());
    int n = 0;
    for (const char *const *k = ap_config_keys(); doc && *k; k++, n++) {
        char *quoted = ap_sprintf("`%s`", *k);
        AP_CHECK(strstr(doc, quoted) != NULL, "docs/CONFIG.md does not document %s", quoted);
        free(quoted);
    }
    AP_CHECK(n > 50, "only %d keys in the schema", n);
    free(doc);
    free(path);
}

static void s_shipped_configs(void) {
    const char *src = getenv("AP_SOURCE_DIR");
    char *dir = ap_sprintf("%s/configs", src ? src : AP_SOURCE_DIR);
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 5, ".yaml")) continue;
        char *path = ap_sprintf("%s/%s", dir, e->d_name);
        ap_config_t *c = ap_config_load(path, NULL, 0);
        AP_CHECK(c != NULL, "shipped config refused: %s", ap_errmsg());
        printf("loads   %s\n", e->d_name);
        ap_config_destroy(&c);
        free(path);
    }
    if (d) closedir(d);
    free(dir);
}

int main(void) {
    s_dir = ap_test_tmpdir("config");
    s_loading();
    s_refusals();
    s_docs();
    s_shipped_configs();
    return ap_test_result();
}
