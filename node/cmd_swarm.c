// loco swarm: a whole swarm of `loco run` peers on this machine, on 127.0.0.1 — the README's main
// command. It writes one config and one key per peer, starts the peers as child processes, shows
// their progress in one view, and ends with each peer's and the averaged model's validation loss.
//
// DIR (--out, default build/swarm) holds one directory per peer:
//   DIR/peer-K/node.ini      the base config (built-in default, or a copy of -c FILE), then this
//                            peer's own keys, then the --set overrides (later lines win)
//   DIR/peer-K/key, key.pub  its identity (as `loco keygen` makes it; the key is 0600)
//   DIR/peer-K/log           its stderr
//   DIR/peer-K/metrics.jsonl, peers.cache, checkpoints/
// A run without --resume first deletes every DIR/peer-* directory it made before (fresh keys, no
// checkpoints); --resume keeps keys, checkpoints and metrics, so each peer continues where it
// stopped. Ports are found by binding port 0 on 127.0.0.1 (all N held at once, so they differ) and
// closing it just before the peers start: another program could take one in between, and that peer
// would then fail to bind and be reported.
//
// Peers 0 and 1 are the seeds of all the others. Each peer gets [train] threads = max(1, cores / N).
// The peers run in their own process group (a terminal's Ctrl-C reaches only the launcher), and die
// with the launcher (PR_SET_PDEATHSIG: a killed launcher leaves no orphans training). On Ctrl-C or
// SIGTERM the launcher sends SIGTERM to every peer — each writes a checkpoint and leaves the swarm —
// waits up to SWARM_STOP_S seconds, then SIGKILLs stragglers; a second Ctrl-C kills at once.
//
// Exit status: 0 when every peer ran its steps and exited 0; 130 when stopped by a signal and every
// peer stopped cleanly (resume with --resume); 1 when a peer failed (its log's last lines are
// printed); 2 for usage and config errors.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "model/data.h"
#include "net/identity.h"
#include "node/checkpoint.h"
#include "node/cli.h"
#include "node/log.h"
#include "node/metrics.h"
#include "node/trainer.h"

#define SWARM_MAX_PEERS 64
#define SWARM_DEFAULT_PEERS 4
#define SWARM_DEFAULT_OUT "build/swarm"
#define SWARM_DEFAULT_DATA "build/data/fortunes"
#define SWARM_FORTUNES "/usr/share/games/fortunes"
#define SWARM_STOP_S 20.0     // how long stopped peers may take to checkpoint and leave
#define SWARM_PLAIN_EVERY 10.0 // seconds between progress lines when stderr is not a terminal

// The built-in base config (no -c): the README's demo swarm, NoLoCo over four peers sharing two
// cores. 0.84M parameters; 600 steps of 8 × 128 bytes per peer take about three minutes on two
// cores. Entries are section.key=value so they can be applied with config_set and written as INI.
static const char *s_default_config[] = {
    "run.name=swarm",
    "model.layers=4", "model.d_model=128", "model.heads=4", "model.seq_len=128", "model.vocab=256",
    "train.data=" SWARM_DEFAULT_DATA,
    "train.batch=8", "train.steps=600", "train.lr=3e-3", "train.lr_min=3e-4", "train.warmup=50",
    "train.seed=1337", "train.checkpoint_every=200", "train.checkpoint_keep=2",
    "train.eval_every=100", "train.eval_batches=20",
    "gossip.period_ms=500", "gossip.sync_interval_ms=2000",
    "outer.algorithm=noloco", "outer.inner_steps=50", "outer.lr=0.7", "outer.momentum=-1",
    "outer.group_size=2", "outer.codec=int8", "outer.error_feedback=on", "outer.deadline_ms=0",
};
#define SWARM_NDEFAULTS ((int)(sizeof s_default_config / sizeof s_default_config[0]))

// What the launcher knows of one peer: its files, its process and the latest metrics.
typedef struct {
    char dir[CONFIG_PATH_MAX], ini[CONFIG_PATH_MAX + 16], log[CONFIG_PATH_MAX + 16];
    char metrics[CONFIG_PATH_MAX + 16], ckpt[CONFIG_PATH_MAX + 16];
    char id[NET_ID_HEX];
    int port;
    pid_t pid;             // 0 once reaped
    int status;            // waitpid status once reaped
    int reaped;
    long moff;             // bytes of metrics.jsonl consumed
    long long step;        // inner steps; -1 = none seen
    long long outer;       // outer steps completed: the last outer record's round + 1 (0-based t)
    double loss, val_loss; // < 0 = none seen
    double sent, util;     // from outer records; < 0 = none
    double busy_s, elapsed_s; // step records of the latest process: seconds in steps, since start
} peer_t;

// ---------------------------------------------------------------------------------------------
// Files and directories

