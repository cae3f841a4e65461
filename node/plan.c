#include "node/plan.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------
// The cost model's terms
// ---------------------------------------------------------------------------------------------

double plan_block_flops(const plan_cluster_t *c) {
    double C = c->model.d_model, T = c->model.seq_len;
    return c->calib_block * 3.0 * (24.0 * C * C + 4.0 * T * C);
}

double plan_head_flops(const plan_cluster_t *c) {
    return c->calib_head * 6.0 * (double)c->model.d_model * (double)c->model.vocab;
}

// Per-run constants of the model, shared by plan_eval and the search so both compute the same
// numbers the same way.
typedef struct {
    const plan_cluster_t *c;
    int L, M, N;
    double tokmb;        // tokens per micro-batch
    double wb, wh;       // FLOP per token of a block / the head
    double pb;           // parameters of a block
    double p_emb, p_lnf, p_wte;
    double act_block;    // bytes of saved activations per block per micro-batch
    double act_in;       // bytes of one (mb, T, C) activation: a boundary message
    double act_head;     // final LayerNorm, logits, losses
    double wte_bytes;    // the tied token embedding (V·C·4): its gradient and new value cross per step
    plan_link_t (*link)[PLAN_CL_MAX_NODES]; // precomputed by the search; NULL: computed when asked
} s_model_t;

static plan_link_t s_lk(const s_model_t *m, int a, int b) { return m->link ? m->link[a][b] : plan_link(m->c, a, b); }

static void s_model_init(s_model_t *m, const plan_cluster_t *c) {
    memset(m, 0, sizeof *m);
    m->c = c;
    m->L = c->model.layers;
    m->M = c->micro_batches;
    m->N = c->n_nodes;
    double C = c->model.d_model, T = c->model.seq_len, V = c->model.vocab;
    m->tokmb = (double)c->micro_batch * T;
    m->wb = plan_block_flops(c);
    m->wh = plan_head_flops(c);
    m->pb = 12.0 * C * C + 13.0 * C;
    m->p_emb = V * C + T * C;
    m->p_lnf = 2.0 * C;
    m->p_wte = V * C;
    m->act_block = 4.0 * (double)gpt_block_acts_numel((size_t)c->micro_batch * (size_t)c->model.seq_len,
                                                      c->model.d_model, c->model.heads, c->model.seq_len);
    m->act_in = 4.0 * m->tokmb * C;
    m->act_head = 4.0 * m->tokmb * (C + 3.0 + V);
    m->wte_bytes = 4.0 * V * C;
}

// The tied embedding's round trip at the end of a step (S > 1): the last stage sends its head part of
// the wte gradient to its stage-0 partner, which steps and sends wte back before the next head forward.
static double s_wte_sync(const s_model_t *m, int last, int first) {
    plan_link_t l = s_lk(m, last, first);
    if (l.nic_a < 0) return INFINITY;
    return 2.0 * (l.alpha + m->wte_bytes / l.beta);
}

// Precomputes every pipeline link (the search asks for them millions of times). 0 or -1.
static int s_model_links(s_model_t *m) {
    m->link = malloc(sizeof(plan_link_t[PLAN_CL_MAX_NODES][PLAN_CL_MAX_NODES]));
    if (!m->link) return -1;
    for (int a = 0; a < m->N; a++)
        for (int b = 0; b < m->N; b++) m->link[a][b] = plan_link(m->c, a, b);
    return 0;
}

plan_link_t plan_link(const plan_cluster_t *c, int a, int b) {
    plan_link_t best = {-1, -1, 0, 0, INFINITY, INFINITY};
    const plan_cnode_t *x = &c->node[a], *y = &c->node[b];
    int same = x->island == y->island;
    plan_fabric_t f = c->fabric[x->island][y->island];
    if (!same && f.bw <= 0) return best; // no declared link between the islands
    double msg = 4.0 * (double)c->micro_batch * (double)c->model.seq_len * (double)c->model.d_model;
    for (int i = 0; i < x->n_nics; i++)
        for (int j = 0; j < y->n_nics; j++) {
            const plan_nic_t *p = &x->nic[i], *q = &y->nic[j];
            if (!same && (p->local || q->local)) continue;
            double beta = fmin(p->bw, q->bw);
            if (f.bw > 0) beta = fmin(beta, f.bw);
            double alpha = p->lat + q->lat + f.lat;
            double t = alpha + msg / beta;
            if (t < best.msg_s) best = (plan_link_t){i, j, alpha, beta, t, msg / beta};
        }
    plan_fabric_t pr = c->pair[a][b];
    if (best.nic_a >= 0 && a != b && pr.bw > 0) {
        best.alpha = pr.lat;
        best.beta = pr.bw;
        best.msg_s = pr.lat + msg / pr.bw;
        best.ser_s = msg / pr.bw;
    }
    return best;
}

static double s_stage_t(const s_model_t *m, double v, int i, int j) {
    return m->tokmb * ((double)(j - i) * m->wb + (j == m->L ? m->wh : 0.0)) / v;
}

static double s_stage_params(const s_model_t *m, int S, int i, int j) {
    return (double)(j - i) * m->pb + (i == 0 ? m->p_emb : 0.0) + (j == m->L ? m->p_lnf + (S > 1 ? m->p_wte : 0.0) : 0.0);
}

// Bytes a node of stage s holds (node/pipe.c, node/outer_run.c). Per parameter of its part: 4 floats
// (parameters, gradients, AdamW m and v) and the 1-byte decay mask. With replicas, per parameter of
// its range (the part less the last stage's copy of wte), the outer state: anchor, momentum, φ at the
// round start, pseudo-gradient, drift, received mean, mean anchors, decode scratch and the catch-up
// server's servable version (2), 10 floats, one more with error feedback; and the checkpoint
// snapshot written in the background (parameters, AdamW m and v of the part, anchor and momentum of
// the range). Plus the activations of the micro-batches in flight.
static double s_stage_mem(const s_model_t *m, int s, int S, int R, int i, int j, int window) {
    const plan_cluster_t *c = m->c;
    double part = s_stage_params(m, S, i, j), range = part - (j == m->L && S > 1 ? m->p_wte : 0.0);
    double bytes = 17.0 * part;
    if (R > 1) bytes += 4.0 * (10.0 + (c->codec_bytes < 4.0 ? 1.0 : 0.0)) * range + 4.0 * (3.0 * part + 2.0 * range);
    double inflight = plan_stage_window(c->schedule, m->M, S, window, s);
    double acts = (double)(j - i) * m->act_block + m->act_in + (j == m->L ? m->act_head : 0.0);
    return bytes + inflight * acts;
}

// Outer exchange time of a stage holding P parameters on R nodes whose worst pair is (alpha, beta).
static double s_exchange(const s_model_t *m, int R, double P, double beta, double alpha) {
    if (R < 2) return 0.0;
    double bytes = P * m->c->codec_bytes;
    if (m->c->algorithm == PLAN_NOLOCO) return bytes / beta + alpha;
    return 2.0 * (R - 1) / R * bytes / beta + 2.0 * (R - 1) * alpha;
}

static double s_x_bytes_sent(const s_model_t *m, int R, double P) {
    if (R < 2) return 0.0;
    double bytes = P * m->c->codec_bytes;
    return m->c->algorithm == PLAN_NOLOCO ? bytes : 2.0 * (R - 1) / R * bytes;
}

