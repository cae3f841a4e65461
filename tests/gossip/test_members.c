// Membership over a simulated network (tests/gossip/sim.h): convergence from seeds, merging of
// seed groups, failure detection, refutation, graceful leave, anti-entropy repair, loss, NAT'd
// peers. Time is the simulator's clock; every bound is in protocol periods and derived from the
// protocol's parameters, and every measured figure is printed. GOSSIP_SIM_SEED=k reruns every
// scenario on other keys, link delays and losses (the scenarios passed for k = 1..300).
#include <math.h>

#include "tests/gossip/sim.h"

static int s_log2ceil(int n) { return (int)ceil(log2((double)n)); }

// Starts nodes [lo, hi) with the given seeds.
static void s_start_range(sim_t *s, int lo, int hi, const int *seeds, int nseeds) {
    for (int i = lo; i < hi; i++) sim_start(s, i, seeds, nseeds);
}

// Every node in `mask` sees `about` in state st.
static bool s_all_hold(const sim_t *s, uint64_t mask, int about, int st) {
    for (int i = 0; i < s->n; i++)
        if ((mask >> i & 1) && sim_state(s, i, about) != st) return false;
    return true;
}

Test(members, converge_from_one_seed) {
    const int sizes[] = {5, 12, 30};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        sim_t s;
        const int N = sizes[k], seed0 = 0;
        sim_init(&s, N, 11 + k);
        s_start_range(&s, 0, N, &seed0, 1);
        uint64_t t;
        // Bound: a joiner's first SYNC brings the seed's view, and each new record then spreads by
        // piggyback on pings (each peer pings once a period) — an epidemic, O(log N) periods.
        int bound = 2 + 2 * s_log2ceil(N);
        SIM_UNTIL(&s, (uint64_t)bound * SIM_PERIOD_MS, sim_all_see(&s, sim_mask_range(0, N)), t);
        cr_assert_neq(t, UINT64_MAX, "N=%d: views not complete within %d periods", N, bound);
        printf("converge_from_one_seed: N=%d, all views complete after %.2f periods (bound %d)\n", N,
               (double)t / SIM_PERIOD_MS, bound);
        // Steady state: no false suspicion on a lossless network, O(1) messages per peer per period.
        sim_run(&s, 10 * SIM_PERIOD_MS);
        uint64_t sent0 = s.sent, t0 = s.now;
        sim_run(&s, 20 * SIM_PERIOD_MS);
        cr_assert_eq(sim_count_events(&s, GOSSIP_EV_SUSPECT, -1, 0), 0);
        cr_assert_eq(sim_count_events(&s, GOSSIP_EV_DEAD, -1, 0), 0);
        double per = (double)(s.sent - sent0) / N / ((double)(s.now - t0) / SIM_PERIOD_MS);
        printf("converge_from_one_seed: N=%d, steady state %.2f messages per peer per period\n", N, per);
        // A ping and its ack per period, a share of a SYNC exchange (3 messages per sync interval).
        cr_assert_leq(per, 2.0 + 3.0 * SIM_PERIOD_MS / s.cfg.sync_interval_ms + 0.5);
        sim_free(&s);
    }
}

// hivemind#624: peers given different seeds formed two swarms. Two groups that come to share one
// member must merge into one view.
Test(members, two_seed_groups_merge_through_one_member) {
    sim_t s;
    const int A = 0, B = 15, N = 30;
    sim_init(&s, N, 12);
    s_start_range(&s, 0, B, &A, 1);
    s_start_range(&s, B, N - 1, &B, 1);
    sim_run(&s, 10 * SIM_PERIOD_MS);
    for (int i = 0; i < B; i++) cr_assert(sim_view_is(&s, i, sim_mask_range(0, B)), "node %d: group A view", i);
    for (int i = B; i < N - 1; i++)
        cr_assert(sim_view_is(&s, i, sim_mask_range(B, N - 1)), "node %d: group B view", i);
    int both[2] = {A, B};
    sim_start(&s, N - 1, both, 2);
    uint64_t t;
    int bound = 2 + 2 * s_log2ceil(N);
    SIM_UNTIL(&s, (uint64_t)bound * SIM_PERIOD_MS, sim_all_see(&s, sim_mask_range(0, N)), t);
    cr_assert_neq(t, UINT64_MAX, "groups did not merge within %d periods", bound);
    printf("two_seed_groups_merge: %d peers in one view %.2f periods after the shared member started (bound %d)\n",
           N, (double)t / SIM_PERIOD_MS, bound);
    sim_free(&s);
}

