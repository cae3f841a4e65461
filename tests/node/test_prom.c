// The metrics registry and its Prometheus text exposition (node/prom.h), loco's series
// (node/telemetry.h), the HTTP endpoint (node/http_metrics.h) and the control socket (node/control.h).
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "node/control.h"
#include "node/http_metrics.h"
#include "node/prom.h"
#include "node/telemetry.h"

static char *s_render(prom_t *p) {
    size_t n = 0;
    char *t = prom_render(p, &n);
    cr_assert(t);
    cr_assert_eq(strlen(t), n);
    return t;
}

Test(prom, counter_gauge_and_exposition_text) {
    prom_t *p = prom_new();
    cr_assert_eq(prom_declare(p, "x_total", PROM_COUNTER, "Things counted.", NULL, 0), 0);
    cr_assert_eq(prom_declare(p, "g", PROM_GAUGE, "A level.", NULL, 0), 0);
    cr_assert_eq(prom_add(p, "x_total", PROM_L("type", "a"), 2), 0);
    cr_assert_eq(prom_add(p, "x_total", PROM_L("type", "a"), 3), 0);
    cr_assert_eq(prom_add(p, "x_total", PROM_L("type", "b"), 1), 0);
    cr_assert_eq(prom_set(p, "g", NULL, 0.1), 0);
    char *t = s_render(p);
    cr_expect_str_eq(t, "# HELP x_total Things counted.\n"
                        "# TYPE x_total counter\n"
                        "x_total{type=\"a\"} 5\n"
                        "x_total{type=\"b\"} 1\n"
                        "# HELP g A level.\n"
                        "# TYPE g gauge\n"
                        "g 0.1\n");
    free(t);
    double v;
    cr_expect_eq(prom_get(p, "x_total", PROM_L("type", "a"), &v, NULL), 0);
    cr_expect_eq(v, 5);
    cr_expect_eq(prom_get(p, "x_total", PROM_L("type", "c"), &v, NULL), -1, "an untouched series does not exist");
    prom_destroy(&p);
    cr_expect_null(p);
    prom_destroy(&p); // idempotent
}

Test(prom, family_without_series_shows_help_and_type_only) {
    prom_t *p = prom_new();
    prom_declare(p, "loss", PROM_GAUGE, "Loss.", NULL, 0);
    char *t = s_render(p);
    cr_expect_str_eq(t, "# HELP loss Loss.\n# TYPE loss gauge\n");
    free(t);
    prom_set(p, "loss", NULL, 2.5);
    prom_clear(p, "loss");
    t = s_render(p);
    cr_expect_str_eq(t, "# HELP loss Loss.\n# TYPE loss gauge\n");
    free(t);
    prom_destroy(&p);
}

Test(prom, label_values_are_escaped) {
    char out[64];
    cr_expect_eq(prom_escape_label("a\\b\"c\nd", out, sizeof out), 10);
    cr_expect_str_eq(out, "a\\\\b\\\"c\\nd");
    cr_expect_eq(prom_escape_label("plain", out, sizeof out), 5);
    cr_expect_str_eq(out, "plain");
    // Truncation keeps the buffer terminated and reports the full length.
    char small[4];
    cr_expect_eq(prom_escape_label("\"\"\"", small, sizeof small), 6);
    cr_expect_eq(strlen(small), 3);
    // In the exposition.
    prom_t *p = prom_new();
    prom_declare(p, "info", PROM_GAUGE, "Help with a \\ backslash\nand a newline, \"quotes\" stay.", NULL, 0);
    prom_set(p, "info", PROM_L("run", "my \"run\"\\x\ny", "peer", "ab"), 1);
    char *t = s_render(p);
    cr_expect_str_eq(t, "# HELP info Help with a \\\\ backslash\\nand a newline, \"quotes\" stay.\n"
                        "# TYPE info gauge\n"
                        "info{run=\"my \\\"run\\\"\\\\x\\ny\",peer=\"ab\"} 1\n");
    free(t);
    prom_destroy(&p);
}