// The micro-batch phase of a step: fill and drain (sum = Σ t_s + 2 Σ k_s, one micro-batch's round
// trip from stage 0's forward to its backward) and M − 1 more at the steady rate, which is the
// slowest stage or link serialisation (B = max t_s, q_s) or, with 1F1B, the window: stage 0 keeps at
// most W = min(M, S) micro-batches in flight, so micro-batch i cannot start before (i div W) round
// trips (it binds when link latency is large against compute).
static double s_makespan(const s_model_t *m, int S, int window, double sum, double B) {
    int M = m->M, W = plan_stage_window(m->c->schedule, M, S, window, 0);
    double steady = (M - 1) * B;
    // Window-bound: micro-batch i starts (i div W) round trips and (i mod W) steady gaps in.
    if (W < M) steady = fmax(steady, (double)((M - 1) / W) * sum + (double)((M - 1) % W) * B);
    return sum + steady;
}

static double s_step(const s_model_t *m, double mk, double X) {
    double H = m->c->inner_steps;
    return m->c->overlap ? fmax(mk, X / H) : mk + X / H;
}

// Worst pair (lowest bandwidth, then highest latency) among n nodes, for the exchange.
static void s_worst_pair(const s_model_t *m, const int *nodes, int n, double *beta, double *alpha) {
    *beta = INFINITY;
    *alpha = 0;
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++) {
            const plan_link_t lk = s_lk(m, nodes[a], nodes[b]), *l = &lk;
            if (l->nic_a < 0) {
                *beta = 0;
                *alpha = INFINITY;
                return;
            }
            if (l->beta < *beta) *beta = l->beta;
            if (l->alpha > *alpha) *alpha = l->alpha;
        }
}

