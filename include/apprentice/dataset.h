/* dataset.h: a user dataset in JSON Lines, and the example record every task produces
 * (docs/TASKS.md, "Datasets").
 *
 * One JSON object per line:
 *   {"prompt": "123+234=", "answer": "357", "solution": "3+4=7 ...", "id": "q17"}
 * prompt (non-empty string) and answer (string) are required; solution (string or null) is
 * optional privileged text for the self-teacher; id (string or integer) is optional and
 * defaults to "FILE:LINE". Other keys are ignored (each unknown key name is logged once per
 * file, so a misspelt "soluton" is noticed). Lines holding only whitespace are skipped and
 * counted (not errors); a UTF-8 byte-order mark at the start of the file is skipped.
 *
 * A bad line (bad JSON, not an object, a missing field, a wrong type, an empty prompt) is an
 * error "FILE:LINE: reason"; with AP_BAD_LINE_SKIP it is skipped instead, counted
 * (ap_dataset_bad_lines) and logged at most a few times. A file with no valid example is an
 * error either way.
 *
 * Usage:
 *   ap_dataset_t *d = ap_dataset_load("data/train.jsonl", AP_BAD_LINE_SKIP);
 *   if (!d) die(ap_errmsg());            // "data/train.jsonl:17: missing "answer""
 *   for (int i = 0; i < ap_dataset_size(d); i++) use(ap_dataset_get(d, i)->prompt);
 *   printf("%ld bad lines skipped\n", ap_dataset_bad_lines(d));
 *   ap_dataset_destroy(&d);
 */
#ifndef APPRENTICE_DATASET_H
#define APPRENTICE_DATASET_H

/* One example: what a task hands out and what templates and verifiers read. */
typedef struct {
    char *prompt;   /* the raw prompt text, e.g. "123+234=" */
    char *answer;   /* the expected answer, e.g. "357" */
    char *solution; /* privileged text (a worked solution), NULL when none */
    char *id;       /* a name for messages: dataset id, "FILE:LINE", or "addition:123+234=" */
} ap_example_t;

/* Free the strings of an example (not the struct) and zero it. Safe on a zeroed example. */
void ap_example_clear(ap_example_t *ex);
/* Deep copy into *dst (which must not own strings). */
void ap_example_copy(ap_example_t *dst, const ap_example_t *src);

enum { AP_BAD_LINE_ERROR = 0, AP_BAD_LINE_SKIP = 1 };
/* "error" / "skip" -> AP_BAD_LINE_*. 0 / -1. */
int ap_dataset_bad_line_parse(const char *name, int *policy);

typedef struct ap_dataset ap_dataset_t;

/* Load a JSON Lines file. NULL + ap_err("FILE:LINE: reason") on the first bad line (policy
 * error) or when the file is unreadable or holds no valid example. */
ap_dataset_t *ap_dataset_load(const char *path, int on_bad_line);
void ap_dataset_destroy(ap_dataset_t **d);

int ap_dataset_size(const ap_dataset_t *d);                       /* valid examples */
const ap_example_t *ap_dataset_get(const ap_dataset_t *d, int i); /* borrowed, 0 <= i < size */
int ap_dataset_line(const ap_dataset_t *d, int i);                /* 1-based line of example i */
const char *ap_dataset_path(const ap_dataset_t *d);
long ap_dataset_bad_lines(const ap_dataset_t *d);   /* lines skipped as bad (policy skip) */
long ap_dataset_blank_lines(const ap_dataset_t *d); /* whitespace-only lines skipped */
/* The message of the first skipped bad line, NULL when none. Borrowed. */
const char *ap_dataset_first_bad(const ap_dataset_t *d);

#endif
