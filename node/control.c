#include "node/control.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "node/log.h"
#include "node/telemetry.h"

#define CONTROL_IO_MS 2000

struct control {
    int lfd, wake[2];
    pthread_t th;
    int started;
    prom_t *prom;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    dev_t dev;
    ino_t ino;
};

int control_path(const loco_config_t *cfg, char *out, size_t outlen, char *err, size_t errlen) {
    char p[CONFIG_PATH_MAX + 32];
    if (!strcmp(cfg->control, "off")) {
        snprintf(out, outlen, "%s", "");
        return 0;
    }
    if (cfg->control[0]) snprintf(p, sizeof p, "%s", cfg->control);
    else snprintf(p, sizeof p, "%s/control/loco.sock", cfg->checkpoint_dir[0] ? cfg->checkpoint_dir : ".");
    size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
    if (strlen(p) > max || strlen(p) >= outlen) {
        snprintf(err, errlen, "the control socket path %.200s%s is %zu characters, longer than the %zu a UNIX socket "
                 "allows: set [node] control to a shorter path (or off)", p, strlen(p) > 200 ? "..." : "", strlen(p), max);
        return -1;
    }
    snprintf(out, outlen, "%s", p);
    return 0;
}

static void s_timeouts(int fd, int ms) {
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int s_write_all(int fd, const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static void s_serve(control_t *c, int fd) {
    struct ucred uc;
    socklen_t ul = sizeof uc;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &ul) != 0) return;
    s_timeouts(fd, CONTROL_IO_MS);
    // The request is read first even from a refused user: closing with it unread would reset the
    // connection before the refusal arrives.
    char req[256];
    size_t n = 0;
    while (n < sizeof req - 1) {
        ssize_t r = recv(fd, req + n, sizeof req - 1 - n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += (size_t)r;
        if (memchr(req, '\n', n)) break;
    }
    req[n] = '\0';
    req[strcspn(req, "\r\n")] = '\0';
    uid_t me = geteuid();
    if (uc.uid != me && uc.uid != 0) {
        log_warn("control", "refused a request from uid %u (pid %d): this node answers its own user (uid %u) and root only",
                 (unsigned)uc.uid, (int)uc.pid, (unsigned)me);
        char msg[200];
        int m = snprintf(msg, sizeof msg, "error: refused: this node runs as uid %u and answers only that user and root\n",
                         (unsigned)me);
        s_write_all(fd, msg, (size_t)m);
        return;
    }
    char *answer = NULL;
    if (!strcmp(req, "status")) answer = telemetry_status(c->prom, 0);
    else if (!strcmp(req, "status json")) answer = telemetry_status(c->prom, 1);
    if (answer) {
        s_write_all(fd, answer, strlen(answer));
        free(answer);
        return;
    }
    char msg[400];
    int m = snprintf(msg, sizeof msg, "error: unknown request '%.200s' (expected 'status' or 'status json')\n", req);
    s_write_all(fd, msg, (size_t)m);
}

static void *s_thread(void *arg) {
    control_t *c = arg;
    for (;;) {
        struct pollfd pf[2] = {{.fd = c->lfd, .events = POLLIN}, {.fd = c->wake[0], .events = POLLIN}};
        int rc = poll(pf, 2, -1);
        if (rc < 0 && errno == EINTR) continue;
        if (rc < 0 || pf[1].revents) break;
        if (!(pf[0].revents & POLLIN)) continue;
        int fd = accept4(c->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) continue;
        s_serve(c, fd);
        close(fd);
    }
    return NULL;
}

// Makes the socket's directory private: created 0700, or checked (owned by us, no access for others).
static int s_private_dir(const char *path, int is_default, char *err, size_t errlen) {
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    if (is_default) { // CHECKPOINT_DIR/control: the checkpoint directory may not exist yet
        char parent[sizeof dir];
        snprintf(parent, sizeof parent, "%s", dir);
        char *s = strrchr(parent, '/');
        if (s && s != parent) {
            *s = '\0';
            if (mkdir(parent, 0755) != 0 && errno != EEXIST) {
                snprintf(err, errlen, "%s: cannot create the directory: %s", parent, strerror(errno));
                return -1;
            }
        }
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: cannot create the control socket's directory: %s", dir, strerror(errno));
        return -1;
    }
    struct stat st;
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s: the control socket's directory is not a directory", dir);
        return -1;
    }
    if (st.st_uid != geteuid()) {
        snprintf(err, errlen, "%s: the control socket's directory belongs to uid %u, not to this user (uid %u)", dir,
                 (unsigned)st.st_uid, (unsigned)geteuid());
        return -1;
    }
    if (st.st_mode & 077) {
        if (!is_default) {
            snprintf(err, errlen, "%s: the control socket's directory is open to other users (mode %04o): use a "
                     "directory with mode 0700 for [node] control", dir, (unsigned)(st.st_mode & 07777));
            return -1;
        }
        if (chmod(dir, 0700) != 0) {
            snprintf(err, errlen, "%s: cannot make it private (mode 0700): %s", dir, strerror(errno));
            return -1;
        }
    }
    return 0;
}

