/* test_buffer.c: the buffer service with fake actors, teachers and a fake learner in one process
 * over inproc:// (tests/test_buffer_fakes.h). Scenarios, each on a fresh buffer:
 *   compose   exact λ composition: λ = 0.5, B = 16, G = 4 gives 2 on-policy groups + 8 dataset
 *             trajectories in every one of many batches; B = 18 trims a dataset group to 2;
 *             every item carries the external teacher's scores, which fit it; no group twice
 *   killed    a teacher holding requests dies: its work goes to another teacher and every
 *             group is answered and served exactly once
 *   late      a slow teacher's answer after re-dispatch is dropped and counted; when the slow
 *             one answers first it wins and the second answer is the late one
 *   stale     staleness and old-generation drops (at intake and while ready), dataset groups
 *             never dropped
 *   flood     credit bounds the queues (never above capacity with honest actors); an actor
 *             ignoring credit overflows and the oldest groups are dropped and counted; the
 *             books balance (groups_in = drops + served_first + held_unserved); a second flood
 *             does not raise the peak memory
 *   reuse     max_reuse 3 newest-first serves C C C B B B A A A; uniform order serves each group
 *             exactly max_reuse times in another order
 *   sync      run.sync: no credit before the learner asks; then exactly the groups the batch
 *             needs, with CREDIT.latest = the learner's version; an older group is dropped */
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/buffer.h"
#include "apprentice/config.h"
#include "test.h"
#include "test_buffer_fakes.h"

#define V 50
#define HB 0.05

typedef struct {
    ap_config_t *cfg;
    ap_net_t *net;
    struct ev_loop *loop;
    ap_buffer_t *b;
    char ep[3][96];
} env_t;

static void env_open(env_t *e, const char *tag, void (*tweak)(ap_config_t *)) {
    memset(e, 0, sizeof *e);
    e->cfg = ap_config_new();
    ap_config_t *c = e->cfg;
    c->objective.gkd.c.enabled = 1; /* the external teacher */
    c->sampling.group_size = 4;
    c->batch.size = 16;
    c->batch.on_policy_fraction = 1.0;
    c->buffer.heartbeat_ms = (int)(HB * 1000);
    c->buffer.teacher_timeout_ms = 200;
    c->buffer.max_retries = 3;
    c->buffer.capacity_groups = 64;
    c->buffer.actor_credit = 2;
    c->buffer.teacher_credit = 4;
    c->teacher.top_k = 8;
    c->teacher.full_vocab_max = 16; /* V = 50: top-K signals */
    if (tweak) tweak(c);
    static const char *names[3] = {"actors", "teachers", "learner"};
    for (int i = 0; i < 3; i++)
        snprintf(e->ep[i], sizeof e->ep[i], "inproc://buf-%s-%s", tag, names[i]);
    ap_net_opts_t no = {0};
    e->net = ap_net_new(&no);
    e->loop = ev_loop_new(EVFLAG_AUTO);
    ap_buffer_opts_t o = {.cfg = c,
                          .vocab_size = V,
                          .vocab_hash = 0x1234,
                          .actors_endpoint = e->ep[0],
                          .teachers_endpoint = e->ep[1],
                          .learner_endpoint = e->ep[2],
                          .seed = 7};
    e->b = ap_buffer_new(e->net, e->loop, &o);
    AP_ASSERTF(e->b, "%s", ap_errmsg());
}

static void env_close(env_t *e) {
    ap_buffer_destroy(&e->b);
    ap_net_destroy(&e->net);
    ev_loop_destroy(e->loop);
    ap_config_destroy(&e->cfg);
}

static ap_buffer_stats_t stats(env_t *e) {
    ap_buffer_stats_t st;
    ap_buffer_stats(e->b, &st);
    return st;
}

/* The books balance: every group taken is dropped, served or held unserved. */
static void check_books(env_t *e, const char *where) {
    ap_buffer_stats_t st = stats(e);
    uint64_t drops = 0;
    for (int r = 0; r < AP_BUFFER_DROP_REASON_COUNT; r++)
        drops += st.drops[r];
    AP_CHECK(drops == st.drops_total, "%s: drop reasons sum %llu != total %llu", where,
             (unsigned long long)drops, (unsigned long long)st.drops_total);
    AP_CHECK(st.groups_in == st.drops_total + st.served_first + (uint64_t)st.held_unserved,
             "%s: groups_in %llu != drops %llu + served %llu + held %d", where,
             (unsigned long long)st.groups_in, (unsigned long long)st.drops_total,
             (unsigned long long)st.served_first, st.held_unserved);
    printf("  %s: in %llu = drops %llu + served %llu + held %d (stale %llu, old_gen %llu, "
           "overflow %llu, teacher_failed %llu, invalid %llu)\n",
           where, (unsigned long long)st.groups_in, (unsigned long long)st.drops_total,
           (unsigned long long)st.served_first, st.held_unserved,
           (unsigned long long)st.drops[AP_BUFFER_DROP_STALE],
           (unsigned long long)st.drops[AP_BUFFER_DROP_OLD_GENERATION],
           (unsigned long long)st.drops[AP_BUFFER_DROP_OVERFLOW],
           (unsigned long long)st.drops[AP_BUFFER_DROP_TEACHER_FAILED],
           (unsigned long long)st.drops[AP_BUFFER_DROP_INVALID]);
}

/* ---------------------------------------------------------------- a generic driver */

typedef struct {
    env_t *e;
    fk_t *actors[8];
    int n_actors;
    fk_t *learner;
    ap_rng_t rng;
    uint64_t next_id;
    ap_version_t version; /* the actors' policy version and the learner's */
    int actor_G[8];       /* G per actor */
    int max_len;
    int produce; /* actors send a group whenever they hold credit */
    int B, want_batches, requested, prefetch;
    uint64_t max_bytes;
    int done_parts; /* batch parts the learner has seen */
    int complete;   /* complete batches received */
} drv_t;

