/* score.c: the teacher's scoring as pure functions (teacher.h): which signals each teacher kind
 * serves, batched scoring of many groups through a KV cache, random valid scores for
 * benchmarks, and the start-up vocabulary check.
 *
 * Scoring one trajectory with prefix p (the prompt, or the self-teacher's privileged context)
 * of P tokens and completion y of L tokens: the input is p ++ y[0 .. L-1) (n = P + L - 1
 * tokens) and logits row P - 1 + t predicts y[t]. The trajectories of every group given go
 * through a KV cache (sampler.h) in passes of up to 64 sequences and max_batch_tokens rows:
 * sorted so that equal prefixes are neighbours, each distinct prefix is computed once per pass
 * and its cache copied to the sequences that share it (the G trajectories of a group share
 * their prompt: for 3-digit addition, 9 prompt tokens and about 4 completion tokens each, a
 * pass computes 5 rows per trajectory instead of 12), then the completions are fed, no padding.
 * Per position, from the logits z [V]:
 *   sampled  = z[y]/tau_s - logsumexp(z/tau_s)
 *   top-K    = the K largest z (descending, ties to the lower id), as z/tau - logsumexp(z/tau)
 *   full     = z/tau - logsumexp(z/tau) for every v
 * with the sums accumulated in double after subtracting the row maximum. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/sampler.h"
#include "apprentice/teacher.h"
#include "apprentice/tokenizer.h"

/* ---------------------------------------------------------------- which signals */

unsigned ap_teacher_kinds_needed(const ap_config_t *cfg) {
    const ap_obj_config_t *o = &cfg->objective;
    unsigned k = 0;
    if (o->gkd.c.enabled || o->opd.c.enabled) k |= 1u << AP_TEACHER_EXTERNAL;
    if (o->opsd.c.enabled || o->srpo.c.enabled) k |= 1u << AP_TEACHER_SELF;
    if (o->grpo.c.enabled && o->grpo.kl_ref > 0) k |= 1u << AP_TEACHER_REFERENCE;
    return k;
}

void ap_teacher_params_for(ap_teacher_params_t *p, const ap_config_t *cfg, ap_teacher_kind_t kind,
                           int vocab_size) {
    memset(p, 0, sizeof *p);
    p->kind = kind;
    p->sampled_temperature = (float)cfg->sampling.temperature;
    p->temperature = 1.0f;
    if (kind == AP_TEACHER_REFERENCE) return; /* sampled-token log-probs only (k3 KL) */
    if (kind == AP_TEACHER_EXTERNAL && cfg->objective.gkd.c.enabled)
        p->temperature = (float)cfg->objective.gkd.tau;
    if (kind == AP_TEACHER_SELF && cfg->objective.opsd.c.enabled)
        p->temperature = (float)cfg->objective.opsd.tau;
    p->full = vocab_size > 0 && vocab_size <= cfg->teacher.full_vocab_max;
    p->top_k = p->full          ? vocab_size
               : vocab_size > 0 ? AP_MIN(cfg->teacher.top_k, vocab_size)
                                : cfg->teacher.top_k;
}

const char *ap_teacher_kind_name(ap_teacher_kind_t kind) {
    static const char *names[AP_TEACHER_COUNT] = {"external", "self", "reference"};
    return (unsigned)kind < AP_TEACHER_COUNT ? names[kind] : NULL;
}

int ap_teacher_kind_parse(const char *name) {
    for (int k = 0; k < AP_TEACHER_COUNT; k++)
        if (name && !strcmp(name, ap_teacher_kind_name((ap_teacher_kind_t)k))) return k;
    return -1;
}

/* ---------------------------------------------------------------- one position */

/* Is (za, ia) ranked after (zb, ib)? Descending value, ties to the lower id first. */
static int s_after(float za, int32_t ia, float zb, int32_t ib) {
    return za < zb || (za == zb && ia > ib);
}

/* The K largest entries of z [V] into ids [K], descending (a min-heap of the best K so far, root
 * = the worst kept; then sorted). */
