/* test_task: the built-in generators (answers recomputed independently, digit and length
 * ranges, worked solutions), the train/held-out split (thousands of training draws from
 * several actors, none held out; held-out set exact in size, distinct, stable across runs and
 * independent of the training seed; small and large prompt spaces), determinism from the
 * seed and distinct actor shards, cursor save/restore (JSON round trip, identical
 * continuation, refusals), dataset tasks (hash split, held-out file, per-epoch shards that
 * partition the training set), and the task's vocabulary and token layout. */
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/task.h"
#include "test.h"

static const char *s_dir;

static ap_task_t *s_new(ap_task_config_t *c) {
    ap_task_t *t = ap_task_new(c);
    AP_CHECK(t != NULL, "ap_task_new(%s): %s", c->kind, ap_errmsg());
    return t;
}

static int s_digits(unsigned long long x) {
    int d = 1;
    while (x >= 10)
        x /= 10, d++;
    return d;
}

/* Check one generated example against an independent reading of its prompt. */
static void s_check_example(const ap_task_config_t *c, const ap_example_t *ex) {
    if (!strcmp(c->kind, "addition") || !strcmp(c->kind, "multiplication")) {
        int add = !strcmp(c->kind, "addition");
        unsigned long long a, b;
        char op, eq, rest;
        int n = sscanf(ex->prompt, "%llu%c%llu%c%c", &a, &op, &b, &eq, &rest);
        AP_CHECK(n == 4 && op == (add ? '+' : '*') && eq == '=', "prompt '%s'", ex->prompt);
        unsigned long long want = add ? a + b : a * b;
        char buf[32];
        snprintf(buf, sizeof buf, "%llu", want);
        AP_CHECK(!strcmp(ex->answer, buf), "%s -> '%s', want %s", ex->prompt, ex->answer, buf);
        AP_CHECK(s_digits(a) >= c->min_digits && s_digits(a) <= c->max_digits, "digits of a in %s",
                 ex->prompt);
        int blo = add ? c->min_digits : c->factor_min_digits,
            bhi = add ? c->max_digits : c->factor_max_digits;
        AP_CHECK(s_digits(b) >= blo && s_digits(b) <= bhi, "digits of b in %s", ex->prompt);
        AP_CHECK(ex->solution != NULL, "arithmetic has a solution");
    } else {
        int rev = !strcmp(c->kind, "reverse");
        const char *head = rev ? "reverse:" : "sort:";
        size_t hl = strlen(head), pl = strlen(ex->prompt);
        AP_CHECK(!strncmp(ex->prompt, head, hl) && ex->prompt[pl - 1] == '=', "prompt '%s'",
                 ex->prompt);
        char s[128];
        size_t len = pl - hl - 1;
        memcpy(s, ex->prompt + hl, len);
        s[len] = 0;
        AP_CHECK((int)len >= c->min_length && (int)len <= c->max_length, "length of %s",
                 ex->prompt);
        for (size_t i = 0; i < len; i++)
            AP_CHECK(strchr(c->alphabet, s[i]), "char of %s", ex->prompt);
        char want[128];
        for (size_t i = 0; i < len; i++)
            want[i] = s[i];
        want[len] = 0;
        if (rev)
            for (size_t i = 0; i < len; i++)
                want[i] = s[len - 1 - i];
        else
            for (size_t i = 1; i < len; i++)
                for (size_t j = i; j > 0 && want[j - 1] > want[j]; j--) {
                    char tmp = want[j];
                    want[j] = want[j - 1];
                    want[j - 1] = tmp;
                }
        AP_CHECK(!strcmp(ex->answer, want), "%s -> '%s', want '%s'", ex->prompt, ex->answer, want);
        AP_CHECK(ex->solution == NULL, "no solution for %s", c->kind);
    }
    char *id = ap_sprintf("%s:%s", c->kind, ex->prompt);
    AP_CHECK(ex->id && !strcmp(ex->id, id), "id '%s'", ex->id);
    free(id);
}

/* Draw `n` training examples from each of `actors` samplers; every one must be outside the
 * held-out set (by the task's test and by the held-out list) and correct. */