Test(prom, histogram_buckets_are_cumulative_with_sum_and_count) {
    prom_t *p = prom_new();
    const double b[] = {0.1, 1, 10};
    cr_assert_eq(prom_declare(p, "t_seconds", PROM_HISTOGRAM, "Times.", b, 3), 0);
    double obs[] = {0.05, 0.1, 0.5, 1, 5, 50}; // a value on a bound counts in that bucket (le)
    for (int i = 0; i < 6; i++) cr_assert_eq(prom_observe(p, "t_seconds", NULL, obs[i]), 0);
    cr_expect_eq(prom_observe(p, "t_seconds", NULL, NAN), -1, "a NaN is refused, not summed");
    char *t = s_render(p);
    cr_expect_str_eq(t, "# HELP t_seconds Times.\n"
                        "# TYPE t_seconds histogram\n"
                        "t_seconds_bucket{le=\"0.1\"} 2\n"
                        "t_seconds_bucket{le=\"1\"} 4\n"
                        "t_seconds_bucket{le=\"10\"} 5\n"
                        "t_seconds_bucket{le=\"+Inf\"} 6\n"
                        "t_seconds_sum 56.65\n"
                        "t_seconds_count 6\n");
    free(t);
    double n, sum;
    cr_expect_eq(prom_get(p, "t_seconds", NULL, &n, &sum), 0);
    cr_expect_eq(n, 6);
    cr_expect_float_eq(sum, 56.65, 1e-12);
    // With labels, le comes last.
    prom_observe(p, "t_seconds", PROM_L("kind", "x"), 2);
    t = s_render(p);
    cr_expect(strstr(t, "t_seconds_bucket{kind=\"x\",le=\"10\"} 1\n"), "%s", t);
    cr_expect(strstr(t, "t_seconds_sum{kind=\"x\"} 2\nt_seconds_count{kind=\"x\"} 1\n"), "%s", t);
    free(t);
    prom_destroy(&p);
}

Test(prom, refuses_programmer_errors) {
    prom_t *p = prom_new();
    const double good[] = {1, 2}, unsorted[] = {2, 1};
    cr_expect_eq(prom_declare(p, "9starts_with_digit", PROM_GAUGE, "", NULL, 0), -1);
    cr_expect_eq(prom_declare(p, "has-dash", PROM_GAUGE, "", NULL, 0), -1);
    cr_expect_eq(prom_declare(p, "", PROM_GAUGE, "", NULL, 0), -1);
    cr_expect_eq(prom_declare(p, "h", PROM_HISTOGRAM, "", unsorted, 2), -1);
    cr_expect_eq(prom_declare(p, "h", PROM_HISTOGRAM, "", NULL, 0), -1);
    cr_expect_eq(prom_declare(p, "g", PROM_GAUGE, "", good, 2), -1, "buckets on a gauge");
    cr_expect_eq(prom_declare(p, "ns:ok_1", PROM_GAUGE, "", NULL, 0), 0);
    cr_expect_eq(prom_declare(p, "ns:ok_1", PROM_GAUGE, "", NULL, 0), -1, "duplicate");
    cr_expect_eq(prom_declare(p, "h", PROM_HISTOGRAM, "", good, 2), 0);
    cr_expect_eq(prom_set(p, "nope", NULL, 1), -1);
    cr_expect_eq(prom_observe(p, "ns:ok_1", NULL, 1), -1, "observe on a gauge");
    cr_expect_eq(prom_set(p, "h", NULL, 1), -1, "set on a histogram");
    cr_expect_eq(prom_set(p, "ns:ok_1", PROM_L("bad-label", "x"), 1), -1);
    cr_expect_eq(prom_set(p, "ns:ok_1", PROM_L("le", "x"), 1), -1, "le is reserved");
    cr_expect_eq(prom_set(p, "ns:ok_1", ((const char *const[]){"odd", NULL}), 1), -1);
    // Bounded: label sets beyond PROM_MAX_SERIES are dropped.
    char v[16];
    for (int i = 0; i < PROM_MAX_SERIES; i++) {
        snprintf(v, sizeof v, "%d", i);
        cr_assert_eq(prom_set(p, "ns:ok_1", PROM_L("i", v), i), 0);
    }
    cr_expect_eq(prom_set(p, "ns:ok_1", PROM_L("i", "one-more"), 1), -1);
    cr_expect_eq(prom_set(p, "ns:ok_1", PROM_L("i", "3"), 9), 0, "existing series still update");
    prom_destroy(&p);
}