static void s_errf(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int plan_cluster_check(const plan_cluster_t *c, char *err, size_t errlen) {
    char why[200];
    if (gpt_config_check(&c->model, why, sizeof why) != 0) {
        s_errf(err, errlen, "model: %s", why);
        return -1;
    }
    if (c->model.layers > PLAN_MAX_LAYERS) {
        s_errf(err, errlen, "model: %d layers, the planner handles at most %d", c->model.layers, PLAN_MAX_LAYERS);
        return -1;
    }
    if (c->n_nodes < 1 || c->n_nodes > PLAN_CL_MAX_NODES) {
        s_errf(err, errlen, "%d nodes: need 1 to %d", c->n_nodes, PLAN_CL_MAX_NODES);
        return -1;
    }
    if (c->n_islands < 1 || c->n_islands > PLAN_MAX_ISLANDS) {
        s_errf(err, errlen, "%d islands: need 1 to %d", c->n_islands, PLAN_MAX_ISLANDS);
        return -1;
    }
    if (c->micro_batch < 1 || c->micro_batches < 1 || c->inner_steps < 1) {
        s_errf(err, errlen, "micro_batch, micro_batches and inner_steps must be >= 1");
        return -1;
    }
    if (!(c->codec_bytes > 0) || !(c->calib_block > 0) || !(c->calib_head > 0) || !isfinite(c->codec_bytes) ||
        !isfinite(c->calib_block) || !isfinite(c->calib_head)) {
        s_errf(err, errlen, "codec bytes and calibration factors must be finite and > 0");
        return -1;
    }
    for (int i = 0; i < c->n_nodes; i++) {
        const plan_cnode_t *n = &c->node[i];
        if (n->island < 0 || n->island >= c->n_islands) {
            s_errf(err, errlen, "node %s: no such island", n->name);
            return -1;
        }
        if (!(n->flops > 0) || !isfinite(n->flops)) {
            s_errf(err, errlen, "node %s: flops must be > 0", n->name);
            return -1;
        }
        if (!(n->mem > 0) || !isfinite(n->mem)) {
            s_errf(err, errlen, "node %s: memory must be > 0", n->name);
            return -1;
        }
        if (n->n_nics < 1 || n->n_nics > PLAN_MAX_NICS) {
            s_errf(err, errlen, "node %s: needs 1 to %d NICs (nic = NAME ENDPOINT BANDWIDTH LATENCY [local])", n->name,
                   PLAN_MAX_NICS);
            return -1;
        }
        for (int k = 0; k < n->n_nics; k++)
            if (!(n->nic[k].bw > 0) || !isfinite(n->nic[k].bw) || !(n->nic[k].lat >= 0) || !isfinite(n->nic[k].lat)) {
                s_errf(err, errlen, "node %s: NIC %s needs a bandwidth > 0 and a latency >= 0", n->name, n->nic[k].name);
                return -1;
            }
        for (int j = 0; j < i; j++)
            if (!strcmp(c->node[j].name, n->name)) {
                s_errf(err, errlen, "node %s is described twice", n->name);
                return -1;
            }
    }
    for (int a = 0; a < c->n_islands; a++)
        for (int b = 0; b < c->n_islands; b++) {
            plan_fabric_t f = c->fabric[a][b];
            if (f.bw < 0 || !isfinite(f.bw) || f.lat < 0 || !isfinite(f.lat)) {
                s_errf(err, errlen, "link %s-%s: bandwidth and latency must be >= 0", c->island[a], c->island[b]);
                return -1;
            }
        }
    for (int a = 0; a < c->n_nodes; a++)
        for (int b = 0; b < c->n_nodes; b++) {
            plan_fabric_t f = c->pair[a][b];
            if (f.bw < 0 || !isfinite(f.bw) || f.lat < 0 || !isfinite(f.lat) || f.bw != c->pair[b][a].bw ||
                f.lat != c->pair[b][a].lat) {
                s_errf(err, errlen, "pair %s-%s: bandwidth and latency must be >= 0 and the same both ways",
                       c->node[a].name, c->node[b].name);
                return -1;
            }
        }
    return 0;
}

void plan_even_cuts(int L, int S, int *cut) {
    int base = L / S, extra = L % S, at = 0;
    for (int s = 0; s < S; s++) {
        cut[s] = at;
        at += base + (s < extra ? 1 : 0);
    }
    cut[S] = L;
}

// Per-stage figures of an assignment, independent of the layer split.
typedef struct {
    int R, S;
    double v[PLAN_MAX_STAGES], memhave[PLAN_MAX_STAGES], xbeta[PLAN_MAX_STAGES], xalpha[PLAN_MAX_STAGES];
    double k[PLAN_MAX_STAGES]; // boundary s → s+1: α + message / β (its worst replica)
    double q[PLAN_MAX_STAGES]; // the same boundary's message / β: what bounds the micro-batch rate
    double wte;                // tied-embedding sync per step (0 when S = 1)
    int window;                // the 1F1B window the split is for (0: min(M, S), what the search uses)
} s_stages_t;

static void s_stage_figures(const s_model_t *m, const int *nodes, int R, int s, s_stages_t *st) {
    double v = INFINITY, mem = INFINITY;
    for (int r = 0; r < R; r++) {
        const plan_cnode_t *n = &m->c->node[nodes[r]];
        if (n->flops < v) v = n->flops;
        if (n->mem < mem) mem = n->mem;
    }
    st->v[s] = v;
    st->memhave[s] = mem;
    s_worst_pair(m, nodes, R, &st->xbeta[s], &st->xalpha[s]);
}

int plan_eval(const plan_cluster_t *c, const plan_layout_t *l, plan_eval_t *e) {
    memset(e, 0, sizeof *e);
    e->bottleneck_stage = e->bottleneck_link = -1;
    int R = l->R, S = l->S, L = c->model.layers;
    if (R < 1 || S < 1 || S > PLAN_MAX_STAGES || R > PLAN_MAX_STAGES || R * S > c->n_nodes || S > L) {
        snprintf(e->why, sizeof e->why, "%d replicas x %d stages do not fit %d nodes and %d layers", R, S, c->n_nodes, L);
        return -1;
    }
    if (l->window < 0 || l->window > c->micro_batches || (l->window && c->schedule != PLAN_1F1B)) {
        snprintf(e->why, sizeof e->why, "window %d: must be 1..%d with 1f1b", l->window, c->micro_batches);
        return -1;
    }
    if (l->cut[0] != 0 || l->cut[S] != L) {
        snprintf(e->why, sizeof e->why, "cuts do not cover [0, %d)", L);
        return -1;
    }
    int used[PLAN_CL_MAX_NODES] = {0};
    for (int s = 0; s < S; s++) {
        if (l->cut[s + 1] <= l->cut[s]) {
            snprintf(e->why, sizeof e->why, "stage %d is empty", s);
            return -1;
        }
        for (int r = 0; r < R; r++) {
            int n = l->slot[s][r];
            if (n < 0 || n >= c->n_nodes || used[n]) {
                snprintf(e->why, sizeof e->why, "slot (%d, %d): node %d is invalid or used twice", s, r, n);
                return -1;
            }
            used[n] = 1;
        }
    }
    s_model_t model, *mp = &model;
    s_model_init(mp, c);
    s_stages_t st;
    st.R = R;
    st.S = S;
    e->feasible = 1;
    double sum = 0, maxtk = 0, X = 0;
    for (int s = 0; s < S; s++) {
        s_stage_figures(mp, l->slot[s], R, s, &st);
        int i = l->cut[s], j = l->cut[s + 1];
        e->t[s] = s_stage_t(mp, st.v[s], i, j);
        e->params[s] = s_stage_params(mp, S, i, j);
        e->mem_need[s] = s_stage_mem(mp, s, S, R, i, j, l->window);
        e->mem_have[s] = st.memhave[s];
        e->x[s] = s_exchange(mp, R, e->params[s], st.xbeta[s], st.xalpha[s]);
        e->x_bytes_node_step[s] = s_x_bytes_sent(mp, R, e->params[s]) / c->inner_steps;
        if (s > 0) {
            double k = 0, q = 0;
            for (int r = 0; r < R; r++) {
                plan_link_t lk = s_lk(mp, l->slot[s - 1][r], l->slot[s][r]);
                k = fmax(k, lk.msg_s);
                q = fmax(q, lk.ser_s);
            }
            e->k[s - 1] = k;
            e->q[s - 1] = q;
            if (!isfinite(k) && e->feasible) {
                e->feasible = 0;
                snprintf(e->why, sizeof e->why, "no NIC pair connects stage %d to stage %d (local NICs only?)", s - 1, s);
            }
            if (q > maxtk) maxtk = q;
        }
        sum = sum + e->t[s] + (s > 0 ? 2.0 * e->k[s - 1] : 0.0);
        if (e->t[s] > maxtk) maxtk = e->t[s];
        if (e->x[s] > X) X = e->x[s];
        if (e->mem_need[s] > e->mem_have[s] && e->feasible) {
            e->feasible = 0;
            snprintf(e->why, sizeof e->why, "stage %d needs %.3g GB, its smallest node has %.3g GB", s,
                     e->mem_need[s] / 1e9, e->mem_have[s] / 1e9);
        }
        if (!isfinite(e->x[s]) && e->feasible) {
            e->feasible = 0;
            snprintf(e->why, sizeof e->why, "replicas of stage %d cannot reach each other", s);
        }
    }
    for (int s = 0; s < S && e->bottleneck_stage < 0; s++)
        if (e->t[s] >= maxtk) e->bottleneck_stage = s;
    for (int s = 0; s + 1 < S && e->bottleneck_stage < 0 && e->bottleneck_link < 0; s++)
        if (e->q[s] >= maxtk) e->bottleneck_link = s;
    e->window_bound = s_makespan(mp, S, l->window, sum, maxtk) > sum + (mp->M - 1) * maxtk * (1 + 1e-12);
    e->makespan_s = s_makespan(mp, S, l->window, sum, maxtk);
    e->round_trip_s = sum;
    e->exchange_s = X;
    for (int r = 0; S > 1 && r < R; r++) e->wte_s = fmax(e->wte_s, s_wte_sync(mp, l->slot[S - 1][r], l->slot[0][r]));
    if (!isfinite(e->wte_s) && e->feasible) {
        e->feasible = 0;
        snprintf(e->why, sizeof e->why, "no NIC pair connects the last stage to stage 0 (tied embedding)");
    }
    e->step_s = s_step(mp, e->makespan_s + e->wte_s, X);
    e->exposed_s = fmax(0.0, e->step_s - e->makespan_s - e->wte_s);
    e->tokens_per_step = (double)R * mp->M * mp->tokmb;
    e->tokens_per_s = e->feasible ? e->tokens_per_step / e->step_s : 0;
    e->act_bytes_link_step = 2.0 * mp->M * mp->act_in;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// The exact layer split: for each bound B on the largest stage or link time, a DP over cuts that
// keeps, per (stage, end block), the Pareto front of (Σ t_s + 2 Σ k_s, max exchange time); the
// step time of every front point at the last stage is evaluated with B as the maximum term. The
// optimum split σ* appears at B = its own maximum (or a front point dominating it does), and every
// evaluated value over-estimates some feasible split, so the minimum over B is exact.
// ---------------------------------------------------------------------------------------------

typedef struct {
    double sum, x, sq; // sq: Σ t_s², only in balance mode
    int pi, pidx;
} s_entry_t;

typedef struct {
    s_entry_t *pool;
    size_t npool, cap;
    s_entry_t *tmp;
    size_t ntmp, tcap;
    int *start, *count; // per (s, j)
    size_t scap;
    double *cand;
    size_t ccap;
    unsigned char *reach;
    long dp_runs;
} s_dp_t;

static int s_grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 256;
    while (n < need) n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

static void s_dp_free(s_dp_t *d) {
    free(d->pool);
    free(d->tmp);
    free(d->start);
    free(d->count);
    free(d->cand);
    free(d->reach);
    memset(d, 0, sizeof *d);
}

static int s_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int s_cmp_entry(const void *a, const void *b) {
    const s_entry_t *x = a, *y = b;
    if (x->sum != y->sum) return x->sum < y->sum ? -1 : 1;
    if (x->x != y->x) return x->x < y->x ? -1 : 1;
    if (x->pi != y->pi) return x->pi < y->pi ? -1 : 1; // deterministic among equals
    return (x->pidx > y->pidx) - (x->pidx < y->pidx);
}

// Stage s may end at block j only if every later stage still gets a block, and start at i ≥ s.
#define S_FOR_J(s) for (int j = (s) + 1; j <= L - (S - 1 - (s)); j++)

static int s_ok(const s_model_t *m, const s_stages_t *st, int s, int i, int j, double B) {
    if (s_stage_t(m, st->v[s], i, j) > B) return 0;
    return s_stage_mem(m, s, st->S, st->R, i, j, st->window) <= st->memhave[s];
}

// Is there a split with every stage time ≤ B (memory respected)?
static int s_feasible(s_dp_t *d, const s_model_t *m, const s_stages_t *st, double B) {
    int S = st->S, L = m->L;
    unsigned char *reach = d->reach; // [s][j]
    memset(reach, 0, (size_t)S * (size_t)(L + 1));
    for (int s = 0; s < S; s++)
        S_FOR_J(s) {
            if (s == 0) {
                reach[j] = (unsigned char)s_ok(m, st, 0, 0, j, B);
                continue;
            }
            for (int i = s; i < j && !reach[(size_t)s * (L + 1) + j]; i++)
                if (reach[(size_t)(s - 1) * (L + 1) + i] && s_ok(m, st, s, i, j, B)) reach[(size_t)s * (L + 1) + j] = 1;
        }
    return reach[(size_t)(S - 1) * (L + 1) + L];
}

// Best split for fixed stage figures. Returns the step time (INFINITY when nothing feasible beats
// `thresh`) and writes cut[] when it returns a finite value.
// Balance mode (balance = 1, thresh = the optimum found before, slightly raised): among the splits
// whose step time is within thresh, the one with the smallest Σ t_s², so that ties (a homogeneous
// cluster has many) resolve to the most even split. The front then also keeps sq as a criterion.
static double s_split_mode(s_dp_t *d, const s_model_t *m, const s_stages_t *st, double thresh, int *cut,
                           int balance) {
    int S = st->S, R = st->R, L = m->L, M = m->M;
    double kmax = 0, ksum2 = 0, vmax = 0; // kmax: the largest link serialisation (bounds B from below)
    for (int s = 0; s + 1 < S; s++) {
        if (!isfinite(st->k[s])) return INFINITY;
        if (st->q[s] > kmax) kmax = st->q[s];
        ksum2 += 2.0 * st->k[s];
    }
    for (int s = 0; s < S; s++) {
        if (st->v[s] > vmax) vmax = st->v[s];
        if (R > 1 && !(st->xbeta[s] > 0)) return INFINITY;
    }
    if (!isfinite(st->wte)) return INFINITY;
    double lbsum = ksum2 + st->wte + m->tokmb * ((double)L * m->wb + m->wh) / vmax;
    size_t ns = (size_t)S * (size_t)(L + 1);
    if (ns > d->scap) {
        int *a = realloc(d->start, ns * sizeof(int)), *b = a ? realloc(d->count, ns * sizeof(int)) : NULL;
        unsigned char *c = b ? realloc(d->reach, ns) : NULL;
        if (a) d->start = a;
        if (b) d->count = b;
        if (c) d->reach = c;
        if (!c) return INFINITY;
        d->scap = ns;
    }
    // Candidate bounds: kmax and every feasible stage time above it.
    size_t nc = 0;
    if (s_grow((void **)&d->cand, &d->ccap, 1, sizeof(double))) return INFINITY;
    d->cand[nc++] = kmax;
    for (int s = 0; s < S; s++)
        S_FOR_J(s) {
            int ilo = s == 0 ? 0 : s, ihi = s == 0 ? 0 : j - 1;
            for (int i = ilo; i <= ihi; i++) {
                if (s_stage_mem(m, s, S, R, i, j, st->window) > st->memhave[s]) continue;
                double t = s_stage_t(m, st->v[s], i, j);
                if (t <= kmax) continue;
                if (s_grow((void **)&d->cand, &d->ccap, nc + 1, sizeof(double))) return INFINITY;
                d->cand[nc++] = t;
            }
        }
    qsort(d->cand, nc, sizeof(double), s_cmp_double);
    size_t u = 0;
    for (size_t a = 0; a < nc; a++)
        if (u == 0 || d->cand[a] != d->cand[u - 1]) d->cand[u++] = d->cand[a];
    nc = u;
    // Smallest feasible bound (feasibility is monotone in B).
    size_t lo = 0, hi = nc;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s_feasible(d, m, st, d->cand[mid])) hi = mid;
        else lo = mid + 1;
    }
    double best = INFINITY, best_sq = INFINITY;
    for (size_t b = lo; b < nc; b++) {
        double B = d->cand[b];
        double lim = balance ? thresh : fmin(best, thresh);
        if (lbsum + (M - 1) * B >= lim) break;
        d->dp_runs++;
        d->npool = 0;
        for (int s = 0; s < S; s++)
            S_FOR_J(s) {
                size_t at = (size_t)s * (L + 1) + j;
                d->ntmp = 0;
                int ilo = s == 0 ? 0 : s, ihi = s == 0 ? 0 : j - 1;
                for (int i = ilo; i <= ihi; i++) {
                    if (!s_ok(m, st, s, i, j, B)) continue;
                    double t = s_stage_t(m, st->v[s], i, j);
                    double x = s_exchange(m, R, s_stage_params(m, S, i, j), st->xbeta[s], st->xalpha[s]);
                    if (s == 0) {
                        if (s_grow((void **)&d->tmp, &d->tcap, d->ntmp + 1, sizeof(s_entry_t))) return INFINITY;
                        d->tmp[d->ntmp++] = (s_entry_t){t, x, t * t, 0, -1};
                        continue;
                    }
                    size_t pat = (size_t)(s - 1) * (L + 1) + i;
                    for (int q = 0; q < d->count[pat]; q++) {
                        const s_entry_t *e = &d->pool[d->start[pat] + q];
                        if (s_grow((void **)&d->tmp, &d->tcap, d->ntmp + 1, sizeof(s_entry_t))) return INFINITY;
                        d->tmp[d->ntmp++] = (s_entry_t){e->sum + t + 2.0 * st->k[s - 1], fmax(e->x, x),
                                                         e->sq + t * t, i, d->start[pat] + q};
                    }
                }
                qsort(d->tmp, d->ntmp, sizeof(s_entry_t), s_cmp_entry);
                d->start[at] = (int)d->npool;
                d->count[at] = 0;
                double minx = INFINITY;
                for (size_t q = 0; q < d->ntmp; q++) {
                    if (!balance) {
                        if (!(d->tmp[q].x < minx)) continue; // dominated: an earlier entry has sum and x ≤
                        minx = d->tmp[q].x;
                    } else {
                        int dominated = 0; // by a kept entry (sum ≤ by the order) with x ≤ and sq ≤
                        for (int k = 0; k < d->count[at] && !dominated; k++) {
                            const s_entry_t *o = &d->pool[d->start[at] + k];
                            dominated = o->x <= d->tmp[q].x && o->sq <= d->tmp[q].sq;
                        }
                        if (dominated) continue;
                    }
                    if (s_grow((void **)&d->pool, &d->cap, d->npool + 1, sizeof(s_entry_t))) return INFINITY;
                    d->pool[d->npool++] = d->tmp[q];
                    d->count[at]++;
                }
            }
        size_t fin = (size_t)(S - 1) * (L + 1) + L;
        for (int q = 0; q < d->count[fin]; q++) {
            const s_entry_t *e = &d->pool[d->start[fin] + q];
            double step = s_step(m, s_makespan(m, S, st->window, e->sum, B) + st->wte, e->x);
            if (balance ? (step <= thresh && e->sq < best_sq) : step < best) {
                best = step;
                best_sq = e->sq;
                int idx = d->start[fin] + q, j = L;
                for (int s = S - 1; s >= 0; s--) {
                    cut[s + 1] = j;
                    j = d->pool[idx].pi;
                    idx = d->pool[idx].pidx;
                }
                cut[0] = 0;
            }
        }
    }
    if (balance) return best;
    return best < thresh ? best : INFINITY;
}

