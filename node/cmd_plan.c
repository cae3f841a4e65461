// loco plan: reads a cluster description, searches the placement of pipeline stages and replicas
// (node/plan.h), prints the layout, its predicted figures and alternatives, and writes the plan file
// the nodes of a pipelined run load. --calibrate measures this machine's per-block time with the
// real CPU model and a loopback link, and reports the cost model's error against them.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "model/gpt.h"
#include "node/cli.h"
#include "node/plan.h"
#include "node/plan_file.h"
#include "node/plan_ini.h"
#include "node/plan_probe.h"
#include "node/plan_sim.h"

static int s_help(void) {
    printf("usage: loco plan -c CLUSTER.ini [--set section.key=value]... [--out PLAN] [--alternatives]\n"
           "                 [--eval PLAN]\n"
           "                 [--replicas R] [--stages S] [--exhaustive-limit N]\n"
           "       loco plan -c CLUSTER.ini --probe --run-config NODE.ini [--from NAME] [--probe-out FILE]\n"
           "                 [--probe-key KEY [--probe-ticket T]] [--probe-bytes N] [--probe-timeout-ms N] [...]\n"
           "       loco plan -c CLUSTER.ini --calibrate [--threads N]\n"
           "  Places pipeline stages and DiLoCo/NoLoCo replicas on the nodes of CLUSTER.ini (nodes, islands,\n"
           "  NICs, links, model, training; docs/plan-example.ini documents it) by a cost model and an exact\n"
           "  search, prints the layout (stage -> blocks, nodes, NIC per link, predicted step time, bytes per\n"
           "  link per step, memory per stage) and writes the plan file nodes load ([pipeline] plan = FILE).\n"
           "  --out PLAN          write the plan file (every node needs an id or key)\n"
           "  --alternatives      also the naive order, an even split, stages inside islands (Holmes),\n"
           "                      pipelines inside islands (data-parallel across), another replica x stage count\n"
           "  --replicas R, --stages S   fix the count (default: searched)\n"
           "  --set s.k=v         override a key of [model] [train] [outer] [island X] [link A B]\n"
           "  --exhaustive-limit N  stage-set sequences per (R, S) searched exactly before local search (200000)\n"
           "  --calibrate         measure this machine's fwd+bwd time per block and of the head (real CPU\n"
           "                      model, [model] and micro_batch of the file) and a loopback link; print the\n"
           "                      model's error and the flops / calib_head values to declare\n"
           "  --eval PLAN         the cost model's figures for an existing plan file on this cluster (its nodes\n"
           "                      named as in CLUSTER.ini; every stage with the same number of replicas)\n"
           "  --probe             measure the links from this node: dial every other node's running `loco run`\n"
           "                      ([node] peer = [ID@]tcp://host:port) over loco's transport, as `loco doctor`\n"
           "                      dials seeds, time round trips and a bulk transfer, print declared vs measured\n"
           "                      figures, and plan with the measured ones (as [pair A B] figures); a node not\n"
           "                      reached keeps its declared figures and the table says why\n"
           "  --run-config FILE   this node's loco run config (with --probe): the run fingerprint ([run],\n"
           "                      [model]), admission and transport options; its [node] key names this node\n"
           "  --from NAME         this node's [node NAME] (default: the node whose id is that key's)\n"
           "  --probe-key FILE    the key the probe dials with (default: one derived from [node] key, with an id\n"
           "                      of its own, printed, that an allowlist run can list; never the node's own\n"
           "                      key); --probe-ticket T its ticket (text or file)\n"
           "  --probe-bytes N     bytes per bulk run (4194304; 2 runs, the best counts); --probe-timeout-ms N\n"
           "                      deadline per node for each step (5000)\n"
           "  --probe-out FILE    write the measured links as [pair A B] sections to append to CLUSTER.ini.\n"
           "                      All pairs: run --probe --probe-out NAME.probe on every node while the run is up,\n"
           "                      then `cat CLUSTER.ini *.probe > measured.ini` (a pair measured from both ends\n"
           "                      keeps the slower figures) and plan with -c measured.ini\n"
           "  Exit 0 ok, 1 no feasible layout, 2 usage or description error.\n");
    return 0;
}

static double s_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const char *s_si(double v, const char *unit, char *buf, size_t len) {
    const char *p[] = {"", "k", "M", "G", "T", "P"};
    int i = 0;
    while (fabs(v) >= 1000 && i < 5) v /= 1000, i++;
    snprintf(buf, len, "%.3g %s%s", v, p[i], unit);
    return buf;
}

static const char *s_time(double s, char *buf, size_t len) {
    if (fabs(s) < 5e-8) s = 0; // no "-0.0 us" from rounding
    if (!isfinite(s)) snprintf(buf, len, "inf");
    else if (s >= 1) snprintf(buf, len, "%.3f s", s);
    else if (s >= 1e-3) snprintf(buf, len, "%.2f ms", s * 1e3);
    else snprintf(buf, len, "%.1f us", s * 1e6);
    return buf;
}

