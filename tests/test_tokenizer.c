/* test_tokenizer: the character vocabulary: ids and ordering, encode/decode round trips
 * (ASCII and multi-byte UTF-8), flags, unknown characters and invalid UTF-8 refused with the
 * origin and a printable escape, the content hash (equal / mismatch message), vocab.json
 * save/load, and every malformed vocab.json refused naming the file and the field (also run
 * under ASan/UBSan by scripts/test.sh). */
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/tokenizer.h"
#include "test.h"

static const char *s_dir;

static ap_tokenizer_t *s_build(const char *a, const char *b) {
    ap_tokenizer_builder_t *bl = ap_tokenizer_builder_new();
    AP_CHECK(ap_tokenizer_builder_add(bl, a, "a") == 0, "add: %s", ap_errmsg());
    if (b) AP_CHECK(ap_tokenizer_builder_add(bl, b, "b") == 0, "add: %s", ap_errmsg());
    ap_tokenizer_t *t = ap_tokenizer_builder_build(&bl);
    AP_CHECK(t && !bl, "build: %s", ap_errmsg());
    return t;
}

static void s_ids_and_order(void) {
    ap_tokenizer_t *t = s_build("ba+=", "a\n1");
    /* specials 0..2, then '\n' '+' '1' '=' 'a' 'b' by code point */
    const char *want[] = {"<pad>", "<bos>", "<eos>", "\n", "+", "1", "=", "a", "b"};
    AP_CHECK(ap_tokenizer_vocab_size(t) == 9, "V = %d", ap_tokenizer_vocab_size(t));
    for (int i = 0; i < 9; i++)
        AP_CHECK(ap_tokenizer_token(t, i) && !strcmp(ap_tokenizer_token(t, i), want[i]),
                 "token %d is '%s', want '%s'", i, ap_tokenizer_token(t, i), want[i]);
    AP_CHECK(ap_tokenizer_token(t, 9) == NULL && ap_tokenizer_token(t, -1) == NULL, "out of range");
    AP_CHECK(ap_tokenizer_pad(t) == 0 && ap_tokenizer_bos(t) == 1 && ap_tokenizer_eos(t) == 2,
             "special ids");
    AP_CHECK(ap_tokenizer_is_special(t, 2) && !ap_tokenizer_is_special(t, 3), "is_special");
    AP_CHECK(!strcmp(ap_tokenizer_kind(t), "char"), "kind");
    ap_tokenizer_destroy(&t);
    AP_CHECK(t == NULL, "destroy NULLs");
    ap_tokenizer_destroy(&t); /* safe on NULL */

    ap_tokenizer_builder_t *b = ap_tokenizer_builder_new();
    AP_CHECK(ap_tokenizer_builder_build(&b) == NULL && b == NULL, "empty builder refused");
    AP_CHECK(strstr(ap_errmsg(), "no characters") != NULL, "msg: %s", ap_errmsg());
    b = ap_tokenizer_builder_new();
    AP_CHECK(ap_tokenizer_builder_add(b, "ok\xC3(", "bad.txt:3: prompt") < 0,
             "invalid UTF-8 added");
    AP_CHECK(strstr(ap_errmsg(), "bad.txt:3: prompt") && strstr(ap_errmsg(), "byte 2"), "msg: %s",
             ap_errmsg());
    ap_tokenizer_builder_destroy(&b);
}