static int batch_complete(fk_t *L, uint64_t id) {
    int parts = -1, got = 0;
    for (int i = 0; i < L->n_parts; i++)
        if (L->parts[i]->request_id == id) parts = L->parts[i]->parts, got++;
    return parts > 0 && got == parts;
}

static int drv_step(void *arg) {
    drv_t *d = arg;
    for (int a = 0; a < d->n_actors && d->produce; a++) {
        fk_t *f = d->actors[a];
        while (f->alive && f->credit > 0) {
            int ds = !strncmp(f->name, "dataset", 7);
            ap_group_t *g = fk_group(&d->rng, ++d->next_id, d->actor_G[a], d->max_len, V,
                                     ds ? AP_SOURCE_DATASET : AP_SOURCE_ON_POLICY, d->version);
            fk_send_group(f, g, 0);
            ap_group_destroy(&g);
        }
    }
    if (d->learner) {
        d->complete = 0;
        for (uint64_t id = 1; id <= (uint64_t)d->requested; id++)
            d->complete += batch_complete(d->learner, id);
        while (d->requested < d->want_batches && d->requested - d->complete < d->prefetch) {
            d->requested++;
            fk_request_batch(d->learner, (uint64_t)d->requested, d->version, d->B, d->max_bytes);
        }
        return d->complete >= d->want_batches;
    }
    return 0;
}

/* The items of batch `id` in order (borrowed), *n of them. */
static int batch_items(fk_t *L, uint64_t id, ap_batch_item_t **out, int cap) {
    int n = 0;
    for (int p = 0; p < 64; p++)
        for (int i = 0; i < L->n_parts; i++)
            if (L->parts[i]->request_id == id && L->parts[i]->part == p)
                for (int k = 0; k < L->parts[i]->n_items && n < cap; k++)
                    out[n++] = &L->parts[i]->items[k];
    return n;
}

/* ---------------------------------------------------------------- compose */

static void tweak_compose(ap_config_t *c) {
    c->batch.on_policy_fraction = 0.5;
}

static void check_composition(drv_t *d, int B, int want_on_groups, int want_ds_traj,
                              int want_trim_G, uint64_t *seen, int *n_seen) {
    fk_t *L = d->learner;
    int bad = 0;
    for (int id = 1; id <= d->requested; id++) {
        ap_batch_item_t *items[256];
        int n = batch_items(L, (uint64_t)id, items, 256);
        int on = 0, on_traj = 0, ds_traj = 0, trimmed = 0, total = 0, scored = 1;
        for (int i = 0; i < n; i++) {
            const ap_group_t *g = items[i]->group;
            total += g->G;
            if (g->source == AP_SOURCE_ON_POLICY)
                on++, on_traj += g->G;
            else
                ds_traj += g->G, trimmed += g->G < 4 ? g->G : 0;
            const ap_scores_t *s = ap_batch_item_scores(items[i], AP_TEACHER_EXTERNAL);
            if (!s || items[i]->n_scores != 1 || ap_msg_scores_match(s, g) < 0) scored = 0;
            for (int j = 0; j < *n_seen; j++)
                if (seen[j] == g->id && g->source == AP_SOURCE_ON_POLICY) bad++;
            if (g->source == AP_SOURCE_ON_POLICY) seen[(*n_seen)++] = g->id;
        }
        int ok = total == B && on == want_on_groups && on_traj == 4 * want_on_groups &&
                 ds_traj == want_ds_traj && trimmed == want_trim_G && scored;
        if (!ok || id <= 2)
            printf("  batch %d: %d items, %d trajectories: %d on-policy groups (%d traj), %d "
                   "dataset traj (trimmed group of %d), scores %s\n",
                   id, n, total, on, on_traj, ds_traj, trimmed, scored ? "ok" : "MISSING/BAD");
        AP_CHECK(ok, "batch %d composition", id);
    }
    AP_CHECK(bad == 0, "%d on-policy groups served twice", bad);
}