static void s_split_case(const char *name, ap_task_config_t *c, int n, int actors) {
    ap_task_t *t = s_new(c);
    if (!t) return;
    int H = ap_task_heldout_count(t);
    AP_CHECK(H == c->heldout_size, "%s: %d held-out, want %d", name, H, c->heldout_size);
    /* held-out: distinct, on the held-out side, correct */
    char **hp = ap_calloc((size_t)(H ? H : 1), sizeof *hp);
    for (int i = 0; i < H; i++) {
        ap_example_t ex = {0};
        ap_task_heldout_get(t, i, &ex);
        AP_CHECK(ap_task_is_heldout(t, ex.prompt), "%s: held-out %s not on the held-out side", name,
                 ex.prompt);
        s_check_example(c, &ex);
        for (int j = 0; j < i; j++)
            AP_CHECK(strcmp(hp[j], ex.prompt), "%s: repeated %s", name, ex.prompt);
        hp[i] = ap_strdup(ex.prompt);
        ap_example_clear(&ex);
    }
    int leaked = 0, drawn = 0;
    for (int a = 0; a < actors; a++) {
        ap_task_sampler_t *s = ap_task_sampler_new(t, a, actors);
        for (int k = 0; k < n; k++) {
            ap_example_t ex = {0};
            ap_task_sampler_next(s, &ex);
            if (ap_task_is_heldout(t, ex.prompt)) leaked++;
            for (int j = 0; j < H; j++)
                leaked += !strcmp(hp[j], ex.prompt);
            if (k < 200) s_check_example(c, &ex);
            ap_example_clear(&ex);
            drawn++;
        }
        ap_task_sampler_destroy(&s);
    }
    AP_CHECK(leaked == 0, "%s: %d held-out prompts drawn for training", name, leaked);
    printf("split %-26s space %-9.3g held-out %4d  train draws %6d  leaked %d\n", name,
           ap_task_space(t), H, drawn, leaked);
    /* stable across runs and independent of the training seed */
    long long seed = c->seed;
    c->seed = seed + 1000;
    ap_task_t *u = s_new(c);
    c->seed = seed;
    int same = u && ap_task_heldout_count(u) == H;
    for (int i = 0; same && i < H; i++) {
        ap_example_t ex = {0};
        ap_task_heldout_get(u, i, &ex);
        same = !strcmp(ex.prompt, hp[i]);
        ap_example_clear(&ex);
    }
    AP_CHECK(same, "%s: held-out set changed with the training seed", name);
    /* a different heldout_seed gives a different set */
    if (H >= 8) {
        c->heldout_seed += 1;
        ap_task_t *w = s_new(c);
        c->heldout_seed -= 1;
        int common = 0;
        for (int i = 0; w && i < H; i++) {
            ap_example_t ex = {0};
            ap_task_heldout_get(w, i, &ex);
            for (int j = 0; j < H; j++)
                common += !strcmp(ex.prompt, hp[j]);
            ap_example_clear(&ex);
        }
        AP_CHECK(common < H, "%s: heldout_seed does not change the set", name);
        ap_task_destroy(&w);
    }
    ap_task_destroy(&u);
    for (int i = 0; i < H; i++)
        free(hp[i]);
    free(hp);
    ap_task_destroy(&t);
}