static double s_split(s_dp_t *d, const s_model_t *m, const s_stages_t *st, double thresh, int *cut) {
    return s_split_mode(d, m, st, thresh, cut, 0);
}

// ---------------------------------------------------------------------------------------------
// Bottleneck matching between consecutive stages: replicas pair up so that the slowest pipeline
// link is as fast as possible (thresholds tried in order, Kuhn's augmenting paths for each).
// ---------------------------------------------------------------------------------------------

static int s_kuhn_try(int a, int R, const double *cost, double thr, int *matchb, unsigned char *seen) {
    for (int b = 0; b < R; b++) {
        if (cost[a * R + b] > thr || seen[b]) continue;
        seen[b] = 1;
        if (matchb[b] < 0 || s_kuhn_try(matchb[b], R, cost, thr, matchb, seen)) {
            matchb[b] = a;
            return 1;
        }
    }
    return 0;
}

// perm[a] = index in B matched to A's a. Returns the bottleneck (INFINITY if none).
static double s_bottleneck_match(const s_model_t *m, const int *A, const int *B, int R, int forbid_cross,
                                 int *perm) {
    double cost[PLAN_MAX_STAGES * PLAN_MAX_STAGES], vals[PLAN_MAX_STAGES * PLAN_MAX_STAGES];
    int nv = 0;
    for (int a = 0; a < R; a++)
        for (int b = 0; b < R; b++) {
            double c = m->link[A[a]][B[b]].msg_s;
            if (forbid_cross && m->c->node[A[a]].island != m->c->node[B[b]].island) c = INFINITY;
            cost[a * R + b] = c;
            if (isfinite(c)) vals[nv++] = c;
        }
    if (R == 1) {
        perm[0] = 0;
        return cost[0];
    }
    qsort(vals, (size_t)nv, sizeof(double), s_cmp_double);
    int lo = 0, hi = nv; // first threshold index with a perfect matching
    int matchb[PLAN_MAX_STAGES];
    unsigned char seen[PLAN_MAX_STAGES];
    while (lo < hi) {
        int mid = (lo + hi) / 2, ok = 1;
        for (int b = 0; b < R; b++) matchb[b] = -1;
        for (int a = 0; a < R && ok; a++) {
            memset(seen, 0, sizeof seen);
            ok = s_kuhn_try(a, R, cost, vals[mid], matchb, seen);
        }
        if (ok) hi = mid;
        else lo = mid + 1;
    }
    if (lo >= nv) return INFINITY;
    for (int b = 0; b < R; b++) matchb[b] = -1;
    for (int a = 0; a < R; a++) {
        memset(seen, 0, sizeof seen);
        s_kuhn_try(a, R, cost, vals[lo], matchb, seen);
    }
    for (int b = 0; b < R; b++) perm[matchb[b]] = b;
    return vals[lo];
}