static void test_compose(void) {
    printf("compose: lambda 0.5, B 16, G 4\n");
    env_t e;
    env_open(&e, "compose", tweak_compose);
    drv_t d = {.e = &e,
               .n_actors = 2,
               .max_len = 6,
               .produce = 1,
               .B = 16,
               .want_batches = 25,
               .prefetch = 2,
               .version = {1, 0}};
    ap_rng_seed(&d.rng, 1, 1);
    d.actors[0] = fk_new(e.net, e.ep[0], "actor-0", AP_ROLE_ACTOR, HB, NULL);
    d.actors[1] = fk_new(e.net, e.ep[0], "dataset-0", AP_ROLE_ACTOR, HB, NULL);
    d.actor_G[0] = d.actor_G[1] = 4;
    fk_t *t[2] = {fk_new(e.net, e.ep[1], "teacher-external-0", AP_ROLE_TEACHER, HB, NULL),
                  fk_new(e.net, e.ep[1], "teacher-external-1", AP_ROLE_TEACHER, HB, NULL)};
    d.learner = fk_new(e.net, e.ep[2], "learner-0", AP_ROLE_LEARNER, HB, NULL);
    fk_hello(d.actors[0], 0, 0, 0, V, 0x1234);
    fk_hello(d.actors[1], 0, 0, 0, V, 0x1234);
    fk_hello(t[0], 0, AP_TEACHER_EXTERNAL, 4, V, 0x1234);
    fk_hello(t[1], 1, AP_TEACHER_EXTERNAL, 4, V, 0x1234);
    fk_hello(d.learner, 0, 0, 0, V, 0x1234);
    fk_t *all[] = {d.actors[0], d.actors[1], t[0], t[1], d.learner};
    int done = fk_pump(e.loop, all, 5, 20.0, drv_step, &d);
    AP_CHECK(done, "only %d of %d batches in 20 s", d.complete, d.want_batches);
    uint64_t seen[4096];
    int n_seen = 0;
    check_composition(&d, 16, 2, 8, 0, seen, &n_seen);
    ap_buffer_stats_t st = stats(&e);
    AP_CHECK(st.answers > 0 && t[0]->answered > 0 && t[1]->answered > 0,
             "both teachers used: %llu and %llu", (unsigned long long)t[0]->answered,
             (unsigned long long)t[1]->answered);
    printf("  teachers answered %llu and %llu\n", (unsigned long long)t[0]->answered,
           (unsigned long long)t[1]->answered);
    /* B = 18: floor(0.5*18/4) = 2 groups (8 traj) + 10 dataset trajectories: 2 groups + 2 */
    uint64_t trimmed0 = st.trimmed;
    for (int i = 0; i < d.learner->n_parts; i++)
        ap_batch_destroy(&d.learner->parts[i]);
    d.learner->n_parts = 0;
    d.requested = 0, d.complete = 0, d.B = 18, d.want_batches = 10;
    done = fk_pump(e.loop, all, 5, 20.0, drv_step, &d);
    AP_CHECK(done, "B 18: only %d of %d batches", d.complete, d.want_batches);
    check_composition(&d, 18, 2, 10, 2, seen, &n_seen);
    st = stats(&e);
    AP_CHECK(st.trimmed - trimmed0 == 2 * 10, "trimmed %llu trajectories, want 20",
             (unsigned long long)(st.trimmed - trimmed0));
    /* max_bytes: every batch split into parts of at most 3000 bytes, reassembled in order */
    for (int i = 0; i < d.learner->n_parts; i++)
        ap_batch_destroy(&d.learner->parts[i]);
    d.learner->n_parts = 0;
    d.requested = 0, d.complete = 0, d.B = 16, d.want_batches = 5, d.max_bytes = 3000;
    uint64_t parts0 = stats(&e).batch_parts;
    done = fk_pump(e.loop, all, 5, 20.0, drv_step, &d);
    AP_CHECK(done, "parts: only %d of %d batches", d.complete, d.want_batches);
    check_composition(&d, 16, 2, 8, 0, seen, &n_seen);
    uint64_t parts = stats(&e).batch_parts - parts0;
    printf("  max_bytes 3000: 5 batches in %llu parts\n", (unsigned long long)parts);
    AP_CHECK(parts > 5, "batches were not split into parts (%llu)", (unsigned long long)parts);
    check_books(&e, "compose");
    for (int i = 0; i < 5; i++)
        fk_destroy(&all[i]);
    env_close(&e);
}

/* ---------------------------------------------------------------- killed teacher */

static int cond_held(void *arg) {
    fk_t *t = arg;
    return t->n_jobs >= 4;
}

static void test_killed(void) {
    printf("killed: a teacher dies holding 4 requests\n");
    env_t e;
    env_open(&e, "killed", NULL);
    drv_t d = {.e = &e,
               .n_actors = 1,
               .max_len = 6,
               .B = 8,
               .want_batches = 2,
               .prefetch = 2,
               .version = {1, 0}};
    ap_rng_seed(&d.rng, 2, 2);
    d.actors[0] = fk_new(e.net, e.ep[0], "actor-0", AP_ROLE_ACTOR, HB, NULL);
    d.actor_G[0] = 4;
    e.cfg->buffer.actor_credit = 4; /* (read at HELLO) */
    fk_t *t1 = fk_new(e.net, e.ep[1], "teacher-external-0", AP_ROLE_TEACHER, HB, NULL);
    t1->mode = FK_HOLD;
    fk_hello(d.actors[0], 0, 0, 0, V, 0x1234);
    fk_hello(t1, 0, AP_TEACHER_EXTERNAL, 4, V, 0x1234);
    fk_t *all[4] = {d.actors[0], t1, NULL, NULL};
    fk_pump(e.loop, all, 2, 1.0, NULL, NULL); /* registered, credit granted */
    d.produce = 1;
    drv_step(&d);
    d.produce = 0;
    AP_CHECK(fk_pump(e.loop, all, 2, 3.0, cond_held, t1), "teacher 1 holds %d requests",
             t1->n_jobs);
    fk_t *t2 = fk_new(e.net, e.ep[1], "teacher-external-1", AP_ROLE_TEACHER, HB, NULL);
    fk_hello(t2, 1, AP_TEACHER_EXTERNAL, 4, V, 0x1234);
    fk_pump(e.loop, all, 2, 0.02, NULL, NULL);
    fk_kill(t1); /* no BYE: the buffer finds out by silence or an unroutable send */
    d.learner = fk_new(e.net, e.ep[2], "learner-0", AP_ROLE_LEARNER, HB, NULL);
    fk_hello(d.learner, 0, 0, 0, V, 0x1234);
    all[1] = t2, all[2] = d.learner;
    int done = fk_pump(e.loop, all, 3, 5.0, drv_step, &d);
    AP_CHECK(done, "only %d of 2 batches after the teacher died", d.complete);
    ap_buffer_stats_t st = stats(&e);
    int counts[5] = {0};
    for (int id = 1; id <= 2; id++) {
        ap_batch_item_t *items[16];
        int n = batch_items(d.learner, (uint64_t)id, items, 16);
        for (int i = 0; i < n; i++)
            if (items[i]->group->id >= 1 && items[i]->group->id <= 4) counts[items[i]->group->id]++;
    }
    printf("  groups served 1:%d 2:%d 3:%d 4:%d; teacher 2 answered %llu; redispatched %llu, "
           "expired %llu, timeouts %llu, late %llu\n",
           counts[1], counts[2], counts[3], counts[4], (unsigned long long)t2->answered,
           (unsigned long long)st.redispatched, (unsigned long long)st.teachers_expired,
           (unsigned long long)st.timeouts, (unsigned long long)st.late_answers);
    for (int g = 1; g <= 4; g++)
        AP_CHECK(counts[g] == 1, "group %d served %d times", g, counts[g]);
    AP_CHECK(t2->answered == 4 && st.answers == 4, "answers: teacher 2 %llu, buffer %llu",
             (unsigned long long)t2->answered, (unsigned long long)st.answers);
    AP_CHECK(st.redispatched >= 4 && st.drops_total == 0, "redispatched %llu drops %llu",
             (unsigned long long)st.redispatched, (unsigned long long)st.drops_total);
    check_books(&e, "killed");
    fk_destroy(&t1);
    fk_destroy(&t2);
    fk_destroy(&d.actors[0]);
    fk_destroy(&d.learner);
    env_close(&e);
}

