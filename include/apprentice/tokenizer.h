/* tokenizer.h: text <-> token ids, behind one opaque type so that a BPE tokenizer (HF
 * tokenizer.json) can be added later without touching any caller (docs/TASKS.md).
 *
 * Today there is one kind, a character-level vocabulary:
 *   id 0 <pad>, 1 <bos>, 2 <eos>   special tokens at fixed ids,
 *   id 3...                        one token per Unicode code point, sorted by code point.
 * It is built once from everything a task can ever show the model (its prompts, answers,
 * solutions, template text, verifier feedback) and written as `vocab.json` into a model
 * directory; the teacher's and the student's cold starts both read it from there. Its
 * content hash identifies it: teacher and student compare hashes and refuse a mismatch.
 *
 * Encoding a character that is not in the vocabulary is an error naming the character (as a
 * printable escape), its position, and where the text came from (the caller's `origin`, e.g.
 * "data/train.jsonl:17: prompt"). Text is UTF-8; invalid UTF-8 is an error too.
 *
 * Usage:
 *   ap_tokenizer_builder_t *b = ap_tokenizer_builder_new();
 *   ap_tokenizer_builder_add(b, "0123456789+=", "addition alphabet");
 *   ap_tokenizer_t *tok = ap_tokenizer_builder_build(&b);      // consumes the builder
 *   ap_tokenizer_save_dir(tok, "ckpt/student");                // ckpt/student/vocab.json
 *
 *   ap_tokenizer_t *t2 = ap_tokenizer_load_dir("ckpt/teacher");
 *   if (!t2 || ap_tokenizer_check_same(tok, "student", t2, "teacher") < 0) die(ap_errmsg());
 *   int32_t ids[64];
 *   int n = ap_tokenizer_encode(tok, "123+234=", AP_TOK_BOS, "cli prompt", ids, 64);
 *   if (n < 0) die(ap_errmsg());                                 // unknown character, named
 *   char *text = ap_tokenizer_decode(tok, ids, n, AP_TOK_STOP_EOS);  // caller frees
 *   ap_tokenizer_destroy(&tok);
 */
#ifndef APPRENTICE_TOKENIZER_H
#define APPRENTICE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct ap_tokenizer ap_tokenizer_t;
typedef struct ap_tokenizer_builder ap_tokenizer_builder_t;

/* The vocabulary file inside a model directory. */
#define AP_VOCAB_FILE "vocab.json"

/* Fixed special ids of the character vocabulary (a BPE kind reports its own through
 * ap_tokenizer_pad/bos/eos; callers use those functions, not these numbers). */
enum { AP_TOK_PAD_ID = 0, AP_TOK_BOS_ID = 1, AP_TOK_EOS_ID = 2 };

/* Flags. Encode: AP_TOK_BOS prepends <bos>, AP_TOK_EOS appends <eos>.
 * Decode: AP_TOK_SPECIALS renders specials as their names ("<eos>"; default: skipped),
 * AP_TOK_STOP_EOS stops at the first <eos> (what the verifier sees of a completion). */
enum {
    AP_TOK_BOS = 1 << 0,
    AP_TOK_EOS = 1 << 1,
    AP_TOK_SPECIALS = 1 << 2,
    AP_TOK_STOP_EOS = 1 << 3,
};

/* ---- building a character vocabulary ---- */

ap_tokenizer_builder_t *ap_tokenizer_builder_new(void);
/* Add every character of `text` (UTF-8). 0 / -1 on invalid UTF-8 (ap_err names `origin`). */
int ap_tokenizer_builder_add(ap_tokenizer_builder_t *b, const char *text, const char *origin);
/* Number of distinct characters added so far. */
int ap_tokenizer_builder_count(const ap_tokenizer_builder_t *b);
/* Make the tokenizer (specials, then the characters sorted by code point) and destroy the
 * builder (NULLs *b). NULL with ap_err set when no character was added. */
ap_tokenizer_t *ap_tokenizer_builder_build(ap_tokenizer_builder_t **b);
void ap_tokenizer_builder_destroy(ap_tokenizer_builder_t **b);

/* ---- files ---- */