Test(prom, null_registry_is_a_no_op) {
    cr_expect_eq(prom_set(NULL, "x", NULL, 1), 0);
    cr_expect_eq(prom_add(NULL, "x", NULL, 1), 0);
    cr_expect_eq(prom_observe(NULL, "x", NULL, 1), 0);
    double v;
    cr_expect_eq(prom_get(NULL, "x", NULL, &v, NULL), -1);
    metrics_t mx = {0};
    telemetry_step(&mx, 1, 2.0, 3.0, 1, 2); // loco train: no registry
    telemetry_outer(NULL, 1, 2, 2, 0.1, 0.1, 0, "[]");
}

Test(prom, values_are_shortest_round_trip) {
    char b[40];
    const struct { double v; const char *s; } cases[] = {
        {1, "1"}, {0.1, "0.1"}, {965004, "965004"}, {-2.5, "-2.5"}, {1e20, "1e+20"}, {0, "0"},
        {INFINITY, "+Inf"}, {-INFINITY, "-Inf"}, {NAN, "NaN"}, {4.818300247192383, "4.818300247192383"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        prom_format_value(cases[i].v, b, sizeof b);
        cr_expect_str_eq(b, cases[i].s);
    }
}

static prom_t *s_shared;
static void *s_adder(void *arg) {
    (void)arg;
    for (int i = 0; i < 10000; i++) {
        prom_add(s_shared, "c_total", PROM_L("t", i % 2 ? "odd" : "even"), 1);
        prom_observe(s_shared, "h", NULL, 0.5);
    }
    return NULL;
}

Test(prom, concurrent_updates_are_all_counted) {
    s_shared = prom_new();
    const double b[] = {1};
    prom_declare(s_shared, "c_total", PROM_COUNTER, "", NULL, 0);
    prom_declare(s_shared, "h", PROM_HISTOGRAM, "", b, 1);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, s_adder, NULL);
    for (int i = 0; i < 20; i++) free(prom_render(s_shared, NULL)); // a scrape meanwhile
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    double even, odd, n;
    prom_get(s_shared, "c_total", PROM_L("t", "even"), &even, NULL);
    prom_get(s_shared, "c_total", PROM_L("t", "odd"), &odd, NULL);
    prom_get(s_shared, "h", NULL, &n, NULL);
    cr_expect_eq(even, 20000);
    cr_expect_eq(odd, 20000);
    cr_expect_eq(n, 40000);
    prom_destroy(&s_shared);
}

Test(prom, notes_are_kept_but_never_rendered) {
    prom_t *p = prom_new();
    prom_note_set(p, "group", "[\"ab\"]");
    prom_note_set(p, "group", "[\"cd\"]");
    char out[32];
    cr_expect_eq(prom_note_get(p, "group", out, sizeof out), 0);
    cr_expect_str_eq(out, "[\"cd\"]");
    cr_expect_eq(prom_note_get(p, "other", out, sizeof out), -1);
    char *t = s_render(p);
    cr_expect_str_eq(t, "");
    free(t);
    prom_destroy(&p);
}

// ---------------------------------------------------------------------------------------------
// loco's series

