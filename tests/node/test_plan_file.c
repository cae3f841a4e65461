// Plan files (node/plan_file.h): round trip through the canonical text and the disk, the hash, the
// lookups, and a refusal with file, line and reason for every malformed or inconsistent input.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node/plan_file.h"

#define ID(c) c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c /* 32 × 2 hex digits */

static const char *s_good = "# written by hand\n"
                            "loco-plan 1\n"
                            "layers 12   # model blocks\n"
                            "schedule 1f1b\n"
                            "micro_batch 4\n"
                            "micro_batches 8\n"
                            "stage 0 0 5\n"
                            "stage 1 5 12\n"
                            "node b1 " ID("bb") " 1 0 tcp://10.0.1.1:7100\n"
                            "node a1 " ID("aa") " 0 0 tcp://10.0.0.1:7100\n"
                            "\n"
                            "node a2 " ID("AC") " 0 1 tcp://10.0.0.2:7100\n"
                            "predicted_step_s 0.412\n"
                            "predicted_tokens_per_s 9941\n";

static void s_parse_ok(const char *text, plan_t *p) {
    char err[512] = "";
    int rc = plan_parse(text, strlen(text), p, "t.plan", err, sizeof err);
    cr_assert_eq(rc, 0, "parse failed: %s", err);
}

Test(plan_file, parses_the_documented_format) {
    static plan_t p;
    s_parse_ok(s_good, &p);
    cr_assert_eq(p.layers, 12);
    cr_assert_eq(p.schedule, PLAN_1F1B);
    cr_assert_eq(p.micro_batch, 4);
    cr_assert_eq(p.micro_batches, 8);
    cr_assert_eq(p.n_stages, 2);
    cr_assert_eq(p.stages[0].l0, 0);
    cr_assert_eq(p.stages[0].l1, 5);
    cr_assert_eq(p.stages[1].l1, 12);
    cr_assert_eq(p.n_nodes, 3);
    // sorted by (stage, replica)
    cr_assert_str_eq(p.nodes[0].name, "a1");
    cr_assert_str_eq(p.nodes[1].name, "a2");
    cr_assert_str_eq(p.nodes[2].name, "b1");
    cr_assert_eq(p.nodes[1].id[0], 0xac);
    cr_assert_str_eq(p.nodes[2].endpoint, "tcp://10.0.1.1:7100");
    cr_assert_float_eq(p.predicted_step_s, 0.412, 1e-12);
    cr_assert_float_eq(p.predicted_tokens_per_s, 9941, 1e-9);
    cr_assert_eq(plan_replicas(&p, 0), 2);
    cr_assert_eq(plan_replicas(&p, 1), 1);
    cr_assert_eq(plan_replicas(&p, 2), 0);
    uint8_t id[32];
    memset(id, 0xbb, 32);
    cr_assert_eq(plan_find(&p, id), 2);
    memset(id, 0xcc, 32);
    cr_assert_eq(plan_find(&p, id), -1);
}

Test(plan_file, canonical_text_round_trips) {
    static plan_t p, q;
    s_parse_ok(s_good, &p);
    static char a[PLAN_TEXT_MAX], b[PLAN_TEXT_MAX];
    int na = plan_format(&p, a, sizeof a);
    cr_assert_gt(na, 0);
    cr_assert_eq((size_t)na, strlen(a));
    cr_assert_null(strchr(a, '#'), "canonical text has no comments");
    s_parse_ok(a, &q);
    int nb = plan_format(&q, b, sizeof b);
    cr_assert_eq(na, nb);
    cr_assert_str_eq(a, b);
    cr_assert_eq(memcmp(&p, &q, sizeof p), 0, "parse(format(p)) == p");
    uint8_t h1[32], h2[32];
    plan_hash(&p, h1);
    plan_hash(&q, h2);
    cr_assert_eq(memcmp(h1, h2, 32), 0);
    // Too small a buffer: -1 and an empty string.
    char small[40];
    cr_assert_eq(plan_format(&p, small, sizeof small), -1);
    cr_assert_str_eq(small, "");
}