static void s_split(void) {
    ap_task_config_t c;
    ap_task_config_defaults(&c);
    s_split_case("addition 1-3 (default)", &c, 4000, 3);
    c.min_digits = c.max_digits = 3;
    c.heldout_size = 500;
    s_split_case("addition 3-digit", &c, 4000, 2);
    c.min_digits = c.max_digits = 1; /* 100 prompts: the exact, enumerated path */
    c.heldout_size = 20;
    s_split_case("addition 1-digit", &c, 3000, 2);
    c.max_digits = 18;
    c.heldout_size = 64;
    s_split_case("addition 1-18", &c, 2000, 2);
    ap_task_config_defaults(&c);
    c.kind = "multiplication";
    c.min_digits = 2;
    c.max_digits = 4;
    c.factor_max_digits = 2;
    s_split_case("multiplication 2-4 x 1-2", &c, 3000, 2);
    ap_task_config_defaults(&c);
    c.kind = "reverse";
    s_split_case("reverse 3-8", &c, 3000, 2);
    c.kind = "sort";
    c.alphabet = "abc";
    c.min_length = 1;
    c.max_length = 3; /* 39 strings */
    c.heldout_size = 10;
    s_split_case("sort abc 1-3", &c, 2000, 4);

    /* the small space: exactly the non-held-out prompts are drawn, all of them */
    ap_task_config_defaults(&c);
    c.min_digits = c.max_digits = 1;
    c.heldout_size = 30;
    ap_task_t *t = s_new(&c);
    if (t) {
        ap_task_sampler_t *s = ap_task_sampler_new(t, 0, 1);
        int seen[100] = {0}, distinct = 0;
        for (int k = 0; k < 20000; k++) {
            ap_example_t ex = {0};
            ap_task_sampler_next(s, &ex);
            int a, b;
            sscanf(ex.prompt, "%d+%d=", &a, &b);
            if (!seen[a * 10 + b]++) distinct++;
            ap_example_clear(&ex);
        }
        AP_CHECK(distinct == 70, "1-digit addition, 30 held out: %d distinct training prompts",
                 distinct);
        ap_task_sampler_destroy(&s);
    }
    ap_task_destroy(&t);
    /* too many held out for the space */
    c.heldout_size = 51;
    t = ap_task_new(&c);
    AP_CHECK(t == NULL && strstr(ap_errmsg(), "task.heldout_size") && strstr(ap_errmsg(), "100"),
             "heldout > space/2: %s", ap_errmsg());
    printf("refused: %s\n", ap_errmsg());
    c.heldout_size = 0;
    t = s_new(&c);
    AP_CHECK(t && ap_task_heldout_count(t) == 0 && !ap_task_is_heldout(t, "1+2="),
             "no held-out set");
    ap_task_destroy(&t);
}

/* The first n prompts of a sampler, joined. */
static char *s_stream(const ap_task_t *t, int actor, int actors, int n) {
    ap_task_sampler_t *s = ap_task_sampler_new(t, actor, actors);
    char *out = ap_strdup("");
    for (int k = 0; k < n; k++) {
        ap_example_t ex = {0};
        ap_task_sampler_next(s, &ex);
        char *j = ap_sprintf("%s%s|", out, ex.prompt);
        free(out);
        out = j;
        ap_example_clear(&ex);
    }
    ap_task_sampler_destroy(&s);
    return out;
}

static void s_determinism(void) {
    ap_task_config_t c;
    ap_task_config_defaults(&c);
    ap_task_t *t1 = s_new(&c), *t2 = s_new(&c);
    c.seed = 2;
    ap_task_t *t3 = s_new(&c);
    if (!t1 || !t2 || !t3) return;
    char *a = s_stream(t1, 0, 4, 200), *b = s_stream(t2, 0, 4, 200), *d = s_stream(t1, 1, 4, 200);
    char *e = s_stream(t3, 0, 4, 200);
    AP_CHECK(!strcmp(a, b), "same seed and actor, different streams");
    AP_CHECK(strcmp(a, d) != 0, "actors 0 and 1 draw the same stream");
    AP_CHECK(strcmp(a, e) != 0, "seeds 1 and 2 draw the same stream");
    /* shards overlap only by chance: count common prompts among the first 200 */
    printf("determinism: seed/actor streams equal; actor 1 and seed 2 differ (first: %.40s...)\n",
           a);
    free(a);
    free(b);
    free(d);
    free(e);
    AP_CHECK(ap_task_fingerprint(t1) == ap_task_fingerprint(t2), "fingerprint deterministic");
    ap_task_destroy(&t1);
    ap_task_destroy(&t2);
    ap_task_destroy(&t3);
}