// Bytes crossing island boundaries per inner step: activations and gradients on pipeline links,
// and the outer exchange (a DiLoCo ring crosses once per island it spans; a NoLoCo partner is in
// another island with the probability of drawing one).
static double s_cross_bytes(const plan_cluster_t *c, const plan_layout_t *l, const plan_eval_t *e) {
    double b = 0;
    for (int s = 0; s + 1 < l->S; s++)
        for (int r = 0; r < l->R; r++)
            if (c->node[l->slot[s][r]].island != c->node[l->slot[s + 1][r]].island) b += e->act_bytes_link_step;
    for (int r = 0; l->S > 1 && r < l->R; r++) // the tied embedding's gradient and new value
        if (c->node[l->slot[0][r]].island != c->node[l->slot[l->S - 1][r]].island)
            b += 2.0 * 4.0 * c->model.vocab * c->model.d_model;
    for (int s = 0; s < l->S && l->R > 1; s++) {
        int cnt[PLAN_MAX_ISLANDS] = {0}, spans = 0;
        for (int r = 0; r < l->R; r++) cnt[c->node[l->slot[s][r]].island]++;
        double same = 0;
        for (int i = 0; i < c->n_islands; i++) {
            spans += cnt[i] > 0;
            same += (double)cnt[i] * (cnt[i] - 1);
        }
        if (spans < 2) continue;
        if (c->algorithm == PLAN_DILOCO) b += spans * e->x_bytes_node_step[s];
        else b += l->R * e->x_bytes_node_step[s] * (1 - same / ((double)l->R * (l->R - 1)));
    }
    return b;
}

static void s_print_layout(const plan_cluster_t *c, const plan_layout_t *l, const plan_eval_t *e) {
    char a[32], b[32], d[32], f[32];
    printf("plan: %d replica%s x %d stage%s (%d of %d nodes)", l->R, l->R > 1 ? "s" : "", l->S, l->S > 1 ? "s" : "",
           l->R * l->S, c->n_nodes);
    if (l->window) printf(", window %d", l->window);
    printf("\n");
    printf("%-5s %-16s %-28s %-11s %-19s %-9s %-10s %s\n", "stage", "blocks", "nodes (island)", "compute/mb",
           "memory need/have", "params", "exchange", "sent/node/step");
    for (int s = 0; s < l->S; s++) {
        char blocks[48], nodes[256] = "";
        snprintf(blocks, sizeof blocks, "%d-%d%s%s (%d)", l->cut[s], l->cut[s + 1] - 1, s == 0 ? " +emb" : "",
                 s == l->S - 1 ? " +head" : "", l->cut[s + 1] - l->cut[s]);
        size_t at = 0;
        int isl = c->node[l->slot[s][0]].island, mixed = 0;
        for (int r = 0; r < l->R && at < sizeof nodes - 40; r++) {
            const plan_cnode_t *n = &c->node[l->slot[s][r]];
            mixed |= n->island != isl;
            at += (size_t)snprintf(nodes + at, sizeof nodes - at, "%s%s", r ? " " : "", n->name);
        }
        if (!mixed) snprintf(nodes + at, sizeof nodes - at, " (%s)", c->island[isl]);
        else {
            at = 0;
            for (int r = 0; r < l->R && at < sizeof nodes - 40; r++) {
                const plan_cnode_t *n = &c->node[l->slot[s][r]];
                at += (size_t)snprintf(nodes + at, sizeof nodes - at, "%s%s(%s)", r ? " " : "", n->name,
                                       c->island[n->island]);
            }
        }
        char mem[48];
        if (e->mem_have[s] >= 10 * 1073741824.0 || e->mem_need[s] >= 10 * 1073741824.0)
            snprintf(mem, sizeof mem, "%.1f / %.1f GiB", e->mem_need[s] / 1073741824.0, e->mem_have[s] / 1073741824.0);
        else
            snprintf(mem, sizeof mem, "%.0f / %.0f MiB", e->mem_need[s] / 1048576.0, e->mem_have[s] / 1048576.0);
        printf("%-5d %-16s %-28s %-11s %-19s %-9s %-10s %s\n", s, blocks, nodes, s_time(e->t[s], a, sizeof a), mem,
               s_si(e->params[s], "", b, sizeof b), l->R > 1 ? s_time(e->x[s], d, sizeof d) : "-",
               l->R > 1 ? s_si(e->x_bytes_node_step[s], "B", f, sizeof f) : "-");
    }
    if (l->S > 1) {
        printf("%-5s %-11s %-9s %s\n", "link", "per mb", "bytes/step", "replica: from -> to (NICs)");
        for (int s = 0; s + 1 < l->S; s++) {
            printf("%d->%-2d %-11s %-9s ", s, s + 1, s_time(e->k[s], a, sizeof a),
                   s_si(e->act_bytes_link_step, "B", b, sizeof b));
            for (int r = 0; r < l->R; r++) {
                int x = l->slot[s][r], y = l->slot[s + 1][r];
                plan_link_t lk = plan_link(c, x, y);
                printf("%s%s->%s (%s->%s)", r ? ", " : "", c->node[x].name, c->node[y].name,
                       lk.nic_a >= 0 ? c->node[x].nic[lk.nic_a].name : "?",
                       lk.nic_b >= 0 ? c->node[y].nic[lk.nic_b].name : "?");
            }
            printf("\n");
        }
    }
    if (!e->feasible) {
        printf("infeasible: %s\n", e->why);
        return;
    }
    printf("predicted: step %s = pipeline %s", s_time(e->step_s, a, sizeof a), s_time(e->makespan_s, b, sizeof b));
    if (l->S > 1) printf(" + tied-embedding sync %s", s_time(e->wte_s, d, sizeof d));
    if (l->R > 1)
        printf(" + exposed exchange %s (slowest stage exchange %s every %d step%s, overlap %s)",
               s_time(e->exposed_s, d, sizeof d), s_time(e->exchange_s, f, sizeof f), c->inner_steps,
               c->inner_steps > 1 ? "s" : "", c->overlap ? "on" : "off");
    printf("\n           %.0f tokens/step, %s tokens/s", e->tokens_per_step, s_si(e->tokens_per_s, "", a, sizeof a));
    double flops = e->tokens_per_s * ((double)c->model.layers * plan_block_flops(c) + plan_head_flops(c)) /
                   (double)(l->R * l->S);
    printf(", %s per node; bottleneck: ", s_si(flops, "FLOP/s", b, sizeof b));
    if (e->window_bound) {
        int W = plan_stage_window(c->schedule, c->micro_batches, l->S, l->window, 0);
        printf("1F1B's window (%d micro-batches in flight, a round trip of %s)\n", W, s_time(e->round_trip_s, d, sizeof d));
    } else if (e->bottleneck_link >= 0) printf("link %d->%d\n", e->bottleneck_link, e->bottleneck_link + 1);
    else printf("stage %d compute\n", e->bottleneck_stage);
    printf("           bytes across islands per step: %s\n", s_si(s_cross_bytes(c, l, e), "B", a, sizeof a));
    // The same figures through the discrete-event simulation of the runtime's schedule (node/plan_sim.h).
    plan_sim_t sim;
    char why[200];
    if (plan_simulate(c, l, 4, &sim, why, sizeof why) == 0)
        printf("simulated: step %s (first step from an empty pipeline %s): the closed form is %+.1f%% off\n",
               s_time(sim.step_s, a, sizeof a), s_time(sim.first_step_s, b, sizeof b),
               100.0 * (e->step_s - sim.step_s) / sim.step_s);
    else
        printf("simulated: not run (%s)\n", why);
}

