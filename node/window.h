// The daily active window of a volunteer's node ([train] active = HH:MM-HH:MM, local time): outside
// it the node stays in the swarm (gossip, catch-up donors, answering peers) but does not train.
//
// The compute thread of `loco run` calls window_wait at each round boundary; while it waits,
// window_idle() is 1 and the net thread publishes a step rate of 0 in this peer's member record, so
// no outer step takes it as a partner (node/outer_run.h: only members with a non-zero step rate
// train together). When the window opens it trains again from where it stopped, catching up with
// the swarm as any returning peer does.
//
// A window may wrap past midnight (22:00-07:00 is 22:00 to 07:00 the next morning). The end is
// exclusive; 24:00 is allowed as an end. Times are local wall-clock times (TZ), read again every
// second while waiting, so a daylight-saving change only moves the estimate of the wait.
#ifndef LOCO_NODE_WINDOW_H
#define LOCO_NODE_WINDOW_H

#include <signal.h>
#include <stddef.h>

#define WINDOW_DAY_S 86400

typedef struct {
    int set;           // 0: no window, always active
    int start_s, end_s; // seconds after local midnight, start in [0, 86400), end in [0, 86400]
} window_t;

// Parses "HH:MM-HH:MM" (hours 0-23, or 24:00 as an end; spaces around the parts allowed); an empty
// string means no window. Returns 0, or -1 with the reason in err (without the key: the caller
// names it).
int window_parse(window_t *w, const char *text, char *err, size_t errlen);

// Whether sec (seconds after local midnight, 0..86399) is inside the window; always 1 without one.
int window_active_at(const window_t *w, int sec);

// Seconds from sec until the window opens: 0 inside it (or without one), else 1..86399.
int window_seconds_until_active(const window_t *w, int sec);

// "HH:MM-HH:MM" (or "always" without a window) into buf.
void window_format(const window_t *w, char *buf, size_t len);

// Seconds after local midnight now. LOCO_TEST_CLOCK_OFFSET_S (tests) is added to the clock.
int window_now(void);

// Blocks the calling thread while now is outside the window and *stop is 0, with window_idle() = 1
// meanwhile; logs when it starts and stops waiting. Returns 1 when it waited, 0 when it did not.
int window_wait(const window_t *w, volatile sig_atomic_t *stop);

// window_wait on the window written in spec ([train] active, already validated); 0 when spec is
// empty or does not parse.
int window_wait_spec(const char *spec, volatile sig_atomic_t *stop);

// 1 while a thread waits in window_wait. One node per process (as loco run's state), so this is
// process-wide: the compute thread sets it, the net thread reads it.
int window_idle(void);

#endif