static void s_cursor(ap_task_config_t *c, const char *name) {
    ap_task_t *t = s_new(c);
    if (!t) return;
    ap_task_sampler_t *s = ap_task_sampler_new(t, 1, 3);
    ap_example_t ex = {0};
    for (int k = 0; k < 37; k++) {
        ap_task_sampler_next(s, &ex);
        ap_example_clear(&ex);
    }
    ap_task_cursor_t cur;
    ap_task_sampler_cursor(s, &cur);
    AP_CHECK(cur.drawn == 37 && cur.actor == 1 && cur.num_actors == 3, "%s: cursor fields", name);
    char *json = ap_task_cursor_to_json(&cur);
    char *want = s_stream(t, 0, 1, 0); /* "" */
    free(want);
    /* continue the original 50 more */
    char *cont = ap_strdup("");
    for (int k = 0; k < 50; k++) {
        ap_task_sampler_next(s, &ex);
        char *j = ap_sprintf("%s%s|", cont, ex.prompt);
        free(cont);
        cont = j;
        ap_example_clear(&ex);
    }
    /* a fresh sampler (a restarted actor, a new task object) restored from the JSON */
    ap_task_t *t2 = s_new(c);
    ap_task_sampler_t *r = ap_task_sampler_new(t2, 1, 3);
    ap_task_cursor_t back;
    AP_CHECK(ap_task_cursor_from_json(json, "ckpt", &back) == 0, "%s: from_json: %s", name,
             ap_errmsg());
    AP_CHECK(!memcmp(&back, &cur, sizeof cur) || (back.task == cur.task && back.drawn == cur.drawn),
             "%s: JSON round trip", name);
    AP_CHECK(ap_task_sampler_restore(r, &back) == 0, "%s: restore: %s", name, ap_errmsg());
    char *resumed = ap_strdup("");
    for (int k = 0; k < 50; k++) {
        ap_task_sampler_next(r, &ex);
        char *j = ap_sprintf("%s%s|", resumed, ex.prompt);
        free(resumed);
        resumed = j;
        ap_example_clear(&ex);
    }
    AP_CHECK(!strcmp(cont, resumed), "%s: resumed stream differs", name);
    printf("cursor %-9s %s\n", name, json);
    /* refusals */
    ap_task_sampler_t *other = ap_task_sampler_new(t2, 2, 3);
    AP_CHECK(ap_task_sampler_restore(other, &back) < 0 && strstr(ap_errmsg(), "actor 1 of 3"),
             "%s: other actor: %s", name, ap_errmsg());
    ap_task_sampler_destroy(&other);
    ap_task_cursor_t bad = back;
    bad.task ^= 1;
    AP_CHECK(ap_task_sampler_restore(r, &bad) < 0 && strstr(ap_errmsg(), "another task"),
             "%s: other task: %s", name, ap_errmsg());
    bad = back;
    bad.seed++;
    AP_CHECK(ap_task_sampler_restore(r, &bad) < 0 && strstr(ap_errmsg(), "seed"), "%s: seed", name);
    bad = back;
    bad.pos = 1000000000;
    if (!strcmp(c->kind, "dataset"))
        AP_CHECK(ap_task_sampler_restore(r, &bad) < 0 && strstr(ap_errmsg(), "past"), "%s: pos: %s",
                 name, ap_errmsg());
    bad = back;
    bad.drawn = -1;
    AP_CHECK(ap_task_sampler_restore(r, &bad) < 0, "%s: negative", name);
    const char *badjson[] = {
        "",
        "{",
        "[]",
        "{\"task\": \"zz\"}",
        "{\"task\": \"0000000000000000\", \"seed\": 1, \"actor\": 3, "
        "\"num_actors\": 3, \"rng\": [\"0000000000000001\", \"0000000000000001\", "
        "\"0000000000000001\", \"0000000000000001\"], \"drawn\": 0, \"epoch\": 0, "
        "\"pos\": 0}",
        "{\"task\": \"0000000000000000\", \"seed\": 1, \"actor\": 0, "
        "\"num_actors\": 3, \"rng\": [1, 2, 3, 4], \"drawn\": 0, \"epoch\": 0, "
        "\"pos\": 0}"};
    for (size_t i = 0; i < AP_COUNT(badjson); i++) {
        ap_task_cursor_t x;
        AP_CHECK(ap_task_cursor_from_json(badjson[i], "ckpt/x", &x) < 0 &&
                     strstr(ap_errmsg(), "ckpt/x"),
                 "%s: bad cursor JSON %zu accepted: %s", name, i, ap_errmsg());
    }
    ap_task_sampler_destroy(&r);
    ap_task_sampler_destroy(&s);
    ap_task_destroy(&t2);
    free(json);
    free(cont);
    free(resumed);
    ap_task_destroy(&t);
}

static char *s_write_dataset(const char *name, int n, int dup_every) {
    char *path = ap_sprintf("%s/%s.jsonl", s_dir, name);
    FILE *f = fopen(path, "w");
    for (int i = 0; i < n; i++) {
        int k = dup_every && i % dup_every == dup_every - 1 ? i - 1 : i; /* repeat a prompt */
        fprintf(f, "{\"prompt\": \"q%d?\", \"answer\": \"%d\", \"solution\": \"s%d\"}\n", k, k, k);
    }
    fclose(f);
    return path;
}

