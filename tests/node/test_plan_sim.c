// The discrete-event simulation of pipeline steps (node/plan_sim.h): hand-computable cases (one
// stage; equal stages on ideal links: M + S − 1 stage times; a window bound by a slow link), and
// the cost model's closed form against it on random clusters and layouts — printed, with a bound on
// the worst disagreement so a change to either side that breaks their agreement is caught.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/rng.h"
#include "node/plan.h"
#include "node/plan_sim.h"

// A cluster of n identical nodes on one island, links with the given figures, no exchange cost.
static void s_cluster(plan_cluster_t *c, int n, int layers, int M, double bw, double lat) {
    memset(c, 0, sizeof *c);
    c->model = (gpt_config_t){layers, 64, 4, 32, 64};
    c->micro_batch = 1;
    c->micro_batches = M;
    c->schedule = PLAN_1F1B;
    c->algorithm = PLAN_DILOCO;
    c->inner_steps = 1000000;
    c->codec_bytes = 4;
    c->overlap = 1;
    c->calib_block = 1;
    c->calib_head = 1e-9; // no head: equal stages
    c->n_islands = 1;
    snprintf(c->island[0], sizeof c->island[0], "I");
    for (int a = 0; a < n; a++) {
        plan_cnode_t *nd = &c->node[a];
        snprintf(nd->name, sizeof nd->name, "n%d", a);
        nd->flops = 1e9;
        nd->mem = 1e12;
        nd->n_nics = 1;
        snprintf(nd->nic[0].name, sizeof nd->nic[0].name, "eth");
        snprintf(nd->nic[0].endpoint, sizeof nd->nic[0].endpoint, "tcp://10.0.0.%d:1", a);
        nd->nic[0].bw = bw;
        nd->nic[0].lat = lat / 2;
    }
    c->n_nodes = n;
}

static void s_pipeline(plan_layout_t *l, int S, int L) {
    memset(l, 0, sizeof *l);
    l->R = 1;
    l->S = S;
    plan_even_cuts(L, S, l->cut);
    for (int s = 0; s < S; s++) l->slot[s][0] = s;
}

Test(plan_sim, one_stage_is_m_stage_times) {
    static plan_cluster_t c;
    s_cluster(&c, 1, 4, 6, 1e12, 0);
    plan_layout_t l;
    s_pipeline(&l, 1, 4);
    plan_eval_t e;
    cr_assert_eq(plan_eval(&c, &l, &e), 0);
    plan_sim_t sim;
    char err[200];
    cr_assert_eq(plan_simulate(&c, &l, 3, &sim, err, sizeof err), 0, "%s", err);
    cr_expect_float_eq(sim.pipe_s, 6 * e.t[0], 1e-9 * sim.pipe_s, "%g vs %g", sim.pipe_s, 6 * e.t[0]);
    cr_expect_float_eq(sim.busy[0], 1.0, 1e-9);
}

Test(plan_sim, equal_stages_on_ideal_links_take_m_plus_s_minus_1) {
    static plan_cluster_t c;
    for (int S = 2; S <= 4; S++)
        for (int M = 1; M <= 8; M++) {
            s_cluster(&c, S, 4 * S, M, 1e18, 0);
            plan_layout_t l;
            s_pipeline(&l, S, 4 * S);
            plan_eval_t e;
            cr_assert_eq(plan_eval(&c, &l, &e), 0);
            plan_sim_t sim;
            char err[200];
            cr_assert_eq(plan_simulate(&c, &l, 2, &sim, err, sizeof err), 0, "%s", err);
            double want = (M + S - 1) * e.t[0];
            cr_expect(fabs(sim.first_step_s - want) <= 1e-6 * want, "S %d M %d: first step %g, want %g", S, M,
                      sim.first_step_s, want);
            cr_expect(fabs(e.makespan_s - want) <= 1e-6 * want, "S %d M %d: closed form %g, want %g", S, M,
                      e.makespan_s, want);
        }
}

// Two stages joined by a link whose latency is 3 stage times: with 1F1B's window of 2 the round
// trip (2 t + 2 k) bounds the rate at 2 micro-batches per round trip, which both see.
// Two stages of 4 blocks, 16 micro-batches, a link of infinite bandwidth whose latency is 3 stage
// times; *e evaluated.
static void s_slow_link(plan_cluster_t *c, plan_layout_t *l, plan_eval_t *e) {
    s_cluster(c, 2, 8, 16, 1e18, 0);
    s_pipeline(l, 2, 8);
    cr_assert_eq(plan_eval(c, l, e), 0);
    s_cluster(c, 2, 8, 16, 1e18, 3 * e->t[0]);
    cr_assert_eq(plan_eval(c, l, e), 0);
}

Test(plan_sim, slow_link_makes_the_window_bind) {
    static plan_cluster_t c;
    plan_layout_t l;
    plan_eval_t e;
    s_slow_link(&c, &l, &e);
    double t = e.t[0];
    plan_sim_t sim;
    char err[200];
    cr_assert_eq(plan_simulate(&c, &l, 3, &sim, err, sizeof err), 0, "%s", err);
    double rt = 2 * t + 2 * e.k[0];
    printf("window bound: t %.4g, k %.4g, round trip %.4g: closed form %.4g, simulated first step %.4g\n", t,
           e.k[0], rt, e.makespan_s, sim.first_step_s);
    // Micro-batch 15 starts 15 div 2 = 7 round trips and 15 mod 2 = 1 stage time in.
    cr_expect(fabs(e.makespan_s - (8 * rt + t)) <= 1e-9 * rt, "closed form %g", e.makespan_s);
    cr_expect(fabs(sim.first_step_s - e.makespan_s) <= 0.02 * e.makespan_s, "simulated %g vs closed form %g",
              sim.first_step_s, e.makespan_s);
    cr_expect_lt(sim.busy[0], 0.5, "stage 0 mostly waits: %g", sim.busy[0]);
}