// buf = dir/name. 0, or -1 when it does not fit.
static int s_path(char *buf, size_t len, const char *dir, const char *name) {
    int n = snprintf(buf, len, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

static int s_mkdirs(const char *path, char *err, size_t errlen) {
    char buf[CONFIG_PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                snprintf(err, errlen, "%s: cannot create: %s", buf, strerror(errno));
                return -1;
            }
            *p = c;
            if (!c) break;
        }
    }
    return 0;
}

static int s_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

// Deletes DIR/peer-<digits> directories left by an earlier swarm. A peer-K directory that holds
// neither a node.ini nor a key is not ours: refused rather than deleted.
static int s_wipe_peers(const char *out, char *err, size_t errlen) {
    DIR *d = opendir(out);
    if (!d) return 0;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        const char *p = e->d_name;
        if (strncmp(p, "peer-", 5) != 0 || !p[5] || strspn(p + 5, "0123456789") != strlen(p + 5)) continue;
        char path[CONFIG_PATH_MAX + 300], probe[CONFIG_PATH_MAX + 320], probe2[CONFIG_PATH_MAX + 320];
        if (s_path(path, sizeof path, out, p) || s_path(probe, sizeof probe, path, "node.ini") ||
            s_path(probe2, sizeof probe2, path, "key")) {
            snprintf(err, errlen, "%s: path too long", out);
            rc = -1;
        } else if (access(probe, F_OK) != 0 && access(probe2, F_OK) != 0) {
            snprintf(err, errlen, "%s is not a swarm peer directory (no node.ini, no key): remove it or choose "
                     "another --out", path);
            rc = -1;
        } else if (nftw(path, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
            snprintf(err, errlen, "%s: cannot remove: %s", path, strerror(errno));
            rc = -1;
        }
    }
    closedir(d);
    return rc;
}

// Copies the text of a file to f. 0 or -1.
static int s_copy_text(FILE *f, const char *path, char *err, size_t errlen) {
    FILE *in = fopen(path, "r");
    if (!in) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char buf[8192];
    size_t n, last = '\n';
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        fwrite(buf, 1, n, f);
        last = (unsigned char)buf[n - 1];
    }
    if (last != '\n') fputc('\n', f);
    fclose(in);
    return 0;
}

// Writes "[section]\nkey = value\n" for an assignment "section.key=value".
static void s_write_assignment(FILE *f, const char *a) {
    const char *dot = strchr(a, '.'), *eq = strchr(a, '=');
    if (!dot || !eq || dot > eq) return; // config_set refused it already
    fprintf(f, "[%.*s]\n%.*s = %s\n", (int)(dot - a), a, (int)(eq - dot - 1), dot + 1, eq + 1);
}

// A free TCP port on 127.0.0.1: binds port 0 and leaves the socket open in *fd (closed by the
// caller once every port is chosen, so that no two peers get the same one). 0 or -1.
static int s_free_port(int *port, int *fd, char *err, size_t errlen) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*fd < 0 || bind(*fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(*fd, (struct sockaddr *)&a, &len) != 0) {
        snprintf(err, errlen, "cannot find a free port on 127.0.0.1: %s", strerror(errno));
        if (*fd >= 0) close(*fd);
        *fd = -1;
        return -1;
    }
    *port = ntohs(a.sin_port);
    return 0;
}

// The peer's identity: kept on --resume when DIR/peer-K/key exists, else made as `loco keygen` does.
static int s_peer_key(peer_t *p, int resume, char *err, size_t errlen) {
    char key[CONFIG_PATH_MAX + 16];
    if (s_path(key, sizeof key, p->dir, "key") != 0) {
        snprintf(err, errlen, "peer directory: path too long");
        return -1;
    }
    net_identity_t id;
    int rc;
    if (resume && access(key, F_OK) == 0) {
        rc = net_identity_load(&id, key, err, errlen);
    } else if (net_identity_generate(&id) != 0) {
        snprintf(err, errlen, "libsodium failed to initialise");
        return -1;
    } else {
        rc = net_identity_save(&id, key, err, errlen);
    }
    if (rc == 0) net_id_to_hex(id.pk, p->id);
    net_identity_wipe(&id);
    return rc;
}

static int s_cores(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

// ---------------------------------------------------------------------------------------------
// Metrics: the fields the view needs, read defensively (a missing field leaves the old value).

static int s_json_num(const char *line, const char *key, double *v) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p) return -1;
    char *end;
    double x = strtod(p + strlen(pat), &end);
    if (end == p + strlen(pat)) return -1;
    *v = x;
    return 0;
}

