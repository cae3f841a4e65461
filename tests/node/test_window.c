// The daily active window ([train] active, node/window.h): parsing, "is this time inside", "how
// long until it opens" — windows within a day and over midnight — and bad values refused with the
// key named (through config_validate, as every command loads a config).
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/config.h"
#include "node/window.h"

#define HM(h, m) ((h) * 3600 + (m) * 60)

static window_t s_win(const char *text) {
    window_t w;
    char err[256] = "";
    cr_assert_eq(window_parse(&w, text, err, sizeof err), 0, "'%s' refused: %s", text, err);
    return w;
}

static void s_bad(const char *text, const char *frag) {
    window_t w;
    char err[256] = "";
    cr_assert_eq(window_parse(&w, text, err, sizeof err), -1, "'%s' accepted", text);
    cr_expect(strstr(err, frag) != NULL, "'%s': '%s' does not say '%s'", text, err, frag);
}

Test(window, parses) {
    window_t w = s_win("22:00-07:00");
    cr_expect(w.set);
    cr_expect_eq(w.start_s, HM(22, 0));
    cr_expect_eq(w.end_s, HM(7, 0));
    w = s_win(" 9:05 - 17:30 ");
    cr_expect_eq(w.start_s, HM(9, 5));
    cr_expect_eq(w.end_s, HM(17, 30));
    w = s_win(""); // empty: no window
    cr_expect(!w.set);
    w = s_win("   ");
    cr_expect(!w.set);
    w = s_win("18:00-24:00");
    cr_expect_eq(w.end_s, 86400);
    char buf[32];
    window_format(&w, buf, sizeof buf);
    cr_expect_str_eq(buf, "18:00-24:00");
    window_format(&(window_t){0}, buf, sizeof buf);
    cr_expect_str_eq(buf, "always");
}

Test(window, bad_values) {
    s_bad("22:00", "expected '-'");
    s_bad("22-07", "start time is not HH:MM");
    s_bad("22:0-07:00", "start time is not HH:MM");
    s_bad("123:00-07:00", "start time is not HH:MM");
    s_bad("25:00-07:00", "start time 25:00 is not a time of day");
    s_bad("24:00-07:00", "start time 24:00 is not a time of day");
    s_bad("22:60-07:00", "start time 22:60");
    s_bad("22:00-24:30", "end time 24:30");
    s_bad("22:00-", "end time is not HH:MM");
    s_bad("22:00-07:00 daily", "unexpected text after the end time");
    s_bad("08:00-08:00", "starts and ends at the same time");
    s_bad("00:00-24:00", "starts and ends at the same time");
    s_bad("-1:00-07:00", "start time is not HH:MM");
    s_bad("night", "want HH:MM-HH:MM");
}

Test(window, within_a_day) {
    window_t w = s_win("09:00-17:00");
    cr_expect(!window_active_at(&w, HM(8, 59) + 59));
    cr_expect(window_active_at(&w, HM(9, 0)));
    cr_expect(window_active_at(&w, HM(16, 59) + 59));
    cr_expect(!window_active_at(&w, HM(17, 0)), "the end is exclusive");
    cr_expect(!window_active_at(&w, 0));
    cr_expect_eq(window_seconds_until_active(&w, HM(8, 0)), 3600);
    cr_expect_eq(window_seconds_until_active(&w, HM(8, 59) + 59), 1);
    cr_expect_eq(window_seconds_until_active(&w, HM(12, 0)), 0);
    cr_expect_eq(window_seconds_until_active(&w, HM(17, 0)), 16 * 3600, "from the end to tomorrow's start");
    cr_expect_eq(window_seconds_until_active(&w, HM(23, 30)), 9 * 3600 + 1800);
}

Test(window, over_midnight) {
    window_t w = s_win("22:00-07:00");
    cr_expect(window_active_at(&w, HM(22, 0)));
    cr_expect(window_active_at(&w, HM(23, 59) + 59));
    cr_expect(window_active_at(&w, 0));
    cr_expect(window_active_at(&w, HM(6, 59) + 59));
    cr_expect(!window_active_at(&w, HM(7, 0)));
    cr_expect(!window_active_at(&w, HM(12, 0)));
    cr_expect(!window_active_at(&w, HM(21, 59) + 59));
    cr_expect_eq(window_seconds_until_active(&w, HM(7, 0)), 15 * 3600);
    cr_expect_eq(window_seconds_until_active(&w, HM(21, 59)), 60);
    cr_expect_eq(window_seconds_until_active(&w, HM(23, 0)), 0);
    cr_expect_eq(window_seconds_until_active(&w, HM(3, 0)), 0);
    // Every second of the day: inside exactly when nothing is left to wait, and never a day or more.
    window_t v = s_win("23:30-00:15");
    int inside = 0;
    for (int s = 0; s < WINDOW_DAY_S; s++) {
        int left = window_seconds_until_active(&v, s);
        cr_assert(left >= 0 && left < WINDOW_DAY_S);
        cr_assert_eq(left == 0, window_active_at(&v, s), "second %d", s);
        if (left) cr_assert(window_active_at(&v, (s + left) % WINDOW_DAY_S) && !window_active_at(&v, (s + left - 1) % WINDOW_DAY_S),
                            "second %d: %d s is not when the window opens", s, left);
        inside += left == 0;
    }
    cr_expect_eq(inside, 45 * 60);
}

Test(window, no_window_is_always_active) {
    window_t w = s_win("");
    for (int s = 0; s < WINDOW_DAY_S; s += 37) {
        cr_assert(window_active_at(&w, s));
        cr_assert_eq(window_seconds_until_active(&w, s), 0);
    }
    volatile sig_atomic_t stop = 0;
    cr_expect_eq(window_wait(&w, &stop), 0, "waited without a window");
    cr_expect_eq(window_wait_spec("", &stop), 0);
    cr_expect_eq(window_idle(), 0);
}

Test(window, wait_returns_on_stop) {
    // A window that excludes now: window_wait returns at once when already stopped, idle again after.
    int now = window_now();
    char spec[32];
    int a = (now / 60 + 120) % 1440, b = (now / 60 + 180) % 1440;
    snprintf(spec, sizeof spec, "%02d:%02d-%02d:%02d", a / 60, a % 60, b / 60, b % 60);
    window_t w = s_win(spec);
    cr_assert(!window_active_at(&w, now));
    volatile sig_atomic_t stop = 1;
    cr_expect_eq(window_wait(&w, &stop), 0);
    cr_expect_eq(window_idle(), 0);
}

Test(window, config_names_the_key) {
    loco_config_t c;
    char err[1024];
    config_defaults(&c);
    cr_assert_eq(config_set(&c, "train.active=22:00-07:00", err, sizeof err), 0, "%s", err);
    cr_expect_eq(config_validate(&c, err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(c.train_active, "22:00-07:00");
    cr_assert_eq(config_set(&c, "train.active=26:00-07:00", err, sizeof err), 0, "a string key takes any text");
    cr_assert_eq(config_validate(&c, err, sizeof err), -1);
    cr_expect(strstr(err, "[train] active = '26:00-07:00': the start time 26:00 is not a time of day") != NULL, "%s", err);
}