// Bound on detection: the first failed probe (≤ 1 period: with every survivor probing one member
// per period by shuffled round-robin, someone probes the dead node almost at once; we allow one
// full extra period), then the suspicion timeout (suspicion_mult · max(1, log10 N) periods at
// these RTTs), with the suspicion spreading epidemically meanwhile (2·log2 N periods).
static int s_detection_bound(const sim_t *s, int N) {
    double f = N > 10 ? log10((double)N) : 1.0;
    return 2 + (int)ceil(s->cfg.suspicion_mult * f) + 2 * s_log2ceil(N);
}

Test(members, killed_peers_detected_and_restart_rejoins) {
    sim_t s;
    const int N = 16, seed0 = 0, k1 = 5, k2 = 9;
    sim_init(&s, N, 13);
    s_start_range(&s, 0, N, &seed0, 1);
    uint64_t t;
    SIM_UNTIL(&s, 20 * SIM_PERIOD_MS, sim_all_see(&s, sim_mask_range(0, N)), t);
    cr_assert_neq(t, UINT64_MAX);
    uint64_t t_kill = s.now;
    sim_kill(&s, k1);
    sim_kill(&s, k2);
    uint64_t survivors = sim_mask_range(0, N) & ~(1ULL << k1) & ~(1ULL << k2);
    int bound = s_detection_bound(&s, N);
    SIM_UNTIL(&s, (uint64_t)bound * SIM_PERIOD_MS,
              s_all_hold(&s, survivors, k1, GOSSIP_DEAD) && s_all_hold(&s, survivors, k2, GOSSIP_DEAD), t);
    cr_assert_neq(t, UINT64_MAX, "not every survivor marked both dead within %d periods", bound);
    printf("killed_peers: N=%d, both marked dead by all %d survivors after %.2f periods (bound %d)\n", N, N - 2,
           (double)t / SIM_PERIOD_MS, bound);
    // No live peer was ever marked dead.
    for (size_t k = 0; k < s.nev; k++)
        if (s.ev[k].kind == GOSSIP_EV_DEAD)
            cr_assert(s.ev[k].about == k1 || s.ev[k].about == k2, "node %d marked live node %d dead", s.ev[k].node,
                      s.ev[k].about);
    cr_assert(sim_all_see(&s, survivors));
    (void)t_kill;

    // Restart one with the same key: it rejoins at a higher incarnation, seen by everyone.
    uint64_t old_inc = s.nodes[k1].first_inc;
    sim_start(&s, k1, &seed0, 1);
    uint64_t back = survivors | 1ULL << k1;
    SIM_UNTIL(&s, 10 * SIM_PERIOD_MS, sim_all_see(&s, back), t);
    cr_assert_neq(t, UINT64_MAX, "restarted peer not back in every view within 10 periods");
    for (int i = 0; i < N; i++)
        if (back >> i & 1) cr_assert_gt(sim_inc(&s, i, k1), old_inc, "node %d holds an old incarnation", i);
    printf("killed_peers: restarted peer back in all views after %.2f periods\n", (double)t / SIM_PERIOD_MS);
    sim_free(&s);
}

Test(members, falsely_suspected_peer_refutes_and_stays_alive) {
    sim_t s;
    const int N = 10, seed0 = 0, x = 3;
    sim_init(&s, N, 14);
    s_start_range(&s, 0, N, &seed0, 1);
    uint64_t t;
    SIM_UNTIL(&s, 20 * SIM_PERIOD_MS, sim_all_see(&s, sim_mask_range(0, N)), t);
    cr_assert_neq(t, UINT64_MAX);
    uint64_t inc0 = sim_inc(&s, 0, x), t_block = s.now;
    // Everything sent to x is lost until someone suspects it.
    for (int i = 0; i < N; i++) s.block[i][x] = true;
    SIM_UNTIL(&s, 30 * SIM_PERIOD_MS, sim_count_events(&s, GOSSIP_EV_SUSPECT, x, t_block) > 0, t);
    cr_assert_neq(t, UINT64_MAX, "nobody suspected the cut-off node");
    for (int i = 0; i < N; i++) s.block[i][x] = false;
    sim_run(&s, 30 * SIM_PERIOD_MS);
    cr_assert_eq(sim_count_events(&s, GOSSIP_EV_DEAD, -1, 0), 0, "a live peer was declared dead");
    cr_assert_geq(gossip_members_stats(s.nodes[x].m)->refutations, 1);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(sim_state(&s, i, x), GOSSIP_ALIVE, "node %d holds %d as %s", i, x,
                     gossip_state_name((gossip_state_t)sim_state(&s, i, x)));
        cr_assert_gt(sim_inc(&s, i, x), inc0);
    }
    cr_assert(sim_all_see(&s, sim_mask_range(0, N)));
    printf("false_suspicion: suspected after %.2f periods cut off; %d suspicions, %d refutations in all, 0 deaths\n",
           (double)t / SIM_PERIOD_MS, sim_count_events(&s, GOSSIP_EV_SUSPECT, -1, 0),
           sim_count_events(&s, GOSSIP_EV_ALIVE, -1, 0));
    sim_free(&s);
}