static void s_metrics_line(peer_t *p, const char *line, double tok_per_step) {
    double v;
    if (strstr(line, "\"kind\":\"step\"")) { // other kinds' step may be 0 (member records)
        if (s_json_num(line, "step", &v) == 0) p->step = (long long)v;
        if (s_json_num(line, "loss", &v) == 0) p->loss = v;
        double tps, el;
        if (s_json_num(line, "tokens_per_s", &tps) == 0 && tps > 0 && s_json_num(line, "elapsed_s", &el) == 0) {
            if (el < p->elapsed_s) p->busy_s = 0; // a new process (a resumed run): count its steps only
            p->busy_s += tok_per_step / tps;
            p->elapsed_s = el;
        }
    } else if (strstr(line, "\"kind\":\"eval\"")) {
        if (s_json_num(line, "val_loss", &v) == 0) p->val_loss = v;
    } else if (strstr(line, "\"kind\":\"outer\"")) {
        if (s_json_num(line, "round", &v) == 0) p->outer = (long long)v + 1;
        if (s_json_num(line, "total_bytes_sent", &v) == 0) p->sent = v;
        if (s_json_num(line, "utilisation", &v) == 0) p->util = v;
    }
}

// Reads the complete lines appended to the peer's metrics file since the last call.
static void s_metrics_tail(peer_t *p, double tok_per_step) {
    FILE *f = fopen(p->metrics, "r");
    if (!f) return;
    if (fseek(f, p->moff, SEEK_SET) == 0) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while ((n = getline(&line, &cap, f)) > 0) {
            if (line[n - 1] != '\n') break; // a line being written: read it whole next time
            p->moff += n;
            s_metrics_line(p, line, tok_per_step);
        }
        free(line);
    }
    fclose(f);
}

// Compute utilisation: the outer records' figure when the run loop writes one, else the share of
// the latest process's training time spent in inner steps, from its step records.
static double s_util(const peer_t *p) {
    if (p->util >= 0) return p->util;
    if (p->elapsed_s <= 0) return -1;
    // elapsed_s is rounded to milliseconds: a short run of short steps can add up to just over 1.
    return p->busy_s < p->elapsed_s ? p->busy_s / p->elapsed_s : 1;
}

static void s_fmt_bytes(char *buf, size_t len, double b) {
    if (b < 0) snprintf(buf, len, "-");
    else if (b < 1024) snprintf(buf, len, "%.0f B", b);
    else if (b < 1024.0 * 1024) snprintf(buf, len, "%.1f KiB", b / 1024);
    else if (b < 1024.0 * 1024 * 1024) snprintf(buf, len, "%.1f MiB", b / (1024.0 * 1024));
    else snprintf(buf, len, "%.2f GiB", b / (1024.0 * 1024 * 1024));
}

static void s_fmt_num(char *buf, size_t len, const char *fmt, double v) {
    if (v < 0) snprintf(buf, len, "-");
    else snprintf(buf, len, fmt, v);
}

static void s_fmt_time(char *buf, size_t len, double s) {
    if (s < 60) snprintf(buf, len, "%.1fs", s);
    else if (s < 3600) snprintf(buf, len, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else snprintf(buf, len, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
}

static const char *s_state(const peer_t *p, char *buf, size_t len) {
    if (!p->reaped) return "running";
    if (WIFEXITED(p->status)) {
        if (WEXITSTATUS(p->status) == 0) return "done";
        snprintf(buf, len, "exit %d", WEXITSTATUS(p->status));
    } else {
        snprintf(buf, len, "signal %d", WTERMSIG(p->status));
    }
    return buf;
}

// One row of the view: "peer  id  step  loss  val  outer  sent  state".
static void s_row(const peer_t *p, int k, long long steps, char *buf, size_t len) {
    char step[48], loss[16], val[16], round[24], sent[24], st[24];
    if (p->step < 0) snprintf(step, sizeof step, "-/%lld", steps);
    else snprintf(step, sizeof step, "%lld/%lld", p->step, steps);
    s_fmt_num(loss, sizeof loss, "%.4f", p->loss);
    s_fmt_num(val, sizeof val, "%.4f", p->val_loss);
    if (p->outer < 0) snprintf(round, sizeof round, "-");
    else snprintf(round, sizeof round, "%lld", p->outer);
    s_fmt_bytes(sent, sizeof sent, p->sent);
    snprintf(buf, len, "%-4d %.16s %13s %8s %8s %6s %10s  %s", k, p->id, step, loss, val, round, sent,
             s_state(p, st, sizeof st));
}

#define SWARM_HEADER "peer id                        step     loss      val  outer       sent  state"

// ---------------------------------------------------------------------------------------------
// The peers' processes

// Forks and execs `loco run -c DIR/peer-K/node.ini`. The child leaves with _exit (not exit: the
// launcher's stdio buffers and atexit handlers belong to the launcher). Returns the pid or -1.
static pid_t s_spawn(const peer_t *p, int resume) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) return pid; // the launcher (or -1)
    // Child: own process group, dies with the launcher, stdin from /dev/null, stdout+stderr to log.
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND | (resume ? 0 : O_TRUNC), 0644);
    int in = open("/dev/null", O_RDONLY);
    if (fd < 0 || in < 0 || dup2(in, STDIN_FILENO) < 0 || dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0)
        _exit(127);
    signal(SIGPIPE, SIG_DFL);
    char *argv[] = {"loco", "run", "-c", (char *)p->ini, NULL};
    execv("/proc/self/exe", argv); // this very binary, even if build/loco was rebuilt meanwhile
    fprintf(stderr, "loco swarm: cannot start /proc/self/exe: %s\n", strerror(errno));
    _exit(127);
}

