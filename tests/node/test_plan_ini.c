// The cluster description's node-pair figures and peer endpoints (node/plan_ini.h): [pair A B]
// (what `loco plan --probe-out` writes) replaces one pair's link figures, a pair named twice keeps
// the slower figures, and [node] peer = [ID@]tcp://host:port; every malformed form is refused with
// the line and the reason; the search uses pair figures (nodes with different ones are not
// interchangeable).
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "node/plan.h"
#include "node/plan_ini.h"

#define ID(c) c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c /* 32 × 2 hex digits */

static const char *s_head = "[model]\nlayers = 4\nd_model = 64\nheads = 4\nseq_len = 32\nvocab = 256\n"
                            "[train]\nmicro_batch = 2\nmicro_batches = 4\n[island lo]\n";

// Three identical nodes a, b, c (1 Gbit/s, 25 ms per NIC: 50 ms between two) after s_head, then tail.
static int s_parse(plan_cluster_t *c, const char *tail, char *err, size_t errlen) {
    static char text[8192];
    snprintf(text, sizeof text,
             "%s"
             "[node a]\nisland = lo\nflops = 1T\nmemory = 8 GiB\nnic = eth0 tcp://10.0.0.1:7100 1Gbit/s 25ms\n"
             "[node b]\nisland = lo\nflops = 1T\nmemory = 8 GiB\nnic = eth0 tcp://10.0.0.2:7100 1Gbit/s 25ms\n"
             "[node c]\nisland = lo\nflops = 1T\nmemory = 8 GiB\nnic = eth0 tcp://10.0.0.3:7100 1Gbit/s 25ms\n"
             "%s",
             s_head, tail);
    return plan_cluster_parse(text, strlen(text), "t.ini", c, err, errlen);
}

static void s_ok(plan_cluster_t *c, const char *tail) {
    char err[1024] = "";
    cr_assert_eq(s_parse(c, tail, err, sizeof err), 0, "refused: %s\n--- tail:\n%s", err, tail);
}

static void s_refused(const char *tail, const char *want) {
    static plan_cluster_t c;
    char err[1024] = "";
    cr_assert_neq(s_parse(&c, tail, err, sizeof err), 0, "accepted:\n%s", tail);
    cr_assert(strstr(err, want) != NULL, "error '%s' does not say '%s'", err, want);
    cr_assert(strncmp(err, "t.ini", 5) == 0, "error '%s' does not name the file", err);
}

Test(plan_ini, pair_replaces_one_link) {
    static plan_cluster_t c;
    s_ok(&c, "[pair a b]\nlatency = 40 us\nbandwidth = 300 MB/s   # measured\n");
    cr_assert_float_eq(c.pair[0][1].bw, 300e6, 1e-3);
    cr_assert_float_eq(c.pair[1][0].lat, 40e-6, 1e-12);
    cr_assert_eq(c.pair[0][2].bw, 0);
    plan_link_t ab = plan_link(&c, 0, 1), ba = plan_link(&c, 1, 0), ac = plan_link(&c, 0, 2);
    cr_assert_float_eq(ab.alpha, 40e-6, 1e-12);
    cr_assert_float_eq(ab.beta, 300e6, 1e-3);
    cr_assert_float_eq(ba.beta, 300e6, 1e-3);
    cr_assert_eq(ab.nic_a, 0);
    cr_assert_eq(ab.nic_b, 0);
    double msg = 4.0 * 2 * 32 * 64;
    cr_assert_float_eq(ab.msg_s, 40e-6 + msg / 300e6, 1e-12);
    // a-c keeps the declared figures: 25 ms + 25 ms, 1 Gbit/s
    cr_assert_float_eq(ac.alpha, 50e-3, 1e-12);
    cr_assert_float_eq(ac.beta, 125e6, 1e-3);
}

Test(plan_ini, pair_named_twice_keeps_the_slower_figures) {
    static plan_cluster_t c;
    // As when a's and b's --probe-out files are both appended: each end measured the pair once.
    s_ok(&c, "[pair a b]\nlatency = 40 us\nbandwidth = 300 MB/s\n"
             "[pair b a]\nlatency = 60 us\nbandwidth = 500 MB/s\n"
             "[pair c a]\nbandwidth = 1 GB/s\nlatency = 1 ms\n");
    cr_assert_float_eq(c.pair[0][1].bw, 300e6, 1e-3);
    cr_assert_float_eq(c.pair[0][1].lat, 60e-6, 1e-12);
    cr_assert_float_eq(c.pair[1][0].lat, 60e-6, 1e-12);
    cr_assert_float_eq(c.pair[0][2].bw, 1e9, 1e-3);
    cr_assert_float_eq(c.pair[2][0].lat, 1e-3, 1e-12);
}

