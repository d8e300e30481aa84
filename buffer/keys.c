/* keys.c: process-level set-up of the buffer's process (buffer.h): the CURVE key files of a run
 * (which key a process loads, which public key a client trusts for a service, the buffer's
 * allow-lists by role) and the allocator tuning of a process that decodes and encodes large
 * messages all the time.
 *
 * `apprentice keygen --dir KEYS NAME...` writes KEYS/NAME.key + KEYS/NAME.pub. A process loads
 * its own process name first ("teacher-external-0", "actor-3", "buffer-0") and falls back to its
 * role ("teacher", "actor", "buffer"), so one pair per role is enough on a trusted cluster and
 * one pair per process is possible. The buffer admits, per ZAP domain, the public keys whose
 * file name starts with the role's prefix. */
#include <dirent.h>
#include <malloc.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/buffer.h"

int ap_buffer_load_keys(const char *keys_dir, const char *name, const char *role,
                        ap_net_opts_t *o) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.key", keys_dir, name);
    const char *use = ap_path_exists(path) ? name : role;
    if (ap_curve_load(keys_dir, use, o->public_key, o->secret_key) < 0)
        return ap_err("security.curve: no key pair for %s (%s/%s.key nor %s/%s.key: run "
                      "`apprentice keygen --dir %s %s`): %s",
                      name, keys_dir, name, keys_dir, role, keys_dir, name, ap_errmsg());
    o->curve = 1;
    return 0;
}

int ap_buffer_service_key(const char *keys_dir, const char *name, char pub[AP_Z85_KEY]) {
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/%s-0.pub", keys_dir, name);
    snprintf(b, sizeof b, "%s/%s.pub", keys_dir, name);
    if (ap_path_exists(a)) return ap_curve_load_public(a, pub);
    if (ap_path_exists(b)) return ap_curve_load_public(b, pub);
    return ap_err("security.curve: the %s's public key is missing (%s or %s)", name, a, b);
}

int ap_buffer_allow_keys(ap_net_t *net, const char *keys_dir) {
    static const struct {
        const char *prefix, *domain;
    } rules[] = {
        {"actor", "actor"}, {"dataset", "actor"}, {"teacher", "teacher"}, {"learner", "learner"}};
    DIR *d = opendir(keys_dir);
    if (!d) return ap_err("security.curve: cannot open the keys directory %s", keys_dir);
    int count = 0, rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) && rc == 0) {
        size_t len = strlen(e->d_name);
        if (len <= 4 || strcmp(e->d_name + len - 4, ".pub")) continue;
        char stem[AP_NAME_MAX];
        snprintf(stem, sizeof stem, "%.*s", (int)AP_MIN(len - 4, AP_NAME_MAX - 1), e->d_name);
        for (size_t r = 0; r < AP_COUNT(rules) && rc == 0; r++) {
            if (strncmp(stem, rules[r].prefix, strlen(rules[r].prefix))) continue;
            char path[1400], key[AP_Z85_KEY];
            snprintf(path, sizeof path, "%s/%s", keys_dir, e->d_name);
            if (ap_curve_load_public(path, key) < 0 ||
                ap_net_allow(net, rules[r].domain, key, stem) < 0)
                rc = -1;
            else
                count++;
        }
    }
    closedir(d);
    return rc < 0 ? -1 : count;
}

void ap_buffer_tune_malloc(void) {
    /* glibc serves allocations above its (adaptive) mmap threshold with fresh mappings and
     * trims the heap top when freed memory exceeds the trim threshold; the buffer allocates and
     * frees ~30 KB scores and ~250 KB batch encodings thousands of times a second, and paid for
     * it in page faults (measured: 88 -> 76 us of buffer CPU per group in `apprentice bench
     * buffer`, ~12%). Its memory is bounded by buffer.capacity_groups, so keeping freed memory
     * in the heap costs little. */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
}
