/* supervisor.h: start child processes by fork+exec, restart crashed ones with exponential
 * back-off, give up on a child after too many crashes in a window, stop them all on request
 * (SIGTERM, then SIGKILL after a deadline). Driven by libev (ev_child, ev_timer) in the
 * launcher's default loop; the launcher itself holds no ZeroMQ or BLAS state.
 *
 * Usage:
 *   ap_sup_t *s = ap_sup_new(loop, &policy, on_event, ctx);
 *   ap_sup_add(s, "actor-0", argv, "runs/x/logs/actor-0.log", 0);
 *   ap_sup_start(s);
 *   ... ev_run(loop, 0) ...   (on_event reports exits, restarts and give-ups)
 *   ap_sup_stop(s, 15.0);     // SIGTERM all; SIGKILL stragglers after 15 s
 *   ap_sup_destroy(&s);
 */
#ifndef APPRENTICE_SUPERVISOR_H
#define APPRENTICE_SUPERVISOR_H

#include <ev.h>

typedef struct {
    int max_restarts;     /* crashes tolerated within the window ... */
    double window_s;      /* ... before giving up */
    double backoff_s;     /* first restart delay, doubled per crash in the window (cap 30 s) */
} ap_sup_policy_t;

typedef enum {
    AP_SUP_EXITED,     /* exited with status 0 (not restarted) */
    AP_SUP_CRASHED,    /* non-zero exit or signal; a restart is scheduled */
    AP_SUP_RESTARTED,  /* started again */
    AP_SUP_GAVE_UP,    /* too many crashes: not restarted */
    AP_SUP_STOPPED,    /* exited after ap_sup_stop */
} ap_sup_event_t;

typedef struct ap_sup ap_sup_t;
/* `status` is the waitpid status of the exit (0 for AP_SUP_RESTARTED). */
typedef void (*ap_sup_cb)(void *ctx, const char *name, ap_sup_event_t ev, int status);

ap_sup_t *ap_sup_new(struct ev_loop *loop, const ap_sup_policy_t *p, ap_sup_cb cb, void *ctx);
/* argv is copied; argv[0] is the program (an absolute path or found in PATH). Output of the
 * child goes to log_path (appended). `env` (may be NULL) is a NULL-terminated list of
 * "NAME=value" set in the child. */
void ap_sup_add(ap_sup_t *s, const char *name, char *const *argv, const char *log_path,
                char *const *env);
int ap_sup_start(ap_sup_t *s);          /* start every child not running; 0 / -1 */
void ap_sup_stop(ap_sup_t *s, double timeout_s);
/* SIGKILL every running child now (a second interrupt). */
void ap_sup_kill(ap_sup_t *s);
int ap_sup_running(const ap_sup_t *s);  /* children alive */
int ap_sup_stopping(const ap_sup_t *s);
/* Send `sig` to one child by name (tests: kill an actor mid-run). 0 / -1. */
int ap_sup_signal(ap_sup_t *s, const char *name, int sig);
int ap_sup_restarts(const ap_sup_t *s, const char *name);
void ap_sup_destroy(ap_sup_t **s);

/* A readable description of a waitpid status ("exit 1", "signal 11 (Segmentation fault)"). */
const char *ap_sup_describe(int status, char buf[64]);

#endif