/* ---------------------------------------------------------------- late duplicate */

static int cond_answers(void *arg) {
    env_t *e = arg;
    return stats(e).late_answers >= 1;
}

static void late_case(int slow_first_wins) {
    env_t e;
    env_open(&e, slow_first_wins ? "late2" : "late1", NULL);
    fk_t *a = fk_new(e.net, e.ep[0], "actor-0", AP_ROLE_ACTOR, HB, NULL);
    fk_t *t1 = fk_new(e.net, e.ep[1], "teacher-external-0", AP_ROLE_TEACHER, HB, NULL);
    t1->mode = FK_DELAY;
    t1->delay_s = slow_first_wins ? 0.3 : 0.6; /* the deadline is 0.2 s */
    fk_hello(a, 0, 0, 0, V, 0x1234);
    fk_hello(t1, 0, AP_TEACHER_EXTERNAL, 4, V, 0x1234);
    fk_t *all[3] = {a, t1, NULL};
    fk_pump(e.loop, all, 2, 0.3, NULL, NULL);
    ap_rng_t r;
    ap_rng_seed(&r, 3, 3);
    ap_group_t *g = fk_group(&r, 77, 4, 5, V, AP_SOURCE_ON_POLICY, (ap_version_t){1, 0});
    fk_send_group(a, g, 0);
    ap_group_destroy(&g);
    fk_pump(e.loop, all, 2, 0.05, NULL, NULL); /* dispatched to teacher 1 */
    fk_t *t2 = fk_new(e.net, e.ep[1], "teacher-external-1", AP_ROLE_TEACHER, HB, NULL);
    if (slow_first_wins) t2->mode = FK_DELAY, t2->delay_s = 0.5;
    fk_hello(t2, 1, AP_TEACHER_EXTERNAL, 4, V, 0x1234);
    all[2] = t2;
    int ok = fk_pump(e.loop, all, 3, 3.0, cond_answers, &e);
    ap_buffer_stats_t st = stats(&e);
    printf("  %s: answers %llu, late %llu, timeouts %llu, redispatched %llu; teacher 1 answered "
           "%llu, teacher 2 %llu; ready %d\n",
           slow_first_wins ? "slow teacher answers first" : "re-dispatched teacher answers first",
           (unsigned long long)st.answers, (unsigned long long)st.late_answers,
           (unsigned long long)st.timeouts, (unsigned long long)st.redispatched,
           (unsigned long long)t1->answered, (unsigned long long)t2->answered,
           st.ready[AP_SOURCE_ON_POLICY]);
    AP_CHECK(ok && st.answers == 1 && st.late_answers == 1 && st.timeouts >= 1 &&
                 st.redispatched == 1 && st.ready[AP_SOURCE_ON_POLICY] == 1,
             "late duplicate handling");
    AP_CHECK(t1->answered == 1 && t2->answered == 1, "both teachers answered once");
    check_books(&e, "late");
    fk_destroy(&a), fk_destroy(&t1), fk_destroy(&t2);
    env_close(&e);
}

static void test_late(void) {
    printf("late: first answer wins, the other is dropped and counted\n");
    late_case(0);
    late_case(1);
}

/* ---------------------------------------------------------------- staleness */

static void tweak_stale(ap_config_t *c) {
    c->buffer.max_staleness = 4;
    c->buffer.actor_credit = 8;
    c->batch.size = 4;
}

static int cond_parts(void *arg) {
    fk_t *L = arg;
    return L->n_parts >= 1;
}

static int cond_two_parts(void *arg) {
    fk_t *L = arg;
    return L->n_parts >= 2;
}

static void send_group(fk_t *a, ap_rng_t *r, uint64_t id, ap_version_t v) {
    ap_group_t *g = fk_group(r, id, 4, 4, V, AP_SOURCE_ON_POLICY, v);
    fk_send_group(a, g, 1);
    ap_group_destroy(&g);
}