Test(plan_file, hash_ignores_comments_and_node_order_but_not_layout) {
    static plan_t p, q;
    s_parse_ok(s_good, &p);
    // Same plan, nodes in another order, different comments and spacing.
    const char *other = "loco-plan 1\nmicro_batches 8\nmicro_batch 4\nschedule   1f1b\nlayers 12\n"
                        "stage 0 0 5 # first\nstage 1 5 12\n"
                        "node a2 " ID("ac") " 0 1 tcp://10.0.0.2:7100\n"
                        "node a1 " ID("aa") " 0 0 tcp://10.0.0.1:7100\n"
                        "node b1 " ID("bb") " 1 0 tcp://10.0.1.1:7100\n"
                        "predicted_tokens_per_s 9941\npredicted_step_s 0.4120\n";
    s_parse_ok(other, &q);
    uint8_t h1[32], h2[32];
    plan_hash(&p, h1);
    plan_hash(&q, h2);
    cr_assert_eq(memcmp(h1, h2, 32), 0);
    // Moving one block changes the hash.
    q.stages[0].l1 = 6;
    q.stages[1].l0 = 6;
    plan_hash(&q, h2);
    cr_assert_neq(memcmp(h1, h2, 32), 0);
    // So does another endpoint.
    s_parse_ok(other, &q);
    snprintf(q.nodes[0].endpoint, sizeof q.nodes[0].endpoint, "tcp://10.0.0.1:7101");
    plan_hash(&q, h2);
    cr_assert_neq(memcmp(h1, h2, 32), 0);
}

Test(plan_file, gpipe_and_no_predictions) {
    static plan_t p, q;
    const char *t = "loco-plan 1\nlayers 1\nschedule gpipe\nmicro_batch 1\nmicro_batches 1\nstage 0 0 1\n"
                    "node solo " ID("01") " 0 0 tcp://[::1]:65535\n";
    s_parse_ok(t, &p);
    cr_assert_eq(p.schedule, PLAN_GPIPE);
    cr_assert_eq(p.predicted_step_s, 0);
    char buf[1024];
    int n = plan_format(&p, buf, sizeof buf);
    cr_assert_gt(n, 0);
    cr_assert_null(strstr(buf, "predicted"));
    cr_assert_not_null(strstr(buf, "schedule gpipe\n"));
    s_parse_ok(buf, &q);
    cr_assert_eq(memcmp(&p, &q, sizeof p), 0);
}