static void s_dataset(void) {
    char *path = s_write_dataset("train", 300, 10);
    ap_task_config_t c;
    ap_task_config_defaults(&c);
    c.kind = "dataset";
    c.dataset = path;
    c.heldout_size = 25;
    ap_task_t *t = s_new(&c);
    if (!t) return;
    AP_CHECK(ap_task_heldout_count(t) == 25, "dataset held-out %d", ap_task_heldout_count(t));
    AP_CHECK(ap_task_space(t) == 270, "distinct prompts %g", ap_task_space(t));
    long ntrain = ap_task_train_size(t);
    AP_CHECK(ntrain + ap_task_train_excluded(t) == 300, "train %ld + excluded %ld", ntrain,
             ap_task_train_excluded(t));
    printf("dataset split: %d distinct held-out prompts, %ld training lines, %ld lines held out\n",
           ap_task_heldout_count(t), ntrain, ap_task_train_excluded(t));
    /* one epoch over 3 actors partitions the training lines; none held out */
    int A = 3, leaked = 0;
    int *count = ap_calloc(300, sizeof *count);
    long total = 0;
    for (int a = 0; a < A; a++) {
        ap_task_sampler_t *s = ap_task_sampler_new(t, a, A);
        long shard = (ntrain - 1 - a) / A + 1;
        for (long k = 0; k < shard; k++) {
            ap_example_t ex = {0};
            ap_task_sampler_next(s, &ex);
            int q = atoi(ex.prompt + 1);
            count[q]++;
            total++;
            leaked += ap_task_is_heldout(t, ex.prompt);
            ap_example_clear(&ex);
        }
        ap_task_cursor_t cur;
        ap_task_sampler_cursor(s, &cur);
        AP_CHECK(cur.epoch == 0 && cur.pos == shard, "actor %d: epoch %lld pos %lld", a, cur.epoch,
                 cur.pos);
        ap_example_t ex = {0};
        ap_task_sampler_next(s, &ex); /* the next epoch starts */
        ap_example_clear(&ex);
        ap_task_sampler_cursor(s, &cur);
        AP_CHECK(cur.epoch == 1 && cur.pos == 1, "actor %d: new epoch", a);
        ap_task_sampler_destroy(&s);
    }
    AP_CHECK(total == ntrain && leaked == 0, "one epoch: %ld draws of %ld, %d held out", total,
             ntrain, leaked);
    /* every training line exactly once: prompt q appears as often as its lines */
    int bad = 0;
    for (int q = 0; q < 300; q++) {
        char p[16];
        snprintf(p, sizeof p, "q%d?", q);
        int lines = 0;
        for (int i = 0; i < 300; i++)
            lines += (i % 10 == 9 ? i - 1 : i) == q;
        int want = ap_task_is_heldout(t, p) ? 0 : lines;
        bad += count[q] != want;
    }
    AP_CHECK(bad == 0, "epoch is not a partition of the training lines (%d prompts off)", bad);
    free(count);
    /* held-out examples keep their solution and id */
    ap_example_t ex = {0};
    ap_task_heldout_get(t, 0, &ex);
    AP_CHECK(ex.solution && ex.solution[0] == 's' && strstr(ex.id, "train.jsonl:"),
             "held-out fields");
    ap_example_clear(&ex);
    /* more actors than examples still works */
    ap_task_sampler_t *s = ap_task_sampler_new(t, 299, 300);
    for (int k = 0; k < 5; k++) {
        ap_task_sampler_next(s, &ex);
        AP_CHECK(!ap_task_is_heldout(t, ex.prompt), "many actors");
        ap_example_clear(&ex);
    }
    ap_task_sampler_destroy(&s);
    ap_task_destroy(&t);
    s_cursor(&c, "dataset");

    /* a held-out file: its prompts are dropped from training */
    char *held = ap_sprintf("%s/held.jsonl", s_dir);
    FILE *f = fopen(held, "w");
    for (int i = 0; i < 40; i += 2)
        fprintf(f, "{\"prompt\": \"q%d?\", \"answer\": \"%d\"}\n", i, i);
    fprintf(f, "{\"prompt\": \"new?\", \"answer\": \"x\"}\n");
    fclose(f);
    c.heldout_dataset = held;
    c.heldout_size = 10;
    t = s_new(&c);
    if (t) {
        AP_CHECK(ap_task_heldout_count(t) == 10, "first 10 of the file");
        /* prompts 0,2,...,38: 20 prompts; 18 (every 10th line repeats the previous) -> lines */
        long excluded = ap_task_train_excluded(t);
        int want = 0;
        for (int i = 0; i < 300; i++) {
            int k = i % 10 == 9 ? i - 1 : i;
            want += k < 40 && k % 2 == 0;
        }
        AP_CHECK(excluded == want, "excluded %ld want %d", excluded, want);
        AP_CHECK(ap_task_is_heldout(t, "q2?") && !ap_task_is_heldout(t, "q3?") &&
                     ap_task_is_heldout(t, "new?"),
                 "held-out file membership");
        s = ap_task_sampler_new(t, 0, 1);
        int leaks = 0;
        for (int k = 0; k < 1000; k++) {
            ap_task_sampler_next(s, &ex);
            int q = atoi(ex.prompt + 1);
            leaks += q < 40 && q % 2 == 0;
            ap_example_clear(&ex);
        }
        AP_CHECK(leaks == 0, "held-out file prompts drawn %d times", leaks);
        printf("held-out file: %d evaluated, %ld training lines dropped, 1000 draws clean\n",
               ap_task_heldout_count(t), excluded);
        ap_task_sampler_destroy(&s);
    }
    ap_task_destroy(&t);
    free(held);
    free(path);
}