static void s_topk(int32_t *ids, const float *z, int V, int K) {
    int n = 0;
    for (int32_t v = 0; v < V; v++) {
        if (n < K) { /* sift up */
            int c = n++;
            while (c > 0) {
                int parent = (c - 1) / 2;
                if (!s_after(z[v], v, z[ids[parent]], ids[parent])) break;
                ids[c] = ids[parent];
                c = parent;
            }
            ids[c] = v;
        } else if (s_after(z[ids[0]], ids[0], z[v], v)) { /* better than the worst: replace root */
            int c = 0;
            for (;;) {
                int l = 2 * c + 1, r = l + 1, w = c;
                int32_t wid = v;
                if (l < K && s_after(z[ids[l]], ids[l], z[wid], wid)) w = l, wid = ids[l];
                if (r < K && s_after(z[ids[r]], ids[r], z[wid], wid)) w = r, wid = ids[r];
                if (w == c) break;
                ids[c] = ids[w];
                c = w;
            }
            ids[c] = v;
        }
    }
    /* insertion sort, descending (K is small) */
    for (int i = 1; i < K; i++) {
        int32_t x = ids[i];
        int j = i;
        while (j > 0 && s_after(z[ids[j - 1]], ids[j - 1], z[x], x)) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = x;
    }
}

/* log sum_v exp((z_v - zmax) / tau), in double. */
static double s_log_sum(const float *z, int V, float zmax, double tau) {
    double sum = 0, inv = 1.0 / tau;
    for (int v = 0; v < V; v++)
        sum += exp((double)(z[v] - zmax) * inv);
    return log(sum);
}

/* Signals of one position: logits z [V], sampled token y. */
static void s_position(const float *z, int V, int32_t y, const ap_teacher_params_t *p,
                       float *sampled, int32_t *ids, float *lp, int32_t *scratch_ids) {
    float zmax = z[0];
    for (int v = 1; v < V; v++)
        zmax = z[v] > zmax ? z[v] : zmax;
    double ts = p->sampled_temperature, tau = p->temperature;
    double ls_s = s_log_sum(z, V, zmax, ts);
    *sampled = (float)((double)(z[y] - zmax) / ts - ls_s);
    if (!p->full && p->top_k <= 0) return;
    double ls_t = tau == ts ? ls_s : s_log_sum(z, V, zmax, tau);
    if (p->full) {
        for (int v = 0; v < V; v++)
            lp[v] = (float)((double)(z[v] - zmax) / tau - ls_t);
        return;
    }
    int K = p->top_k;
    int32_t *sel = ids ? ids : scratch_ids;
    s_topk(sel, z, V, K);
    for (int k = 0; k < K; k++)
        lp[k] = (float)((double)(z[sel[k]] - zmax) / tau - ls_t);
}

/* ---------------------------------------------------------------- batched scoring */

enum { S_SLOTS_MAX = 64, S_ROWS = 128 }; /* sequences per pass; logits rows per KV call */

struct ap_teacher_scorer {
    const ap_model_t *m;
    int share; /* 1: equal prefixes are computed once per pass */
    ap_kv_t *kv;
    int kv_len, kv_slots; /* the cache's shape (grown on demand) */
};

ap_teacher_scorer_t *ap_teacher_scorer_new(const ap_model_t *m, int share_prefix) {
    ap_teacher_scorer_t *sc = ap_calloc(1, sizeof *sc);
    sc->m = m;
    sc->share = share_prefix != 0;
    return sc;
}

void ap_teacher_scorer_destroy(ap_teacher_scorer_t **scp) {
    if (!scp || !*scp) return;
    ap_kv_destroy(&(*scp)->kv);
    free(*scp);
    *scp = NULL;
}

/* A cache of at least `len` positions: slots = max_batch_tokens / len (1 to S_SLOTS_MAX), so the
 * cache holds no more positions than one pass may compute. Grows only (re-packing is paid once). */
