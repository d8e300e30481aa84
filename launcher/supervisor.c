/* supervisor.c: fork+exec children, restart with back-off, give up, stop (supervisor.h). */
#include "launcher/supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "apprentice/base.h"

#define S_MAX_CRASHES 64

typedef struct {
    ap_sup_t *sup;
    char *name;
    char **argv;
    char **env;
    char *log_path;
    pid_t pid;              /* 0: not running */
    ev_child child;         /* exit watcher while running */
    ev_timer restart;       /* pending restart */
    double crashes[S_MAX_CRASHES]; /* times of recent crashes (ring) */
    int ncrash;             /* crashes recorded (ring fill) */
    int restarts;           /* total restarts */
    int gave_up;
} s_child_t;

struct ap_sup {
    struct ev_loop *loop;
    ap_sup_policy_t pol;
    ap_sup_cb cb;
    void *ctx;
    s_child_t **kids;
    int n;
    int stopping;
    ev_timer kill_timer;
};

static char **s_copy_strv(char *const *v) {
    int n = 0;
    while (v && v[n]) n++;
    char **c = ap_calloc((size_t)n + 1, sizeof *c);
    for (int i = 0; i < n; i++) c[i] = ap_strdup(v[i]);
    return c;
}

static void s_free_strv(char **v) {
    for (int i = 0; v && v[i]; i++) free(v[i]);
    free(v);
}

const char *ap_sup_describe(int status, char buf[64]) {
    if (WIFEXITED(status)) snprintf(buf, 64, "exit %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, 64, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else snprintf(buf, 64, "status %d", status);
    return buf;
}

static void s_on_exit(struct ev_loop *loop, ev_child *w, int revents);

static int s_spawn(s_child_t *k) {
    int logfd = open(k->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) return ap_err("%s: %s", k->log_path, strerror(errno));
    /* The child's environment is built before fork: only async-signal-safe calls after it. */
    extern char **environ;
    int nenv = 0, nadd = 0;
    while (environ[nenv]) nenv++;
    while (k->env && k->env[nadd]) nadd++;
    char **envp = ap_calloc((size_t)(nenv + nadd + 1), sizeof *envp);
    int m = 0;
    for (int i = 0; i < nenv; i++) {
        int overridden = 0;
        for (int j = 0; j < nadd && !overridden; j++) {
            size_t klen = strcspn(k->env[j], "=");
            overridden = !strncmp(environ[i], k->env[j], klen) && environ[i][klen] == '=';
        }
        if (!overridden) envp[m++] = environ[i];
    }
    for (int j = 0; j < nadd; j++) envp[m++] = k->env[j];
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        free(envp);
        close(logfd);
        return ap_err("fork %s: %s", k->name, strerror(errno));
    }
    if (pid == 0) { /* child: async-signal-safe calls only until exec */
        setpgid(0, 0); /* terminal signals go to the launcher, which forwards them */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(127); /* the launcher died before prctl */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (int sig = 1; sig < NSIG; sig++) signal(sig, SIG_DFL);
        dup2(logfd, 1);
        dup2(logfd, 2);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, 0);
        execvpe(k->argv[0], k->argv, envp);
        _exit(127);
    }
    free(envp);
    close(logfd);
    k->pid = pid;
    ev_child_init(&k->child, s_on_exit, pid, 0);
    k->child.data = k;
    ev_child_start(k->sup->loop, &k->child);
    return 0;
}

static void s_on_restart(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop, (void)revents;
    s_child_t *k = w->data;
    if (k->sup->stopping || k->pid) return;
    if (s_spawn(k) < 0) {
        ap_log(AP_LOG_ERROR, "restart of %s failed: %s", k->name, ap_errmsg());
        k->gave_up = 1;
        k->sup->cb(k->sup->ctx, k->name, AP_SUP_GAVE_UP, 0);
        return;
    }
    k->restarts++;
    k->sup->cb(k->sup->ctx, k->name, AP_SUP_RESTARTED, 0);
}

