// Fuzz target: pipeline plan files (plan_parse, node/plan_file.h).
//
// A refusal must come with a message naming the source; an accepted plan must validate, have its
// nodes in (stage, replica) order, and survive the canonical round trip: format → parse gives the
// same plan, the same text and the same hash.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/plan_file.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_plan_file: invariant failed: %s (line %d)\n", #cond, __LINE__);  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static plan_t p, q; // ~50 KiB each: keep them off the stack
    static char a[PLAN_TEXT_MAX], b[PLAN_TEXT_MAX];
    char err[1024];
    memset(err, 0x55, sizeof err);
    if (plan_parse((const char *)data, size, &p, "fuzz.plan", err, sizeof err) != 0) {
        CHECK(memchr(err, '\0', sizeof err));
        CHECK(strncmp(err, "fuzz.plan:", 10) == 0);
        return 0;
    }
    CHECK(plan_validate(&p, err, sizeof err) == 0);
    for (int i = 1; i < p.n_nodes; i++)
        CHECK(p.nodes[i - 1].stage < p.nodes[i].stage ||
              (p.nodes[i - 1].stage == p.nodes[i].stage && p.nodes[i - 1].replica < p.nodes[i].replica));
    int total = 0;
    for (int s = 0; s < p.n_stages; s++) total += plan_replicas(&p, s);
    CHECK(total == p.n_nodes);
    for (int i = 0; i < p.n_nodes; i++) CHECK(plan_find(&p, p.nodes[i].id) == i);
    int na = plan_format(&p, a, sizeof a);
    CHECK(na > 0 && (size_t)na == strlen(a));
    CHECK(plan_parse(a, (size_t)na, &q, "canonical", err, sizeof err) == 0);
    int nb = plan_format(&q, b, sizeof b);
    CHECK(nb == na && memcmp(a, b, (size_t)na) == 0);
    CHECK(q.n_stages == p.n_stages && q.n_nodes == p.n_nodes && q.layers == p.layers);
    CHECK(q.window == p.window && q.routing == p.routing && q.schedule == p.schedule);
    for (int s = 0; s < p.n_stages; s++) { // every stage holds at least one micro-batch, at most M
        int w = plan_stage_window(p.schedule, p.micro_batches, p.n_stages, p.window, s);
        CHECK(w >= 1 && w <= p.micro_batches);
    }
    CHECK(memcmp(q.stages, p.stages, sizeof p.stages) == 0);
    CHECK(memcmp(q.nodes, p.nodes, sizeof p.nodes[0] * (size_t)p.n_nodes) == 0);
    uint8_t h1[32], h2[32];
    plan_hash(&p, h1);
    plan_hash(&q, h2);
    CHECK(memcmp(h1, h2, 32) == 0);
    return 0;
}