static void s_round_trip(void) {
    const char *texts[] = {"123+234=", "", "héllo wörld ✓ 🙂\n", "a\tb"};
    ap_tokenizer_t *t = s_build(texts[0], texts[2]);
    ap_tokenizer_builder_t *b = ap_tokenizer_builder_new();
    for (size_t i = 0; i < AP_COUNT(texts); i++)
        ap_tokenizer_builder_add(b, texts[i], "t");
    ap_tokenizer_destroy(&t);
    t = ap_tokenizer_builder_build(&b);
    for (size_t i = 0; i < AP_COUNT(texts); i++) {
        int32_t ids[64];
        int n = ap_tokenizer_encode(t, texts[i], AP_TOK_BOS | AP_TOK_EOS, "t", ids, 64);
        AP_CHECK(n >= 2, "encode '%s': %s", texts[i], ap_errmsg());
        if (n < 2) continue;
        AP_CHECK(ids[0] == 1 && ids[n - 1] == 2, "bos/eos around '%s'", texts[i]);
        char *back = ap_tokenizer_decode(t, ids, n, 0);
        AP_CHECK(back && !strcmp(back, texts[i]), "round trip '%s' -> '%s'", texts[i], back);
        free(back);
        char *sp = ap_tokenizer_decode(t, ids, n, AP_TOK_SPECIALS);
        char *want = ap_sprintf("<bos>%s<eos>", texts[i]);
        AP_CHECK(sp && !strcmp(sp, want), "with specials '%s'", sp);
        free(sp);
        free(want);
        printf("round trip case %zu: %d bytes, %d tokens\n", i, (int)strlen(texts[i]), n);
    }
    /* one token per character: "héllo" is 5 tokens, "🙂" (4 bytes) one */
    AP_CHECK(ap_tokenizer_encode(t, "héllo", 0, "t", NULL, 0) == 5, "é is one token");
    AP_CHECK(ap_tokenizer_encode(t, "🙂", 0, "t", NULL, 0) == 1, "emoji is one token");
    /* snprintf semantics: the full count, only cap written */
    int32_t small[3] = {-7, -7, -7};
    int n = ap_tokenizer_encode(t, "123+234=", AP_TOK_BOS, "t", small, 2);
    AP_CHECK(n == 9 && small[0] == 1 && small[2] == -7, "cap: n %d, small[2] %d", n, small[2]);
    int na;
    int32_t *all = ap_tokenizer_encode_alloc(t, "123", AP_TOK_EOS, "t", &na);
    AP_CHECK(all && na == 4 && all[3] == 2, "encode_alloc");
    free(all);
    /* decode stops at EOS; specials skipped by default */
    int32_t ids[8];
    ap_tokenizer_encode(t, "12", AP_TOK_BOS | AP_TOK_EOS, "t", ids, 8);
    ids[4] = ids[1]; /* junk after EOS */
    char *s = ap_tokenizer_decode(t, ids, 5, AP_TOK_STOP_EOS);
    AP_CHECK(s && !strcmp(s, "12"), "stop at eos: '%s'", s);
    free(s);
    s = ap_tokenizer_decode(t, ids, 5, 0);
    AP_CHECK(s && !strcmp(s, "121"), "no stop: '%s'", s);
    free(s);
    int32_t bad[2] = {3, 99};
    AP_CHECK(ap_tokenizer_decode(t, bad, 2, 0) == NULL, "out-of-range id decoded");
    AP_CHECK(strstr(ap_errmsg(), "99") && strstr(ap_errmsg(), "index 1"), "msg: %s", ap_errmsg());
    int32_t neg[1] = {-1};
    AP_CHECK(ap_tokenizer_decode(t, neg, 1, 0) == NULL, "negative id decoded");
    ap_tokenizer_destroy(&t);
}

static void s_expect_encode_error(const ap_tokenizer_t *t, const char *text, const char *origin,
                                  const char *m1, const char *m2) {
    int32_t ids[32];
    int n = ap_tokenizer_encode(t, text, AP_TOK_BOS, origin, ids, 32);
    AP_CHECK(n == -1, "'%s' encoded (%d)", text, n);
    AP_CHECK(strstr(ap_errmsg(), origin) != NULL, "no origin: %s", ap_errmsg());
    AP_CHECK(strstr(ap_errmsg(), m1) != NULL, "lacks '%s': %s", m1, ap_errmsg());
    if (m2) AP_CHECK(strstr(ap_errmsg(), m2) != NULL, "lacks '%s': %s", m2, ap_errmsg());
    printf("refused encode: %s\n", ap_errmsg());
    int32_t *a;
    int na = -5;
    a = ap_tokenizer_encode_alloc(t, text, 0, origin, &na);
    AP_CHECK(a == NULL, "encode_alloc accepted '%s'", text);
}

static void s_unknown(void) {
    ap_tokenizer_t *t = s_build("0123456789+=", NULL);
    s_expect_encode_error(t, "12x4", "data/train.jsonl:17: prompt", "'x'", "position 3");
    s_expect_encode_error(t, "1\n2", "cli", "'\\n'", "position 2");
    s_expect_encode_error(t, "1\x01", "cli", "'\\x01'", NULL);
    s_expect_encode_error(t, "12é", "heldout.jsonl:2: answer", "U+00E9", "byte 2");
    s_expect_encode_error(t, "1'", "q", "'\\''", NULL);
    s_expect_encode_error(t, "1\xE2\x80\x8B", "zwsp", "U+200B", NULL);
    s_expect_encode_error(t, "1\xFF", "raw", "invalid UTF-8", "byte 1");
    s_expect_encode_error(t, "\xC0\xAF", "overlong", "invalid UTF-8", NULL);
    s_expect_encode_error(t, "\xED\xA0\x80", "surrogate", "invalid UTF-8", NULL);
    s_expect_encode_error(t, "1\xE2\x82", "truncated", "invalid UTF-8", NULL);
    ap_tokenizer_destroy(&t);
}