control_t *control_start(const char *path, int is_default, prom_t *p, char *err, size_t errlen) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path) {
        snprintf(err, errlen, "%s: too long for a UNIX socket", path);
        return NULL;
    }
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    if (s_private_dir(path, is_default, err, errlen) != 0) return NULL;
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "%s: exists and is not a socket (the control socket's path)", path);
            return NULL;
        }
        char *ans = NULL, why[300];
        if (control_query(path, "status json", 1000, &ans, why, sizeof why) == 0) {
            snprintf(err, errlen, "%s: another loco node is running with this control socket (and checkpoint "
                     "directory); it answered: %.300s", path, ans);
            free(ans);
            return NULL;
        }
        if (unlink(path) != 0) { // left by a node that did not stop cleanly
            snprintf(err, errlen, "%s: cannot remove the stale control socket: %s", path, strerror(errno));
            return NULL;
        }
    }
    control_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->prom = p;
    c->wake[0] = c->wake[1] = -1;
    snprintf(c->path, sizeof c->path, "%s", path);
    c->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->lfd < 0 || bind(c->lfd, (struct sockaddr *)&a, sizeof a) != 0) {
        snprintf(err, errlen, "%s: cannot create the control socket: %s", path, strerror(errno));
        goto fail;
    }
    // The directory is already private; 0600 keeps the socket so if the directory is loosened later.
    if (chmod(path, 0600) != 0 || stat(path, &st) != 0 || listen(c->lfd, 8) != 0 || pipe2(c->wake, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "%s: cannot set up the control socket: %s", path, strerror(errno));
        unlink(path);
        goto fail;
    }
    c->dev = st.st_dev;
    c->ino = st.st_ino;
    if (pthread_create(&c->th, NULL, s_thread, c) != 0) {
        snprintf(err, errlen, "cannot start the control thread");
        unlink(path);
        goto fail;
    }
    c->started = 1;
    log_info("control", "loco status answers on %s", path);
    return c;
fail:
    if (c->lfd >= 0) close(c->lfd);
    if (c->wake[0] >= 0) close(c->wake[0]), close(c->wake[1]);
    free(c);
    return NULL;
}

int control_in_use(const char *path) {
    char *ans = NULL, why[300];
    int rc = control_query(path, "status json", 1000, &ans, why, sizeof why) == 0;
    free(ans);
    return rc;
}

void control_stop(control_t **self_p) {
    if (!self_p || !*self_p) return;
    control_t *c = *self_p;
    if (c->started) {
        ssize_t w = write(c->wake[1], "x", 1);
        (void)w;
        pthread_join(c->th, NULL);
    }
    struct stat st;
    if (stat(c->path, &st) == 0 && st.st_dev == c->dev && st.st_ino == c->ino) unlink(c->path);
    close(c->lfd);
    close(c->wake[0]);
    close(c->wake[1]);
    free(c);
    *self_p = NULL;
}

int control_query(const char *path, const char *request, int timeout_ms, char **answer, char *err, size_t errlen) {
    *answer = NULL;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path) {
        snprintf(err, errlen, "%s: too long for a UNIX socket path", path);
        return -2;
    }
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -2;
    }
    s_timeouts(fd, timeout_ms);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno, rc = -1;
        if (e == ENOENT) snprintf(err, errlen, "%s does not exist", path);
        else if (e == ECONNREFUSED) snprintf(err, errlen, "%s: nothing listens there (a socket left by a node that did not stop cleanly?)", path);
        else if (e == ENOTDIR) snprintf(err, errlen, "%s: a part of the path is not a directory", path);
        else if (e == EACCES || e == EPERM) {
            snprintf(err, errlen, "%s: permission denied (the node runs as another user; only its user and root may ask it)", path);
            rc = -2;
        } else {
            snprintf(err, errlen, "%s: %s", path, strerror(e));
            rc = -2;
        }
        close(fd);
        return rc;
    }
    char line[300];
    int n = snprintf(line, sizeof line, "%s\n", request);
    if (n < 0 || (size_t)n >= sizeof line || s_write_all(fd, line, (size_t)n) != 0) {
        snprintf(err, errlen, "%s: cannot send the request: %s", path, strerror(errno));
        close(fd);
        return -2;
    }
    shutdown(fd, SHUT_WR);
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            snprintf(err, errlen, "out of memory");
            close(fd);
            return -2;
        }
        if (len + 1 == cap) {
            char *nb = cap < (1u << 20) ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                free(buf);
                snprintf(err, errlen, "%s: the answer is too long", path);
                close(fd);
                return -2;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            snprintf(err, errlen, "%s: no complete answer within %d ms: %s", path, timeout_ms, strerror(errno));
            free(buf);
            close(fd);
            return -2;
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    *answer = buf;
    return 0;
}