// ---------------------------------------------------------------------------------------------
// The search. Nodes with the same island, speed, memory and NICs are interchangeable (a class); the
// exact search enumerates, for every (R, S), the ordered sequences of S stage sets (R nodes each,
// as counts per class), pairs consecutive stages by bottleneck matching (the boundaries are
// independent of each other: any set of per-boundary matchings composes into R disjoint chains),
// prunes with a lower bound, and splits layers exactly. When a (R, S) has more sequences than the
// limit, island-ordered starting layouts are polished by local search (swap or replace nodes).
// ---------------------------------------------------------------------------------------------

typedef struct {
    s_model_t m;
    s_dp_t dp;
    plan_opts_t o;
    int K;
    int cls[PLAN_CL_MAX_NODES], ncls[PLAN_CL_MAX_NODES], member[PLAN_CL_MAX_NODES][PLAN_CL_MAX_NODES];
    int R, S;
    int used[PLAN_CL_MAX_NODES];        // per class
    int set[PLAN_MAX_STAGES][PLAN_MAX_STAGES];
    int perm[PLAN_MAX_STAGES][PLAN_MAX_STAGES];
    s_stages_t st;
    long leaves, limit;
    int counting;
    double best_tps;
    plan_layout_t best;
    plan_stats_t stats;
    int islands_used;  // islands with at least one node
    // Replica chains: with few enough matchings ((R!)^(S-1) ≤ S_COMBO_MAX) every combination of
    // per-boundary matchings is tried, since the tied-embedding sync pairs each chain's ends.
    int combos;        // 1: enumerate; 0: bottleneck matchings per boundary (not exact for W)
    int nperm;
    int (*perms)[PLAN_MAX_STAGES];
    struct s_combo *cand;
    size_t ncand, ccap;
    int window;        // plan_split: the layout's 1F1B window (the search: 0)
} s_search_t;

#define S_COMBO_MAX 5000

typedef struct s_combo {
    double k[PLAN_MAX_STAGES], q[PLAN_MAX_STAGES];
    double wte;
    int choice[PLAN_MAX_STAGES];
} s_combo_t;

static int s_same_class(const plan_cluster_t *c, int i, int j) {
    const plan_cnode_t *a = &c->node[i], *b = &c->node[j];
    // [pair] figures: interchangeable only when both have the same figures to every other node.
    for (int k = 0; k < c->n_nodes; k++)
        if (k != i && k != j && (c->pair[i][k].bw != c->pair[j][k].bw || c->pair[i][k].lat != c->pair[j][k].lat))
            return 0;
    if (a->island != b->island || a->flops != b->flops || a->mem != b->mem || a->n_nics != b->n_nics) return 0;
    for (int k = 0; k < a->n_nics; k++)
        if (a->nic[k].bw != b->nic[k].bw || a->nic[k].lat != b->nic[k].lat || a->nic[k].local != b->nic[k].local)
            return 0;
    return 1;
}

static void s_consider(s_search_t *x, const int *cut, double step) {
    double tps = (double)x->R * x->m.M * x->m.tokmb / step;
    if (!(tps > x->best_tps)) return;
    x->best_tps = tps;
    plan_layout_t *b = &x->best;
    b->R = x->R;
    b->S = x->S;
    memcpy(b->cut, cut, sizeof(int) * (size_t)(x->S + 1));
    int idx[PLAN_MAX_STAGES];
    for (int r = 0; r < x->R; r++) idx[r] = r;
    for (int s = 0; s < x->S; s++) {
        for (int r = 0; r < x->R; r++) b->slot[s][r] = x->set[s][idx[r]];
        if (s + 1 < x->S)
            for (int r = 0; r < x->R; r++) idx[r] = x->perm[s][idx[r]];
    }
}

// Lower bound of the step time of a complete sequence (any split).
static double s_lower_bound(const s_search_t *x) {
    const s_stages_t *st = &x->st;
    double kmax = 0, ksum2 = 0, vmax = 0, vsum = 0;
    for (int s = 0; s + 1 < st->S; s++) {
        kmax = fmax(kmax, st->q[s]);
        ksum2 += 2.0 * st->k[s];
    }
    for (int s = 0; s < st->S; s++) {
        vmax = fmax(vmax, st->v[s]);
        vsum += st->v[s];
    }
    double W = x->m.tokmb * ((double)x->m.L * x->m.wb + x->m.wh);
    return ksum2 + st->wte + W / vmax + (x->m.M - 1) * fmax(kmax, W / vsum);
}