static void s_hash(void) {
    ap_tokenizer_t *a = s_build("abc", "c"), *b = s_build("cba", NULL), *c = s_build("abd", NULL);
    char ha[17], hb[17];
    AP_CHECK(ap_tokenizer_hash(a) == ap_tokenizer_hash(b), "same chars, same hash: %s %s",
             ap_tokenizer_hash_hex(a, ha), ap_tokenizer_hash_hex(b, hb));
    AP_CHECK(ap_tokenizer_hash(a) != ap_tokenizer_hash(c), "different chars, same hash");
    AP_CHECK(strlen(ap_tokenizer_hash_hex(a, ha)) == 16, "hex length");
    AP_CHECK(ap_tokenizer_check_same(a, "student", b, "teacher") == 0, "equal refused: %s",
             ap_errmsg());
    AP_CHECK(ap_tokenizer_check_same(a, "student (ckpt/s)", c, "teacher (ckpt/t)") < 0,
             "mismatch accepted");
    AP_CHECK(strstr(ap_errmsg(), "student (ckpt/s)") && strstr(ap_errmsg(), "teacher (ckpt/t)") &&
                 strstr(ap_errmsg(), "mismatch"),
             "msg: %s", ap_errmsg());
    printf("refused mismatch: %s\n", ap_errmsg());
    AP_CHECK(ap_tokenizer_check_hash(a, "student", ap_tokenizer_hash(b), "teacher") == 0,
             "hash eq");
    AP_CHECK(ap_tokenizer_check_hash(a, "student", ap_tokenizer_hash(c), "teacher 2") < 0 &&
                 strstr(ap_errmsg(), "teacher 2"),
             "hash mismatch: %s", ap_errmsg());
    ap_tokenizer_destroy(&a);
    ap_tokenizer_destroy(&b);
    ap_tokenizer_destroy(&c);
}

static void s_files(void) {
    ap_tokenizer_t *t = s_build("0123456789+= é\"\\\n\t🙂", NULL);
    char *dir = ap_sprintf("%s/model", s_dir);
    AP_CHECK(ap_tokenizer_save_dir(t, dir) == 0, "save_dir: %s", ap_errmsg());
    ap_tokenizer_t *u = ap_tokenizer_load_dir(dir);
    AP_CHECK(u != NULL, "load_dir: %s", ap_errmsg());
    if (u) {
        AP_CHECK(ap_tokenizer_hash(u) == ap_tokenizer_hash(t), "hash survives save/load");
        AP_CHECK(ap_tokenizer_vocab_size(u) == ap_tokenizer_vocab_size(t), "V survives");
        for (int i = 0; i < ap_tokenizer_vocab_size(t); i++)
            AP_CHECK(!strcmp(ap_tokenizer_token(t, i), ap_tokenizer_token(u, i)), "token %d", i);
        int32_t x[32], y[32];
        int nx = ap_tokenizer_encode(t, "12 é🙂\"", 0, "t", x, 32);
        int ny = ap_tokenizer_encode(u, "12 é🙂\"", 0, "t", y, 32);
        AP_CHECK(nx == ny && nx > 0 && !memcmp(x, y, (size_t)nx * sizeof *x), "same ids");
        printf("vocab.json round trip: V=%d\n", ap_tokenizer_vocab_size(u));
    }
    ap_tokenizer_destroy(&u);
    /* a directory without vocab.json, and one with only an HF tokenizer.json */
    char *empty = ap_sprintf("%s/empty", s_dir);
    ap_mkdirs(empty);
    AP_CHECK(ap_tokenizer_load_dir(empty) == NULL && strstr(ap_errmsg(), "vocab.json"), "empty: %s",
             ap_errmsg());
    char *hf = ap_sprintf("%s/tokenizer.json", empty);
    ap_file_write_atomic(hf, "{}", 2);
    AP_CHECK(ap_tokenizer_load_dir(empty) == NULL && strstr(ap_errmsg(), "not supported"), "hf: %s",
             ap_errmsg());
    free(hf);
    free(empty);
    free(dir);
    ap_tokenizer_destroy(&t);
}

/* Write `text` as a vocab file and expect it refused with `must` in the message. */
static void s_refused(const char *name, const char *text, const char *must) {
    char *path = ap_sprintf("%s/%s.json", s_dir, name);
    ap_file_write_atomic(path, text, strlen(text));
    ap_tokenizer_t *t = ap_tokenizer_load(path);
    AP_CHECK(t == NULL, "%s: accepted", name);
    AP_CHECK(strstr(ap_errmsg(), path) != NULL, "%s: message lacks the path: %s", name,
             ap_errmsg());
    AP_CHECK(strstr(ap_errmsg(), must) != NULL, "%s: message lacks '%s': %s", name, must,
             ap_errmsg());
    printf("refused %-14s %s\n", name, ap_errmsg());
    ap_tokenizer_destroy(&t);
    free(path);
}