// A peer that hears nothing for twice the suspicion timeout (its inbound traffic lost: a NAT
// mapping gone, a starved net thread). The others rightly declare it dead. It suspects whomever it
// probes, but with no ack and no NACK coming back its health counter rises and stretches its own
// suspicion timers, so it buries nobody; once it hears again it refutes and rejoins.
Test(members, peer_that_hears_nothing_buries_nobody) {
    sim_t s;
    const int N = 10, seed0 = 0, x = 3;
    sim_init(&s, N, 23);
    s_start_range(&s, 0, N, &seed0, 1);
    uint64_t t;
    SIM_UNTIL(&s, 20 * SIM_PERIOD_MS, sim_all_see(&s, sim_mask_range(0, N)), t);
    cr_assert_neq(t, UINT64_MAX);
    for (int i = 0; i < N; i++) s.block[i][x] = true;
    sim_run(&s, 8 * SIM_PERIOD_MS);
    int health = gossip_members_health(s.nodes[x].m);
    cr_assert_gt(health, 1, "the cut-off peer did not notice that it hears nothing");
    cr_assert_gt(sim_count_events(&s, GOSSIP_EV_SUSPECT, -1, 0) - sim_count_events(&s, GOSSIP_EV_SUSPECT, x, 0), 0,
                 "the cut-off peer suspected nobody (the test lost its point)");
    for (int i = 0; i < N; i++) s.block[i][x] = false;
    sim_run(&s, 40 * SIM_PERIOD_MS);
    for (size_t k = 0; k < s.nev; k++)
        if (s.ev[k].kind == GOSSIP_EV_DEAD)
            cr_assert_eq(s.ev[k].about, x, "node %d declared live node %d dead", s.ev[k].node, s.ev[k].about);
    cr_assert(sim_all_see(&s, sim_mask_range(0, N)));
    cr_assert_eq(gossip_members_health(s.nodes[x].m), 0, "health did not recover");
    printf("hears_nothing: 8 periods deaf, health rose to %d, buried nobody; back in every view\n", health);
    sim_free(&s);
}

Test(members, graceful_leave_seen_by_all) {
    sim_t s;
    const int N = 12, seed0 = 0, x = 4;
    sim_init(&s, N, 15);
    s_start_range(&s, 0, N, &seed0, 1);
    uint64_t t;
    SIM_UNTIL(&s, 20 * SIM_PERIOD_MS, sim_all_see(&s, sim_mask_range(0, N)), t);
    cr_assert_neq(t, UINT64_MAX);
    uint64_t t_leave = s.now;
    cr_assert_eq(gossip_members_leave(s.nodes[x].m, s.now), 0);
    s.nodes[x].left = true;
    sim_drain(&s, x);
    uint64_t others = sim_mask_range(0, N) & ~(1ULL << x);
    // The leave goes to every live member directly: one link delay (< 50 ms here), before the first
    // dissemination round could have carried it further.
    SIM_UNTIL(&s, 50, s_all_hold(&s, others, x, GOSSIP_LEFT), t);
    cr_assert_neq(t, UINT64_MAX, "leave not seen by all within one link delay");
    printf("graceful_leave: all %d others hold it as left after %.2f periods\n", N - 1, (double)t / SIM_PERIOD_MS);
    sim_run(&s, SIM_PERIOD_MS); // it keeps answering for about a period, then stops
    sim_kill(&s, x);
    sim_run(&s, 20 * SIM_PERIOD_MS);
    cr_assert_eq(sim_count_events(&s, GOSSIP_EV_SUSPECT, x, t_leave), 0, "a left peer was suspected");
    cr_assert_eq(sim_count_events(&s, GOSSIP_EV_DEAD, x, t_leave), 0, "a left peer was declared dead");
    cr_assert_eq(sim_count_events(&s, GOSSIP_EV_LEFT, x, t_leave), N - 1);
    cr_assert(sim_all_see(&s, others));
    sim_free(&s);
}