Test(telemetry, declares_every_series_and_maps_reject_reasons) {
    prom_t *p = prom_new();
    cr_assert_eq(telemetry_declare(p), 0);
    cr_expect_eq(telemetry_declare(p), -1, "declaring twice is a programmer error");
    metrics_t mx = {.prom = p};
    telemetry_start(p, "0123456789abcdef", "run \"x\"", "diloco", 100, "/nonexistent-dir");
    telemetry_step(&mx, 7, 3.25, 1000, 1, 2);
    telemetry_outer(&mx, 3, 2, 2, 0.2, 0.1, 0, "[\"aa\",\"bb\"]");
    telemetry_reject(&mx, "RMS per inner step 3 is over 10 x the reference 0.1");
    telemetry_reject(&mx, "anchor drift not finite");
    telemetry_members(p, 2, 0, 1, 1);
    char *t = s_render(p);
    const char *want[] = {
        "loco_info{peer=\"0123456789abcdef\",run=\"run \\\"x\\\"\",algorithm=\"diloco\"} 1\n",
        "loco_inner_step 7\n", "loco_loss 3.25\n", "loco_compute_utilisation 0.5\n", "loco_outer_round 3\n",
        "loco_outer_steps_total 1\n", "loco_group_size 2\n", "loco_exchange_seconds_count 1\n",
        "loco_members{state=\"alive\"} 2\n", "loco_members{state=\"left\"} 1\n",
        "loco_rejections_total{reason=\"norm\"} 1\n", "loco_rejections_total{reason=\"not_finite\"} 1\n",
        "loco_rejections_total{reason=\"size\"} 0\n", "loco_bytes_sent_total{type=\"gossip\"} 0\n",
        "loco_catchup_state{state=\"idle\"} 1\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) cr_expect(strstr(t, want[i]), "missing %s", want[i]);
    cr_expect_null(strstr(t, "\nloco_checkpoint_age_seconds "), "no checkpoint, no age");
    free(t);
    cr_expect_str_eq(telemetry_reject_class("incomplete or wrong size"), "size");
    cr_expect_str_eq(telemetry_reject_class("wrong size"), "size");
    cr_expect_str_eq(telemetry_reject_class("claims more inner steps than H"), "steps");
    cr_expect_str_eq(telemetry_reject_class("not finite"), "not_finite");
    cr_expect_str_eq(telemetry_reject_class("anchor drift far larger than ours"), "drift");
    cr_expect_str_eq(telemetry_reject_class("something new"), "other");
    // The status answer carries the same facts.
    char *js = telemetry_status(p, 1);
    cr_assert(js);
    cr_expect(strstr(js, "\"peer\":\"0123456789abcdef\""), "%s", js);
    cr_expect(strstr(js, "\"run\":\"run \\\"x\\\"\""), "%s", js);
    cr_expect(strstr(js, "\"round\":3,"), "%s", js);
    cr_expect(strstr(js, "\"group\":[\"aa\",\"bb\"]"), "%s", js);
    cr_expect(strstr(js, "\"members\":{\"alive\":2,\"suspect\":0,\"dead\":1,\"left\":1}"), "%s", js);
    cr_expect(strstr(js, "\"val_loss\":null"), "%s", js);
    cr_expect(strstr(js, "\"checkpoint\":null"), "%s", js);
    free(js);
    char *txt = telemetry_status(p, 0);
    cr_expect(strstr(txt, "step 7/100  loss 3.2500"), "%s", txt);
    cr_expect(strstr(txt, "members 2 alive, 0 suspect, 1 dead, 1 left"), "%s", txt);
    free(txt);
    prom_destroy(&p);
}

Test(telemetry, bytes_by_type_split_catchup_from_the_exchange) {
    prom_t *p = prom_new();
    telemetry_declare(p);
    net_stats_t ns;
    memset(&ns, 0, sizeof ns);
    ns.tx_bytes[6] = 1000;  // tensor chunks: exchange and catch-up
    ns.tx_bytes[50] = 10;   // outer META
    ns.tx_bytes[32] = 7;    // gossip PING
    ns.tx_bytes[58] = 5;    // catch-up MANIFEST
    ns.tx_bytes[1] = 3;     // HELLO
    catchup_stats_t cs;
    memset(&cs, 0, sizeof cs);
    cs.served_bytes = 400;
    cs.ndonors = 2;
    cs.nchunks = 10;
    cs.chunks_received = 4;
    telemetry_net(p, &ns, &cs, 0);
    double v;
    prom_get(p, "loco_bytes_sent_total", PROM_L("type", "outer"), &v, NULL);
    cr_expect_eq(v, 610);
    prom_get(p, "loco_bytes_sent_total", PROM_L("type", "catchup"), &v, NULL);
    cr_expect_eq(v, 405);
    prom_get(p, "loco_bytes_sent_total", PROM_L("type", "gossip"), &v, NULL);
    cr_expect_eq(v, 7);
    prom_get(p, "loco_bytes_sent_total", PROM_L("type", "other"), &v, NULL);
    cr_expect_eq(v, 3);
    prom_get(p, "loco_catchup_progress", NULL, &v, NULL);
    cr_expect_float_eq(v, 0.4, 1e-12);
    prom_get(p, "loco_catchup_state", PROM_L("state", "running"), &v, NULL);
    cr_expect_eq(v, 1);
    // A later sample where the catch-up module counted more than the socket layer sent so far:
    // the exchange's counter never goes down.
    cs.served_bytes = 900;
    telemetry_net(p, &ns, &cs, 1);
    prom_get(p, "loco_bytes_sent_total", PROM_L("type", "outer"), &v, NULL);
    cr_expect_eq(v, 610);
    prom_get(p, "loco_catchup_state", PROM_L("state", "done"), &v, NULL);
    cr_expect_eq(v, 1);
    prom_destroy(&p);
}

Test(telemetry, checkpoint_age_from_the_manifest) {
    char dir[] = "/tmp/loco_test_prom_XXXXXX";
    cr_assert(mkdtemp(dir));
    prom_t *p = prom_new();
    telemetry_declare(p);
    telemetry_start(p, "0123456789abcdef", "r", "noloco", 10, dir);
    telemetry_refresh(p);
    double v;
    cr_expect_eq(prom_get(p, "loco_checkpoint_age_seconds", NULL, &v, NULL), -1);
    char man[128];
    snprintf(man, sizeof man, "%s/LATEST", dir);
    FILE *f = fopen(man, "w");
    fprintf(f, "ckpt_000000000042.bin\n");
    fclose(f);
    telemetry_refresh(p);
    cr_expect_eq(prom_get(p, "loco_checkpoint_step", NULL, &v, NULL), 0);
    cr_expect_eq(v, 42);
    cr_expect_eq(prom_get(p, "loco_checkpoint_age_seconds", NULL, &v, NULL), 0);
    cr_expect(v >= 0 && v < 60, "age %g", v);
    unlink(man);
    rmdir(dir);
    prom_destroy(&p);
}

// ---------------------------------------------------------------------------------------------
// The HTTP endpoint

Test(http_metrics, listen_address_rule) {
    struct sockaddr_storage sa;
    socklen_t sl;
    int lo = -1;
    char err[300];
    cr_expect_eq(http_metrics_parse_listen("9100", &sa, &sl, &lo, err, sizeof err), 0);
    cr_expect(lo == 1 && sa.ss_family == AF_INET);
    cr_expect_eq(ntohl(((struct sockaddr_in *)&sa)->sin_addr.s_addr), 0x7f000001);
    cr_expect_eq(http_metrics_parse_listen("localhost:0", &sa, &sl, &lo, err, sizeof err), 0);
    cr_expect_eq(lo, 1);
    cr_expect_eq(http_metrics_parse_listen("127.0.0.2:9100", &sa, &sl, &lo, err, sizeof err), 0);
    cr_expect_eq(lo, 1);
    cr_expect_eq(http_metrics_parse_listen("[::1]:9100", &sa, &sl, &lo, err, sizeof err), 0);
    cr_expect(lo == 1 && sa.ss_family == AF_INET6);
    cr_expect_eq(http_metrics_parse_listen("0.0.0.0:9100", &sa, &sl, &lo, err, sizeof err), 0);
    cr_expect_eq(lo, 0, "explicit, not loopback: allowed (with a warning when started)");
    cr_expect_eq(http_metrics_parse_listen("[::]:9100", &sa, &sl, &lo, err, sizeof err), 0);
    cr_expect_eq(lo, 0);
    cr_expect_eq(http_metrics_parse_listen("metrics.example.com:9100", &sa, &sl, &lo, err, sizeof err), -1);
    cr_expect(strstr(err, "not a numeric address"), "%s", err);
    cr_expect_eq(http_metrics_parse_listen("127.0.0.1:65536", &sa, &sl, &lo, err, sizeof err), -1);
    cr_expect_eq(http_metrics_parse_listen("127.0.0.1:", &sa, &sl, &lo, err, sizeof err), -1);
    cr_expect_eq(http_metrics_parse_listen("[::1]9100", &sa, &sl, &lo, err, sizeof err), -1);
    cr_expect_eq(http_metrics_parse_listen("", &sa, &sl, &lo, err, sizeof err), -1);
}

// One HTTP/1.0 request to 127.0.0.1:port; the whole response (caller frees).
static char *s_http(int port, const char *req) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(0x7f000001);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    size_t cap = 1 << 16, n = 0;
    char *buf = calloc(1, cap);
    ssize_t r;
    while (n < cap - 1 && (r = read(fd, buf + n, cap - 1 - n)) > 0) n += (size_t)r;
    close(fd);
    return buf;
}