static void s_malformed(void) {
    /* a good file to derive the bad ones from */
    ap_tokenizer_t *t = s_build("ab", NULL);
    char hex[17];
    ap_tokenizer_hash_hex(t, hex);
    char *good = ap_sprintf("{\"type\": \"apprentice.char_vocab\", \"version\": 1, \"size\": 5, "
                            "\"specials\": [\"<pad>\", \"<bos>\", \"<eos>\"], \"chars\": [\"a\", "
                            "\"b\"], \"hash\": \"%s\"}",
                            hex);
    char *path = ap_sprintf("%s/good.json", s_dir);
    ap_file_write_atomic(path, good, strlen(good));
    ap_tokenizer_t *g = ap_tokenizer_load(path);
    AP_CHECK(g && ap_tokenizer_hash(g) == ap_tokenizer_hash(t), "hand-written good file: %s",
             ap_errmsg());
    ap_tokenizer_destroy(&g);
    free(path);
    free(good);
#define HEAD "{\"type\": \"apprentice.char_vocab\", \"version\": 1, "
#define SP "\"specials\": [\"<pad>\", \"<bos>\", \"<eos>\"], "
    char *h = ap_sprintf("\"hash\": \"%s\"}", hex);
    char *s;
    s_refused("not-json", "{\"type\": ", "line");
    s_refused("not-object", "[1, 2]", "not a JSON object");
    s_refused("wrong-type", "{\"type\": \"bpe\", \"version\": 1}", "'type'");
    s_refused("wrong-version", "{\"type\": \"apprentice.char_vocab\", \"version\": 2}",
              "'version'");
    s_refused("no-specials", HEAD "\"chars\": [\"a\"]}", "'specials'");
    s_refused("bad-special", HEAD "\"specials\": [\"<pad>\", \"<eos>\", \"<bos>\"]}",
              "specials[1]");
    s_refused("dup-special", HEAD "\"specials\": [\"<pad>\", \"<bos>\", \"<eos>\", \"<pad>\"]}",
              "specials[3]");
    s_refused("num-special", HEAD "\"specials\": [\"<pad>\", \"<bos>\", \"<eos>\", 7]}",
              "specials[3]");
    s_refused("no-chars", HEAD SP "\"size\": 3}", "'chars'");
    s_refused("empty-chars", HEAD SP "\"chars\": []}", "'chars'");
    s_refused("multi-char", HEAD SP "\"chars\": [\"a\", \"bc\"]}", "chars[1]");
    s_refused("empty-char", HEAD SP "\"chars\": [\"\"]}", "chars[0]");
    s_refused("num-char", HEAD SP "\"chars\": [5]}", "chars[0]");
    s_refused("unsorted", HEAD SP "\"chars\": [\"b\", \"a\"]}", "sorted");
    s_refused("duplicate", HEAD SP "\"chars\": [\"a\", \"a\"]}", "chars[1]");
    s_refused("nul-char", HEAD SP "\"chars\": [\"\\u0000\"]}", "");
    s = ap_sprintf(HEAD SP "\"chars\": [\"a\", \"b\"], \"size\": 6, %s", h);
    s_refused("wrong-size", s, "'size'");
    free(s);
    s_refused("no-hash", HEAD SP "\"chars\": [\"a\", \"b\"], \"size\": 5}", "'hash'");
    s = ap_sprintf(HEAD SP "\"chars\": [\"a\", \"c\"], \"size\": 5, %s", h);
    s_refused("edited", s, "does not match");
    free(s);
    s_refused("dup-key", HEAD "\"type\": \"x\"}", "duplicate");
    char *missing = ap_sprintf("%s/nope/vocab.json", s_dir);
    AP_CHECK(ap_tokenizer_load(missing) == NULL && strstr(ap_errmsg(), missing), "missing: %s",
             ap_errmsg());
    free(missing);
    free(h);
    ap_tokenizer_destroy(&t);
}

int main(void) {
    s_dir = ap_test_tmpdir("tokenizer");
    s_dir = ap_strdup(s_dir);
    s_ids_and_order();
    s_round_trip();
    s_unknown();
    s_hash();
    s_files();
    s_malformed();
    free((void *)s_dir);
    return ap_test_result();
}