static void test_stale(void) {
    printf("stale: max_staleness 4, generations\n");
    env_t e;
    env_open(&e, "stale", tweak_stale);
    fk_t *a = fk_new(e.net, e.ep[0], "actor-0", AP_ROLE_ACTOR, HB, NULL);
    fk_t *ds = fk_new(e.net, e.ep[0], "dataset-0", AP_ROLE_ACTOR, HB, NULL);
    fk_t *t = fk_new(e.net, e.ep[1], "teacher-external-0", AP_ROLE_TEACHER, HB, NULL);
    fk_t *L = fk_new(e.net, e.ep[2], "learner-0", AP_ROLE_LEARNER, HB, NULL);
    fk_hello(a, 0, 0, 0, V, 0x1234);
    fk_hello(ds, 0, 0, 0, V, 0x1234);
    fk_hello(t, 0, AP_TEACHER_EXTERNAL, 4, V, 0x1234);
    fk_hello(L, 0, 0, 0, V, 0x1234);
    fk_t *all[] = {a, ds, t, L};
    fk_pump(e.loop, all, 4, 0.2, NULL, NULL);
    ap_rng_t r;
    ap_rng_seed(&r, 4, 4);
    /* the learner is at 1:10: 1:5 is 5 behind (stale), 1:6 is 4 behind (kept) */
    fk_request_batch(L, 1, (ap_version_t){1, 10}, 4, 0);
    fk_pump(e.loop, all, 4, 0.1, NULL, NULL);
    ap_version_t vs[3] = {{1, 5}, {0, 50}, {1, 6}};
    for (int i = 0; i < 3; i++) {
        ap_group_t *g = fk_group(&r, 100 + (uint64_t)i, 4, 4, V, AP_SOURCE_ON_POLICY, vs[i]);
        fk_send_group(a, g, 0);
        ap_group_destroy(&g);
    }
    ap_group_t *dg = fk_group(&r, 200, 4, 4, V, AP_SOURCE_DATASET, (ap_version_t){0, 0});
    fk_send_group(ds, dg, 0);
    ap_group_destroy(&dg);
    AP_CHECK(fk_pump(e.loop, all, 4, 2.0, cond_parts, L), "batch 1 not served");
    ap_buffer_stats_t st = stats(&e);
    AP_CHECK(L->n_parts == 1 && L->parts[0]->n_items == 1 && L->parts[0]->items[0].group->id == 102,
             "batch 1 should hold group 102 (version 1:6)");
    AP_CHECK(st.drops[AP_BUFFER_DROP_STALE] == 1 && st.drops[AP_BUFFER_DROP_OLD_GENERATION] == 1,
             "intake: stale %llu old_generation %llu",
             (unsigned long long)st.drops[AP_BUFFER_DROP_STALE],
             (unsigned long long)st.drops[AP_BUFFER_DROP_OLD_GENERATION]);
    /* a ready group that goes stale when the learner moves on: 103 at 1:10, learner 1:15 */
    send_group(a, &r, 103, (ap_version_t){1, 10});
    fk_pump(e.loop, all, 4, 0.3, NULL, NULL);
    AP_CHECK(stats(&e).ready[AP_SOURCE_ON_POLICY] == 1, "group 103 ready");
    fk_request_batch(L, 2, (ap_version_t){1, 15}, 4, 0);
    fk_pump(e.loop, all, 4, 0.2, NULL, NULL);
    st = stats(&e);
    AP_CHECK(st.drops[AP_BUFFER_DROP_STALE] == 2 && st.ready[AP_SOURCE_ON_POLICY] == 0 &&
                 L->n_parts == 1,
             "ready group gone stale: stale %llu ready %d parts %d",
             (unsigned long long)st.drops[AP_BUFFER_DROP_STALE], st.ready[AP_SOURCE_ON_POLICY],
             L->n_parts);
    send_group(a, &r, 104, (ap_version_t){1, 15}); /* serves request 2 */
    AP_CHECK(fk_pump(e.loop, all, 4, 2.0, cond_two_parts, L), "batch 2 not served");
    /* the learner restarted: generation 2 makes every generation-1 group old, ready or not */
    send_group(a, &r, 105, (ap_version_t){1, 15});
    fk_pump(e.loop, all, 4, 0.3, NULL, NULL);
    AP_CHECK(stats(&e).ready[AP_SOURCE_ON_POLICY] == 1, "group 105 ready");
    fk_request_batch(L, 3, (ap_version_t){2, 0}, 4, 0);
    fk_pump(e.loop, all, 4, 0.2, NULL, NULL);
    send_group(a, &r, 106, (ap_version_t){1, 16}); /* old generation at intake */
    send_group(a, &r, 107, (ap_version_t){2, 0});  /* serves request 3 */
    fk_pump(e.loop, all, 4, 1.0, NULL, NULL);
    st = stats(&e);
    uint64_t served[8];
    int n_served = 0;
    for (int i = 0; i < L->n_parts; i++)
        for (int k = 0; k < L->parts[i]->n_items && n_served < 8; k++)
            served[n_served++] = L->parts[i]->items[k].group->id;
    printf("  stale %llu, old_generation %llu, served %d:",
           (unsigned long long)st.drops[AP_BUFFER_DROP_STALE],
           (unsigned long long)st.drops[AP_BUFFER_DROP_OLD_GENERATION], n_served);
    for (int i = 0; i < n_served; i++)
        printf(" %llu", (unsigned long long)served[i]);
    printf("; dataset held %d (never stale)\n", st.ready[AP_SOURCE_DATASET]);
    AP_CHECK(st.drops[AP_BUFFER_DROP_STALE] == 2 && st.drops[AP_BUFFER_DROP_OLD_GENERATION] == 3,
             "stale %llu (want 2), old_generation %llu (want 3)",
             (unsigned long long)st.drops[AP_BUFFER_DROP_STALE],
             (unsigned long long)st.drops[AP_BUFFER_DROP_OLD_GENERATION]);
    AP_CHECK(n_served == 3 && served[0] == 102 && served[1] == 104 && served[2] == 107,
             "served groups");
    AP_CHECK(st.ready[AP_SOURCE_DATASET] == 1, "the dataset group was dropped");
    AP_CHECK(ap_version_cmp(st.learner_version, (ap_version_t){2, 0}) == 0, "learner version");
    check_books(&e, "stale");
    for (int i = 0; i < 4; i++)
        fk_destroy(&all[i]);
    env_close(&e);
}

/* ---------------------------------------------------------------- flood */

static void tweak_flood(ap_config_t *c) {
    c->buffer.capacity_groups = 16;
    c->buffer.actor_credit = 4;
    c->batch.size = 4;
    c->buffer.max_staleness = 100; /* the memory bound, not the lead bound, is tested here */
    c->learner.prefetch = 16;
}

