/* actor_link.h: private to actors/: the actor's side of the actor -> buffer conversation
 * (DESIGN.md "Conversations") on its own I/O thread, so credit, RESET and heartbeats are handled
 * while the caller samples.
 *
 *   ap_actor_link_t *l = ap_actor_link_new(net, &opts);   // HELLO sent; thread started
 *   while (...) {
 *       if (ap_actor_link_wait_credit(l, 0.05) != 1) continue;   // a credit not yet used
 *       ap_group_t *g = make();  ap_actor_link_send(l, &g);      // ownership moves
 *   }
 *   ap_actor_link_destroy(&l);                              // BYE, join
 *
 * Credit: CREDIT.grant adds; a GROUP leaves only while credit > 0 and uses one; a RESET sets it
 * to 0 (the restarted buffer grants afresh after the new HELLO; queued groups wait for it).
 * wait_credit() is 1 when credit exceeds the groups already queued, so the caller never makes
 * more groups than it may send. */
#ifndef APPRENTICE_ACTOR_LINK_H
#define APPRENTICE_ACTOR_LINK_H

#include "apprentice/traj.h"
#include "apprentice/transport.h"

typedef struct {
    const char *endpoint;   /* endpoints.buffer_actors */
    const char *server_key; /* CURVE: the buffer's public key (NULL: none) */
    const char *name;       /* "actor-0" */
    int id;
    int32_t vocab_size;
    uint64_t vocab_hash;
    double heartbeat_s; /* buffer.heartbeat_ms / 1000 */
} ap_actor_link_opts_t;

typedef struct {
    long granted; /* credit granted in total */
    long sent;    /* groups sent */
    long acked;   /* highest ack_seq seen */
    long resets;  /* RESETs received */
    long dropped; /* groups that could not be encoded (a bug: logged) */
    long queued;  /* groups waiting for credit or the socket */
    long credit;  /* credit not yet used */
    int silent;   /* 1: nothing from the buffer for 3 heartbeat periods */
} ap_actor_link_stats_t;

typedef struct ap_actor_link ap_actor_link_t;

ap_actor_link_t *ap_actor_link_new(ap_net_t *net,
                                   const ap_actor_link_opts_t *o); /* NULL + ap_err */
void ap_actor_link_destroy(ap_actor_link_t **l);
/* 1 when a credit is available beyond the queued groups (waits up to timeout_s), else 0. */
int ap_actor_link_wait_credit(ap_actor_link_t *l, double timeout_s);
/* Credit available beyond the queued groups now (0 when none): how many groups the caller may
 * make before it sends them. */
int ap_actor_link_available(ap_actor_link_t *l);
/* Queue *g for sending (ownership moves; *g = NULL). Sequence numbers are assigned here. */
void ap_actor_link_send(ap_actor_link_t *l, ap_group_t **g);
/* Newest learner version a CREDIT named ({0,0} before any). */
ap_version_t ap_actor_link_latest(ap_actor_link_t *l);
/* The version the actor holds (sent in heartbeats). */
void ap_actor_link_set_version(ap_actor_link_t *l, ap_version_t v);
void ap_actor_link_stats(ap_actor_link_t *l, ap_actor_link_stats_t *out);

#endif