// Prints the last `lines` lines of a peer's log, indented.
static void s_log_tail(const char *path, int lines) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "    (no log at %s)\n", path);
        return;
    }
    char buf[4096];
    fseek(f, 0, SEEK_END);
    long size = ftell(f), from = size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0;
    fseek(f, from, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && buf[n - 1] == '\n') buf[--n] = '\0';
    const char *start = buf;
    int seen = 0;
    for (size_t i = n; i > 0; i--)
        if (buf[i - 1] == '\n' && ++seen == lines) {
            start = buf + i;
            break;
        }
    if (seen < lines && from > 0) { // cut mid-line: skip the partial first line
        const char *nl = strchr(buf, '\n');
        if (nl) start = nl + 1;
    }
    for (const char *s = start; *s;) {
        const char *nl = strchr(s, '\n');
        int len = nl ? (int)(nl - s) : (int)strlen(s);
        fprintf(stderr, "    %.*s\n", len, s);
        s += len + (nl ? 1 : 0);
    }
}

// The live view. On a terminal a block of N + 1 lines redrawn in place; otherwise log lines every
// SWARM_PLAIN_EVERY seconds. view_lines is how many lines the block now occupies (0 = none drawn).
typedef struct {
    int tty, lines;
    double last_plain;
} view_t;

// Clears the drawn block, so that an event line can be printed and the block redrawn below it.
static void s_view_clear(view_t *v) {
    if (v->tty && v->lines > 0) fprintf(stderr, "\033[%dA\r\033[J", v->lines);
    v->lines = 0;
}

static void s_view_draw(view_t *v, const peer_t *peers, int n, long long steps, double elapsed, int stopping, int force) {
    char row[256], t[32];
    s_fmt_time(t, sizeof t, elapsed);
    if (v->tty) {
        if (v->lines > 0) fprintf(stderr, "\033[%dA", v->lines);
        fprintf(stderr, "\r\033[Kloco swarm: %d peers · %s%s\n\r\033[K" SWARM_HEADER "\n", n, t,
                stopping ? " · stopping (Ctrl-C again to kill)" : "");
        for (int k = 0; k < n; k++) {
            s_row(&peers[k], k, steps, row, sizeof row);
            fprintf(stderr, "\r\033[K%s\n", row);
        }
        v->lines = n + 2;
        fflush(stderr);
    } else if (force || elapsed - v->last_plain >= SWARM_PLAIN_EVERY) {
        v->last_plain = elapsed;
        log_info("swarm", "%s elapsed%s", t, stopping ? ", stopping" : "");
        log_info("swarm", "%s", SWARM_HEADER);
        for (int k = 0; k < n; k++) {
            s_row(&peers[k], k, steps, row, sizeof row);
            log_info("swarm", "%s", row);
        }
    }
}

// Reaps the peers that exited; reports a failure (with its log's end) unless the swarm is stopping
// and the peer died of the stop itself. Returns how many are still running.
static int s_reap(peer_t *peers, int n, view_t *v, int stopping) {
    int alive = 0;
    for (int k = 0; k < n; k++) {
        peer_t *p = &peers[k];
        if (p->reaped) continue;
        pid_t r = waitpid(p->pid, &p->status, WNOHANG);
        if (r == 0 || (r < 0 && errno == EINTR)) {
            alive++;
            continue;
        }
        p->reaped = 1;
        if (r < 0) p->status = 1 << 8; // cannot happen for our own child; count it as a failure
        int clean = WIFEXITED(p->status) && WEXITSTATUS(p->status) == 0;
        if (!clean && !(stopping && WIFSIGNALED(p->status) && WTERMSIG(p->status) == SIGKILL)) {
            char st[24];
            s_view_clear(v);
            log_error("swarm", "peer %d (%.16s) stopped with %s; the end of %s:", k, p->id,
                      s_state(p, st, sizeof st), p->log);
            s_log_tail(p->log, 15);
        }
    }
    return alive;
}

static void s_signal_all(peer_t *peers, int n, int sig) {
    for (int k = 0; k < n; k++)
        if (!peers[k].reaped && peers[k].pid > 0) kill(peers[k].pid, sig);
}