static void s_tokens(void) {
    const char *kinds[] = {"addition", "multiplication", "reverse", "sort"};
    for (size_t k = 0; k < AP_COUNT(kinds); k++) {
        ap_task_config_t c;
        ap_task_config_defaults(&c);
        c.kind = (char *)kinds[k];
        c.prompt_template = "Q: {prompt}\n";
        c.completion_template = "{solution} => {answer}";
        c.privileged_template = "{feedback}; {solution}; {answer} | {prompt}";
        c.heldout_size = 8;
        ap_task_t *t = s_new(&c);
        if (!t) continue;
        ap_tokenizer_t *tok = ap_task_build_tokenizer(t);
        AP_CHECK(tok != NULL, "%s: tokenizer: %s", kinds[k], ap_errmsg());
        AP_CHECK(ap_task_check_tokenizer(t, tok, "own") == 0, "%s: own vocab: %s", kinds[k],
                 ap_errmsg());
        ap_task_sampler_t *s = ap_task_sampler_new(t, 0, 1);
        int failures = 0;
        for (int i = 0; i < 1000; i++) {
            ap_example_t ex = {0};
            ap_task_sampler_next(s, &ex);
            int n, np;
            int32_t *ids = ap_task_encode_example(t, tok, &ex, &n, &np);
            if (!ids) {
                failures++;
                ap_example_clear(&ex);
                continue;
            }
            char *p = ap_task_render_prompt(t, &ex), *comp = ap_task_render_completion(t, &ex);
            char *back = ap_tokenizer_decode(tok, ids, n, AP_TOK_SPECIALS);
            char *want = ap_sprintf("<bos>%s%s<eos>", p, comp);
            failures += strcmp(back, want) != 0 || ids[0] != ap_tokenizer_bos(tok) ||
                        ids[n - 1] != ap_tokenizer_eos(tok);
            int np2;
            int32_t *pid = ap_task_encode_prompt(t, tok, &ex, &np2);
            failures += np2 != np || memcmp(pid, ids, (size_t)np * sizeof *ids) != 0;
            /* the gold completion verifies as correct */
            ap_verdict_t v;
            ap_task_verify(t, &ex, comp, &v);
            failures += !v.correct;
            ap_task_rollout_t r = {comp, 0, "expected 1, got 2 (not a number)..."};
            int32_t *cid;
            int nc;
            int h = ap_task_encode_privileged(t, tok, &ex, &r, 1, 0, &cid, &nc);
            failures += h != (ex.solution ? 1 : 0);
            free(cid);
            free(pid);
            free(want);
            free(back);
            free(p);
            free(comp);
            free(ids);
            ap_example_clear(&ex);
        }
        AP_CHECK(failures == 0, "%s: %d of 1000 examples failed to encode/verify", kinds[k],
                 failures);
        char hex[17];
        printf("tokens %-14s V=%-3d hash %s  1000 examples encode, gold completions verify\n",
               kinds[k], ap_tokenizer_vocab_size(tok), ap_tokenizer_hash_hex(tok, hex));
        ap_task_sampler_destroy(&s);
        ap_tokenizer_destroy(&tok);
        ap_task_destroy(&t);
    }
    /* the vocabulary of addition cannot serve multiplication: the missing '*' is named */
    ap_task_config_t c;
    ap_task_config_defaults(&c);
    ap_task_t *add = s_new(&c);
    c.kind = "multiplication";
    ap_task_t *mul = s_new(&c);
    ap_tokenizer_t *tok = ap_task_build_tokenizer(add);
    AP_CHECK(ap_task_check_tokenizer(mul, tok, "ckpt/teacher") < 0 && strstr(ap_errmsg(), "'*'") &&
                 strstr(ap_errmsg(), "ckpt/teacher"),
             "missing char: %s", ap_errmsg());
    printf("refused: %s\n", ap_errmsg());
    ap_example_t ex = {.prompt = "12*3=", .answer = "36", .id = "mul:1"};
    int n;
    AP_CHECK(ap_task_encode_prompt(mul, tok, &ex, &n) == NULL &&
                 strstr(ap_errmsg(), "mul:1: prompt"),
             "encode with foreign vocab: %s", ap_errmsg());
    /* default templates: V is small and reproducible */
    ap_tokenizer_t *tok2 = ap_task_build_tokenizer(add);
    AP_CHECK(ap_tokenizer_hash(tok) == ap_tokenizer_hash(tok2), "vocabulary reproducible");
    ap_tokenizer_destroy(&tok);
    ap_tokenizer_destroy(&tok2);
    ap_task_destroy(&add);
    ap_task_destroy(&mul);
}