// PLAN_REPLICA_IN_ISLAND asks for data parallelism across islands: the replicas (stage 0's nodes)
// must come from at least two islands whenever the cluster has nodes on two.
static int s_spans_islands(const s_search_t *x, const int *nodes) {
    if (x->o.constraint != PLAN_REPLICA_IN_ISLAND || x->islands_used < 2) return 1;
    for (int r = 1; r < x->R; r++)
        if (x->m.c->node[nodes[r]].island != x->m.c->node[nodes[0]].island) return 1;
    return 0;
}

// Lower bound, split, and keep the layout if it is the best so far.
static void s_eval_seq(s_search_t *x) {
    double tokens = (double)x->R * x->m.M * x->m.tokmb;
    double thresh = x->best_tps > 0 ? tokens / x->best_tps : INFINITY;
    if (s_lower_bound(x) >= thresh) {
        x->stats.pruned++;
        return;
    }
    int cut[PLAN_MAX_STAGES + 1];
    double step = s_split(&x->dp, &x->m, &x->st, thresh, cut);
    if (isfinite(step)) s_consider(x, cut, step);
}

static double s_pair_cost(const s_search_t *x, int a, int b) {
    if (x->o.constraint == PLAN_REPLICA_IN_ISLAND && x->m.c->node[a].island != x->m.c->node[b].island) return INFINITY;
    return x->m.link[a][b].msg_s;
}

// Every combination of matchings from boundary s on; pos[r]: chain r's index in stage s's set.
static void s_combo_rec(s_search_t *x, int s, const int *pos, s_combo_t *cur) {
    int R = x->R;
    if (s == x->S - 1) {
        cur->wte = 0;
        for (int r = 0; r < R; r++) cur->wte = fmax(cur->wte, s_wte_sync(&x->m, x->set[s][pos[r]], x->set[0][r]));
        if (!isfinite(cur->wte)) return;
        if (x->ncand == x->ccap) {
            size_t n = x->ccap ? 2 * x->ccap : 64;
            s_combo_t *c = realloc(x->cand, n * sizeof *c);
            if (!c) return;
            x->cand = c;
            x->ccap = n;
        }
        x->cand[x->ncand++] = *cur;
        return;
    }
    for (int q = 0; q < x->nperm; q++) {
        const int *pi = x->perms[q];
        double k = 0, sq = 0;
        for (int a = 0; a < R && isfinite(k); a++) {
            k = fmax(k, s_pair_cost(x, x->set[s][a], x->set[s + 1][pi[a]]));
            sq = fmax(sq, x->m.link[x->set[s][a]][x->set[s + 1][pi[a]]].ser_s);
        }
        if (!isfinite(k)) continue;
        int next[PLAN_MAX_STAGES];
        for (int r = 0; r < R; r++) next[r] = pi[pos[r]];
        cur->k[s] = k;
        cur->q[s] = sq;
        cur->choice[s] = q;
        s_combo_rec(x, s + 1, next, cur);
    }
}

static int s_dominates(const s_combo_t *a, const s_combo_t *b, int nk) {
    if (a->wte > b->wte) return 0;
    for (int s = 0; s < nk; s++)
        if (a->k[s] > b->k[s] || a->q[s] > b->q[s]) return 0;
    return 1;
}

static void s_leaf(s_search_t *x) {
    if (!s_spans_islands(x, x->set[0])) return;
    x->leaves++;
    if (x->counting) return;
    x->stats.sequences++;
    x->st.wte = 0;
    if (x->S == 1) {
        s_eval_seq(x);
        return;
    }
    if (!x->combos) {
        // The bottleneck matchings found on the way down; the chains they compose pair the ends.
        int pos[PLAN_MAX_STAGES];
        for (int r = 0; r < x->R; r++) pos[r] = r;
        for (int s = 0; s + 1 < x->S; s++)
            for (int r = 0; r < x->R; r++) pos[r] = x->perm[s][pos[r]];
        for (int r = 0; r < x->R; r++) x->st.wte = fmax(x->st.wte, s_wte_sync(&x->m, x->set[x->S - 1][pos[r]], x->set[0][r]));
        s_eval_seq(x);
        return;
    }
    x->ncand = 0;
    int pos[PLAN_MAX_STAGES];
    for (int r = 0; r < x->R; r++) pos[r] = r;
    s_combo_t cur;
    memset(&cur, 0, sizeof cur);
    s_combo_rec(x, 0, pos, &cur);
    int nk = x->S - 1;
    for (size_t i = 0; i < x->ncand; i++) {
        int dominated = 0; // by another candidate (by an earlier one when equal)
        for (size_t j = 0; j < x->ncand && !dominated; j++)
            if (j != i && s_dominates(&x->cand[j], &x->cand[i], nk) &&
                (j < i || !s_dominates(&x->cand[i], &x->cand[j], nk)))
                dominated = 1;
        if (dominated) continue;
        const s_combo_t *c = &x->cand[i];
        for (int s = 0; s < nk; s++) {
            x->st.k[s] = c->k[s];
            x->st.q[s] = c->q[s];
            memcpy(x->perm[s], x->perms[c->choice[s]], sizeof(int) * (size_t)x->R);
        }
        x->st.wte = c->wte;
        s_eval_seq(x);
    }
}

static void s_stage_rec(s_search_t *x, int s);

// Chooses counts for classes q.. of stage s, `left` nodes still to place.
static void s_class_rec(s_search_t *x, int s, int q, int left, int placed, int island) {
    if (x->leaves > x->limit) return;
    if (left == 0) {
        int *nodes = x->set[s];
        if (!x->counting) {
            s_stage_figures(&x->m, nodes, x->R, s, &x->st);
            if (s > 0) {
                x->st.k[s - 1] = s_bottleneck_match(&x->m, x->set[s - 1], nodes, x->R,
                                                    x->o.constraint == PLAN_REPLICA_IN_ISLAND, x->perm[s - 1]);
                if (!isfinite(x->st.k[s - 1])) return;
                x->st.q[s - 1] = 0;
                for (int a = 0; a < x->R; a++)
                    x->st.q[s - 1] = fmax(x->st.q[s - 1], x->m.link[x->set[s - 1][a]][nodes[x->perm[s - 1][a]]].ser_s);
            }
        }
        s_stage_rec(x, s + 1);
        return;
    }
    if (q >= x->K) return;
    int avail = x->ncls[q] - x->used[q];
    int isl = x->m.c->node[x->member[q][0]].island;
    int allow = !(x->o.constraint == PLAN_STAGE_IN_ISLAND && island >= 0 && isl != island);
    for (int take = allow ? (avail < left ? avail : left) : 0; take >= 0; take--) {
        for (int t = 0; t < take; t++) x->set[s][placed + t] = x->member[q][x->used[q] + t];
        x->used[q] += take;
        s_class_rec(x, s, q + 1, left - take, placed + take, take > 0 ? isl : island);
        x->used[q] -= take;
    }
}

static void s_stage_rec(s_search_t *x, int s) {
    if (s == x->S) {
        s_leaf(x);
        return;
    }
    s_class_rec(x, s, 0, x->R, 0, -1);
}