// ---------------------------------------------------------------------------------------------
// The final summary: validation loss of each peer's newest checkpoint and of their mean.

// Validation loss of the given weights, on a trainer made on first use. -1 when there is no
// validation window; -2 on an error (printed).
static double s_eval(trainer_t **t, const loco_config_t *base, const gpt_config_t *mc, const float *w) {
    char err[1536];
    if (!*t) {
        loco_config_t cfg = *base;
        cfg.model = *mc;
        cfg.threads = s_cores();
        *t = trainer_new(&cfg, TRAINER_VAL_DATA | TRAINER_VAL_OPTIONAL, 0, err, sizeof err);
        if (!*t) {
            log_error("swarm", "cannot evaluate: %s", err);
            return -2;
        }
    }
    if (memcmp(&(*t)->cfg.model, mc, sizeof *mc) != 0) {
        log_error("swarm", "a checkpoint's model differs from the others'");
        return -2;
    }
    memcpy((*t)->model->params, w, (*t)->model->num_params * sizeof(float));
    if (trainer_sync(*t, 1, err, sizeof err) != 0) {
        log_error("swarm", "cannot evaluate: %s", err);
        return -2;
    }
    return trainer_eval(*t, base->eval_batches);
}

// 1 when the newest checkpoint in dir holds an anchor φ, 0 if not, -1 if there is none.
static int s_has_anchor(const char *dir) {
    char path[1200], err[512];
    ckpt_t c;
    size_t len;
    if (ckpt_resolve(dir, path, sizeof path, err, sizeof err) != 0 || ckpt_load(&c, path, err, sizeof err) != 0) return -1;
    int yes = ckpt_get(&c, "anchor", &len) != NULL;
    ckpt_free(&c);
    return yes;
}

static int s_summary(peer_t *peers, int n, const char *dir, const loco_config_t *cfg, double wall, int stopped) {
    char err[1536], t[32];
    const char *cks[SWARM_MAX_PEERS];
    int nck = 0, anchors = 0, rc = 0;
    trainer_t *tr = NULL;
    double vals[SWARM_MAX_PEERS];
    for (int k = 0; k < n; k++) {
        vals[k] = -3; // no checkpoint
        int a = s_has_anchor(peers[k].ckpt);
        if (a < 0) continue;
        anchors += a;
        gpt_config_t mc;
        float *w;
        const char *one = peers[k].ckpt;
        if (cli_mean_weights(&one, 1, NULL, &mc, &w, err, sizeof err) != 0) {
            log_error("swarm", "peer %d: %s", k, err);
            rc = 1;
            continue;
        }
        vals[k] = s_eval(&tr, cfg, &mc, w);
        free(w);
        cks[nck++] = peers[k].ckpt;
    }
    double mean_val = -3;
    if (nck > 0) {
        gpt_config_t mc;
        float *w;
        if (cli_mean_weights(cks, nck, NULL, &mc, &w, err, sizeof err) != 0) {
            log_error("swarm", "the averaged model: %s", err);
            rc = 1;
        } else {
            mean_val = s_eval(&tr, cfg, &mc, w);
            free(w);
        }
    }
    trainer_destroy(&tr);

    s_fmt_time(t, sizeof t, wall);
    printf("\nloco swarm: %d peers, %s%s\n", n, t, stopped ? " (stopped before the end: continue with --resume)" : "");
    if (nck == 0) printf("no peer wrote a checkpoint: nothing to evaluate\n");
    else printf("validation loss of each peer's newest checkpoint (%s), %d windows of %d tokens:\n",
                anchors == nck ? "its anchor φ" : anchors == 0 ? "local weights θ" : "anchor φ where present",
                cfg->eval_batches, cfg->model.seq_len);
    printf("peer id                 steps  val_loss  train_loss       sent  utilisation  exit\n");
    for (int k = 0; k < n; k++) {
        const peer_t *p = &peers[k];
        char val[24], loss[16], sent[24], util[16], steps[24], st[24];
        if (vals[k] >= 0) snprintf(val, sizeof val, "%.4f", vals[k]);
        else snprintf(val, sizeof val, "%s", vals[k] == -3 ? "no ckpt" : "-");
        s_fmt_num(loss, sizeof loss, "%.4f", p->loss);
        s_fmt_bytes(sent, sizeof sent, p->sent);
        double u = s_util(p);
        s_fmt_num(util, sizeof util, "%.0f%%", u < 0 ? -1 : 100 * u);
        if (p->step < 0) snprintf(steps, sizeof steps, "-");
        else snprintf(steps, sizeof steps, "%lld", p->step);
        printf("%-4d %.16s %8s %9s %11s %10s %12s  %s\n", k, p->id, steps, val, loss, sent, util,
               s_state(p, st, sizeof st));
    }
    if (mean_val >= 0) printf("averaged model (mean of %d checkpoints): val_loss %.4f\n", nck, mean_val);
    else if (nck > 0) printf("averaged model (mean of %d checkpoints): val_loss -\n", nck);
    if (nck > 1) printf("the averaged model as safetensors: loco export %s/peer-*/checkpoints --out model.safetensors\n", dir);
    fflush(stdout);
    return rc;
}

