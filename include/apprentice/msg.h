/* msg.h: the messages of the apprentice wire protocol as plain C, and the codec that encodes,
 * validates and decodes them (docs/PROTOCOL.md). The protobuf-c generated code stays behind
 * net/; nothing else sees it.
 *
 * A message is one protobuf frame (an Envelope carrying the protocol version and exactly one
 * body) plus, for WeightsChunk only, one raw frame of bytes. On a ROUTER the routing id comes
 * first (transport.h handles it). Decoding validates everything before the caller sees it:
 * frame count and sizes, protocol version, protobuf-c parse under an allocation budget,
 * unknown fields, known enums, lengths consistent across fields, token ids < V, finite floats
 * where required, log-probs <= 0, sizes within the codec's limits, versions not from the
 * future. A rejected message is counted by reason (ap_msg_stats_t), logged rate-limited, and
 * ap_msg_decode returns -1: the caller drops it and keeps serving.
 *
 * Usage (decode; the codec is one per socket or per service):
 *   ap_msg_limits_t lim; ap_msg_limits_default(&lim); lim.vocab_size = V;
 *   ap_msg_codec_t *c = ap_msg_codec_new(&lim, "buffer/actors");
 *   ap_msg_t m;
 *   if (ap_msg_decode(c, frames, sizes, nframes, &m) == 0) {
 *       if (m.type == AP_MSG_GROUP) { queue_push(q, m.u.group); m.u.group = NULL; }  // steal
 *       ap_msg_clear(&m);                                                         // frees the rest
 *   }
 *   ap_msg_codec_destroy(&c);
 *
 * Usage (encode; pointers in an ap_msg_t being encoded are borrowed, never freed):
 *   ap_msg_t m = {.type = AP_MSG_GROUP, .seq = ++seq, .u.group = g};
 *   uint8_t *buf; size_t len;
 *   if (ap_msg_encode(&m, &buf, &len) < 0) ap_log(AP_LOG_ERROR, "%s", ap_errmsg());
 *   ... send buf ...; free(buf);
 */
#ifndef APPRENTICE_MSG_H
#define APPRENTICE_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "apprentice/traj.h"

#define AP_PROTOCOL_VERSION 1u /* bumped on any incompatible wire change */
#define AP_DIGEST_BYTES 32     /* BLAKE2b-256 (libsodium crypto_generichash) */
#define AP_NAME_MAX 64         /* role / peer names, metric names (bytes incl. NUL) */

typedef enum {
    AP_MSG_NONE = 0,
    /* control */
    AP_MSG_HELLO,     /* a client registers: role, id, capacity (credit it offers), vocab */
    AP_MSG_CREDIT,    /* receiver grants `grant` more messages; acks up to ack_seq */
    AP_MSG_HEARTBEAT, /* liveness; carries the version the sender holds */
    AP_MSG_BYE,       /* the sender is leaving (shutdown): re-queue its work now */
    AP_MSG_RESET,     /* "I do not know you": the peer must send HELLO again */
    /* data */
    AP_MSG_GROUP,         /* actor -> buffer: ap_group_t */
    AP_MSG_SCORE_REQUEST, /* buffer -> teacher: a group to score */
    AP_MSG_SCORES,        /* teacher -> buffer: ap_scores_t (ScoredGroup) */
    AP_MSG_BATCH_REQUEST, /* learner -> buffer */
    AP_MSG_BATCH,         /* buffer -> learner: ap_batch_t */
    /* weights */
    AP_MSG_WEIGHTS_ANNOUNCE, /* learner -> clients: a version exists (PUB hint, manifest reply) */
    AP_MSG_WEIGHTS_REQUEST,  /* client -> learner: manifest of the latest, or one chunk */
    AP_MSG_WEIGHTS_CHUNK,    /* learner -> client: header + raw frame of bytes */
    /* observability */
    AP_MSG_METRICS, /* any role -> launcher/buffer: named values */
    AP_MSG_TYPE_COUNT
} ap_msg_type_t;

typedef enum {
    AP_ROLE_NONE = 0,
    AP_ROLE_ACTOR = 1,
    AP_ROLE_TEACHER = 2,
    AP_ROLE_BUFFER = 3,
    AP_ROLE_LEARNER = 4,
    AP_ROLE_LAUNCHER = 5,
    AP_ROLE_COUNT
} ap_role_t;

typedef struct {
    ap_role_t role;
    int32_t id;             /* actor / teacher index */
    char name[AP_NAME_MAX]; /* free text, e.g. "teacher-external-0" */
    uint32_t capacity;      /* credit the sender offers (teacher: requests it can hold) */
    int32_t vocab_size;     /* V of the sender's model/tokenizer (0 = none) */
    uint64_t vocab_hash;    /* ap_hash64 of the vocabulary (0 = none); mismatch => refuse */
    ap_teacher_kind_t kind; /* teachers: which kind they serve */
} ap_hello_t;