static void tweak_lead(ap_config_t *c) {
    tweak_flood(c);
    c->buffer.max_staleness = 1;
    c->learner.prefetch = 2; /* lead = min(prefetch + 1, max_staleness + 1) = 2 batches of 1 */
}

typedef struct {
    env_t *e;
    drv_t *d;
    int max_pending, max_held;
} flood_t;

static int flood_step(void *arg) {
    flood_t *f = arg;
    drv_step(f->d);
    ap_buffer_stats_t st = stats(f->e);
    f->max_pending = AP_MAX(f->max_pending, st.pending[AP_SOURCE_ON_POLICY]);
    f->max_held =
        AP_MAX(f->max_held, st.pending[AP_SOURCE_ON_POLICY] + st.ready[AP_SOURCE_ON_POLICY]);
    return 0;
}

static void rogue_flood(env_t *e, fk_t **all, int n, fk_t *rogue, ap_rng_t *r, uint64_t *id,
                        int count) {
    for (int i = 0; i < count; i++) {
        ap_group_t *g = fk_group(r, ++*id, 4, 512, V, AP_SOURCE_ON_POLICY, (ap_version_t){1, 0});
        fk_send_group(rogue, g, 1);
        ap_group_destroy(&g);
        if (i % 50 == 49) fk_pump(e->loop, all, n, 0.001, NULL, NULL);
    }
    fk_pump(e->loop, all, n, 0.5, NULL, NULL);
}

/* Actors are credited only what the learner can use fresh: (max_staleness + 2) batches. */
static void test_lead(void) {
    printf("lead: capacity 16, 4 actors with credit 4, max_staleness 1, prefetch 2, 1 group per batch\n");
    env_t e;
    env_open(&e, "lead", tweak_lead);
    drv_t d = {.e = &e, .n_actors = 4, .max_len = 8, .produce = 1, .version = {1, 0}};
    ap_rng_seed(&d.rng, 6, 6);
    char name[32];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "actor-%d", i);
        d.actors[i] = fk_new(e.net, e.ep[0], name, AP_ROLE_ACTOR, HB, NULL);
        d.actor_G[i] = 4;
        fk_hello(d.actors[i], i, 0, 0, V, 0x1234);
    }
    flood_t fl = {.e = &e, .d = &d};
    fk_pump(e.loop, d.actors, 4, 1.0, flood_step, &fl); /* no teacher: everything stays pending */
    ap_buffer_stats_t st = stats(&e);
    int credit = 0;
    for (int i = 0; i < 4; i++)
        credit += d.actors[i]->credit;
    printf("  pending max %d, now %d, credit out %d (lead 2)\n", fl.max_pending, st.pending[0],
           credit);
    AP_CHECK(fl.max_pending <= 2 && st.pending[0] + credit == 2,
             "actors ran ahead: pending max %d, pending + credit %d, want 2", fl.max_pending,
             st.pending[0] + credit);
    check_books(&e, "lead");
    for (int i = 0; i < 4; i++)
        fk_destroy(&d.actors[i]);
    env_close(&e);
}

static void test_flood(void) {
    printf("flood: capacity 16, 4 actors with credit 4, then an actor ignoring credit\n");
    env_t e;
    env_open(&e, "flood", tweak_flood);
    drv_t d = {.e = &e, .n_actors = 4, .max_len = 8, .produce = 1, .version = {1, 0}};
    ap_rng_seed(&d.rng, 5, 5);
    char name[32];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "actor-%d", i);
        d.actors[i] = fk_new(e.net, e.ep[0], name, AP_ROLE_ACTOR, HB, NULL);
        d.actor_G[i] = 4;
        fk_hello(d.actors[i], i, 0, 0, V, 0x1234);
    }
    fk_t *rogue = fk_new(e.net, e.ep[0], "actor-9", AP_ROLE_ACTOR, HB, NULL);
    fk_hello(rogue, 9, 0, 0, V, 0x1234);
    fk_t *all[8] = {d.actors[0], d.actors[1], d.actors[2], d.actors[3], rogue};
    flood_t fl = {.e = &e, .d = &d};
    fk_pump(e.loop, all, 5, 1.0, flood_step, &fl); /* no teacher: everything stays pending */
    ap_buffer_stats_t st = stats(&e);
    int credit = 0;
    for (int i = 0; i < 4; i++)
        credit += d.actors[i]->credit;
    credit += rogue->credit;
    printf(
        "  honest actors: pending max %d (capacity 16), now %d, credit still out %d, drops %llu\n",
        fl.max_pending, st.pending[0], credit, (unsigned long long)st.drops_total);
    AP_CHECK(fl.max_pending <= 16 && st.pending[0] + credit <= 16 && st.drops_total == 0,
             "credit did not bound the queue");
    AP_CHECK(st.pending[0] + credit == 16, "the queue should be full of pending + credit: %d",
             st.pending[0] + credit);
    check_books(&e, "flood, honest");
    uint64_t id = 1000000;
    rogue_flood(&e, all, 5, rogue, &d.rng, &id, 2000);
    double rss1 = ap_peak_rss_mb();
    st = stats(&e);
    printf("  rogue 2000 groups (16 KB each): pending %d, overflow drops %llu, over_credit %llu, "
           "peak RSS %.1f MB\n",
           st.pending[0], (unsigned long long)st.drops[AP_BUFFER_DROP_OVERFLOW],
           (unsigned long long)st.over_credit, rss1);
    AP_CHECK(st.pending[0] <= 16 && st.drops[AP_BUFFER_DROP_OVERFLOW] >= 1990,
             "overflow: pending %d, drops %llu", st.pending[0],
             (unsigned long long)st.drops[AP_BUFFER_DROP_OVERFLOW]);
    check_books(&e, "flood, rogue");
    rogue_flood(&e, all, 5, rogue, &d.rng, &id, 2000);
    double rss2 = ap_peak_rss_mb();
    printf("  second rogue flood: peak RSS %.1f MB (+%.1f)\n", rss2, rss2 - rss1);