// ---------------------------------------------------------------------------------------------

static int s_help(void) {
    printf("usage: loco swarm [--peers N] [-c BASE.ini] [--out DIR] [--steps S] [--resume]\n"
           "                  [--set section.key=value]...\n"
           "  Runs a swarm of N (default %d) `loco run` peers on this machine, over 127.0.0.1:\n"
           "  one key, config, log, metrics file and checkpoint directory per peer under DIR\n"
           "  (default %s/peer-K/), peers 0 and 1 the seeds of the others, [train] threads =\n"
           "  max(1, cores / N). Shows every peer's progress (inner step, loss, outer step,\n"
           "  bytes sent), and at the end each peer's validation loss, that of the averaged\n"
           "  model (the mean of all peers' checkpoints), bytes sent and compute utilisation.\n"
           "  Without -c: a built-in NoLoCo config on Debian's fortunes (prepared into\n"
           "  %s when missing). --set applies to every peer; --steps S is\n"
           "  --set train.steps=S. A run starts a fresh swarm (deleting DIR/peer-*) unless\n"
           "  --resume, which continues every peer from its newest checkpoint.\n"
           "  Ctrl-C stops every peer cleanly (checkpoint, leave). Exit status: 0 all peers\n"
           "  finished, 130 stopped by a signal, 1 a peer failed, 2 usage or config error.\n",
           SWARM_DEFAULT_PEERS, SWARM_DEFAULT_OUT, SWARM_DEFAULT_DATA);
    return 0;
}

// The training data: present, or, for the built-in corpus, prepared from Debian's fortunes.
static int s_data(const loco_config_t *cfg) {
    char err[1024];
    data_set_t *d = data_set_open(cfg->data, 0, cfg->model.vocab, err, sizeof err);
    if (d) {
        data_set_destroy(&d);
        return 0;
    }
    if (strcmp(cfg->data, SWARM_DEFAULT_DATA) != 0) {
        fprintf(stderr, "loco swarm: [train] data: %s\n  (make shards with 'loco data --input TEXT... --out %s')\n",
                err, cfg->data);
        return 1;
    }
    if (access(SWARM_FORTUNES, R_OK) != 0) {
        fprintf(stderr, "loco swarm: the default corpus needs %s (Debian's fortunes package: "
                "apt-get install fortunes), or set [train] data to a directory of token shards\n", SWARM_FORTUNES);
        return 1;
    }
    fprintf(stderr, "loco swarm: preparing the default corpus: %s -> %s\n", SWARM_FORTUNES, SWARM_DEFAULT_DATA);
    const char *in[] = {SWARM_FORTUNES};
    if (data_prepare(in, 1, SWARM_DEFAULT_DATA, 0.1, err, sizeof err) != 0) {
        fprintf(stderr, "loco swarm: %s\n", err);
        return 1;
    }
    return 0;
}

// Writes DIR/peer-K/node.ini: the base, this peer's own keys, then the --set overrides.
static int s_write_ini(const peer_t *peers, int n, int k, const char *base, const char *steps, int threads,
                       char **sets, int nsets, char *err, size_t errlen) {
    const peer_t *p = &peers[k];
    FILE *f = fopen(p->ini, "w");
    if (!f) {
        snprintf(err, errlen, "%s: cannot create: %s", p->ini, strerror(errno));
        return -1;
    }
    fprintf(f, "# Written by `loco swarm` for peer %d of %d; rewritten on every start. Later lines win.\n", k, n);
    int rc = 0;
    if (base) {
        fprintf(f, "\n# --- the base config: a copy of %s\n", base);
        rc = s_copy_text(f, base, err, errlen);
    } else {
        fprintf(f, "\n# --- the base config: loco swarm's built-in default\n");
        for (int i = 0; i < SWARM_NDEFAULTS; i++) s_write_assignment(f, s_default_config[i]);
    }
    if (steps) fprintf(f, "\n# --- --steps\n[train]\nsteps = %s\n", steps);
    fprintf(f, "\n# --- this peer\n[node]\nkey = %s/key\npeer_cache = %s/peers.cache\n", p->dir, p->dir);
    fprintf(f, "[net]\nlisten = tcp://127.0.0.1:%d\nadvertise =\nreachable = yes\n", p->port);
    fprintf(f, "[train]\ncheckpoint_dir = %s\nmetrics = %s\nthreads = %d\n", p->ckpt, p->metrics, threads);
    fprintf(f, "[bootstrap]\n");
    for (int s = 0; s < 2 && s < n; s++)
        if (s != k) fprintf(f, "seed = %s@tcp://127.0.0.1:%d\n", peers[s].id, peers[s].port);
    if (nsets > 0) {
        fprintf(f, "\n# --- --set overrides\n");
        for (int i = 0; i < nsets; i++) s_write_assignment(f, sets[i]);
    }
    if (fclose(f) != 0 && rc == 0) {
        snprintf(err, errlen, "%s: write failed: %s", p->ini, strerror(errno));
        rc = -1;
    }
    return rc;
}