// No update left to disseminate at any running node but `except`.
static bool s_dry_except(const sim_t *s, int except) {
    for (int i = 0; i < s->n; i++)
        if (s->nodes[i].up && i != except && gossip_members_pending_updates(s->nodes[i].m)) return false;
    return true;
}

// A node cut off from dissemination misses a join and a leave; anti-entropy alone repairs it.
Test(members, anti_entropy_repairs_missed_updates) {
    sim_t s;
    const int N = 11, seed0 = 0, r = 7, joiner = 10, leaver = 2;
    sim_init(&s, N, 16);
    s.cfg.sync_interval_ms = 5 * SIM_PERIOD_MS;
    s_start_range(&s, 0, 10, &seed0, 1);
    uint64_t t;
    SIM_UNTIL(&s, 20 * SIM_PERIOD_MS, sim_all_see(&s, sim_mask_range(0, 10)), t);
    cr_assert_neq(t, UINT64_MAX);
    // Mute r: its pings and acks still flow (no suspicion) but carry no updates, and no SYNC,
    // SYNC_REPLY or UPDATES reaches it.
    s.mute = r;
    s.mute_sync = true;
    sim_start(&s, joiner, &seed0, 1);
    sim_run(&s, 2 * SIM_PERIOD_MS);
    cr_assert_eq(gossip_members_leave(s.nodes[leaver].m, s.now), 0);
    s.nodes[leaver].left = true;
    sim_run(&s, SIM_PERIOD_MS);
    sim_kill(&s, leaver);
    uint64_t final = sim_mask_range(0, N) & ~(1ULL << leaver);
    // Let dissemination run dry everywhere but at r.
    SIM_UNTIL(&s, 30 * SIM_PERIOD_MS, s_dry_except(&s, r) && sim_all_see(&s, final), t);
    (void)t;
    cr_assert_eq(sim_state(&s, r, joiner), -1, "the muted node learned of the joiner");
    cr_assert_neq(sim_state(&s, r, leaver), GOSSIP_LEFT, "the muted node learned of the leave");
    // Anti-entropy only from here: syncs reach r again, piggybacked updates still do not.
    s.mute_sync = false;
    uint64_t syncs0 = gossip_members_stats(s.nodes[r].m)->syncs;
    int bound = 2 * (int)(s.cfg.sync_interval_ms / SIM_PERIOD_MS) + 2;
    SIM_UNTIL(&s, (uint64_t)bound * SIM_PERIOD_MS,
              sim_view_is(&s, r, final) && sim_state(&s, r, leaver) == GOSSIP_LEFT, t);
    cr_assert_neq(t, UINT64_MAX, "anti-entropy did not repair the muted node within %d periods", bound);
    printf("anti_entropy: muted node repaired %.2f periods after syncs resumed (bound %d; it sent %llu syncs)\n",
           (double)t / SIM_PERIOD_MS, bound,
           (unsigned long long)(gossip_members_stats(s.nodes[r].m)->syncs - syncs0));
    sim_free(&s);
}

static bool s_split_done(const sim_t *s, int half, uint64_t lo, uint64_t hi) {
    for (int i = 0; i < s->n; i++)
        if (!sim_view_is(s, i, i < half ? lo : hi)) return false;
    return true;
}