Test(http_metrics, serves_the_exposition_at_slash_metrics_only) {
    prom_t *p = prom_new();
    telemetry_declare(p);
    prom_set(p, "loco_loss", NULL, 4.5);
    char err[300];
    http_metrics_t *h = http_metrics_start("127.0.0.1:0", p, err, sizeof err);
    cr_assert(h, "%s", err);
    int port = 0;
    cr_assert_eq(sscanf(http_metrics_url(h), "http://127.0.0.1:%d/metrics", &port), 1, "%s", http_metrics_url(h));
    char *r = s_http(port, "GET /metrics HTTP/1.0\r\n\r\n");
    cr_expect(strstr(r, "HTTP/1.0 200") || strstr(r, "HTTP/1.1 200"), "%.200s", r);
    cr_expect(strstr(r, "text/plain; version=0.0.4"), "%.400s", r);
    cr_expect(strstr(r, "\r\n\r\n# HELP loco_info "), "%.400s", r);
    cr_expect(strstr(r, "\nloco_loss 4.5\n"));
    free(r);
    r = s_http(port, "GET /secret HTTP/1.0\r\n\r\n");
    cr_expect(strstr(r, " 404 "), "%.200s", r);
    free(r);
    r = s_http(port, "POST /metrics HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc");
    cr_expect(strstr(r, " 405 "), "%.200s", r);
    free(r);
    // The port is taken: a second server names the cause.
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    cr_expect_null(http_metrics_start(addr, p, err, sizeof err));
    cr_expect(strstr(err, "Address already in use"), "%s", err);
    http_metrics_stop(&h);
    cr_expect_null(h);
    http_metrics_stop(&h);
    prom_destroy(&p);
}