int cmd_swarm(int argc, char **argv) {
    int n = SWARM_DEFAULT_PEERS, resume = 0, nsets = 0;
    const char *base = NULL, *out = SWARM_DEFAULT_OUT, *steps = NULL;
    char **sets = calloc((size_t)argc + 1, sizeof *sets);
    int rc = 0;
    for (int i = 0; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--help")) {
            free(sets);
            return s_help();
        } else if (!strcmp(a, "--peers") && has) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > SWARM_MAX_PEERS)
                rc = cli_usage_error("swarm", "--peers must be 1..%d", SWARM_MAX_PEERS);
            n = (int)v;
        } else if ((!strcmp(a, "-c") || !strcmp(a, "--config")) && has) base = argv[++i];
        else if (!strcmp(a, "--out") && has) out = argv[++i];
        else if (!strcmp(a, "--steps") && has) {
            char *end;
            steps = argv[++i];
            long long v = strtoll(steps, &end, 10);
            if (*end || !*steps || v < 1) rc = cli_usage_error("swarm", "--steps must be a positive integer");
        } else if (!strcmp(a, "--resume")) resume = 1;
        else if (!strcmp(a, "--set") && has) sets[nsets++] = argv[++i];
        else rc = cli_usage_error("swarm", "unexpected argument '%s'", a);
    }
    if (rc) {
        free(sets);
        return rc;
    }

    // The effective config, checked before anything is written: base, --steps, --set.
    static loco_config_t cfg; // large; one per process
    char err[2048];
    config_defaults(&cfg);
    if (base && config_load(&cfg, base, err, sizeof err) != 0) rc = 2;
    for (int i = 0; !base && i < SWARM_NDEFAULTS && rc == 0; i++)
        if (config_set(&cfg, s_default_config[i], err, sizeof err) != 0) rc = 2;
    if (rc == 0 && steps) {
        char a[64];
        snprintf(a, sizeof a, "train.steps=%s", steps);
        if (config_set(&cfg, a, err, sizeof err) != 0) rc = 2;
    }
    for (int i = 0; i < nsets && rc == 0; i++)
        if (config_set(&cfg, sets[i], err, sizeof err) != 0) rc = 2;
    if (rc == 0 && config_validate(&cfg, err, sizeof err) != 0) rc = 2;
    if (rc == 0 && cfg.steps < 1) {
        snprintf(err, sizeof err, "[train] steps is 0: a swarm's peers must train");
        rc = 2;
    }
    if (rc) {
        fprintf(stderr, "loco swarm: config error: %s\n", err);
        free(sets);
        return rc;
    }
    log_set_level(cfg.log_level);
    if (s_data(&cfg) != 0) {
        free(sets);
        return 1;
    }

    // DIR and the peers' files.
    static peer_t peers[SWARM_MAX_PEERS];
    memset(peers, 0, sizeof peers);
    char dir[CONFIG_PATH_MAX];
    err[0] = '\0';
    if (s_mkdirs(out, err, sizeof err) != 0 || !realpath(out, dir)) {
        if (!err[0]) snprintf(err, sizeof err, "%s: %s", out, strerror(errno));
        fprintf(stderr, "loco swarm: %s\n", err);
        free(sets);
        return 1;
    }
    if (resume) {
        char probe[CONFIG_PATH_MAX + 32];
        snprintf(probe, sizeof probe, "%s/peer-0/key", dir);
        if (access(probe, F_OK) != 0) {
            fprintf(stderr, "loco swarm: --resume: no swarm in %s yet; starting a fresh one\n", dir);
            resume = 0;
        }
    }
    if (!resume && s_wipe_peers(dir, err, sizeof err) != 0) {
        fprintf(stderr, "loco swarm: %s\n", err);
        free(sets);
        return 1;
    }
    int cores = s_cores(), threads = cores / n > 1 ? cores / n : 1;
    int fds[SWARM_MAX_PEERS];
    for (int k = 0; k < n; k++) fds[k] = -1;
    for (int k = 0; k < n && rc == 0; k++) {
        peer_t *p = &peers[k];
        p->step = p->outer = -1;
        p->loss = p->val_loss = p->sent = p->util = -1;
        char name[32];
        snprintf(name, sizeof name, "peer-%d", k);
        if (s_path(p->dir, sizeof p->dir, dir, name) || s_path(p->ini, sizeof p->ini, p->dir, "node.ini") ||
            s_path(p->log, sizeof p->log, p->dir, "log") || s_path(p->metrics, sizeof p->metrics, p->dir, "metrics.jsonl") ||
            s_path(p->ckpt, sizeof p->ckpt, p->dir, "checkpoints")) {
            snprintf(err, sizeof err, "%s: path too long", dir);
            rc = 1;
            break;
        }
        if (s_mkdirs(p->ckpt, err, sizeof err) != 0 || s_peer_key(p, resume, err, sizeof err) != 0 ||
            s_free_port(&p->port, &fds[k], err, sizeof err) != 0)
            rc = 1;
    }
    for (int k = 0; k < n && rc == 0; k++)
        if (s_write_ini(peers, n, k, base, steps, threads, sets, nsets, err, sizeof err) != 0) rc = 1;
    // The written file must load to the config checked above (a value holding " #" would not).
    for (int k = 0; k < n && rc == 0; k++) {
        static loco_config_t pc;
        config_defaults(&pc);
        if (config_load(&pc, peers[k].ini, err, sizeof err) != 0 || config_validate(&pc, err, sizeof err) != 0) rc = 2;
        else if (memcmp(&pc.model, &cfg.model, sizeof pc.model) != 0 || pc.steps != cfg.steps || strcmp(pc.data, cfg.data)) {
            snprintf(err, sizeof err, "%s does not read back as the config given (a value with ' #' or ' ;'?)", peers[k].ini);
            rc = 2;
        }
    }
    for (int k = 0; k < n; k++)
        if (fds[k] >= 0) close(fds[k]);
    free(sets);
    if (rc) {
        fprintf(stderr, "loco swarm: %s\n", err);
        return rc;
    }

    // Start the peers and watch them.
    cli_catch_stop();
    view_t v = {isatty(STDERR_FILENO), 0, 0};
    fprintf(stderr, "loco swarm: %d peers in %s (%s%s), %lld steps each, %d thread%s per peer; logs in %s/peer-K/log\n",
            n, dir, base ? base : "built-in config", resume ? ", resumed" : "", (long long)cfg.steps, threads,
            threads == 1 ? "" : "s", dir);
    double t0 = metrics_mono(), tok_per_step = (double)cfg.batch * cfg.model.seq_len;
    int started = 0;
    for (int k = 0; k < n; k++) {
        peers[k].pid = s_spawn(&peers[k], resume);
        if (peers[k].pid < 0) {
            log_error("swarm", "cannot start peer %d: %s", k, strerror(errno));
            peers[k].reaped = 1;
            peers[k].status = 1 << 8;
            cli_stop = 1; // a swarm missing a peer is not the one asked for: stop the others
            break;
        }
        started++;
    }
    int stopping = 0, killed = 0, alive = started;
    double t_stop = 0, last_draw = -1;
    while (alive > 0) {
        double now = metrics_mono() - t0;
        if (cli_stop) {
            cli_stop = 0;
            if (!stopping) {
                stopping = 1;
                t_stop = now;
                s_view_clear(&v);
                log_info("swarm", "stopping: SIGTERM to every peer (each writes a checkpoint and leaves)");
                s_signal_all(peers, n, SIGTERM);
            } else if (!killed) { // a second Ctrl-C: no more waiting
                killed = 1;
                s_signal_all(peers, n, SIGKILL);
            }
        }
        if (stopping && !killed && now - t_stop > SWARM_STOP_S) {
            killed = 1;
            s_view_clear(&v);
            log_warn("swarm", "peers still running %.0f s after SIGTERM: SIGKILL", SWARM_STOP_S);
            s_signal_all(peers, n, SIGKILL);
        }
        for (int k = 0; k < n; k++) s_metrics_tail(&peers[k], tok_per_step);
        alive = s_reap(peers, n, &v, stopping);
        if (now - last_draw >= 1.0 || alive == 0) {
            s_view_draw(&v, peers, n, cfg.steps, now, stopping, alive == 0);
            last_draw = now;
        }
        if (alive > 0) {
            struct timespec ts = {0, 200 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    for (int k = 0; k < n; k++) s_metrics_tail(&peers[k], tok_per_step);

    int failed = 0;
    for (int k = 0; k < n; k++)
        if (!peers[k].reaped || !WIFEXITED(peers[k].status) || WEXITSTATUS(peers[k].status) != 0) failed++;
    rc = s_summary(peers, n, dir, &cfg, metrics_mono() - t0, stopping);
    if (failed) {
        fprintf(stderr, "loco swarm: %d of %d peers did not stop cleanly (logs above and in %s/peer-K/log)\n", failed, n, dir);
        return 1;
    }
    if (rc) return 1;
    return stopping ? 130 : 0;
}