/* Load `path` (a vocab.json), checking its format, ordering and stored hash. NULL + ap_err
 * naming the file and the field on any problem. */
ap_tokenizer_t *ap_tokenizer_load(const char *path);
/* Load the tokenizer of a model directory (dir/vocab.json). */
ap_tokenizer_t *ap_tokenizer_load_dir(const char *dir);
/* Write atomically. 0 / -1. */
int ap_tokenizer_save(const ap_tokenizer_t *t, const char *path);
int ap_tokenizer_save_dir(const ap_tokenizer_t *t, const char *dir); /* dir/vocab.json */
void ap_tokenizer_destroy(ap_tokenizer_t **t);

/* ---- identity ---- */

int ap_tokenizer_vocab_size(const ap_tokenizer_t *t);   /* V: every id is in [0, V) */
const char *ap_tokenizer_kind(const ap_tokenizer_t *t); /* "char" */
/* Content hash (kind, every token string in id order). Equal hash = same ids for all text. */
uint64_t ap_tokenizer_hash(const ap_tokenizer_t *t);
/* The hash as 16 lowercase hex digits, into buf (>= 17 bytes); returns buf. */
char *ap_tokenizer_hash_hex(const ap_tokenizer_t *t, char *buf);
/* 0 when a and b have the same hash; -1 with a message naming both sides otherwise
 * ("tokenizer mismatch: student (ckpt/a) 5f3a... V=17, teacher (ckpt/b) 9e21... V=18"). */
int ap_tokenizer_check_same(const ap_tokenizer_t *a, const char *a_name, const ap_tokenizer_t *b,
                            const char *b_name);
/* Same, against a hash received from elsewhere (a peer's announcement). */
int ap_tokenizer_check_hash(const ap_tokenizer_t *t, const char *t_name, uint64_t other_hash,
                            const char *other_name);

int32_t ap_tokenizer_pad(const ap_tokenizer_t *t);
int32_t ap_tokenizer_bos(const ap_tokenizer_t *t);
int32_t ap_tokenizer_eos(const ap_tokenizer_t *t);
int ap_tokenizer_is_special(const ap_tokenizer_t *t, int32_t id);
/* The text of one token ("<eos>" for a special); borrowed; NULL when id is out of range. */
const char *ap_tokenizer_token(const ap_tokenizer_t *t, int32_t id);

/* ---- encode / decode ---- */

/* Encode UTF-8 `text` into at most `cap` ids of `out` (flags AP_TOK_BOS / AP_TOK_EOS).
 * Returns the number of ids the whole text needs (like snprintf: when it exceeds `cap`, only
 * `cap` were written; out may be NULL with cap 0 to measure), or -1 with ap_err naming
 * `origin`, the character and its position. A text of n bytes never needs more than n + 2. */
int ap_tokenizer_encode(const ap_tokenizer_t *t, const char *text, int flags, const char *origin,
                        int32_t *out, int cap);
/* Same into a new array (caller frees); *n gets the count. NULL on error. */
int32_t *ap_tokenizer_encode_alloc(const ap_tokenizer_t *t, const char *text, int flags,
                                   const char *origin, int *n);
/* Decode ids to a new UTF-8 string (caller frees). Specials are skipped unless
 * AP_TOK_SPECIALS; AP_TOK_STOP_EOS stops at the first <eos>. NULL + ap_err for an id outside
 * [0, V) (naming the id and its index). */
char *ap_tokenizer_decode(const ap_tokenizer_t *t, const int32_t *ids, int n, int flags);

/* ---- UTF-8 helpers (shared with templates and verifiers) ---- */

/* Decode the code point at s[*pos] (s NUL-terminated), advance *pos. Returns the code point,
 * 0 at the end of the string, -1 on invalid UTF-8 (overlong, surrogate, > U+10FFFF, bad
 * continuation). */
int32_t ap_utf8_next(const char *s, size_t *pos);
/* Append the UTF-8 encoding of cp (1..4 bytes) to buf; returns the byte count. */
int ap_utf8_put(char *buf, uint32_t cp);
/* A printable escape of one code point for messages: 'a', '\n', '\x01', U+00E9 'é'. */
char *ap_utf8_escape(uint32_t cp, char buf[32]);

#endif