// ---------------------------------------------------------------------------------------------
// The control socket

Test(control, answers_status_and_is_private) {
    char dir[] = "/tmp/loco_test_ctl_XXXXXX";
    cr_assert(mkdtemp(dir));
    loco_config_t cfg;
    config_defaults(&cfg);
    snprintf(cfg.checkpoint_dir, sizeof cfg.checkpoint_dir, "%s/ck", dir);
    char path[200], err[1400];
    cr_assert_eq(control_path(&cfg, path, sizeof path, err, sizeof err), 0);
    char want[200];
    snprintf(want, sizeof want, "%s/ck/control/loco.sock", dir);
    cr_expect_str_eq(path, want);
    char *ans = NULL;
    cr_expect_eq(control_query(path, "status", 1000, &ans, err, sizeof err), -1, "no node yet");
    cr_expect(strstr(err, "does not exist"), "%s", err);

    prom_t *p = prom_new();
    telemetry_declare(p);
    telemetry_start(p, "0123456789abcdef", "r", "noloco", 10, cfg.checkpoint_dir);
    control_t *c = control_start(path, 1, p, err, sizeof err);
    cr_assert(c, "%s", err);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_expect_eq(st.st_mode & 0777, 0600, "socket mode %o", st.st_mode & 0777);
    char cdir[200];
    snprintf(cdir, sizeof cdir, "%s/ck/control", dir);
    cr_assert_eq(stat(cdir, &st), 0);
    cr_expect_eq(st.st_mode & 0777, 0700, "directory mode %o", st.st_mode & 0777);
    cr_assert_eq(control_query(path, "status json", 2000, &ans, err, sizeof err), 0, "%s", err);
    cr_expect(strstr(ans, "\"peer\":\"0123456789abcdef\""), "%s", ans);
    free(ans);
    cr_assert_eq(control_query(path, "status", 2000, &ans, err, sizeof err), 0, "%s", err);
    cr_expect(!strncmp(ans, "peer 0123456789abcdef", 21), "%s", ans);
    free(ans);
    cr_assert_eq(control_query(path, "shutdown", 2000, &ans, err, sizeof err), 0, "%s", err);
    cr_expect(!strncmp(ans, "error: unknown request", 22), "%s", ans);
    free(ans);
    // A second node on the same path is refused while the first answers.
    cr_expect_eq(control_in_use(path), 1);
    cr_expect_null(control_start(path, 1, p, err, sizeof err));
    cr_expect(strstr(err, "another loco node is running"), "%s", err);
    control_stop(&c);
    cr_expect_null(c);
    cr_expect_neq(stat(path, &st), 0, "the socket is removed at stop");

    // A stale socket (a node killed with -9) is replaced.
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    cr_assert_lt(strlen(path), sizeof a.sun_path);
    memcpy(a.sun_path, path, strlen(path) + 1);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    close(fd);
    cr_expect_eq(control_query(path, "status", 1000, &ans, err, sizeof err), -1);
    cr_expect(strstr(err, "nothing listens"), "%s", err);
    c = control_start(path, 1, p, err, sizeof err);
    cr_assert(c, "%s", err);
    control_stop(&c);

    // A directory of one's own choosing must already be private.
    char loose[200], lpath[240];
    snprintf(loose, sizeof loose, "%s/loose", dir);
    mkdir(loose, 0755);
    chmod(loose, 0755);
    snprintf(lpath, sizeof lpath, "%s/s.sock", loose);
    cr_expect_null(control_start(lpath, 0, p, err, sizeof err));
    cr_expect(strstr(err, "open to other users"), "%s", err);
    rmdir(loose);

    // Too long for sun_path: a clear error.
    memset(cfg.control, 'x', 150);
    cfg.control[150] = '\0';
    cr_expect_eq(control_path(&cfg, path, sizeof path, err, sizeof err), -1);
    cr_expect(strstr(err, "longer than the 107"), "%s", err);
    snprintf(cfg.control, sizeof cfg.control, "off");
    cr_expect_eq(control_path(&cfg, path, sizeof path, err, sizeof err), 0);
    cr_expect_str_eq(path, "");
    prom_destroy(&p);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}