// Step time of a full assignment (slots), with the exact split. INFINITY when infeasible.
static double s_assignment_step_mode(s_search_t *x, int slot[PLAN_MAX_STAGES][PLAN_MAX_STAGES], int *cut,
                                     double balance_within) {
    s_stages_t *st = &x->st;
    st->R = x->R;
    st->S = x->S;
    st->window = x->window;
    if (!s_spans_islands(x, slot[0])) return INFINITY;
    for (int s = 0; s < x->S; s++) {
        s_stage_figures(&x->m, slot[s], x->R, s, st);
        if (s > 0) {
            double k = 0, q = 0;
            for (int r = 0; r < x->R; r++) {
                int a = slot[s - 1][r], b = slot[s][r];
                double t = x->m.link[a][b].msg_s;
                if (x->o.constraint == PLAN_REPLICA_IN_ISLAND && x->m.c->node[a].island != x->m.c->node[b].island)
                    t = INFINITY;
                k = fmax(k, t);
                q = fmax(q, x->m.link[a][b].ser_s);
            }
            st->k[s - 1] = k;
            st->q[s - 1] = q;
        }
        if (x->o.constraint == PLAN_STAGE_IN_ISLAND)
            for (int r = 1; r < x->R; r++)
                if (x->m.c->node[slot[s][r]].island != x->m.c->node[slot[s][0]].island) return INFINITY;
    }
    st->wte = 0;
    for (int r = 0; x->S > 1 && r < x->R; r++) st->wte = fmax(st->wte, s_wte_sync(&x->m, slot[x->S - 1][r], slot[0][r]));
    if (balance_within > 0) return s_split_mode(&x->dp, &x->m, st, balance_within, cut, 1);
    return s_split(&x->dp, &x->m, st, INFINITY, cut);
}

static double s_assignment_step(s_search_t *x, int slot[PLAN_MAX_STAGES][PLAN_MAX_STAGES], int *cut) {
    return s_assignment_step_mode(x, slot, cut, 0);
}

// Re-splits the layers of layout l (assignment kept) evenly among the splits whose step time is
// within a relative 1e-12 of the optimum.
static void s_balance(s_search_t *x, plan_layout_t *l) {
    x->R = l->R;
    x->S = l->S;
    int cut[PLAN_MAX_STAGES + 1];
    double opt = s_assignment_step(x, l->slot, cut);
    if (!isfinite(opt)) return;
    double b = s_assignment_step_mode(x, l->slot, cut, opt * (1 + 1e-12));
    if (isfinite(b)) memcpy(l->cut, cut, sizeof(int) * (size_t)(l->S + 1));
}

static void s_local_search(s_search_t *x, int slot[PLAN_MAX_STAGES][PLAN_MAX_STAGES]) {
    int N = x->m.N, cut[PLAN_MAX_STAGES + 1];
    double cur = s_assignment_step(x, slot, cut);
    for (int pass = 0; pass < 50; pass++) {
        int improved = 0;
        for (int s = 0; s < x->S; s++)
            for (int r = 0; r < x->R; r++)
                for (int n = 0; n < N; n++) {
                    int old = slot[s][r], s2 = -1, r2 = -1;
                    if (n == old) continue;
                    for (int a = 0; a < x->S && s2 < 0; a++)
                        for (int b = 0; b < x->R; b++)
                            if (slot[a][b] == n) {
                                s2 = a;
                                r2 = b;
                                break;
                            }
                    slot[s][r] = n;
                    if (s2 >= 0) slot[s2][r2] = old;
                    int c2[PLAN_MAX_STAGES + 1];
                    double t = s_assignment_step(x, slot, c2);
                    x->stats.sequences++;
                    if (t < cur * (1 - 1e-12)) {
                        cur = t;
                        improved = 1;
                    } else {
                        slot[s][r] = old;
                        if (s2 >= 0) slot[s2][r2] = n;
                    }
                }
        if (!improved) break;
    }
    if (isfinite(cur) && s_assignment_step(x, slot, cut) == cur) {
        double tps = (double)x->R * x->m.M * x->m.tokmb / cur;
        if (tps > x->best_tps) {
            x->best_tps = tps;
            x->best.R = x->R;
            x->best.S = x->S;
            memcpy(x->best.cut, cut, sizeof(int) * (size_t)(x->S + 1));
            for (int s = 0; s < x->S; s++)
                for (int r = 0; r < x->R; r++) x->best.slot[s][r] = slot[s][r];
        }
    }
}

// Starting layouts for local search: islands in each order (all orders up to 5 islands, else the
// declared and the reversed one), nodes fastest first inside an island, filled stage-major (stages
// tend to stay inside islands) and replica-major (pipelines tend to stay inside islands).
static void s_heuristic(s_search_t *x) {
    const plan_cluster_t *c = x->m.c;
    int I = c->n_islands, order[PLAN_MAX_ISLANDS];
    for (int i = 0; i < I; i++) order[i] = i;
    int nperm = 0;
    for (;;) {
        int list[PLAN_CL_MAX_NODES], n = 0;
        for (int oi = 0; oi < I; oi++) {
            int start = n;
            for (int a = 0; a < c->n_nodes; a++)
                if (c->node[a].island == order[oi]) list[n++] = a;
            for (int p = start + 1; p < n; p++) // fastest first, stable
                for (int q = p; q > start && c->node[list[q]].flops > c->node[list[q - 1]].flops; q--) {
                    int t = list[q];
                    list[q] = list[q - 1];
                    list[q - 1] = t;
                }
        }
        for (int major = 0; major < 2; major++) {
            int slot[PLAN_MAX_STAGES][PLAN_MAX_STAGES];
            for (int s = 0; s < x->S; s++)
                for (int r = 0; r < x->R; r++) slot[s][r] = list[major == 0 ? s * x->R + r : r * x->S + s];
            s_local_search(x, slot);
        }
        nperm++;
        if (I > 5) {
            if (nperm >= 2) break;
            for (int i = 0; i < I; i++) order[i] = I - 1 - i;
            continue;
        }
        // next permutation
        int i = I - 2;
        while (i >= 0 && order[i] > order[i + 1]) i--;
        if (i < 0) break;
        int j = I - 1;
        while (order[j] < order[i]) j--;
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
        for (int a = i + 1, b = I - 1; a < b; a++, b--) t = order[a], order[a] = order[b], order[b] = t;
    }
}

// All permutations of R when (R!)^(S-1) is small enough for s_leaf to try every combination.
static void s_setup_combos(s_search_t *x) {
    x->combos = 0;
    if (x->S < 2) return;
    double n = 1, fact = 1;
    for (int i = 2; i <= x->R; i++) fact *= i;
    for (int s = 1; s < x->S; s++) n *= fact;
    if (n > S_COMBO_MAX) {
        x->stats.exhaustive = 0;
        return;
    }
    int np = (int)fact;
    int (*p)[PLAN_MAX_STAGES] = realloc(x->perms, sizeof(*p) * (size_t)np);
    if (!p) {
        x->stats.exhaustive = 0;
        return;
    }
    x->perms = p;
    int a[PLAN_MAX_STAGES];
    for (int i = 0; i < x->R; i++) a[i] = i;
    for (int q = 0; q < np; q++) {
        memcpy(p[q], a, sizeof(int) * (size_t)x->R);
        int i = x->R - 2; // next permutation in lexicographic order
        while (i >= 0 && a[i] > a[i + 1]) i--;
        if (i < 0) break;
        int j = x->R - 1;
        while (a[j] < a[i]) j--;
        int t = a[i];
        a[i] = a[j];
        a[j] = t;
        for (int u = i + 1, v = x->R - 1; u < v; u++, v--) t = a[u], a[u] = a[v], a[v] = t;
    }
    x->nperm = np;
    x->combos = 1;
}