typedef struct {
    uint32_t grant;      /* additional messages the sender of CREDIT will accept */
    uint64_t ack_seq;    /* highest seq received and kept (0 = none) */
    ap_version_t latest; /* newest weights version the sender knows ({0,0} = unknown) */
} ap_credit_t;

typedef struct {
    double time;          /* sender's ap_wall() */
    ap_version_t version; /* weights version the sender holds */
} ap_heartbeat_t;

typedef struct {
    char reason[AP_NAME_MAX]; /* free text: "shutdown", "unknown peer", ... */
} ap_bye_t;                   /* also the body of AP_MSG_RESET */

typedef struct {
    uint64_t request_id;    /* buffer-issued, unique per request */
    uint32_t attempt;       /* 0 first dispatch, +1 per re-dispatch */
    ap_teacher_kind_t kind; /* kind of teacher asked */
    int32_t top_k;          /* K wanted (ignored when full) */
    int full;               /* 1: full distribution wanted (small V) */
    float temperature;      /* distribution temperature wanted */
    ap_group_t *group;      /* the group to score (owned when decoded) */
} ap_score_request_t;

typedef struct {
    uint64_t request_id;
    ap_version_t learner_version; /* the learner's current version (staleness) */
    int32_t trajectories;         /* B: trajectories wanted */
    uint64_t max_bytes;           /* largest Batch part the learner accepts */
} ap_batch_request_t;

typedef struct {
    ap_version_t version;
    uint64_t size;                   /* blob bytes */
    uint8_t digest[AP_DIGEST_BYTES]; /* BLAKE2b-256 of the whole blob */
    uint32_t chunk_size;             /* bytes per chunk (the last may be shorter) */
    uint32_t n_chunks;
} ap_weights_announce_t;

typedef struct {
    int latest;           /* 1: send the manifest (WEIGHTS_ANNOUNCE) of the newest version */
    ap_version_t version; /* else: chunk `chunk` of this version */
    uint32_t chunk;
} ap_weights_request_t;

typedef struct {
    ap_version_t version;
    uint32_t index;      /* chunk index */
    uint64_t offset;     /* byte offset in the blob = index * chunk_size */
    const uint8_t *data; /* [len] borrowed from the raw frame passed to ap_msg_decode */
    size_t len;
} ap_weights_chunk_t;

typedef struct {
    ap_role_t role;
    int32_t id;
    int64_t step;               /* the role's own step / version counter */
    double time;                /* ap_wall() */
    int n;                      /* values */
    char (*names)[AP_NAME_MAX]; /* [n] */
    double *values;             /* [n] finite */
} ap_msg_metrics_t;

ap_msg_metrics_t *ap_msg_metrics_new(int n);
void ap_msg_metrics_destroy(ap_msg_metrics_t **m);

/* A message. Decoded: every pointer is owned by the message (ap_msg_clear frees; set a pointer
 * to NULL to take ownership). Being encoded: pointers are borrowed. */
typedef struct {
    ap_msg_type_t type;
    uint32_t protocol; /* AP_PROTOCOL_VERSION (filled by encode) */
    uint64_t seq;      /* sender's sequence number (acks, de-duplication); 0 = unused */
    union {
        ap_hello_t hello;
        ap_credit_t credit;
        ap_heartbeat_t heartbeat;
        ap_bye_t bye; /* BYE and RESET */
        ap_group_t *group;
        ap_score_request_t score_request;
        ap_scores_t *scores;
        ap_batch_request_t batch_request;
        ap_batch_t *batch;
        ap_weights_announce_t announce;
        ap_weights_request_t weights_request;
        ap_weights_chunk_t chunk;
        ap_msg_metrics_t *metrics;
    } u;
} ap_msg_t;

void ap_msg_clear(ap_msg_t *m); /* frees what a decode left owned; m->type = AP_MSG_NONE */
const char *ap_msg_type_name(ap_msg_type_t t);

/* Limits a decoder enforces; 0 in a size field means "no limit beyond the frame size". */
typedef struct {
    int32_t vocab_size;     /* token ids must be < V; 0 = do not check (no model yet) */
    int32_t max_group;      /* G: trajectories per group (default 64) */
    int32_t max_prompt;     /* prompt tokens (default 4096) */
    int32_t max_tokens;     /* completion tokens per trajectory (default 4096) */
    int32_t max_ctx;        /* privileged-context tokens per trajectory (default 8192) */
    int32_t max_topk;       /* K (default 256) */
    int32_t max_full_vocab; /* largest V of a full distribution (default 4096) */
    int32_t max_items;      /* groups per Batch part (default 4096) */
    int32_t max_metrics;    /* values per Metrics (default 1024) */
    int32_t max_text;       /* bytes of a prompt text / feedback string (default 65536) */
    uint64_t max_frame;     /* largest protobuf frame accepted (default 256 MiB) */
    uint64_t max_raw;       /* largest raw frame accepted (default 16 MiB) */
    double budget_factor;   /* protobuf-c allocation budget = factor * frame bytes + 64 KiB (default
                               8) */
    uint32_t accept;        /* bit mask of (1u << ap_msg_type_t) accepted; 0 = all */
} ap_msg_limits_t;