typedef struct {
    const char *name;
    int ok;
    plan_layout_t l;
    plan_eval_t e;
    char why[300];
} alt_t;

static void s_print_alternatives(const plan_cluster_t *c, const plan_layout_t *best, const plan_eval_t *be,
                                 long limit) {
    static alt_t alts[6];
    memset(alts, 0, sizeof alts);
    int n = 0;
    // chosen
    alts[n].name = "chosen";
    alts[n].l = *best;
    alts[n].e = *be;
    alts[n++].ok = 1;
    // naive: the nodes in file order, stage-major, an even split, the chosen counts
    alt_t *a = &alts[n++];
    a->name = "naive (file order, even split)";
    a->l = *best;
    plan_even_cuts(c->model.layers, best->S, a->l.cut);
    for (int s = 0; s < best->S; s++)
        for (int r = 0; r < best->R; r++) a->l.slot[s][r] = s * best->R + r;
    a->ok = plan_eval(c, &a->l, &a->e) == 0;
    // even split on the chosen nodes
    a = &alts[n++];
    a->name = "even split (chosen nodes)";
    a->l = *best;
    plan_even_cuts(c->model.layers, best->S, a->l.cut);
    a->ok = plan_eval(c, &a->l, &a->e) == 0;
    struct {
        const char *name;
        plan_opts_t o;
    } searched[] = {
        {"stages inside islands (Holmes)", {.constraint = PLAN_STAGE_IN_ISLAND, .exhaustive_limit = limit}},
        {"pipelines inside islands (DP across)", {.constraint = PLAN_REPLICA_IN_ISLAND, .exhaustive_limit = limit}},
        {"best with another replica x stage count", {.skip_R = best->R, .skip_S = best->S, .exhaustive_limit = limit}},
    };
    for (size_t i = 0; i < sizeof searched / sizeof searched[0]; i++) {
        a = &alts[n++];
        a->name = searched[i].name;
        a->ok = plan_search(c, &searched[i].o, &a->l, &a->e, NULL, a->why, sizeof a->why) == 0;
    }
    for (int i = 1; i < n; i++) // every layout with its best window, as the chosen one
        if (alts[i].ok && alts[i].e.feasible) plan_widen_window(c, &alts[i].l, &alts[i].e);
    printf("\nalternatives (same cost model; simulated: node/plan_sim.h's discrete-event run of the same figures):\n");
    printf("%-40s %-6s %-10s %-10s %-10s %-10s %-12s %-9s %-10s %s\n", "layout", "R x S", "step", "pipeline",
           "wte sync", "exposed", "tokens/s", "vs chosen", "simulated", "bytes across islands/step");
    double sim_chosen = 0, sim_best = INFINITY, sim_naive = 0, err_sum = 0;
    int nsim = 0;
    for (int i = 0; i < n; i++) {
        a = &alts[i];
        char rs[16], x[32], y[32], z[32], w[32], v[32];
        snprintf(rs, sizeof rs, "%dx%d", a->l.R, a->l.S);
        if (!a->ok || !a->e.feasible) {
            printf("%-40s %-6s infeasible: %s\n", a->name, a->ok ? rs : "-", a->ok ? a->e.why : a->why);
            continue;
        }
        char u[32], sm[32] = "-", why[200];
        plan_sim_t sim;
        if (plan_simulate(c, &a->l, 4, &sim, why, sizeof why) == 0) {
            s_time(sim.step_s, sm, sizeof sm);
            if (i == 0) sim_chosen = sim.step_s;
            if (i == 1) sim_naive = sim.step_s;
            // Per token (layouts differ in R): the simulated step for the chosen layout's token count.
            double per = sim.step_s * be->tokens_per_step / a->e.tokens_per_step;
            if (per < sim_best) sim_best = per;
            err_sum += fabs(a->e.step_s - sim.step_s) / sim.step_s;
            nsim++;
        }
        printf("%-40s %-6s %-10s %-10s %-10s %-10s %-12s %-9.3f %-10s %s\n", a->name, rs,
               s_time(a->e.step_s, x, sizeof x), s_time(a->e.makespan_s, y, sizeof y), s_time(a->e.wte_s, u, sizeof u),
               s_time(a->e.exposed_s, z, sizeof z), s_si(a->e.tokens_per_s, "", w, sizeof w),
               be->tokens_per_s / a->e.tokens_per_s, sm, s_si(s_cross_bytes(c, &a->l, &a->e), "B", v, sizeof v));
    }
    printf("(vs chosen: how many times faster the chosen layout is)\n");
    if (nsim > 0 && sim_chosen > 0)
        printf("simulation: mean |closed form - simulated| %.1f%% over %d layouts; the chosen layout is %+.1f%% from the "
               "best simulated (per token)%s",
               100.0 * err_sum / nsim, nsim, 100.0 * (sim_chosen - sim_best) / sim_best, sim_naive > 0 ? "" : "\n");
    if (nsim > 0 && sim_chosen > 0 && sim_naive > 0) printf("; simulated chosen vs naive %.2fx\n", sim_naive / sim_chosen);
}