Test(plan_ini, pair_may_come_before_its_nodes) {
    static plan_cluster_t c;
    char err[1024] = "";
    static char text[4096];
    snprintf(text, sizeof text,
             "%s[pair x y]\nlatency = 1 ms\nbandwidth = 10 MB/s\n"
             "[node x]\nisland = lo\nflops = 1T\nmemory = 8 GiB\nnic = eth0 tcp://h1:1 1Gbit/s 1ms\n"
             "[node y]\nisland = lo\nflops = 1T\nmemory = 8 GiB\nnic = eth0 tcp://h2:1 1Gbit/s 1ms\n",
             s_head);
    cr_assert_eq(plan_cluster_parse(text, strlen(text), "t.ini", &c, err, sizeof err), 0, "%s", err);
    cr_assert_float_eq(c.pair[0][1].bw, 10e6, 1e-6);
}

Test(plan_ini, pair_errors_name_the_line) {
    s_refused("[pair a zz]\nlatency = 1 ms\nbandwidth = 1 MB/s\n", "t.ini:26: [pair a zz]: no [node zz]");
    s_refused("[pair a b]\nlatency = 1 ms\n", "t.ini:26: [pair a b] has no 'bandwidth'");
    s_refused("[pair a b]\nbandwidth = 1 MB/s\n", "has no 'latency'");
    s_refused("[pair a a]\n", "two different nodes");
    s_refused("[pair a]\n", "expected [pair NODE1 NODE2]");
    s_refused("[pair a b c]\n", "expected [pair NODE1 NODE2]");
    s_refused("[pair a b]\nbandwidth = 0 MB/s\n", "bandwidth must be > 0");
    s_refused("[pair a b]\nbandwidth = 3 furlongs\n", "unknown unit 'furlongs'");
    s_refused("[pair a b]\nlatency = -1 ms\n", "cannot be negative");
    s_refused("[pair a b]\nnic = x\n", "unknown key 'nic' in [pair] (bandwidth, latency)");
    s_refused("[pear a b]\n", "[pair NODE1 NODE2]"); // the list of known sections names it
}

Test(plan_ini, peer_endpoint_and_id) {
    static plan_cluster_t c;
    s_ok(&c, "[node d]\nisland = lo\nflops = 1T\nmemory = 1 GiB\nnic = eth0 tcp://10.0.0.4:7100 1Gbit/s 1ms\n"
             "peer = " ID("ab") "@tcp://10.0.0.4:7700\n"
             "[node e]\nisland = lo\nflops = 1T\nmemory = 1 GiB\nnic = eth0 tcp://10.0.0.5:7100 1Gbit/s 1ms\n"
             "id = " ID("cd") "\npeer = tcp://[::1]:7700\n"
             "[node f]\nisland = lo\nflops = 1T\nmemory = 1 GiB\nnic = eth0 tcp://10.0.0.6:7100 1Gbit/s 1ms\n"
             "peer = " ID("ef") "@tcp://h6:7700\nid = " ID("EF") "\n");
    cr_assert_str_eq(c.node[3].peer, "tcp://10.0.0.4:7700");
    cr_assert(c.node[3].has_id, "peer = ID@... gives the node its id");
    cr_assert_eq(c.node[3].id[0], 0xab);
    cr_assert_str_eq(c.node[4].peer, "tcp://[::1]:7700");
    cr_assert_eq(c.node[4].id[31], 0xcd);
    cr_assert_eq(c.node[5].id[0], 0xef);
    cr_assert_str_eq(c.node[0].peer, "");
    cr_assert(!c.node[0].has_id);
}