static void s_solutions(void) {
    ap_task_config_t c;
    ap_task_config_defaults(&c);
    c.min_digits = c.max_digits = 2;
    c.heldout_size = 0;
    ap_task_t *t = s_new(&c);
    ap_task_sampler_t *s = ap_task_sampler_new(t, 0, 1);
    /* find 58+67 style carries: check the format on whatever is drawn */
    for (int k = 0; k < 50; k++) {
        ap_example_t ex = {0};
        ap_task_sampler_next(s, &ex);
        int a, b;
        sscanf(ex.prompt, "%d+%d=", &a, &b);
        char want[64];
        int x0 = a % 10, y0 = b % 10, s0 = x0 + y0, x1 = a / 10, y1 = b / 10,
            s1 = x1 + y1 + (s0 >= 10);
        if (s0 >= 10)
            snprintf(want, sizeof want, "%d+%d=%d,%d+%d+1=%d", x0, y0, s0, x1, y1, s1);
        else
            snprintf(want, sizeof want, "%d+%d=%d,%d+%d=%d", x0, y0, s0, x1, y1, s1);
        AP_CHECK(!strcmp(ex.solution, want), "%s solution '%s' want '%s'", ex.prompt, ex.solution,
                 want);
        if (k == 0) printf("solution %s %s -> %s\n", ex.prompt, ex.answer, ex.solution);
        ap_example_clear(&ex);
    }
    ap_task_sampler_destroy(&s);
    ap_task_destroy(&t);
    c.kind = "multiplication";
    c.min_digits = c.max_digits = 3;
    t = s_new(&c);
    s = ap_task_sampler_new(t, 0, 1);
    for (int k = 0; k < 50; k++) {
        ap_example_t ex = {0};
        ap_task_sampler_next(s, &ex);
        /* the solution ends with "=answer" and each step is a true product */
        size_t la = strlen(ex.answer), ls = strlen(ex.solution);
        AP_CHECK(ls > la && !strcmp(ex.solution + ls - la, ex.answer) &&
                     ex.solution[ls - la - 1] == '=',
                 "%s solution '%s'", ex.prompt, ex.solution);
        if (k == 0) printf("solution %s %s -> %s\n", ex.prompt, ex.answer, ex.solution);
        ap_example_clear(&ex);
    }
    ap_task_sampler_destroy(&s);
    ap_task_destroy(&t);
}

int main(void) {
    s_dir = ap_strdup(ap_test_tmpdir("task"));
    s_split();
    s_determinism();
    ap_task_config_t c;
    ap_task_config_defaults(&c);
    s_cursor(&c, "addition");
    c.kind = "reverse";
    s_cursor(&c, "reverse");
    s_dataset();
    s_tokens();
    s_solutions();
    free((void *)s_dir);
    return ap_test_result();
}
