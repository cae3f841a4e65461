#include "node/window.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "node/log.h"

static atomic_int s_idle;

// "H:MM" or "HH:MM" at *p (leading spaces skipped) into seconds; max_h: 23 for a start, 24 for an
// end (24:00 only). Advances *p. 0, or -1 with the reason.
static int s_time(const char **p, const char *what, int max_h, int *secs, char *err, size_t errlen) {
    const char *s = *p;
    while (*s == ' ' || *s == '\t') s++;
    int h = 0, nd = 0;
    while (*s >= '0' && *s <= '9' && nd < 3) h = h * 10 + (*s++ - '0'), nd++;
    if (nd == 0 || nd > 2 || *s != ':' || !(s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9')) {
        snprintf(err, errlen, "the %s time is not HH:MM", what);
        return -1;
    }
    int m = (s[1] - '0') * 10 + (s[2] - '0');
    s += 3;
    if (h > max_h || m > 59 || (h == 24 && m != 0)) {
        snprintf(err, errlen, "the %s time %02d:%02d is not a time of day (00:00 to %s)", what, h, m,
                 max_h == 24 ? "24:00" : "23:59");
        return -1;
    }
    while (*s == ' ' || *s == '\t') s++;
    *secs = h * 3600 + m * 60;
    *p = s;
    return 0;
}

int window_parse(window_t *w, const char *text, char *err, size_t errlen) {
    memset(w, 0, sizeof *w);
    const char *p = text;
    while (*p == ' ' || *p == '\t') p++;
    if (!*p) return 0;
    const char *want = " (want HH:MM-HH:MM in local time, e.g. 22:00-07:00)";
    char why[160];
    if (s_time(&p, "start", 23, &w->start_s, why, sizeof why) != 0) {
        snprintf(err, errlen, "'%s': %s%s", text, why, want);
        return -1;
    }
    if (*p != '-') {
        snprintf(err, errlen, "'%s': expected '-' after the start time%s", text, want);
        return -1;
    }
    p++;
    if (s_time(&p, "end", 24, &w->end_s, why, sizeof why) != 0) {
        snprintf(err, errlen, "'%s': %s%s", text, why, want);
        return -1;
    }
    if (*p) {
        snprintf(err, errlen, "'%s': unexpected text after the end time%s", text, want);
        return -1;
    }
    if (w->start_s == w->end_s % WINDOW_DAY_S) {
        snprintf(err, errlen, "'%s': the window starts and ends at the same time (leave the key empty to train "
                 "all day)", text);
        return -1;
    }
    w->set = 1;
    return 0;
}

int window_active_at(const window_t *w, int sec) {
    if (!w->set) return 1;
    if (w->start_s < w->end_s) return sec >= w->start_s && sec < w->end_s;
    return sec >= w->start_s || sec < w->end_s; // over midnight
}

int window_seconds_until_active(const window_t *w, int sec) {
    if (window_active_at(w, sec)) return 0;
    return ((w->start_s - sec) % WINDOW_DAY_S + WINDOW_DAY_S) % WINDOW_DAY_S;
}

void window_format(const window_t *w, char *buf, size_t len) {
    if (!w->set) snprintf(buf, len, "always");
    else snprintf(buf, len, "%02d:%02d-%02d:%02d", w->start_s / 3600, w->start_s / 60 % 60, w->end_s / 3600,
                  w->end_s / 60 % 60);
}

int window_now(void) {
    time_t t = time(NULL);
    const char *off = getenv("LOCO_TEST_CLOCK_OFFSET_S");
    if (off) t += (time_t)atol(off);
    struct tm tm;
    if (!localtime_r(&t, &tm)) return 0;
    return tm.tm_hour * 3600 + tm.tm_min * 60 + (tm.tm_sec > 59 ? 59 : tm.tm_sec);
}

int window_idle(void) { return atomic_load(&s_idle); }

int window_wait_spec(const char *spec, volatile sig_atomic_t *stop) {
    window_t w;
    char err[200];
    if (!spec[0] || window_parse(&w, spec, err, sizeof err) != 0) return 0;
    return window_wait(&w, stop);
}

int window_wait(const window_t *w, volatile sig_atomic_t *stop) {
    int now = window_now();
    if (window_active_at(w, now) || *stop) return 0;
    char win[32];
    window_format(w, win, sizeof win);
    int left = window_seconds_until_active(w, now);
    char wait[32];
    if (left >= 3600) snprintf(wait, sizeof wait, "%dh%02dm", left / 3600, left / 60 % 60);
    else snprintf(wait, sizeof wait, "%dm%02ds", left / 60, left % 60);
    log_info("window", "outside the active window %s (local time): not training for %s, staying in the swarm", win, wait);
    atomic_store(&s_idle, 1);
    while (!*stop && !window_active_at(w, window_now())) usleep(200000);
    atomic_store(&s_idle, 0);
    if (!*stop) log_info("window", "the active window %s has opened: training again", win);
    return 1;
}