// --- random clusters: the closed form against the simulation ----------------------------------

// Random instances from model/rng.h's generator.
static int s_int(rng_t *r, int lo, int hi) { return lo + (int)rng_below(r, (uint64_t)(hi - lo + 1)); }
static double s_logu(rng_t *r, double lo, double hi) {
    return lo * pow(hi / lo, (double)(rng_next(r) >> 11) / 9007199254740992.0);
}

Test(plan_sim, closed_form_against_simulation_on_random_clusters, .timeout = 120) {
    static plan_cluster_t c;
    rng_t r = {0x5eed5eedULL};
    double sum = 0, worst = 0;
    int n = 0, within10 = 0;
    for (int k = 0; k < 300; k++) {
        int S = s_int(&r, 1, 8), R = s_int(&r, 1, 3), L = s_int(&r, S, 24), M = s_int(&r, 1, 16);
        s_cluster(&c, R * S, L, M, s_logu(&r, 1e7, 1e11), s_logu(&r, 1e-6, 1e-2));
        c.schedule = s_int(&r, 0, 3) ? PLAN_1F1B : PLAN_GPIPE;
        c.calib_head = s_logu(&r, 0.1, 3);
        c.model.d_model = 64 * s_int(&r, 1, 8);
        for (int a = 0; a < c.n_nodes; a++) c.node[a].flops = s_logu(&r, 1e9, 1e11);
        plan_layout_t l;
        memset(&l, 0, sizeof l);
        l.R = R, l.S = S;
        plan_even_cuts(L, S, l.cut);
        for (int s = 0, a = 0; s < S; s++)
            for (int q = 0; q < R; q++) l.slot[s][q] = a++;
        plan_eval_t e;
        plan_sim_t sim;
        char err[200];
        if (plan_eval(&c, &l, &e) != 0 || !e.feasible || plan_simulate(&c, &l, 4, &sim, err, sizeof err) != 0) continue;
        double mk = e.makespan_s + e.wte_s, er = fabs(mk - sim.pipe_s) / sim.pipe_s;
        if (getenv("PLAN_SIM_DEBUG") && er > 0.1)
            printf("  %+.1f%%: S %d R %d M %d %s, t0 %.3g k %.3g q %.3g wte %.3g mk %.3g sim %.3g first %.3g\n",
                   100 * (mk - sim.pipe_s) / sim.pipe_s, S, R, M, c.schedule == PLAN_GPIPE ? "gpipe" : "1f1b", e.t[0],
                   S > 1 ? e.k[0] : 0, S > 1 ? e.q[0] : 0, e.wte_s, e.makespan_s, sim.pipe_s, sim.first_step_s);
        sum += er;
        worst = fmax(worst, er);
        within10 += er <= 0.10;
        n++;
    }
    printf("closed form vs simulation over %d random layouts (1-8 stages, 1-3 replicas, 1-16 micro-batches, "
           "links 10 MB/s-100 GB/s, 1 us-10 ms): mean |error| %.1f%%, worst %.1f%%, %d within 10%%\n",
           n, 100 * sum / n, 100 * worst, within10);
    cr_assert_gt(n, 250);
    cr_expect_lt(sum / n, 0.10, "the closed form and the simulation disagree by %.1f%% on average", 100 * sum / n);
}

// The same slow link: plan_widen_window raises the window until it no longer binds; the closed form
// and the simulation both get faster and still agree.
Test(plan_sim, a_wider_window_covers_the_round_trip) {
    static plan_cluster_t c;
    plan_layout_t l;
    plan_eval_t e;
    s_slow_link(&c, &l, &e);
    cr_assert(e.window_bound);
    plan_sim_t before, after;
    char err[200];
    cr_assert_eq(plan_simulate(&c, &l, 3, &before, err, sizeof err), 0, "%s", err);
    double step0 = e.step_s;
    cr_assert_eq(plan_widen_window(&c, &l, &e), 1);
    cr_assert_eq(plan_simulate(&c, &l, 3, &after, err, sizeof err), 0, "%s", err);
    printf("window %d: closed form %.4g -> %.4g s, simulated %.4g -> %.4g s\n", l.window, step0, e.step_s,
           before.pipe_s, after.pipe_s);
    // A round trip is 2 t + 2 k = 8 t: 8 micro-batches in flight keep stage 0 busy.
    cr_expect_eq(l.window, 8);
    cr_expect(!e.window_bound);
    cr_expect_lt(e.step_s, 0.5 * step0);
    cr_expect_lt(after.pipe_s, 0.5 * before.pipe_s);
    cr_expect(fabs(after.first_step_s - e.makespan_s) <= 0.05 * e.makespan_s, "simulated %g vs closed form %g",
              after.first_step_s, e.makespan_s);
    // With memory for only 5 in flight at stage 0, it stops there.
    for (int a = 0; a < 2; a++) c.node[a].mem = 0;
    plan_layout_t m;
    s_pipeline(&m, 2, 8);
    m.window = 5;
    plan_eval_t em;
    cr_assert_eq(plan_eval(&c, &m, &em), 0);
    for (int a = 0; a < 2; a++) c.node[a].mem = em.mem_need[0] > em.mem_need[1] ? em.mem_need[0] : em.mem_need[1];
    m.window = 0;
    cr_assert_eq(plan_eval(&c, &m, &em), 0);
    cr_assert_eq(plan_widen_window(&c, &m, &em), 1);
    cr_expect_eq(m.window, 5, "memory allows 5, got %d", m.window);
}
