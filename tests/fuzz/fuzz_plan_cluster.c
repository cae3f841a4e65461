// Fuzz target: the cluster description of `loco plan` (plan_cluster_parse, node/plan_ini.h), then the
// planner on what it accepts.
//
// A refusal must name the source; an accepted description must pass plan_cluster_check, its [pair]
// figures must be symmetric and be what plan_link returns for the pair, and a search
// on it (limited to a small exhaustive budget) must either refuse with a reason or return a layout
// that plan_eval accepts as feasible and whose plan file validates. Inputs with a `key` line are
// skipped: they name files to read (a FIFO would block the fuzzer).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/plan.h"
#include "node/plan_ini.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_plan_cluster: invariant failed: %s (line %d)\n", #cond, __LINE__); \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static plan_cluster_t c;
    static plan_layout_t l;
    static plan_t p;
    if (memmem(data, size, "key", 3)) return 0;
    char err[2048];
    memset(err, 0x55, sizeof err);
    if (plan_cluster_parse((const char *)data, size, "fuzz.ini", &c, err, sizeof err) != 0) {
        CHECK(memchr(err, '\0', sizeof err));
        CHECK(strncmp(err, "fuzz.ini", 8) == 0);
        return 0;
    }
    CHECK(plan_cluster_check(&c, err, sizeof err) == 0);
    // [pair] figures: symmetric, and the link between the two nodes carries them when NICs connect them.
    for (int a = 0; a < c.n_nodes; a++)
        for (int b = 0; b < c.n_nodes; b++) {
            CHECK(c.pair[a][b].bw == c.pair[b][a].bw && c.pair[a][b].lat == c.pair[b][a].lat);
            plan_link_t lk = plan_link(&c, a, b);
            if (a != b && c.pair[a][b].bw > 0 && lk.nic_a >= 0)
                CHECK(lk.beta == c.pair[a][b].bw && lk.alpha == c.pair[a][b].lat);
        }
    // Keep the search small: the fuzzer is after the parser, the search is tested against brute force.
    if (c.n_nodes > 6 || c.model.layers > 16) return 0;
    plan_opts_t o = {.exhaustive_limit = 2000};
    plan_eval_t e;
    memset(err, 0x55, sizeof err);
    if (plan_search(&c, &o, &l, &e, NULL, err, sizeof err) != 0) {
        CHECK(memchr(err, '\0', sizeof err) && err[0]);
        return 0;
    }
    CHECK(e.feasible && e.tokens_per_s > 0 && e.step_s > 0);
    plan_to_file(&c, &l, &e, &p);
    int all_ids = 1;
    for (int i = 0; i < c.n_nodes; i++) all_ids &= c.node[i].has_id;
    CHECK(plan_validate(&p, err, sizeof err) == 0 || (!all_ids && strstr(err, "same peer id")));
    return 0;
}