// A full partition long enough for each half to declare the other dead, then healed: the reconnect
// syncs (to dead members) find the other half and the views merge, every peer alive.
Test(members, healed_partition_merges_back) {
    sim_t s;
    const int N = 30, seed0 = 0, half = 15;
    sim_init(&s, N, 20);
    s.cfg.sync_interval_ms = 2 * SIM_PERIOD_MS;
    s.cfg.reconnect_every = 2;
    s_start_range(&s, 0, N, &seed0, 1);
    uint64_t t, all = sim_mask_range(0, N), lo = sim_mask_range(0, half), hi = all & ~lo;
    SIM_UNTIL(&s, 20 * SIM_PERIOD_MS, sim_all_see(&s, all), t);
    cr_assert_neq(t, UINT64_MAX);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) s.block[i][j] = (i < half) != (j < half);
    // Both halves miss NACKs from the other half's helpers, so their health counters rise and
    // detection slows down (by design): wait for the split rather than assume its time.
    int bound = s_detection_bound(&s, N);
    SIM_UNTIL(&s, 6ULL * bound * SIM_PERIOD_MS, s_split_done(&s, half, lo, hi), t);
    cr_assert_neq(t, UINT64_MAX, "the halves did not declare each other dead within %d periods", 6 * bound);
    uint64_t t_heal = s.now;
    memset(s.block, 0, sizeof s.block);
    // Each peer syncs with a dead member every reconnect_every · sync_interval = 4 periods; the first
    // crossing exchange brings the other half's view, refutations then spread by gossip.
    int merge_bound = 4 * (int)(s.cfg.reconnect_every * s.cfg.sync_interval_ms / SIM_PERIOD_MS) + bound;
    SIM_UNTIL(&s, (uint64_t)merge_bound * SIM_PERIOD_MS, sim_all_see(&s, all), t);
    cr_assert_neq(t, UINT64_MAX, "halves did not merge within %d periods of the heal", merge_bound);
    sim_run(&s, 10 * SIM_PERIOD_MS);
    cr_assert(sim_all_see(&s, all));
    cr_assert_eq(sim_count_events(&s, GOSSIP_EV_DEAD, -1, t_heal + 1), 0, "a peer was declared dead after the heal");
    printf("healed_partition: %d + %d peers back in one view %.2f periods after the heal (bound %d)\n", half,
           N - half, (double)t / SIM_PERIOD_MS, merge_bound);
    sim_free(&s);
}

// A broken link between two peers (both directions) while both stay connected to everyone else:
// their probes of each other go through ping-req helpers, and neither is ever suspected.
Test(members, indirect_probes_bridge_a_broken_link) {
    sim_t s;
    const int N = 8, seed0 = 0;
    sim_init(&s, N, 21);
    s_start_range(&s, 0, N, &seed0, 1);
    uint64_t t;
    SIM_UNTIL(&s, 20 * SIM_PERIOD_MS, sim_all_see(&s, sim_mask_range(0, N)), t);
    cr_assert_neq(t, UINT64_MAX);
    uint64_t t0 = s.now;
    s.block[1][2] = s.block[2][1] = true;
    sim_run(&s, 40 * SIM_PERIOD_MS);
    cr_assert_eq(sim_count_events(&s, GOSSIP_EV_SUSPECT, -1, t0), 0, "a peer was suspected over one broken link");
    uint64_t ind = gossip_members_stats(s.nodes[1].m)->indirect_acks + gossip_members_stats(s.nodes[2].m)->indirect_acks;
    cr_assert_gt(ind, 0, "the two never probed each other through a helper");
    printf("broken_link: 40 periods, %llu probes answered through helpers, 0 suspicions\n", (unsigned long long)ind);
    sim_free(&s);
}

// A re-signed record (capabilities changed) reaches every peer through the dissemination rounds:
// each round sends it to gossip_fanout peers, so O(log_fanout N) rounds, well under a period.
Test(members, record_update_spreads_in_gossip_rounds) {
    sim_t s;
    const int N = 30, seed0 = 0, x = 7;
    sim_init(&s, N, 22);
    s_start_range(&s, 0, N, &seed0, 1);
    uint64_t t;
    SIM_UNTIL(&s, 20 * SIM_PERIOD_MS, sim_all_see(&s, sim_mask_range(0, N)), t);
    cr_assert_neq(t, UINT64_MAX);
    sim_run(&s, 5 * SIM_PERIOD_MS);
    gossip_member_info_t info;
    cr_assert_eq(gossip_members_get(s.nodes[x].m, s.nodes[x].id, &info), 0);
    gossip_caps_t caps = info.record->caps;
    caps.step_rate_milli = 4321;
    char err[256];
    uint64_t t0 = s.now;
    cr_assert_eq(gossip_members_update_caps(s.nodes[x].m, &caps, s.now, err, sizeof err), 0, "%s", err);
    int rounds = 2 + (int)ceil(log((double)N) / log((double)s.cfg.gossip_fanout));
    uint64_t bound_ms = (uint64_t)rounds * s.cfg.gossip_interval_ms;
    SIM_UNTIL(&s, bound_ms, sim_count_events(&s, GOSSIP_EV_UPDATED, x, t0) == N - 1, t);
    cr_assert_neq(t, UINT64_MAX, "the update did not reach all %d peers within %d gossip rounds", N - 1, rounds);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(gossip_members_get(s.nodes[i].m, s.nodes[x].id, &info), 0);
        cr_assert_eq(info.record->caps.step_rate_milli, 4321);
    }
    printf("record_update: reached all %d peers after %llu ms (bound %d rounds of %u ms)\n", N - 1,
           (unsigned long long)t, rounds, s.cfg.gossip_interval_ms);
    sim_free(&s);
}