static void s_on_exit(struct ev_loop *loop, ev_child *w, int revents) {
    (void)revents;
    s_child_t *k = w->data;
    ap_sup_t *s = k->sup;
    int status = w->rstatus;
    ev_child_stop(loop, w);
    k->pid = 0;
    if (s->stopping) {
        s->cb(s->ctx, k->name, AP_SUP_STOPPED, status);
        if (!ap_sup_running(s)) ev_timer_stop(loop, &s->kill_timer);
        return;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        s->cb(s->ctx, k->name, AP_SUP_EXITED, status);
        return;
    }
    double now = ev_now(loop);
    k->crashes[k->ncrash++ % S_MAX_CRASHES] = now;
    int recent = 0;
    for (int i = 0; i < AP_MIN(k->ncrash, S_MAX_CRASHES); i++)
        recent += now - k->crashes[i] <= s->pol.window_s;
    if (recent > s->pol.max_restarts) {
        k->gave_up = 1;
        s->cb(s->ctx, k->name, AP_SUP_GAVE_UP, status);
        return;
    }
    double delay = s->pol.backoff_s;
    for (int i = 1; i < recent && delay < 30; i++) delay *= 2;
    s->cb(s->ctx, k->name, AP_SUP_CRASHED, status);
    ev_timer_init(&k->restart, s_on_restart, AP_MIN(delay, 30.0), 0);
    k->restart.data = k;
    ev_timer_start(loop, &k->restart);
}

void ap_sup_kill(ap_sup_t *s) {
    for (int i = 0; i < s->n; i++)
        if (s->kids[i]->pid) {
            ap_log(AP_LOG_WARN, "%s: SIGKILL", s->kids[i]->name);
            kill(s->kids[i]->pid, SIGKILL);
        }
}

static void s_on_kill(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop, (void)revents;
    ap_log(AP_LOG_WARN, "children did not stop within the shutdown timeout");
    ap_sup_kill(w->data);
}

ap_sup_t *ap_sup_new(struct ev_loop *loop, const ap_sup_policy_t *p, ap_sup_cb cb, void *ctx) {
    ap_sup_t *s = ap_calloc(1, sizeof *s);
    s->loop = loop;
    s->pol = *p;
    s->cb = cb;
    s->ctx = ctx;
    ev_timer_init(&s->kill_timer, s_on_kill, 1, 0);
    s->kill_timer.data = s;
    return s;
}

void ap_sup_add(ap_sup_t *s, const char *name, char *const *argv, const char *log_path,
                char *const *env) {
    s_child_t *k = ap_calloc(1, sizeof *k);
    k->sup = s;
    k->name = ap_strdup(name);
    k->argv = s_copy_strv(argv);
    k->env = s_copy_strv(env);
    k->log_path = ap_strdup(log_path);
    ev_timer_init(&k->restart, s_on_restart, 0, 0);
    k->restart.data = k;
    s->kids = ap_realloc(s->kids, (size_t)(s->n + 1) * sizeof *s->kids);
    s->kids[s->n++] = k;
}

int ap_sup_start(ap_sup_t *s) {
    for (int i = 0; i < s->n; i++)
        if (!s->kids[i]->pid && !s->kids[i]->gave_up && s_spawn(s->kids[i]) < 0) return -1;
    return 0;
}

void ap_sup_stop(ap_sup_t *s, double timeout_s) {
    if (s->stopping) return;
    s->stopping = 1;
    for (int i = 0; i < s->n; i++) {
        ev_timer_stop(s->loop, &s->kids[i]->restart);
        if (s->kids[i]->pid) kill(s->kids[i]->pid, SIGTERM);
    }
    if (ap_sup_running(s)) {
        ev_timer_set(&s->kill_timer, timeout_s, 0);
        ev_timer_start(s->loop, &s->kill_timer);
    }
}

int ap_sup_running(const ap_sup_t *s) {
    int n = 0;
    for (int i = 0; i < s->n; i++) n += s->kids[i]->pid != 0;
    return n;
}

int ap_sup_stopping(const ap_sup_t *s) { return s->stopping; }

static s_child_t *s_find(const ap_sup_t *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->kids[i]->name, name)) return s->kids[i];
    return NULL;
}

int ap_sup_signal(ap_sup_t *s, const char *name, int sig) {
    s_child_t *k = s_find(s, name);
    if (!k || !k->pid) return ap_err("no running child named %s", name);
    return kill(k->pid, sig) == 0 ? 0 : ap_err("kill %s: %s", name, strerror(errno));
}

int ap_sup_restarts(const ap_sup_t *s, const char *name) {
    s_child_t *k = s_find(s, name);
    return k ? k->restarts : -1;
}

void ap_sup_destroy(ap_sup_t **sp) {
    if (!sp || !*sp) return;
    ap_sup_t *s = *sp;
    ev_timer_stop(s->loop, &s->kill_timer);
    for (int i = 0; i < s->n; i++) {
        s_child_t *k = s->kids[i];
        ev_timer_stop(s->loop, &k->restart);
        if (k->pid) {
            ev_child_stop(s->loop, &k->child);
            kill(k->pid, SIGKILL);
            waitpid(k->pid, NULL, 0);
        }
        free(k->name);
        s_free_strv(k->argv);
        s_free_strv(k->env);
        free(k->log_path);
        free(k);
    }
    free(s->kids);
    free(s);
    *sp = NULL;
}