Test(plan_file, write_is_atomic_and_reads_back) {
    char dir[] = "/tmp/loco_test_plan_XXXXXX";
    cr_assert(mkdtemp(dir));
    char path[128], err[512] = "";
    snprintf(path, sizeof path, "%s/plan.txt", dir);
    static plan_t p, q;
    s_parse_ok(s_good, &p);
    cr_assert_eq(plan_write(path, &p, err, sizeof err), 0, "%s", err);
    // Overwrite in place: still one file, no temp file left behind.
    p.predicted_step_s = 1.5;
    cr_assert_eq(plan_write(path, &p, err, sizeof err), 0, "%s", err);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 1", dir);
    cr_assert_eq(system(cmd), 0, "a temp file was left in %s", dir);
    cr_assert_eq(plan_read(path, &q, err, sizeof err), 0, "%s", err);
    cr_assert_float_eq(q.predicted_step_s, 1.5, 1e-12);
    uint8_t h1[32], h2[32];
    plan_hash(&p, h1);
    plan_hash(&q, h2);
    cr_assert_eq(memcmp(h1, h2, 32), 0);
    // An invalid plan is not written, and the old file stays.
    p.stages[1].l1 = 11;
    cr_assert_eq(plan_write(path, &p, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "invalid plan"), "%s", err);
    cr_assert_eq(plan_read(path, &q, err, sizeof err), 0, "%s", err);
    // Unwritable directory.
    char bad[160];
    snprintf(bad, sizeof bad, "%s/missing/plan.txt", dir);
    p.stages[1].l1 = 12;
    cr_assert_eq(plan_write(bad, &p, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "cannot create"), "%s", err);
    // Reading a missing file names it.
    cr_assert_eq(plan_read(bad, &q, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, bad), "%s", err);
    cr_assert_not_null(strstr(err, "cannot open"), "%s", err);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

// Replaces the first occurrence of `from` in s_good with `to` and expects a refusal whose message
// holds "t.plan:LINE:" (line > 0) or "t.plan: " (line 0) and `reason`.
static void s_refused(const char *from, const char *to, int line, const char *reason) {
    char text[4096];
    const char *at = strstr(s_good, from);
    cr_assert_not_null(at, "test bug: '%s' not in the sample", from);
    snprintf(text, sizeof text, "%.*s%s%s", (int)(at - s_good), s_good, to, at + strlen(from));
    static plan_t p;
    char err[512] = "";
    int rc = plan_parse(text, strlen(text), &p, "t.plan", err, sizeof err);
    cr_assert_eq(rc, -1, "accepted after replacing '%s' with '%s'", from, to);
    char where[32];
    if (line > 0) snprintf(where, sizeof where, "t.plan:%d: ", line);
    else snprintf(where, sizeof where, "t.plan: ");
    cr_assert_eq(strncmp(err, where, strlen(where)), 0, "'%s' does not start with '%s'", err, where);
    cr_assert_not_null(strstr(err, reason), "'%s' does not say '%s'", err, reason);
}

Test(plan_file, refuses_malformed_lines) {
    s_refused("loco-plan 1", "loco-plan 2", 2, "unsupported plan version");
    s_refused("loco-plan 1", "loco-plan", 2, "unsupported plan version");
    s_refused("loco-plan 1\n", "", 2, "not a loco plan");
    s_refused("layers 12 ", "layers twelve ", 3, "not an integer");
    s_refused("layers 12 ", "layers 0 ", 3, "out of range");
    s_refused("layers 12 ", "layers 99999999999999999999 ", 3, "not an integer");
    s_refused("layers 12 ", "layers 12 13 ", 3, "takes 1 field");
    s_refused("schedule 1f1b", "schedule zigzag", 4, "not 1f1b or gpipe");
    s_refused("micro_batch 4", "micro_batch -4", 5, "out of range");
    s_refused("micro_batches 8", "micro_batches 8x", 6, "not an integer");
    s_refused("stage 0 0 5", "stage 0 0", 7, "takes 3 fields");
    s_refused("stage 0 0 5", "stage 1 0 5", 7, "out of order");
    s_refused("stage 0 0 5", "stage 0 5 5", 7, "must be greater");
    s_refused("node b1 ", "node b/1 ", 9, "node name");
    s_refused("node b1 ", "node abcdefghijabcdefghijabcdefghijkl ", 9, "node name");
    s_refused(ID("bb"), "bb", 9, "64 hex digits");
    s_refused(ID("bb"), ID("bg"), 9, "64 hex digits");
    s_refused(" 1 0 tcp://10.0.1.1", " x 0 tcp://10.0.1.1", 9, "node stage");
    s_refused(" 1 0 tcp://10.0.1.1", " 1 -1 tcp://10.0.1.1", 9, "node replica");
    s_refused("tcp://10.0.1.1:7100", "udp://10.0.1.1:7100", 9, "not tcp://host:port");
    s_refused("tcp://10.0.1.1:7100", "tcp://10.0.1.1", 9, "not tcp://host:port");
    s_refused("tcp://10.0.1.1:7100", "tcp://10.0.1.1:0", 9, "not tcp://host:port");
    s_refused("tcp://10.0.1.1:7100", "tcp://10.0.1.1:65536", 9, "not tcp://host:port");
    s_refused("tcp://10.0.1.1:7100", "tcp://:7100", 9, "not tcp://host:port");
    s_refused("tcp://10.0.1.1:7100\n", "tcp://10.0.1.1:7100 extra\n", 9, "takes 5 fields");
    s_refused("predicted_step_s 0.412", "predicted_step_s -1", 13, "finite number");
    s_refused("predicted_step_s 0.412", "predicted_step_s nan", 13, "finite number");
    s_refused("predicted_step_s 0.412", "predicted_step_s 1e999", 13, "finite number");
    s_refused("predicted_tokens_per_s 9941", "predicted_tokens_per_s", 14, "takes 1 field");
    s_refused("schedule 1f1b", "schedule 1f1b\nschedule gpipe", 5, "given twice");
    s_refused("schedule 1f1b", "speed 11", 4, "unknown keyword");
    s_refused("schedule 1f1b", "loco-plan 1", 4, "repeated");
    s_refused("schedule 1f1b", "schedule 1f1b a b c d e f g h", 4, "too many fields");
}

Test(plan_file, refuses_bytes_that_are_not_a_plan) {
    static plan_t p;
    char err[512];
    cr_assert_eq(plan_parse("", 0, &p, "e.plan", err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "e.plan: empty"), "%s", err);
    cr_assert_eq(plan_parse("# only comments\n\n", 17, &p, "e.plan", err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "empty"), "%s", err);
    const char nul[] = "loco-plan 1\nlay\0ers 3\n";
    cr_assert_eq(plan_parse(nul, sizeof nul - 1, &p, "e.plan", err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "e.plan:2: NUL byte"), "%s", err);
    static char longline[3000];
    memset(longline, 'x', sizeof longline - 1);
    memcpy(longline, "loco-plan 1\n", 12);
    cr_assert_eq(plan_parse(longline, strlen(longline), &p, "e.plan", err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "e.plan:2: line longer"), "%s", err);
    cr_assert_eq(plan_parse(longline, (size_t)(2 << 20), &p, "e.plan", err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "larger than"), "%s", err);
    // NULL source still gives a message.
    cr_assert_eq(plan_parse("nope\n", 5, &p, NULL, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "(plan):1:"), "%s", err);
}

Test(plan_file, refuses_missing_lines_and_inconsistent_plans) {
    s_refused("layers 12   # model blocks\n", "", 0, "no 'layers' line");
    s_refused("schedule 1f1b\n", "", 0, "no 'schedule' line");
    s_refused("micro_batch 4\n", "", 0, "no 'micro_batch' line");
    s_refused("micro_batches 8\n", "", 0, "no 'micro_batches' line");
    s_refused("stage 0 0 5\nstage 1 5 12\n", "", 0, "no 'stage' line");
    s_refused("layers 12 ", "layers 13 ", 0, "stages end at block 12 but the model has 13 layers");
    s_refused("layers 12 ", "layers 1 ", 0, "2 stages for 1 layers");
    s_refused("stage 0 0 5", "stage 0 1 5", 0, "stage 0 starts at block 1");
    s_refused("stage 1 5 12", "stage 1 6 12", 0, "stage 1 starts at block 6");
    s_refused(" 1 0 tcp://10.0.1.1", " 2 0 tcp://10.0.1.1", 0, "stage 2 does not exist");
    s_refused(" 1 0 tcp://10.0.1.1", " 0 0 tcp://10.0.1.1", 0, "both replica 0 of stage 0");
    s_refused(" 1 0 tcp://10.0.1.1", " 1 1 tcp://10.0.1.1", 0, "stage 1: replicas must be numbered 0..0");
    s_refused(" 0 1 tcp://10.0.0.2", " 0 2 tcp://10.0.0.2", 0, "stage 0: replicas must be numbered 0..1");
    s_refused("node b1 ", "node a1 ", 0, "name a1 appears twice");
    s_refused(ID("bb"), ID("aa"), 0, "same peer id");
    s_refused("tcp://10.0.1.1:7100", "tcp://10.0.0.1:7100", 0, "share the endpoint");
    // A stage without a node.
    s_refused("node b1 " ID("bb") " 1 0 tcp://10.0.1.1:7100\n", "", 0, "stage 1 has no node");
    s_refused("node b1 " ID("bb") " 1 0 tcp://10.0.1.1:7100\nnode a1 " ID("aa") " 0 0 tcp://10.0.0.1:7100\n\n"
              "node a2 " ID("AC") " 0 1 tcp://10.0.0.2:7100\n",
              "", 0, "no 'node' line");
}

Test(plan_file, validate_checks_built_plans) {
    static plan_t p;
    s_parse_ok(s_good, &p);
    char err[256];
    cr_assert_eq(plan_validate(&p, err, sizeof err), 0, "%s", err);
    p.n_stages = 0;
    cr_assert_eq(plan_validate(&p, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "0 stages"), "%s", err);
    s_parse_ok(s_good, &p);
    p.schedule = (plan_schedule_t)7;
    cr_assert_eq(plan_validate(&p, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "schedule"), "%s", err);
    s_parse_ok(s_good, &p);
    p.micro_batches = 0;
    cr_assert_eq(plan_validate(&p, err, sizeof err), -1);
    s_parse_ok(s_good, &p);
    p.stages[0].l1 = 0;
    cr_assert_eq(plan_validate(&p, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "empty block range"), "%s", err);
    s_parse_ok(s_good, &p);
    p.n_nodes = 0;
    cr_assert_eq(plan_validate(&p, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "0 nodes"), "%s", err);
    s_parse_ok(s_good, &p);
    memset(p.nodes[0].name, 'x', sizeof p.nodes[0].name); // unterminated
    cr_assert_eq(plan_validate(&p, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "name"), "%s", err);
    s_parse_ok(s_good, &p);
    p.nodes[0].endpoint[0] = '\0';
    cr_assert_eq(plan_validate(&p, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "endpoint"), "%s", err);
    s_parse_ok(s_good, &p);
    p.predicted_step_s = -1;
    cr_assert_eq(plan_validate(&p, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "predicted"), "%s", err);
}

Test(plan_file, largest_plan_fits_the_text_limit) {
    static plan_t p, q;
    memset(&p, 0, sizeof p);
    p.layers = PLAN_MAX_LAYERS;
    p.micro_batch = 1 << 20;
    p.micro_batches = 1 << 20;
    p.n_stages = PLAN_MAX_STAGES;
    for (int s = 0; s < PLAN_MAX_STAGES; s++) {
        p.stages[s].l0 = s * (PLAN_MAX_LAYERS / PLAN_MAX_STAGES);
        p.stages[s].l1 = (s + 1) * (PLAN_MAX_LAYERS / PLAN_MAX_STAGES);
    }
    p.n_nodes = PLAN_MAX_NODES;
    for (int i = 0; i < PLAN_MAX_NODES; i++) {
        plan_node_t *n = &p.nodes[i];
        snprintf(n->name, sizeof n->name, "node-%026d", i);
        memset(n->id, 0xff, 32);
        n->id[0] = (uint8_t)i;
        n->stage = i / (PLAN_MAX_NODES / PLAN_MAX_STAGES);
        n->replica = i % (PLAN_MAX_NODES / PLAN_MAX_STAGES);
        char host[100];
        memset(host, 'h', sizeof host);
        snprintf(host + 80, 20, "%05d", i);
        snprintf(n->endpoint, sizeof n->endpoint, "tcp://%.98s:65535", host);
    }
    p.predicted_step_s = 1.23456789e300;
    p.predicted_tokens_per_s = 1.23456789e-300;
    char err[256];
    cr_assert_eq(plan_validate(&p, err, sizeof err), 0, "%s", err);
    static char buf[PLAN_TEXT_MAX];
    int n = plan_format(&p, buf, sizeof buf);
    cr_assert_gt(n, 0);
    s_parse_ok(buf, &q);
    cr_assert_eq(q.n_nodes, PLAN_MAX_NODES);
    static char again[PLAN_TEXT_MAX];
    cr_assert_eq(plan_format(&q, again, sizeof again), n);
    cr_assert_str_eq(buf, again);
}

Test(plan_file, routing_line) {
    static plan_t p, q;
    s_parse_ok(s_good, &p);
    cr_assert_eq(p.routing, PLAN_ROUTE_RANDOM, "no routing line: random");
    uint8_t h_random[32], h_chain[32];
    plan_hash(&p, h_random);
    char text[4096];
    const char *at = strstr(s_good, "stage 0 0 5");
    snprintf(text, sizeof text, "%.*srouting chain\n%s", (int)(at - s_good), s_good, at);
    s_parse_ok(text, &q);
    cr_assert_eq(q.routing, PLAN_ROUTE_CHAIN);
    plan_hash(&q, h_chain);
    cr_assert_neq(memcmp(h_random, h_chain, 32), 0, "routing is part of the hash");
    static char buf[PLAN_TEXT_MAX];
    cr_assert_gt(plan_format(&q, buf, sizeof buf), 0);
    cr_assert_not_null(strstr(buf, "micro_batches 8\nrouting chain\nstage 0 0 5\n"), "%s", buf);
    cr_assert_gt(plan_format(&p, buf, sizeof buf), 0);
    cr_assert_null(strstr(buf, "routing"), "random is not written: %s", buf);
    // An explicit "routing random" parses to the same plan (and hash) as none.
    snprintf(text, sizeof text, "%.*srouting random\n%s", (int)(at - s_good), s_good, at);
    s_parse_ok(text, &q);
    plan_hash(&q, h_chain);
    cr_assert_eq(memcmp(h_random, h_chain, 32), 0);
    s_refused("stage 0 0 5", "routing swarm\nstage 0 0 5", 7, "not random or chain");
    s_refused("stage 0 0 5", "routing chain\nrouting chain\nstage 0 0 5", 8, "given twice");
    s_parse_ok(s_good, &p);
    p.routing = (plan_routing_t)5;
    char err[256];
    cr_assert_eq(plan_validate(&p, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "routing"), "%s", err);
}

Test(plan_file, window_line) {
    static plan_t p, q;
    s_parse_ok(s_good, &p);
    cr_assert_eq(p.window, 0, "no window line: the default");
    char text[4096];
    const char *at = strstr(s_good, "stage 0 0 5");
    snprintf(text, sizeof text, "%.*swindow 6\n%s", (int)(at - s_good), s_good, at);
    s_parse_ok(text, &q);
    cr_assert_eq(q.window, 6);
    uint8_t h0[32], h1[32];
    plan_hash(&p, h0);
    plan_hash(&q, h1);
    cr_assert_neq(memcmp(h0, h1, 32), 0, "the window is part of the hash");
    static char buf[PLAN_TEXT_MAX];
    cr_assert_gt(plan_format(&q, buf, sizeof buf), 0);
    cr_assert_not_null(strstr(buf, "micro_batches 8\nwindow 6\nstage 0 0 5\n"), "%s", buf);
    cr_assert_gt(plan_format(&p, buf, sizeof buf), 0);
    cr_assert_null(strstr(buf, "window"), "the default is not written: %s", buf);
    s_refused("stage 0 0 5", "window 9\nstage 0 0 5", 0, "window 9");             // > micro_batches
    s_refused("stage 0 0 5", "window 0\nstage 0 0 5", 7, "window");               // < 1
    s_refused("schedule 1f1b", "schedule gpipe\nwindow 2", 0, "only with schedule 1f1b");
    s_refused("stage 0 0 5", "window 2\nwindow 3\nstage 0 0 5", 8, "given twice");
    // What each stage holds: 1F1B min(M, W − s) (at least 1), GPipe M.
    cr_expect_eq(plan_stage_window(PLAN_1F1B, 8, 2, 0, 0), 2);
    cr_expect_eq(plan_stage_window(PLAN_1F1B, 8, 2, 0, 1), 1);
    cr_expect_eq(plan_stage_window(PLAN_1F1B, 8, 2, 6, 0), 6);
    cr_expect_eq(plan_stage_window(PLAN_1F1B, 8, 4, 6, 3), 3);
    cr_expect_eq(plan_stage_window(PLAN_1F1B, 3, 4, 0, 0), 3);
    cr_expect_eq(plan_stage_window(PLAN_1F1B, 8, 4, 2, 3), 1);
    cr_expect_eq(plan_stage_window(PLAN_GPIPE, 8, 4, 0, 2), 8);
}
