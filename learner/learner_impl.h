/* learner_impl.h: private to learner/learner*.c: the learner's state, shared by the compute side
 * (learner.c: steps, checkpoints, rollouts, metrics) and the service side (learner_service.c:
 * the I/O thread, the buffer conversation, weight publication). */
#ifndef APPRENTICE_LEARNER_IMPL_H
#define APPRENTICE_LEARNER_IMPL_H

#include <signal.h>
#include <stdatomic.h>

#include "apprentice/learner.h"
#include "apprentice/masks.h"
#include "apprentice/tokenizer.h"

struct ap_learner {
    const ap_config_t *cfg;    /* borrowed */
    char *dir;                 /* run directory, NULL: none */
    char *name;                /* "learner" */
    ap_metrics_t *metrics;     /* borrowed or own_metrics */
    ap_metrics_t *own_metrics; /* a discarding sink when none was given */
    ap_net_t *net;             /* borrowed, NULL: steps only */

    /* model and training */
    ap_model_t *model;
    ap_tokenizer_t *tok;
    ap_obj_t *obj;
    ap_masks_config_t mcfg; /* stabilizers with eos, max_new_tokens, special ids */
    ap_adamw_t opt;
    ap_lr_schedule_t sched;
    ap_rng_t rng;          /* rollout picks; saved in the training state */
    ap_version_t version;  /* (gen, optimizer steps) */
    long resumed_from;     /* checkpoint step resumed, -1 = fresh */
    long last_ckpt;        /* step of the newest checkpoint written or resumed, -1 */
    double elapsed_before; /* seconds of earlier lives (run.max_minutes is for the run) */
    double t_start;        /* ap_now() at ap_learner_new */
    ap_learner_batch_t *lb;
    ap_learner_batch_opts_t bo;
    int need_logp; /* a policy-gradient objective is enabled */
    uint64_t table_hash;

    /* scratch, grown on demand */
    float *comp; /* [micro, T, V] gathered logits, then dlogits in place */
    size_t cap_comp;
    float *logp; /* [N, T] current sampled-token log-probs at tau_s */
    size_t cap_logp;
    int32_t *mb_in; /* [micro, S] packed inputs of one micro-batch */
    size_t cap_mb_in;
    int logp_valid; /* logp holds this batch's values (for rollouts) */

    /* counters of this process (skips also saved in checkpoints) */
    long skipped[AP_LEARNER_SKIP_COUNT];
    long long tokens_total;                       /* completion tokens trained on, all lives */
    long batches;                                 /* batches seen by this process */
    double last_record;                           /* ap_now() of the previous metrics record */
    double busy_acc;                              /* compute seconds since then */
    double wait_acc;                              /* seconds waiting for a batch since then */
    double io_acc;                                /* I/O thread busy seconds since then (service) */
    long io_received, io_resets, io_late, io_bad; /* service: batches, RESETs, parts dropped */
    long io_superseded; /* service: staged versions superseded before publication */
    long io_rejected;                             /* service: messages the codec refused */
    ap_ratelimit_t rl;                            /* skipped-batch warnings */

    /* called before every optimizer update (the service: wait until the weights being published
     * have been copied); -1 aborts the step with an error */
    int (*before_update)(void *data);
    void *before_update_data;

    /* stop requests */
    atomic_int stop;
    const volatile sig_atomic_t *stop_flag;
};

/* learner.c */
int ap_learner_stopping(const ap_learner_t *L);
/* The step without the periodic work: conversion to optimizer and version bump. */
int ap_learner_step_core(ap_learner_t *L, const ap_batch_t *b, ap_learner_step_t *st);
/* Metrics record, rollouts and checkpoint when due, for a step made on b. 0 / -1. */
int ap_learner_after_step(ap_learner_t *L, const ap_batch_t *b, const ap_learner_step_t *st);
/* Training seconds of the run so far (earlier lives included). */
double ap_learner_elapsed(const ap_learner_t *L);

#endif