// --------------------------------------------------------------------------------------------
// --calibrate
// --------------------------------------------------------------------------------------------

static uint64_t s_rng(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

typedef struct {
    gpt_t *m;
    int B, T, L, C;
    int32_t *in, *tg;
    float *x, *dout, *dx;
} cal_t;

static double s_range_time(cal_t *k, int l0, int l1, int reps) {
    double best[16];
    int n = 0;
    for (int r = 0; r < reps + 1 && n < 16; r++) {
        gpt_zero_grad(k->m);
        double t0 = s_now();
        gpt_forward_range(k->m, l0, l1, k->in, l0 > 0 ? k->x : NULL, l1 == k->L ? k->tg : NULL, k->B, k->T);
        gpt_backward_range(k->m, l1 < k->L ? k->dout : NULL, l0 > 0 ? k->dx : NULL);
        double t = s_now() - t0;
        if (r > 0) best[n++] = t; // the first run warms caches up
    }
    // median
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && best[j] < best[j - 1]; j--) {
            double t = best[j];
            best[j] = best[j - 1];
            best[j - 1] = t;
        }
    return best[n / 2];
}

// One-way time of a message of `bytes` over a ZeroMQ PAIR on 127.0.0.1 (half a round trip), median.
static double s_loop_time(void *a, void *b, size_t bytes, int reps, char *buf) {
    double ts[64];
    int n = 0;
    for (int r = 0; r < reps + 1 && n < 64; r++) {
        double t0 = s_now();
        if (zmq_send(a, buf, bytes, 0) < 0 || zmq_recv(b, buf, bytes, 0) < 0) return NAN;
        if (zmq_send(b, buf, bytes, 0) < 0 || zmq_recv(a, buf, bytes, 0) < 0) return NAN;
        if (r > 0) ts[n++] = (s_now() - t0) / 2;
    }
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && ts[j] < ts[j - 1]; j--) {
            double t = ts[j];
            ts[j] = ts[j - 1];
            ts[j - 1] = t;
        }
    return ts[n / 2];
}