Test(members, five_percent_loss_no_false_death) {
    sim_t s;
    const int N = 20, seed0 = 0;
    sim_init(&s, N, 17);
    s_start_range(&s, 0, N, &seed0, 1);
    uint64_t t;
    SIM_UNTIL(&s, 20 * SIM_PERIOD_MS, sim_all_see(&s, sim_mask_range(0, N)), t);
    cr_assert_neq(t, UINT64_MAX);
    s.loss = 0.05;
    uint64_t t0 = s.now, d0 = s.dropped;
    sim_run(&s, 60 * SIM_PERIOD_MS);
    cr_assert_eq(sim_count_events(&s, GOSSIP_EV_DEAD, -1, 0), 0, "a live peer was declared dead at 5%% loss");
    // A probe fails only when the direct exchange, its retries and all k indirect paths lose a
    // message: under 0.01%% of probes (without ping-req and retries it would be 10%%).
    uint64_t probes = 0;
    for (int i = 0; i < N; i++) probes += gossip_members_stats(s.nodes[i].m)->probes;
    int susp = sim_count_events(&s, GOSSIP_EV_SUSPECT, -1, t0);
    cr_assert_leq(susp, (int)(probes / 100) * (N - 1), "%d suspicion events for %llu probes", susp,
                  (unsigned long long)probes);
    cr_assert_gt(s.dropped - d0, 0);
    s.loss = 0;
    sim_run(&s, 10 * SIM_PERIOD_MS);
    cr_assert(sim_all_see(&s, sim_mask_range(0, N)));
    printf("loss_5pct: %d peers, 60 periods, %llu messages dropped, %d suspicions (all refuted), 0 deaths\n", N,
           (unsigned long long)(s.dropped - d0), sim_count_events(&s, GOSSIP_EV_SUSPECT, -1, t0));
    sim_free(&s);
}

Test(members, unreachable_peers_join_and_rule_holds) {
    sim_t s;
    const int N = 12, seed0 = 0, dead = 9;
    sim_init(&s, N, 18);
    for (int i = 8; i < N; i++) s.nodes[i].reachable = false; // behind NAT: outbound only
    s_start_range(&s, 0, N, &seed0, 1);
    uint64_t t;
    int bound = 2 + 2 * s_log2ceil(N);
    SIM_UNTIL(&s, (uint64_t)bound * SIM_PERIOD_MS, sim_all_see(&s, sim_mask_range(0, N)), t);
    cr_assert_neq(t, UINT64_MAX, "unreachable peers not in every view within %d periods", bound);
    sim_run(&s, 10 * SIM_PERIOD_MS);
    cr_assert_eq(s.unreachable_pairs, 0, "%llu messages between two unreachable peers",
                 (unsigned long long)s.unreachable_pairs);
    // Their records say so, and the endpoint lookup gives nothing to dial.
    gossip_member_info_t info;
    cr_assert_eq(gossip_members_get(s.nodes[0].m, s.nodes[10].id, &info), 0);
    cr_assert(!info.record->caps.reachable);
    cr_assert_null(gossip_members_endpoint(s.nodes[0].m, s.nodes[10].id));
    cr_assert_not_null(gossip_members_endpoint(s.nodes[10].m, s.nodes[1].id));
    // A dead unreachable peer is still detected by everyone.
    sim_kill(&s, dead);
    uint64_t survivors = sim_mask_range(0, N) & ~(1ULL << dead);
    int dbound = s_detection_bound(&s, N);
    SIM_UNTIL(&s, (uint64_t)dbound * SIM_PERIOD_MS, s_all_hold(&s, survivors, dead, GOSSIP_DEAD), t);
    cr_assert_neq(t, UINT64_MAX, "dead unreachable peer not detected within %d periods", dbound);
    cr_assert_eq(s.unreachable_pairs, 0);
    cr_assert_eq(sim_count_events(&s, GOSSIP_EV_DEAD, -1, 0), sim_count_events(&s, GOSSIP_EV_DEAD, dead, 0));
    printf("unreachable: 4 of %d peers outbound-only, all views complete; dead one detected after %.2f periods\n", N,
           (double)t / SIM_PERIOD_MS);
    sim_free(&s);
}