#ifndef __SANITIZE_ADDRESS__ /* ASan keeps freed memory in quarantine: RSS says nothing there */
    AP_CHECK(rss2 - rss1 < 16, "memory grew by %.1f MB under a flood of 32 MB", rss2 - rss1);
#endif
    /* drain: a teacher and a learner take everything that is held */
    fk_t *t = fk_new(e.net, e.ep[1], "teacher-external-0", AP_ROLE_TEACHER, HB, NULL);
    fk_hello(t, 0, AP_TEACHER_EXTERNAL, 8, V, 0x1234);
    d.learner = fk_new(e.net, e.ep[2], "learner-0", AP_ROLE_LEARNER, HB, NULL);
    fk_hello(d.learner, 0, 0, 0, V, 0x1234);
    d.B = 4, d.want_batches = 60, d.prefetch = 4;
    all[5] = t, all[6] = d.learner;
    AP_CHECK(fk_pump(e.loop, all, 7, 10.0, drv_step, &d), "drain: %d of 60 batches", d.complete);
    st = stats(&e);
    int received = 0;
    for (int i = 0; i < d.learner->n_parts; i++)
        received += d.learner->parts[i]->n_items;
    printf("  drained: served %llu groups, learner received %d\n",
           (unsigned long long)st.served_first, received);
    AP_CHECK((uint64_t)received == st.served_first, "served %llu, received %d",
             (unsigned long long)st.served_first, received);
    check_books(&e, "flood, drained");
    for (int i = 0; i < 7; i++)
        fk_destroy(&all[i]);
    env_close(&e);
}

/* ---------------------------------------------------------------- reuse */

static void tweak_reuse_newest(ap_config_t *c) {
    c->buffer.max_reuse = 3;
    c->buffer.actor_credit = 8;
    c->batch.size = 4;
}
static void tweak_reuse_uniform(ap_config_t *c) {
    tweak_reuse_newest(c);
    c->buffer.max_reuse = 2;
    c->buffer.reuse_order = AP_REUSE_UNIFORM;
}

static int reuse_case(int uniform, int n_groups, int max_reuse, uint64_t *order) {
    env_t e;
    env_open(&e, uniform ? "reuse-u" : "reuse-n",
             uniform ? tweak_reuse_uniform : tweak_reuse_newest);
    fk_t *a = fk_new(e.net, e.ep[0], "actor-0", AP_ROLE_ACTOR, HB, NULL);
    fk_t *t = fk_new(e.net, e.ep[1], "teacher-external-0", AP_ROLE_TEACHER, HB, NULL);
    fk_t *L = fk_new(e.net, e.ep[2], "learner-0", AP_ROLE_LEARNER, HB, NULL);
    fk_hello(a, 0, 0, 0, V, 0x1234);
    fk_hello(t, 0, AP_TEACHER_EXTERNAL, 1, V, 0x1234); /* capacity 1: scored in arrival order */
    fk_hello(L, 0, 0, 0, V, 0x1234);
    fk_t *all[] = {a, t, L};
    fk_pump(e.loop, all, 3, 0.2, NULL, NULL);
    ap_rng_t r;
    ap_rng_seed(&r, 6, 6);
    for (int i = 0; i < n_groups; i++) {
        ap_group_t *g =
            fk_group(&r, 1 + (uint64_t)i, 4, 4, V, AP_SOURCE_ON_POLICY, (ap_version_t){1, 0});
        fk_send_group(a, g, 1);
        ap_group_destroy(&g);
        fk_pump(e.loop, all, 3, 0.03, NULL, NULL);
    }
    fk_pump(e.loop, all, 3, 0.2, NULL, NULL);
    int n = 0;
    for (int q = 0; q < n_groups * max_reuse + 1; q++) { /* one request at a time */
        fk_request_batch(L, 1 + (uint64_t)q, (ap_version_t){1, 0}, 4, 0);
        int got = fk_pump(e.loop, all, 3, q < n_groups * max_reuse ? 2.0 : 0.3, cond_parts, L);
        if (got) {
            order[n++] = L->parts[0]->items[0].group->id;
            ap_batch_destroy(&L->parts[0]);
            L->n_parts = 0;
        }
    }
    ap_buffer_stats_t st = stats(&e);
    printf("  %s, max_reuse %d: %d serves:", uniform ? "uniform" : "newest", max_reuse, n);
    for (int i = 0; i < n; i++)
        printf(" %llu", (unsigned long long)order[i]);
    printf("; reuses %llu retired %llu waiting %d\n", (unsigned long long)st.reuses,
           (unsigned long long)st.retired, st.batch_waiting);
    AP_CHECK(n == n_groups * max_reuse && st.batch_waiting == 1, "served %d, want %d then wait", n,
             n_groups * max_reuse);
    AP_CHECK(
        st.reuses == (uint64_t)(n_groups * (max_reuse - 1)) && st.retired == (uint64_t)n_groups,
        "reuses %llu retired %llu", (unsigned long long)st.reuses, (unsigned long long)st.retired);
    check_books(&e, "reuse");
    fk_destroy(&a), fk_destroy(&t), fk_destroy(&L);
    env_close(&e);
    return n;
}

static void test_reuse(void) {
    printf("reuse\n");
    uint64_t order[64];
    int n = reuse_case(0, 3, 3, order);
    uint64_t want[9] = {3, 3, 3, 2, 2, 2, 1, 1, 1};
    AP_CHECK(n == 9 && !memcmp(order, want, sizeof want), "newest-first order");
    n = reuse_case(1, 8, 2, order);
    int counts[9] = {0}, newest = 1;
    for (int i = 0; i < n; i++)
        if (order[i] >= 1 && order[i] <= 8) counts[order[i]]++;
    for (int g = 1; g <= 8; g++)
        AP_CHECK(counts[g] == 2, "uniform: group %d served %d times", g, counts[g]);
    for (int i = 0; i < n && i < 16; i++) /* newest first would be 8 8 7 7 ... */
        newest &= order[i] == (uint64_t)(8 - i / 2);
    AP_CHECK(!newest, "uniform order equals newest-first");
}