int plan_search(const plan_cluster_t *c, const plan_opts_t *opts, plan_layout_t *best, plan_eval_t *e,
                plan_stats_t *st, char *err, size_t errlen) {
    if (plan_cluster_check(c, err, errlen) != 0) return -1;
    s_search_t *x = calloc(1, sizeof *x);
    if (!x) {
        s_errf(err, errlen, "out of memory");
        return -1;
    }
    s_model_init(&x->m, c);
    if (s_model_links(&x->m) != 0) {
        free(x);
        s_errf(err, errlen, "out of memory");
        return -1;
    }
    if (opts) x->o = *opts;
    long limit = x->o.exhaustive_limit > 0 ? x->o.exhaustive_limit : 200000;
    x->stats.exhaustive = 1;
    for (int a = 0; a < c->n_nodes; a++) {
        int q = 0;
        while (q < x->K && !s_same_class(c, x->member[q][0], a)) q++;
        if (q == x->K) x->ncls[x->K++] = 0;
        x->member[q][x->ncls[q]++] = a;
        x->cls[a] = q;
    }
    int L = c->model.layers, N = c->n_nodes;
    for (int i = 0; i < c->n_islands; i++)
        for (int a = 0; a < N; a++)
            if (c->node[a].island == i) {
                x->islands_used++;
                break;
            }
    for (int R = 1; R <= N && R <= PLAN_MAX_STAGES; R++) {
        if (x->o.R && R != x->o.R) continue;
        for (int S = 1; S <= L && S <= PLAN_MAX_STAGES && R * S <= N; S++) {
            if (x->o.S && S != x->o.S) continue;
            if (R == x->o.skip_R && S == x->o.skip_S) continue;
            x->R = x->st.R = R;
            x->S = x->st.S = S;
            memset(x->used, 0, sizeof x->used);
            s_setup_combos(x);
            x->counting = 1;
            x->leaves = 0;
            x->limit = limit;
            s_stage_rec(x, 0);
            if (x->leaves <= limit) {
                x->counting = 0;
                x->leaves = 0;
                x->limit = limit + 1;
                s_stage_rec(x, 0);
            } else {
                x->stats.exhaustive = 0;
                s_heuristic(x);
            }
        }
    }
    x->stats.dp_runs = x->dp.dp_runs;
    if (st) *st = x->stats;
    int rc = 0;
    if (x->best_tps <= 0) {
        s_errf(err, errlen,
               "no feasible layout: every arrangement runs out of memory or has unreachable links "
               "(check node memory, NICs marked local and [link] sections)");
        rc = -1;
    } else {
        *best = x->best;
        s_balance(x, best);
        plan_eval(c, best, e);
    }
    s_dp_free(&x->dp);
    free(x->m.link);
    free(x->perms);
    free(x->cand);
    free(x);
    return rc;
}

int plan_split(const plan_cluster_t *c, plan_layout_t *l, char *err, size_t errlen) {
    if (plan_cluster_check(c, err, errlen) != 0) return -1;
    s_search_t *x = calloc(1, sizeof *x);
    if (!x) {
        s_errf(err, errlen, "out of memory");
        return -1;
    }
    s_model_init(&x->m, c);
    if (s_model_links(&x->m) != 0) {
        free(x);
        s_errf(err, errlen, "out of memory");
        return -1;
    }
    x->R = l->R;
    x->S = l->S;
    x->window = l->window;
    int cut[PLAN_MAX_STAGES + 1];
    double step = (l->R >= 1 && l->S >= 1 && l->S <= c->model.layers && l->R * l->S <= c->n_nodes)
                      ? s_assignment_step(x, l->slot, cut)
                      : INFINITY;
    int rc = 0;
    if (!isfinite(step)) {
        s_errf(err, errlen, "no feasible layer split for this assignment");
        rc = -1;
    } else {
        memcpy(l->cut, cut, sizeof(int) * (size_t)(l->S + 1));
        s_balance(x, l);
    }
    s_dp_free(&x->dp);
    free(x->m.link);
    free(x);
    return rc;
}

void plan_to_file(const plan_cluster_t *c, const plan_layout_t *l, const plan_eval_t *e, plan_t *p) {
    memset(p, 0, sizeof *p);
    p->layers = c->model.layers;
    p->schedule = c->schedule;
    p->micro_batch = c->micro_batch;
    p->micro_batches = c->micro_batches;
    p->n_stages = l->S;
    p->routing = l->R > 1 ? PLAN_ROUTE_CHAIN : PLAN_ROUTE_RANDOM;
    p->window = l->window;
    for (int s = 0; s < l->S; s++) p->stages[s] = (plan_stage_t){l->cut[s], l->cut[s + 1]};
    for (int s = 0; s < l->S; s++)
        for (int r = 0; r < l->R; r++) {
            int a = l->slot[s][r];
            plan_node_t *n = &p->nodes[p->n_nodes++];
            const plan_cnode_t *cn = &c->node[a];
            snprintf(n->name, sizeof n->name, "%s", cn->name);
            memcpy(n->id, cn->id, 32);
            n->stage = s;
            n->replica = r;
            int nic = 0;
            if (s > 0) nic = plan_link(c, l->slot[s - 1][r], a).nic_b;
            else if (l->S > 1) nic = plan_link(c, a, l->slot[1][r]).nic_a;
            if (l->S == 1 || nic < 0) { // no pipeline link: the first NIC that reaches every island
                nic = 0;
                for (int k = cn->n_nics - 1; k >= 0; k--)
                    if (!cn->nic[k].local) nic = k;
            }
            snprintf(n->endpoint, sizeof n->endpoint, "%s", cn->nic[nic].endpoint);
        }
    if (e && e->feasible) {
        p->predicted_step_s = e->step_s;
        p->predicted_tokens_per_s = e->tokens_per_s;
    }
}

int plan_widen_window(const plan_cluster_t *c, plan_layout_t *l, plan_eval_t *e) {
    if (c->schedule != PLAN_1F1B || !e->feasible || !e->window_bound) return 0;
    plan_layout_t best = *l, t = *l;
    plan_eval_t be = *e, te;
    for (int W = l->S + 1; W <= c->micro_batches; W++) {
        t.window = W;
        if (plan_eval(c, &t, &te) != 0 || !te.feasible) break; // more in flight only needs more memory
        if (te.tokens_per_s > be.tokens_per_s * (1 + 1e-9)) best = t, be = te;
        if (!te.window_bound) break;
    }
    if (best.window == l->window) return 0;
    // The split was best for the old window: split again for the new one and keep the better.
    plan_layout_t re = best;
    plan_eval_t ree;
    char why[200];
    if (plan_split(c, &re, why, sizeof why) == 0 && plan_eval(c, &re, &ree) == 0 && ree.feasible &&
        ree.tokens_per_s > be.tokens_per_s * (1 + 1e-9))
        best = re, be = ree;
    *l = best;
    *e = be;
    return 1;
}