Test(plan_ini, peer_errors) {
    const char *n = "[node d]\nisland = lo\nflops = 1T\nmemory = 1 GiB\nnic = eth0 tcp://10.0.0.4:7100 1Gbit/s 1ms\n";
    char tail[1024];
    snprintf(tail, sizeof tail, "%speer = 10.0.0.4:7700\n", n);
    s_refused(tail, "peer: '10.0.0.4:7700' is not [ID@]tcp://host:port");
    snprintf(tail, sizeof tail, "%speer = tcp://h:0\n", n);
    s_refused(tail, "is not [ID@]tcp://host:port (port 1-65535)");
    snprintf(tail, sizeof tail, "%speer = abc@tcp://h:7700\n", n);
    s_refused(tail, "peer: 'abc' before '@' is not a peer id");
    snprintf(tail, sizeof tail, "%speer = " ID("zz") "@tcp://h:7700\n", n);
    s_refused(tail, "is not a peer id (64 hex digits)");
    snprintf(tail, sizeof tail, "%sid = " ID("11") "\npeer = " ID("22") "@tcp://h:7700\n", n);
    s_refused(tail, "node d: the id in 'peer' is not the node's id");
    snprintf(tail, sizeof tail, "%speer = tcp://h:7700\n[node e]\nisland = lo\nflops = 1T\nmemory = 1 GiB\n"
             "nic = eth0 tcp://10.0.0.5:7100 1Gbit/s 1ms\npeer = tcp://h:7700\n", n);
    s_refused(tail, "nodes d and e have the same peer endpoint tcp://h:7700");
}

// Identical nodes with pair figures: the search must see the slow pair (a and b were one class).
Test(plan_ini, search_uses_pair_figures) {
    static plan_cluster_t c;
    s_ok(&c, "[pair a b]\nlatency = 200 ms\nbandwidth = 1 MB/s\n");
    plan_opts_t o = {.R = 1, .S = 2};
    static plan_layout_t l;
    plan_eval_t e;
    char err[512];
    cr_assert_eq(plan_search(&c, &o, &l, &e, NULL, err, sizeof err), 0, "%s", err);
    int x = l.slot[0][0], y = l.slot[1][0];
    cr_assert(!((x == 0 && y == 1) || (x == 1 && y == 0)), "the pipeline uses the slow pair a-b");
    // Brute force over the ordered pairs agrees on the step time.
    double best = INFINITY;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            if (i == j) continue;
            plan_layout_t t = l;
            t.slot[0][0] = i, t.slot[1][0] = j;
            plan_eval_t te;
            cr_assert_eq(plan_eval(&c, &t, &te), 0);
            if (te.feasible && te.step_s < best) best = te.step_s;
        }
    cr_assert_float_eq(e.step_s, best, 1e-12 * best + 1e-15);
    // And a fast pair is used: a-b at 10 us, 10 GB/s beats the declared 50 ms.
    s_ok(&c, "[pair a b]\nlatency = 10 us\nbandwidth = 10 GB/s\n");
    cr_assert_eq(plan_search(&c, &o, &l, &e, NULL, err, sizeof err), 0, "%s", err);
    x = l.slot[0][0], y = l.slot[1][0];
    cr_assert((x == 0 && y == 1) || (x == 1 && y == 0), "the pipeline does not use the fast pair a-b (%d, %d)", x, y);
}

Test(plan_ini, check_refuses_asymmetric_pairs) {
    static plan_cluster_t c;
    s_ok(&c, "[pair a b]\nlatency = 1 ms\nbandwidth = 1 MB/s\n");
    char err[512] = "";
    cr_assert_eq(plan_cluster_check(&c, err, sizeof err), 0, "%s", err);
    c.pair[0][1].bw = 2e6;
    cr_assert_neq(plan_cluster_check(&c, err, sizeof err), 0);
    cr_assert(strstr(err, "pair a-b") != NULL, "%s", err);
}

Test(plan_ini, key_file_id) {
    char path[] = "/tmp/loco_test_plan_ini_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "# loco peer id (public key)\nid = %s\n", ID("5a"));
    fclose(f);
    uint8_t id[32];
    char err[512];
    cr_assert_eq(plan_key_file_id(path, id, err, sizeof err), 0, "%s", err);
    cr_assert_eq(id[0], 0x5a);
    f = fopen(path, "w");
    fprintf(f, "nothing here\n");
    fclose(f);
    cr_assert_neq(plan_key_file_id(path, id, err, sizeof err), 0);
    cr_assert(strstr(err, "no 'id = <64 hex>' line") != NULL, "%s", err);
    unlink(path);
}