/* ---------------------------------------------------------------- sync */

static void tweak_sync(ap_config_t *c) {
    c->run.sync = true;
    c->batch.size = 12;
    c->batch.on_policy_fraction = 0.75; /* B 12: 2 on-policy groups + 4 dataset trajectories */
    c->buffer.actor_credit = 4;
    c->actors.dataset_source = AP_DATASET_TEACHER; /* dataset groups of G = 4 */
}

static fk_t *s_sync_actors[2];
static int cond_credit2(void *arg) {
    (void)arg;
    return s_sync_actors[0]->credit + s_sync_actors[1]->credit == 2;
}

static void test_sync(void) {
    printf("sync: credit only for the batch the learner asked for\n");
    env_t e;
    env_open(&e, "sync", tweak_sync);
    fk_t *a0 = fk_new(e.net, e.ep[0], "actor-0", AP_ROLE_ACTOR, HB, NULL);
    fk_t *a1 = fk_new(e.net, e.ep[0], "actor-1", AP_ROLE_ACTOR, HB, NULL);
    fk_t *ds = fk_new(e.net, e.ep[0], "dataset-0", AP_ROLE_ACTOR, HB, NULL);
    fk_t *t = fk_new(e.net, e.ep[1], "teacher-external-0", AP_ROLE_TEACHER, HB, NULL);
    fk_t *L = fk_new(e.net, e.ep[2], "learner-0", AP_ROLE_LEARNER, HB, NULL);
    fk_hello(a0, 0, 0, 0, V, 0x1234);
    fk_hello(a1, 1, 0, 0, V, 0x1234);
    fk_hello(ds, 0, 0, 0, V, 0x1234);
    fk_hello(t, 0, AP_TEACHER_EXTERNAL, 4, V, 0x1234);
    fk_hello(L, 0, 0, 0, V, 0x1234);
    fk_t *all[] = {a0, a1, t, L, ds};
    fk_pump(e.loop, all, 5, 0.3, NULL, NULL);
    AP_CHECK(a0->credit_msgs >= 1 && a0->credit == 0 && a1->credit == 0 && ds->credit == 0,
             "before any batch request: credit %d, %d, dataset %d (answers %d)", a0->credit,
             a1->credit, ds->credit, a0->credit_msgs);
    fk_request_batch(L, 1, (ap_version_t){1, 3}, 12, 0);
    fk_pump(e.loop, all, 5, 0.3, NULL, NULL);
    printf("  after a request for 12 (2 on-policy groups + 4 dataset trajectories) at 1:3: credit "
           "%d + %d, dataset %d, latest %u:%llu\n",
           a0->credit, a1->credit, ds->credit, a0->latest.gen, (unsigned long long)a0->latest.step);
    AP_CHECK(a0->credit + a1->credit == 2 && ds->credit == 1 && a0->latest.step == 3 &&
                 a1->latest.step == 3,
             "sync grant: %d + %d, dataset %d", a0->credit, a1->credit, ds->credit);
    ap_rng_t r0;
    ap_rng_seed(&r0, 9, 9);
    ap_group_t *dg = fk_group(&r0, 900, 4, 4, V, AP_SOURCE_DATASET, (ap_version_t){0, 0});
    fk_send_group(ds, dg, 0);
    ap_group_destroy(&dg);
    ap_rng_t r;
    ap_rng_seed(&r, 8, 8);
    ap_group_t *old = fk_group(&r, 50, 4, 4, V, AP_SOURCE_ON_POLICY, (ap_version_t){1, 2});
    fk_t *first = a0->credit ? a0 : a1;
    fk_send_group(first, old, 0); /* sampled with 1:2: any older version is stale in sync mode */
    ap_group_destroy(&old);
    s_sync_actors[0] = a0, s_sync_actors[1] = a1;
    AP_CHECK(fk_pump(e.loop, all, 5, 1.0, cond_credit2, NULL), "replacement credit");
    uint64_t id = 60;
    for (int k = 0; k < 2; k++) {
        fk_t *f = a0->credit ? a0 : a1;
        ap_group_t *g = fk_group(&r, id++, 4, 4, V, AP_SOURCE_ON_POLICY, (ap_version_t){1, 3});
        fk_send_group(f, g, 0);
        ap_group_destroy(&g);
        fk_pump(e.loop, all, 5, 0.1, NULL, NULL);
    }
    AP_CHECK(fk_pump(e.loop, all, 5, 2.0, cond_parts, L), "sync batch served");
    ap_buffer_stats_t st = stats(&e);
    printf("  served %llu, stale %llu, credit left %d + %d\n", (unsigned long long)st.served_first,
           (unsigned long long)st.drops[AP_BUFFER_DROP_STALE], a0->credit, a1->credit);
    AP_CHECK(st.served_first == 3 && st.drops[AP_BUFFER_DROP_STALE] == 1 &&
                 a0->credit + a1->credit == 0 && ds->credit == 0,
             "sync serve");
    check_books(&e, "sync");
    for (int i = 0; i < 5; i++)
        fk_destroy(&all[i]);
    env_close(&e);
}

int main(void) {
    ap_log_set_role("test_buffer", 0);
    ap_log_set_level(AP_LOG_WARN);
    test_compose();
    test_killed();
    test_late();
    test_stale();
    test_lead();
    test_flood();
    test_reuse();
    test_sync();
    return ap_test_result();
}