static int s_reserve(ap_teacher_scorer_t *sc, int len, int max_batch_tokens) {
    int maxpos = ap_model_config(sc->m)->max_positions;
    len = AP_MIN((len + 15) / 16 * 16, maxpos);
    if (sc->kv && sc->kv_len >= len) return 0;
    int slots = AP_MAX(1, AP_MIN(S_SLOTS_MAX, max_batch_tokens / len));
    ap_kv_destroy(&sc->kv);
    if (!(sc->kv = ap_kv_new(sc->m, slots, len))) return -1;
    sc->kv_len = len, sc->kv_slots = slots;
    return 0;
}

typedef struct {
    int j, i;           /* group, trajectory */
    int P, L;           /* prefix and completion lengths */
    const int32_t *pre; /* the prefix */
    int shared;         /* the same prefix as the sequence before it (sorted, share mode) */
} s_seq_t;

/* Equal prefixes next to each other (by length, then tokens), then group and trajectory. */
static int s_cmp_seq(const void *a, const void *b) {
    const s_seq_t *x = a, *y = b;
    if (x->P != y->P) return x->P < y->P ? -1 : 1;
    int c = memcmp(x->pre, y->pre, (size_t)x->P * sizeof *x->pre);
    if (c) return c;
    if (x->j != y->j) return x->j < y->j ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

static int s_same_prefix(const s_seq_t *x, const s_seq_t *y) {
    return x->P == y->P && (x->pre == y->pre || !memcmp(x->pre, y->pre, (size_t)x->P * sizeof *x->pre));
}

/* The prefix of trajectory i of g for kind: the prompt, or the privileged context. */
static const int32_t *s_prefix(const ap_group_t *g, int i, ap_teacher_kind_t kind, int *P) {
    if (kind == AP_TEACHER_SELF) {
        *P = g->ctx_offset[i + 1] - g->ctx_offset[i];
        return g->ctx_tokens + g->ctx_offset[i];
    }
    *P = g->n_prompt;
    return g->prompt;
}

/* What one ap_teacher_score_many call reads and writes. */
typedef struct {
    const ap_group_t *const *groups;
    const ap_teacher_params_t *const *params;
    ap_scores_t **out;
    int32_t *scratch; /* [V]: top-K ids of a signal that keeps none */
    int V;
} s_call_t;

/* Scratch of one pass: rows fed to the cache (slot = the sequence's index in the pass). */
typedef struct {
    int *slot, *row_t; /* [rows]: KV slot, and the completion position a row's logits score */
    int32_t *tok;
    unsigned char *want;
    int *src, *first;     /* [slots]: slot whose prefix a sequence copies; its logits row */
    float *first_lg, *lg; /* [slots, V] last-prefix logits; [S_ROWS, V] */
} s_pass_t;

/* Score position t of sequence q from logits z. */
static void s_score(const s_call_t *c, const s_seq_t *q, int t, const float *z) {
    const ap_group_t *g = c->groups[q->j];
    ap_scores_t *s = c->out[q->j];
    int pos = g->offset[q->i] + t;
    s_position(z, c->V, g->tokens[pos], c->params[q->j], &s->sampled[pos],
               s->ids ? s->ids + (size_t)pos * s->K : NULL, s->logprobs + (size_t)pos * s->K,
               c->scratch);
}

/* Feed the `rows` completion rows gathered in w and score each. 0, or -1 with ap_err. */
static int s_feed(ap_kv_t *kv, s_pass_t *w, int rows, const s_seq_t *seqs, const s_call_t *c) {
    if (ap_kv_forward(kv, w->lg, w->slot, w->tok, NULL, rows) < 0) return -1;
    for (int r = 0; r < rows; r++)
        s_score(c, &seqs[w->slot[r]], w->row_t[r], w->lg + (size_t)r * c->V);
    return 0;
}

/* One pass over seqs[0, n): each distinct prefix prefilled once (logits of its last row: they
 * score completion token 0), copied to the slots of the other sequences that share it, then
 * every sequence's completion[0 .. L-1) fed in slices of S_ROWS rows (row t scores token t + 1).
 * Returns the rows computed, or -1 with ap_err. */
static long s_pass(ap_kv_t *kv, const s_seq_t *seqs, int n, s_pass_t *w, const s_call_t *c) {
    ap_kv_clear(kv);
    int rows = 0, nf = 0;
    for (int k = 0; k < n; k++) {
        if (k > 0 && seqs[k].shared) {
            w->src[k] = w->src[k - 1], w->first[k] = w->first[k - 1];
            continue;
        }
        w->src[k] = k, w->first[k] = nf++;
        for (int t = 0; t < seqs[k].P; t++, rows++)
            w->slot[rows] = k, w->tok[rows] = seqs[k].pre[t], w->want[rows] = t == seqs[k].P - 1;
    }
    if (ap_kv_forward(kv, w->first_lg, w->slot, w->tok, w->want, rows) < 0) return -1;
    long computed = rows;
    for (int k = 0; k < n; k++) {
        if (w->src[k] != k && ap_kv_copy(kv, k, w->src[k]) < 0) return -1;
        s_score(c, &seqs[k], 0, w->first_lg + (size_t)w->first[k] * c->V);
    }
    rows = 0;
    for (int k = 0; k < n; k++) { /* completion rows, fed S_ROWS at a time */
        const ap_group_t *g = c->groups[seqs[k].j];
        for (int t = 0; t < seqs[k].L - 1; t++) {
            w->slot[rows] = k, w->row_t[rows] = t + 1;
            w->tok[rows++] = g->tokens[g->offset[seqs[k].i] + t];
            if (rows < S_ROWS) continue;
            if (s_feed(kv, w, rows, seqs, c) < 0) return -1;
            computed += rows, rows = 0;
        }
    }
    if (rows > 0 && s_feed(kv, w, rows, seqs, c) < 0) return -1;
    return computed + rows;
}

int ap_teacher_score_many(ap_teacher_scorer_t *sc, int n, const ap_group_t *const *groups,
                          const ap_teacher_params_t *const *params, ap_version_t version,
                          int max_batch_tokens, ap_scores_t **out,
                          ap_teacher_score_stats_t *stats) {
    AP_ASSERT(sc && n >= 0 && max_batch_tokens >= 1);
    const ap_model_config_t *mc = ap_model_config(sc->m);
    const int V = mc->vocab_size;
    ap_teacher_score_stats_t st = {0};
    long total = 0;
    for (int j = 0; j < n; j++) {
        const ap_teacher_params_t *p = params[j];
        AP_ASSERT(p->temperature > 0 && p->sampled_temperature > 0);
        AP_ASSERT(!p->full || p->top_k == V || p->top_k == 0);
        AP_ASSERT(p->full || p->top_k <= V);
        const ap_group_t *g = groups[j];
        int K = p->full ? V : AP_MAX(p->top_k, 0);
        out[j] = ap_scores_new(g->G, g->offset, K, p->full, V);
        out[j]->group_id = g->id;
        out[j]->kind = p->kind;
        out[j]->version = version;
        out[j]->temperature = p->temperature;
        total += g->G;
    }
    for (int j = 0; j < n; j++) { /* every id the model or the signals index must be < V */
        const ap_group_t *g = groups[j];
        const int32_t *arr[3] = {g->prompt, g->tokens, g->ctx_tokens};
        const int cnt[3] = {g->n_prompt, g->n_tokens, g->n_ctx};
        for (int a = 0; a < 3; a++)
            for (int i = 0; i < cnt[a]; i++)
                if (arr[a][i] < 0 || arr[a][i] >= V) {
                    for (int k = 0; k < n; k++)
                        ap_scores_destroy(&out[k]);
                    return ap_err("teacher scoring: group %llu: %s[%d] = %d outside [0, %d)",
                                  (unsigned long long)g->id,
                                  a == 0   ? "prompt"
                                  : a == 1 ? "tokens"
                                           : "ctx_tokens",
                                  i, arr[a][i], V);
                }
    }
    s_seq_t *seqs = ap_malloc((size_t)AP_MAX(total, 1) * sizeof *seqs);
    int ns = 0, max_n = 1, max_P = 1;
    for (int j = 0; j < n; j++) {
        const ap_group_t *g = groups[j];
        for (int i = 0; i < g->G; i++) {
            int P, L = g->offset[i + 1] - g->offset[i];
            const int32_t *pre = s_prefix(g, i, params[j]->kind, &P);
            if (P == 0 || P + L - 1 > mc->max_positions) { /* h = 0, or cannot be scored */
                out[j]->present[i] = 0;
                st.skipped++;
                st.too_long += P > 0;
                continue;
            }
            if (L == 0) continue; /* nothing to score */
            seqs[ns++] = (s_seq_t){.j = j, .i = i, .P = P, .L = L, .pre = pre};
            max_n = AP_MAX(max_n, P + L - 1);
            max_P = AP_MAX(max_P, P);
        }
    }
    if (sc->share) {
        qsort(seqs, (size_t)ns, sizeof *seqs, s_cmp_seq);
        for (int k = 1; k < ns; k++)
            seqs[k].shared = s_same_prefix(&seqs[k], &seqs[k - 1]);
    }
    int rc = ns > 0 ? s_reserve(sc, max_n, max_batch_tokens) : 0;
    int S = sc->kv_slots, R = AP_MAX(S * max_P, S_ROWS); /* prefill rows, or a completion slice */
    s_pass_t w = {0};
    if (ns > 0 && rc == 0) {
        w.slot = ap_malloc((size_t)R * sizeof *w.slot);
        w.row_t = ap_malloc((size_t)S_ROWS * sizeof *w.row_t);
        w.tok = ap_malloc((size_t)R * sizeof *w.tok);
        w.want = ap_malloc((size_t)R);
        w.src = ap_malloc((size_t)S * sizeof *w.src);
        w.first = ap_malloc((size_t)S * sizeof *w.first);
        w.first_lg = ap_malloc((size_t)S * V * sizeof *w.first_lg);
        w.lg = ap_malloc((size_t)S_ROWS * V * sizeof *w.lg);
    }
    int32_t *scratch = ap_malloc((size_t)V * sizeof *scratch);
    const s_call_t call = {groups, params, out, scratch, V};
    for (int s0 = 0; s0 < ns && rc == 0;) {
        /* a pass: up to S sequences whose rows (shared prefixes once) fit the budget, at least 1 */
        int B = 0;
        long rows = 0;
        while (s0 + B < ns && B < S) {
            const s_seq_t *q = &seqs[s0 + B];
            long add = q->L - 1 + (B > 0 && q->shared ? 0 : q->P);
            if (B > 0 && rows + add > max_batch_tokens) break;
            rows += add, B++;
        }
        long computed = s_pass(sc->kv, seqs + s0, B, &w, &call);
        if (computed < 0) {
            rc = ap_err("teacher scoring: %s", ap_errmsg());
            break;
        }
        st.passes++;
        st.computed_tokens += computed;
        for (int b = 0; b < B; b++) {
            st.sequences++;
            st.tokens += seqs[s0 + b].L;
            st.input_tokens += seqs[s0 + b].P + seqs[s0 + b].L - 1;
        }
        s0 += B;
    }
    free(w.slot), free(w.row_t), free(w.tok), free(w.want), free(w.src);
    free(w.first), free(w.first_lg), free(w.lg);
    free(scratch), free(seqs);
    if (rc < 0) {
        for (int j = 0; j < n; j++)
            ap_scores_destroy(&out[j]);
        return -1;
    }
    if (stats) {
        stats->sequences += st.sequences, stats->tokens += st.tokens;
        stats->skipped += st.skipped, stats->too_long += st.too_long;
        stats->passes += st.passes, stats->computed_tokens += st.computed_tokens;
        stats->input_tokens += st.input_tokens;
    }
    return 0;
}

ap_scores_t *ap_teacher_score(const ap_model_t *m, const ap_group_t *g, const ap_teacher_params_t *p,
                              ap_version_t version) {
    ap_scores_t *s = NULL;
    const ap_group_t *gs[1] = {g};
    const ap_teacher_params_t *ps[1] = {p};
    ap_teacher_scorer_t *sc = ap_teacher_scorer_new(m, 1);
    int rc = ap_teacher_score_many(sc, 1, gs, ps, version, 4096, &s, NULL);
    ap_teacher_scorer_destroy(&sc);
    return rc == 0 ? s : NULL;
}

/* ---------------------------------------------------------------- simulated scores */

ap_scores_t *ap_teacher_simulate(const ap_group_t *g, const ap_teacher_params_t *p, int vocab_size,
                                 ap_version_t version, ap_rng_t *rng) {
    const int V = vocab_size;
    AP_ASSERT(V >= 1 && (p->full || p->top_k <= V));
    int K = p->full ? V : AP_MAX(p->top_k, 0);
    ap_scores_t *s = ap_scores_new(g->G, g->offset, K, p->full, V);
    s->group_id = g->id;
    s->kind = p->kind;
    s->version = version;
    s->temperature = p->temperature;
    for (int i = 0; i < g->G; i++)
        if (p->kind == AP_TEACHER_SELF && !ap_group_has_ctx(g, i)) s->present[i] = 0;
    const int stride = K > 0 ? AP_MAX(1, V / K) : 1;
    for (int i = 0; i < g->G; i++) {
        if (!s->present[i]) continue; /* absent: positions stay 0 */
        for (int t = g->offset[i]; t < g->offset[i + 1]; t++) {
            s->sampled[t] = -5.0f * (float)ap_rng_uniform(rng);
            float *lp = s->logprobs + (size_t)t * K;
            if (p->full) { /* a random softmax: logits ~ 2 N(0, 1) */
                double mx = -1e30, sum = 0;
                for (int v = 0; v < V; v++) {
                    lp[v] = 2.0f * (float)ap_rng_normal(rng);
                    mx = lp[v] > mx ? lp[v] : mx;
                }
                for (int v = 0; v < V; v++)
                    sum += exp(lp[v] - mx);
                float lse = (float)(mx + log(sum));
                for (int v = 0; v < V; v++)
                    lp[v] = AP_MIN(lp[v] - lse, 0.0f);
            } else if (K > 0) { /* K distinct ids, probabilities 0.2..0.4 halving: sum < 0.8 */
                int32_t *ids = s->ids + (size_t)t * K,
                        base = (int32_t)ap_rng_below(rng, (uint64_t)V);
                float top = logf(0.2f + 0.2f * (float)ap_rng_uniform(rng));
                for (int k = 0; k < K; k++) {
                    ids[k] = (int32_t)((base + (int64_t)k * stride) % V);
                    lp[k] = top - 0.6931472f * (float)k;
                }
            }
        }
    }
    return s;
}

/* ---------------------------------------------------------------- vocabulary */

int ap_teacher_check_vocab(const char *teacher_dir, const char *student_dir, int model_vocab,
                           int *V, uint64_t *hash) {
    ap_tokenizer_t *st = ap_tokenizer_load_dir(student_dir);
    if (!st) return ap_err("student vocabulary: %s", ap_errmsg());
    ap_tokenizer_t *tt = strcmp(teacher_dir, student_dir) ? ap_tokenizer_load_dir(teacher_dir) : st;
    int rc = 0;
    if (!tt) {
        rc = ap_err("teacher vocabulary: %s", ap_errmsg());
    } else if (tt != st && ap_tokenizer_check_same(st, student_dir, tt, teacher_dir) < 0) {
        rc = ap_err("the teacher must share the student's tokenizer: %s", ap_errmsg());
    } else if (model_vocab > 0 && model_vocab != ap_tokenizer_vocab_size(st)) {
        rc = ap_err("the model in %s has vocab_size %d but its vocabulary (%s/%s) has %d tokens",
                    teacher_dir, model_vocab, teacher_dir, AP_VOCAB_FILE,
                    ap_tokenizer_vocab_size(st));
    }
    if (rc == 0) {
        if (V) *V = ap_tokenizer_vocab_size(st);
        if (hash) *hash = ap_tokenizer_hash(st);
    }
    if (tt && tt != st) ap_tokenizer_destroy(&tt);
    ap_tokenizer_destroy(&st);
    return rc;
}