static bool s_refuse_node5(void *ctx, const gossip_record_t *r) {
    const uint8_t *banned = ctx;
    return memcmp(r->id, banned, 32) != 0;
}

Test(members, unadmitted_peer_never_in_a_view) {
    sim_t s;
    const int N = 6, seed0 = 0, banned = 5;
    sim_init(&s, N, 19);
    s.admit = s_refuse_node5;
    s.cfg.admit_ctx = s.nodes[banned].id;
    s_start_range(&s, 0, N, &seed0, 1);
    uint64_t admitted = sim_mask_range(0, N) & ~(1ULL << banned);
    sim_run(&s, 20 * SIM_PERIOD_MS);
    for (int i = 0; i < N; i++)
        if (i != banned) {
            cr_assert_eq(sim_state(&s, i, banned), -1, "node %d holds the unadmitted peer", i);
            cr_assert(sim_view_is(&s, i, admitted));
        }
    cr_assert_gt(gossip_members_stats(s.nodes[0].m)->not_admitted, 0);
    sim_free(&s);
}

// Messages per peer per period must not grow with N (issue 4's O(1) target), at 5% loss, where false
// suspicions and their refutations arise at a rate ∝ N: a count of messages sent, N = 32 against
// N = 256, each after its views are complete and its dissemination queues have drained. (Before
// the dissemination rounds were limited to fresh updates and a per-peer budget, N = 256 sent about
// twice what N = 32 did; bench_gossip has the N = 16…1000 table.)
static double s_msgs_per_peer_period(int N, uint64_t seed, int *false_dead) {
    sim_t *s = malloc(sizeof *s);
    cr_assert(s);
    sim_init(s, N, seed);
    const int seed0 = 0;
    s_start_range(s, 0, N, &seed0, 1);
    s->loss = 0.05;
    int p = 0;
    while (p < 40 && !sim_all_complete(s)) {
        sim_run(s, SIM_PERIOD_MS);
        p++;
    }
    cr_assert(sim_all_complete(s), "N = %d: views not complete after %d periods at 5%% loss", N, p);
    for (int q = 0; q < 60; q++) { // let the join's dissemination queues drain
        size_t pending = 0;
        for (int i = 0; i < N; i++) pending += gossip_members_pending_updates(s->nodes[i].m);
        if (pending == 0) break;
        sim_run(s, SIM_PERIOD_MS);
    }
    const int W = 20;
    uint64_t m0 = sim_sent(s), t0 = s->now;
    sim_run(s, (uint64_t)W * SIM_PERIOD_MS);
    *false_dead = sim_count_events(s, GOSSIP_EV_DEAD, -1, t0);
    double r = (double)(sim_sent(s) - m0) / N / W;
    sim_free(s);
    free(s);
    return r;
}

Test(members, messages_per_peer_flat_in_N_at_5pct_loss) {
    gossip_record_verify_cache(1 << 16); // 256 peers verify each record once between them
    int fd32 = 0, fd256 = 0;
    double m32 = s_msgs_per_peer_period(32, 21, &fd32), m256 = s_msgs_per_peer_period(256, 21, &fd256);
    printf("msgs_flat: messages per peer per period at 5%% loss: N = 32 %.2f, N = 256 %.2f (ratio %.2f)\n", m32,
           m256, m256 / m32);
    cr_assert_eq(fd32 + fd256, 0, "a live peer was declared dead at 5%% loss");
    cr_assert_lt(m256, 1.3 * m32, "N = 256 sends %.2f messages per peer per period, N = 32 %.2f", m256, m32);
    gossip_record_verify_cache(0);
}