static int s_calibrate(const plan_cluster_t *c, int threads) {
    char err[512], a[32], b[32];
    cal_t k = {0};
    k.B = c->micro_batch;
    k.T = c->model.seq_len;
    k.L = c->model.layers;
    k.C = c->model.d_model;
    k.m = gpt_new(&c->model, k.B, k.T, err, sizeof err);
    if (!k.m) {
        fprintf(stderr, "loco plan: --calibrate: %s\n", err);
        return 1;
    }
    gpt_init_params(k.m, 1);
    gpt_set_threads(k.m, threads);
    size_t bt = (size_t)k.B * k.T, btc = bt * (size_t)k.C;
    k.in = malloc(bt * sizeof(int32_t));
    k.tg = malloc(bt * sizeof(int32_t));
    k.x = malloc(btc * sizeof(float));
    k.dout = malloc(btc * sizeof(float));
    k.dx = malloc(btc * sizeof(float));
    if (!k.in || !k.tg || !k.x || !k.dout || !k.dx) {
        fprintf(stderr, "loco plan: --calibrate: out of memory\n");
        gpt_destroy(&k.m);
        return 1;
    }
    uint64_t seed = 0x5eed;
    for (size_t i = 0; i < bt; i++) {
        k.in[i] = (int32_t)(s_rng(&seed) % (uint64_t)c->model.vocab);
        k.tg[i] = (int32_t)(s_rng(&seed) % (uint64_t)c->model.vocab);
    }
    for (size_t i = 0; i < btc; i++) {
        k.x[i] = (float)((double)(s_rng(&seed) >> 11) / 9007199254740992.0 - 0.5);
        k.dout[i] = k.x[i] * 1e-3f;
    }
    int reps = 7;
    printf("calibration on this machine: %d block%s, d_model %d, heads %d, micro-batch %d x %d tokens, %d thread%s\n",
           k.L, k.L > 1 ? "s" : "", k.C, c->model.heads, k.B, k.T, threads, threads > 1 ? "s" : "");
    // Stage ranges: every single block, the whole model, its halves and its middle. Each is timed
    // (fwd+bwd, median of reps), then T = n·a + [head]·h is fitted by least squares: a per block, h
    // for the final LayerNorm + head, and each range's measured time is compared with the fit.
    int ranges[PLAN_MAX_LAYERS + 8][2], nr = 0;
    for (int l = 0; l < k.L && l < PLAN_MAX_LAYERS; l++) ranges[nr][0] = l, ranges[nr++][1] = l + 1;
    if (k.L >= 2) {
        ranges[nr][0] = 0, ranges[nr++][1] = k.L;
        ranges[nr][0] = 0, ranges[nr++][1] = k.L / 2;
        ranges[nr][0] = k.L / 2, ranges[nr++][1] = k.L;
    }
    if (k.L >= 4) ranges[nr][0] = 1, ranges[nr++][1] = k.L - 1;
    static double meas[PLAN_MAX_LAYERS + 8];
    double snn = 0, snh = 0, shh = 0, snt = 0, sht = 0;
    for (int i = 0; i < nr; i++) {
        meas[i] = s_range_time(&k, ranges[i][0], ranges[i][1], reps);
        double n = ranges[i][1] - ranges[i][0], h = ranges[i][1] == k.L;
        snn += n * n, snh += n * h, shh += h * h, snt += n * meas[i], sht += h * meas[i];
    }
    double det = snn * shh - snh * snh;
    double ta = det != 0 ? (snt * shh - sht * snh) / det : snt / snn;
    double th = det != 0 ? (snn * sht - snh * snt) / det : 0;
    if (th < 0) th = 0, ta = snt / snn;
    static plan_cluster_t u; // FLOP counts with calibration factors 1 (large: off the stack)
    u = *c;
    u.calib_block = u.calib_head = 1;
    double tok = (double)bt, fb = plan_block_flops(&u) * tok, fh = plan_head_flops(&u) * tok;
    double v = fb / ta, calib_head = th * v / fh;
    char x1[32];
    printf("  fitted: block fwd+bwd %s (%s FLOP each: %s), head fwd+bwd %s (calib_head %.3f)\n",
           s_time(ta, a, sizeof a), s_si(fb, "", b, sizeof b), s_si(v, "FLOP/s", x1, sizeof x1),
           s_time(th, err, 32), calib_head);
    printf("  %-14s %-12s %-12s %s\n", "stage blocks", "measured", "model", "error");
    double sum_err = 0;
    for (int i = 0; i < nr; i++) {
        int l0 = ranges[i][0], l1 = ranges[i][1];
        double pred = (l1 - l0) * ta + (l1 == k.L ? th : 0);
        double e = (pred - meas[i]) / meas[i];
        sum_err += fabs(e);
        char r[32];
        snprintf(r, sizeof r, "%d-%d", l0, l1 - 1);
        printf("  %-14s %-12s %-12s %+.1f%%\n", r, s_time(meas[i], a, sizeof a), s_time(pred, b, sizeof b), 100 * e);
    }
    printf("  mean absolute error of the model on single-stage times: %.1f%% (%d ranges)\n", 100 * sum_err / nr, nr);
    printf("  declare for this machine: flops = %.4g (calib_block = 1), calib_head = %.3f\n", v, calib_head);

    // Loopback link: α and β fitted to one-way times of messages from 1 byte to 16 boundary messages.
    void *ctx = zmq_ctx_new();
    void *pa = zmq_socket(ctx, ZMQ_PAIR), *pb = zmq_socket(ctx, ZMQ_PAIR);
    char ep[128];
    size_t epl = sizeof ep;
    int rc = 1;
    size_t msg = btc * sizeof(float);
    char *buf = malloc(16 * msg + 1);
    if (buf && zmq_bind(pa, "tcp://127.0.0.1:*") == 0 && zmq_getsockopt(pa, ZMQ_LAST_ENDPOINT, ep, &epl) == 0 &&
        zmq_connect(pb, ep) == 0) {
        memset(buf, 1, 16 * msg + 1);
        size_t sizes[] = {1, msg / 4 ? msg / 4 : 1, msg, 4 * msg, 16 * msg};
        // Least squares on relative errors (weights 1/t²), so the small messages count as much.
        double ts[5], sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
        for (int i = 0; i < 5; i++) {
            ts[i] = s_loop_time(pa, pb, sizes[i], i == 0 ? 50 : 10, buf);
            double xx = (double)sizes[i], w = 1 / (ts[i] * ts[i]);
            sw += w, sx += w * xx, sy += w * ts[i], sxx += w * xx * xx, sxy += w * xx * ts[i];
        }
        double slope = (sw * sxy - sx * sy) / (sw * sxx - sx * sx), alpha = (sy - slope * sx) / sw;
        if (alpha < 0) alpha = ts[0];
        double beta = 1 / slope;
        printf("loopback link (ZeroMQ PAIR over 127.0.0.1): fitted latency %s, bandwidth %s\n",
               s_time(alpha, a, sizeof a), s_si(beta, "B/s", b, sizeof b));
        for (int i = 0; i < 5; i++) {
            double p = alpha + (double)sizes[i] / beta;
            printf("  %-10s measured %-11s model %-11s %+.1f%%\n", s_si((double)sizes[i], "B", x1, sizeof x1),
                   s_time(ts[i], a, sizeof a), s_time(p, b, sizeof b), 100 * (p - ts[i]) / ts[i]);
        }
        rc = 0;
    } else {
        fprintf(stderr, "loco plan: --calibrate: loopback link: %s\n", zmq_strerror(zmq_errno()));
    }
    int linger = 0;
    zmq_setsockopt(pa, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(pb, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(pa);
    zmq_close(pb);
    zmq_ctx_term(ctx);
    free(buf);
    free(k.in);
    free(k.tg);
    free(k.x);
    free(k.dout);
    free(k.dx);
    gpt_destroy(&k.m);
    return rc;
}

// --------------------------------------------------------------------------------------------
// --eval: an existing plan on this cluster

static int s_eval_file(const plan_cluster_t *c, const char *path) {
    static plan_t p;
    static plan_layout_t l;
    char err[1024];
    if (plan_read(path, &p, err, sizeof err) != 0) {
        fprintf(stderr, "loco plan: %s\n", err);
        return 2;
    }
    if (p.layers != c->model.layers || p.micro_batch != c->micro_batch || p.micro_batches != c->micro_batches ||
        p.schedule != c->schedule) {
        fprintf(stderr, "loco plan: %s: layers, micro_batch, micro_batches or schedule differ from the cluster "
                "description's [model] and [train]\n", path);
        return 2;
    }
    memset(&l, 0, sizeof l);
    l.S = p.n_stages;
    l.R = plan_replicas(&p, 0);
    l.window = p.window;
    for (int s = 0; s < p.n_stages; s++) {
        l.cut[s] = p.stages[s].l0;
        l.cut[s + 1] = p.stages[s].l1;
        if (plan_replicas(&p, s) != l.R) {
            fprintf(stderr, "loco plan: %s: stage %d has %d replicas, stage 0 %d: the cost model needs the same "
                    "number on every stage\n", path, s, plan_replicas(&p, s), l.R);
            return 2;
        }
    }
    for (int i = 0; i < p.n_nodes; i++) {
        int k = -1;
        for (int a = 0; a < c->n_nodes && k < 0; a++)
            if (!strcmp(c->node[a].name, p.nodes[i].name)) k = a;
        if (k < 0) {
            fprintf(stderr, "loco plan: %s: node %s is not in the cluster description\n", path, p.nodes[i].name);
            return 2;
        }
        l.slot[p.nodes[i].stage][p.nodes[i].replica] = k;
    }
    plan_eval_t e;
    if (plan_eval(c, &l, &e) != 0) {
        fprintf(stderr, "loco plan: %s: %s\n", path, e.why);
        return 2;
    }
    printf("evaluating %s\n", path);
    s_print_layout(c, &l, &e);
    return e.feasible ? 0 : 1;
}

// --------------------------------------------------------------------------------------------
// --probe: the links from this node, measured; the table of declared and measured figures

static int s_probe(plan_cluster_t *c, const plan_probe_opts_t *o, const char *file, const char *out) {
    static plan_probe_t p;
    char err[1024], a[32], b[32], x[32], y[32];
    if (plan_probe_run(c, o, &p, err, sizeof err) != 0) {
        fprintf(stderr, "loco plan: --probe: %s\n", err);
        return 2;
    }
    const char *me = c->node[p.self].name;
    printf("probe from %s over loco's transport (%s):\n", me, p.how);
    printf("%-24s %-11s %-11s %-11s %-11s %s\n", "link", "declared", "", "measured", "", "");
    printf("%-24s %-11s %-11s %-11s %-11s %s\n", "", "latency", "bandwidth", "latency", "bandwidth", "");
    int measured = 0;
    for (int k = 0; k < p.n_rows; k++) {
        const plan_probe_row_t *r = &p.row[k];
        char link[80];
        snprintf(link, sizeof link, "%s-%s", me, c->node[r->node].name);
        int has_l = r->state == PLAN_PROBE_OK || r->state == PLAN_PROBE_PARTIAL, has_b = r->state == PLAN_PROBE_OK;
        measured += has_l;
        printf("%-24s %-11s %-11s %-11s %-11s ", link, r->decl_beta > 0 ? s_time(r->decl_alpha, a, sizeof a) : "-",
               r->decl_beta > 0 ? s_si(r->decl_beta, "B/s", b, sizeof b) : "none", has_l ? s_time(r->alpha, x, sizeof x) : "-",
               has_b ? s_si(r->beta, "B/s", y, sizeof y) : "-");
        if (has_b) printf("measured (round trip median %s, min %s)\n", s_time(r->rtt_median, a, sizeof a),
                          s_time(r->rtt_min, b, sizeof b));
        else if (has_l) printf("latency measured; %s\n", r->why);
        else printf("declared figures kept: %s\n", r->why);
    }
    int set = plan_probe_apply(c, &p);
    if (measured == 0) printf("no node measured: planning with the declared figures\n");
    else printf("planning with the measured figures for %d link%s from %s\n", set, set == 1 ? "" : "s", me);
    if (out) {
        if (plan_probe_write(out, c, &p, file, err, sizeof err) != 0) {
            fprintf(stderr, "loco plan: --probe-out: %s\n", err);
            return 1;
        }
        printf("wrote %s (measured links from %s as [pair] sections: append it to %s)\n", out, me, file);
    }
    printf("\n");
    return 0;
}

// --------------------------------------------------------------------------------------------

static char *s_read_all(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open", path);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        if (cap >= (2u << 20)) break;
        char *nb = realloc(buf, cap *= 2);
        if (!nb) free(buf);
        buf = nb;
    }
    fclose(f);
    if (!buf) snprintf(err, errlen, "%s: out of memory", path);
    *len = n;
    return buf;
}

int cmd_plan(int argc, char **argv) {
    const char *file = NULL, *out = NULL, *eval = NULL, *probe_out = NULL;
    int alternatives = 0, calibrate = 0, threads = 1, probe = 0;
    plan_probe_opts_t po = {0};
    plan_opts_t o = {0};
    const char *sets[64];
    int nsets = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return s_help();
        else if ((!strcmp(a, "-c") || !strcmp(a, "--config")) && has) file = argv[++i];
        else if (!strcmp(a, "--out") && has) out = argv[++i];
        else if (!strcmp(a, "--eval") && has) eval = argv[++i];
        else if (!strcmp(a, "--alternatives")) alternatives = 1;
        else if (!strcmp(a, "--calibrate")) calibrate = 1;
        else if (!strcmp(a, "--probe")) probe = 1;
        else if (!strcmp(a, "--probe-out") && has) probe_out = argv[++i];
        else if (!strcmp(a, "--run-config") && has) po.run_config = argv[++i];
        else if (!strcmp(a, "--from") && has) po.from = argv[++i];
        else if (!strcmp(a, "--probe-key") && has) po.key = argv[++i];
        else if (!strcmp(a, "--probe-ticket") && has) po.ticket = argv[++i];
        else if ((!strcmp(a, "--probe-bytes") || !strcmp(a, "--probe-timeout-ms")) && has) {
            char *end;
            long long v = strtoll(argv[++i], &end, 10);
            int bytes = !strcmp(a, "--probe-bytes");
            long long lo = bytes ? 16 : 100, hi = bytes ? (1LL << 30) : 600000;
            if (*argv[i] == '\0' || *end || v < lo || v > hi)
                return cli_usage_error("plan", "%s %s: want an integer from %lld to %lld", a, argv[i], lo, hi);
            if (bytes) po.bytes = (size_t)v;
            else po.timeout_ms = (int)v;
        }
        else if (!strcmp(a, "--set") && has) {
            if (nsets == 64) return cli_usage_error("plan", "at most 64 --set");
            sets[nsets++] = argv[++i];
        } else if ((!strcmp(a, "--replicas") || !strcmp(a, "--stages") || !strcmp(a, "--threads") ||
                    !strcmp(a, "--exhaustive-limit")) &&
                   has) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            long hi = !strcmp(a, "--exhaustive-limit") ? 1000000000L : !strcmp(a, "--threads") ? 256 : PLAN_MAX_STAGES;
            if (*argv[i] == '\0' || *end || v < 1 || v > hi)
                return cli_usage_error("plan", "%s %s: want an integer from 1 to %ld", a, argv[i], hi);
            if (!strcmp(a, "--replicas")) o.R = (int)v;
            else if (!strcmp(a, "--stages")) o.S = (int)v;
            else if (!strcmp(a, "--threads")) threads = (int)v;
            else o.exhaustive_limit = v;
        } else {
            return cli_usage_error("plan", "unexpected argument '%s' (see loco plan --help)", a);
        }
    }
    if (!file) return cli_usage_error("plan", "-c CLUSTER.ini is required (docs/plan-example.ini shows one)");
    if (!probe && (probe_out || po.run_config || po.from || po.key || po.ticket || po.bytes || po.timeout_ms))
        return cli_usage_error("plan", "--probe-out, --run-config, --from and --probe-* go with --probe");
    if (probe && !po.run_config)
        return cli_usage_error("plan", "--probe needs --run-config NODE.ini (this node's loco run config: the run "
                               "fingerprint the other nodes check)");
    if (probe && calibrate) return cli_usage_error("plan", "--probe and --calibrate do not go together");
    if (po.ticket && !po.key) return cli_usage_error("plan", "--probe-ticket goes with --probe-key");
    static plan_cluster_t c;
    char err[2048];
    if (plan_cluster_load(file, &c, err, sizeof err) != 0) {
        fprintf(stderr, "loco plan: %s\n", err);
        return 2;
    }
    if (nsets) {
        // Overrides: appended as sections to the file's text and parsed again.
        size_t len = 0;
        char *text = s_read_all(file, &len, err, sizeof err);
        if (!text) {
            fprintf(stderr, "loco plan: %s\n", err);
            return 2;
        }
        for (int i = 0; i < nsets; i++) {
            const char *eq = strchr(sets[i], '=');
            const char *dot = NULL;
            for (const char *p = sets[i]; eq && p < eq; p++)
                if (*p == '.') dot = p;
            if (!eq || !dot || !strncmp(sets[i], "node", 4)) {
                free(text);
                return cli_usage_error("plan", "--set %s: expected section.key=value for [model] [train] [outer] "
                                       "[island X] [link A B] (nodes: edit the file)", sets[i]);
            }
            char add[1200];
            int n = snprintf(add, sizeof add, "\n[%.*s]\n%.*s = %s\n", (int)(dot - sets[i]), sets[i],
                             (int)(eq - dot - 1), dot + 1, eq + 1);
            char *nt = n > 0 ? realloc(text, len + (size_t)n + 1) : NULL;
            if (!nt) {
                free(text);
                fprintf(stderr, "loco plan: out of memory\n");
                return 2;
            }
            text = nt;
            memcpy(text + len, add, (size_t)n);
            len += (size_t)n;
            // Parse after each one so an error names the --set that caused it.
            if (plan_cluster_parse(text, len, file, &c, err, sizeof err) != 0) {
                const char *why = strstr(err, ": "); // after "FILE:LINE"
                char *nl = strchr(err, '\n');
                if (nl) *nl = '\0';
                fprintf(stderr, "loco plan: --set %s: %s\n", sets[i], why ? why + 2 : err);
                free(text);
                return 2;
            }
        }
        free(text);
    }
    if (probe) {
        int rc = s_probe(&c, &po, file, probe_out);
        if (rc != 0) return rc;
    }
    if (calibrate) return s_calibrate(&c, threads);
    if (eval) return s_eval_file(&c, eval);
    if (out)
        for (int i = 0; i < c.n_nodes; i++)
            if (!c.node[i].has_id) {
                fprintf(stderr, "loco plan: %s: node %s has no id (id = <64 hex> or key = FILE): the plan file names "
                        "every node by its peer id\n", file, c.node[i].name);
                return 2;
            }
    if (o.R && o.S && o.R * o.S > c.n_nodes)
        return cli_usage_error("plan", "--replicas %d x --stages %d needs %d nodes, the cluster has %d", o.R, o.S,
                               o.R * o.S, c.n_nodes);
    int cnt[PLAN_MAX_ISLANDS] = {0};
    for (int i = 0; i < c.n_nodes; i++) cnt[c.node[i].island]++;
    double P = (double)gpt_num_params(&c.model);
    char a[32];
    printf("loco plan: %s: %d node%s on %d island%s (", file, c.n_nodes, c.n_nodes > 1 ? "s" : "", c.n_islands,
           c.n_islands > 1 ? "s" : "");
    for (int i = 0; i < c.n_islands; i++) printf("%s%s: %d", i ? ", " : "", c.island[i], cnt[i]);
    printf("); model %d blocks, d_model %d, %s parameters\n", c.model.layers, c.model.d_model, s_si(P, "", a, sizeof a));
    printf("training: micro-batch %d x %d tokens, %d per step and replica, %s, %s, H = %d, %g bytes/param exchanged, "
           "overlap %s\n",
           c.micro_batch, c.model.seq_len, c.micro_batches, c.schedule == PLAN_GPIPE ? "gpipe" : "1f1b",
           c.algorithm == PLAN_NOLOCO ? "noloco" : "diloco", c.inner_steps, c.codec_bytes, c.overlap ? "on" : "off");
    int npairs = 0;
    for (int i = 0; i < c.n_nodes; i++)
        for (int j = i + 1; j < c.n_nodes; j++) npairs += c.pair[i][j].bw > 0;
    if (npairs) {
        printf("node pairs with their own link figures ([pair], measured or declared): %d:", npairs);
        int shown = 0;
        for (int i = 0; i < c.n_nodes; i++)
            for (int j = i + 1; j < c.n_nodes; j++)
                if (c.pair[i][j].bw > 0 && shown++ < 8)
                    printf(" %s-%s %s %s%s", c.node[i].name, c.node[j].name, s_time(c.pair[i][j].lat, a, sizeof a),
                           s_si(c.pair[i][j].bw, "B/s", err, 32), shown < npairs && shown < 8 ? "," : "");
        printf("%s\n", npairs > 8 ? " ..." : "");
    }
    static plan_layout_t best;
    plan_eval_t e;
    plan_stats_t st;
    double t0 = s_now();
    if (plan_search(&c, &o, &best, &e, &st, err, sizeof err) != 0) {
        fprintf(stderr, "loco plan: %s: %s\n", file, err);
        return 1;
    }
    printf("search: %s, %ld stage-set sequences (%ld cut by the lower bound), %ld split DPs, %.2f s\n\n",
           st.exhaustive ? "exhaustive (the model's optimum)" : "local search beyond the exhaustive limit", st.sequences,
           st.pruned, st.dp_runs, s_now() - t0);
    double before = e.step_s;
    if (plan_widen_window(&c, &best, &e))
        printf("window: 1F1B's default window (min(M, S) = %d micro-batches in flight) binds here: the plan raises it "
               "to %d, step %.4g s -> %.4g s\n\n", c.micro_batches < best.S ? c.micro_batches : best.S, best.window,
               before, e.step_s);
    s_print_layout(&c, &best, &e);
    if (alternatives) s_print_alternatives(&c, &best, &e, o.exhaustive_limit);
    if (out) {
        static plan_t p;
        plan_to_file(&c, &best, &e, &p);
        if (plan_write(out, &p, err, sizeof err) != 0) {
            fprintf(stderr, "loco plan: %s\n", err);
            return 1;
        }
        uint8_t h[32];
        plan_hash(&p, h);
        printf("\nwrote %s (plan hash %02x%02x%02x%02x%02x%02x%02x%02x...)\n", out, h[0], h[1], h[2], h[3], h[4], h[5],
               h[6], h[7]);
    }
    return 0;
}