void ap_msg_limits_default(ap_msg_limits_t *lim);

/* Why a message was refused. */
typedef enum {
    AP_REJECT_FRAMES = 0, /* wrong number of frames for the message */
    AP_REJECT_SIZE,       /* a frame over the limit, or empty */
    AP_REJECT_PARSE,      /* protobuf could not parse it (truncated, random bytes) */
    AP_REJECT_BUDGET,     /* parsing would allocate more than the budget */
    AP_REJECT_PROTOCOL,   /* protocol version mismatch */
    AP_REJECT_TYPE,       /* no body, or a type this codec does not accept */
    AP_REJECT_UNKNOWN,    /* unknown protobuf fields (a newer or foreign sender) */
    AP_REJECT_ENUM,       /* an enum value we do not know */
    AP_REJECT_LENGTH,     /* lengths inconsistent across fields */
    AP_REJECT_LIMIT,      /* a count beyond the codec's limits (G, tokens, K, ...) */
    AP_REJECT_TOKEN,      /* a token id outside [0, V) */
    AP_REJECT_FLOAT,      /* a non-finite float, or a log-prob > 0 */
    AP_REJECT_FUTURE,     /* a version newer than the newest this side knows */
    AP_REJECT_TEXT,       /* a string too long or with an embedded NUL */
    AP_REJECT_REASON_COUNT
} ap_reject_t;

const char *ap_reject_name(ap_reject_t r);

typedef struct {
    uint64_t accepted;                          /* messages decoded */
    uint64_t rejected;                          /* sum of by_reason */
    uint64_t by_reason[AP_REJECT_REASON_COUNT]; /* counts */
} ap_msg_stats_t;

typedef struct ap_msg_codec ap_msg_codec_t;

/* `name` labels log lines ("buffer/actors"). The limits are copied. */
ap_msg_codec_t *ap_msg_codec_new(const ap_msg_limits_t *lim, const char *name);
void ap_msg_codec_destroy(ap_msg_codec_t **c);
/* Newest version this side knows: groups/scores/announces claiming a newer one are rejected
 * (AP_REJECT_FUTURE). {0,0} (the default) disables the check. */
void ap_msg_codec_set_latest(ap_msg_codec_t *c, ap_version_t v);
void ap_msg_codec_set_vocab(ap_msg_codec_t *c, int32_t vocab_size);
const ap_msg_stats_t *ap_msg_codec_stats(const ap_msg_codec_t *c);
/* Reason of the most recent rejection (AP_REJECT_REASON_COUNT before the first). */
ap_reject_t ap_msg_codec_last_reject(const ap_msg_codec_t *c);
const ap_msg_limits_t *ap_msg_codec_limits(const ap_msg_codec_t *c);
/* Count a rejection found by the caller (e.g. the transport saw a bad frame count). */
void ap_msg_codec_reject(ap_msg_codec_t *c, ap_reject_t why, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Decode one message from its frames (routing id already removed): frames[0] the protobuf
 * Envelope, frames[1] the raw bytes of a WEIGHTS_CHUNK. 0 and *out filled (ap_msg_clear it),
 * or -1: rejected, counted, logged (rate-limited), *out is AP_MSG_NONE and owns nothing.
 * For WEIGHTS_CHUNK, out->u.chunk.data points into frames[1]: keep it alive while used. */
int ap_msg_decode(ap_msg_codec_t *c, const void *const *frames, const size_t *sizes, int nframes,
                  ap_msg_t *out);

/* Check a message's semantics against limits (the same rules the decoder applies): 0, or -1
 * with ap_err() naming the field. lim may be NULL (defaults, no vocab check). */
int ap_msg_validate(const ap_msg_t *m, const ap_msg_limits_t *lim);
/* Check that scores fit a group (same id, G and lengths; present only where h = 1 for the
 * self-teacher is NOT required). 0 / -1 with ap_err(). */
int ap_msg_scores_match(const ap_scores_t *s, const ap_group_t *g);

/* Encode m (validated first: -1 with ap_err() if m is malformed) into a new buffer the caller
 * frees. A WEIGHTS_CHUNK's bytes are not included: send them as the raw second frame. */
int ap_msg_encode(const ap_msg_t *m, uint8_t **data, size_t *len);
/* Exact encoded size of m (no validation). */
size_t ap_msg_encoded_size(const ap_msg_t *m);

#endif
