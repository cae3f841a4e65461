// Pipeline stages (node/pipe.h) against one node: 2- and 3-stage pipelines (1F1B and GPipe), each
// stage a thread with its own identity, ZeroMQ context and CURVE sockets on 127.0.0.1, give the
// loss and every gradient of `loco train` with batch M·B on the same data, for three optimizer
// steps in a row (so the tied-wte exchange — head gradient to stage 0, updated wte back — is
// exercised: a wrong exchange shows in the second step's loss). Malformed messages sent to a stage
// with a plan node's key are dropped and counted without disturbing the result.
//
// Tolerance: |got − ref| ≤ 2e-6 + 2e-4·|ref| for gradients and 1e-5 relative for losses. Only the
// order of fp32 sums differs from the single node: the per-micro-batch loss scaling (1/(B·T) then
// 1/M instead of 1/(M·B·T)), the accumulation of weight gradients over micro-batches (M matmuls
// adding into the gradient instead of one over M·B rows) and the tied wte (embedding part + head
// part summed on stage 0).
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#include "model/data.h"
#include "model/rng.h"
#include "net/fingerprint.h"
#include "net/frame.h"
#include "node/pipe.h"
#include "node/plan_file.h"
#include "node/trainer.h"

#define NSTEP 3
#define MAXN 6

static char s_dir[64];

static void s_make_data(int V) {
    snprintf(s_dir, sizeof s_dir, "/tmp/loco_test_pipe_XXXXXX");
    cr_assert(mkdtemp(s_dir));
    size_t n = 20000;
    uint16_t *tok = malloc(n * 2);
    rng_t r;
    rng_seed(&r, 99);
    for (size_t i = 0; i < n; i++) tok[i] = (uint16_t)((i % 7 == 0) ? rng_below(&r, (uint64_t)V) : (i * 3 + tok[i ? i - 1 : 0]) % V);
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/train_000.bin", s_dir);
    cr_assert_eq(data_shard_write(path, tok, n, err, sizeof err), 0, "%s", err);
    free(tok);
}

static void s_cleanup_data(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/train_000.bin", s_dir);
    unlink(path);
    rmdir(s_dir);
}

static int s_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = 0};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

static void s_config(loco_config_t *c) {
    config_defaults(c);
    c->model = (gpt_config_t){.layers = 4, .d_model = 32, .heads = 2, .seq_len = 16, .vocab = 64};
    snprintf(c->data, sizeof c->data, "%s", s_dir);
    c->seed = 5;
    c->lr = 3e-3f;
    c->lr_min = 3e-4f;
    c->warmup = 0;
    c->steps = 100;
    c->grad_clip = 0; // off unless a test sets s_clip (stages then clip by the pipeline's global norm)
    c->threads = 1;
    c->eval_every = 0;
}

static void s_identity(net_identity_t *id, int i) {
    uint8_t seed[32];
    memset(seed, 0x40 + i, sizeof seed);
    cr_assert_eq(net_identity_from_seed(id, seed), 0);
}

// A plan over S stages with the given cuts, R replicas each (node index = stage·R + replica).
static void s_plan(plan_t *p, int S, int R, const int *cuts, int L, int mb, int M, plan_schedule_t sch) {
    memset(p, 0, sizeof *p);
    p->layers = L;
    p->schedule = sch;
    p->micro_batch = mb;
    p->micro_batches = M;
    p->n_stages = S;
    for (int s = 0; s < S; s++) p->stages[s] = (plan_stage_t){cuts[s], cuts[s + 1]};
    p->n_nodes = S * R;
    p->routing = R > 1 ? PLAN_ROUTE_CHAIN : PLAN_ROUTE_RANDOM;
    for (int k = 0; k < S * R; k++) {
        plan_node_t *n = &p->nodes[k];
        snprintf(n->name, sizeof n->name, "s%dr%d", k / R, k % R);
        net_identity_t id;
        s_identity(&id, k);
        memcpy(n->id, id.pk, 32);
        n->stage = k / R;
        n->replica = k % R;
        snprintf(n->endpoint, sizeof n->endpoint, "tcp://127.0.0.1:%d", s_free_port());
    }
    char err[256];
    cr_assert_eq(plan_validate(p, err, sizeof err), 0, "%s", err);
}

typedef struct {
    const plan_t *plan;
    loco_config_t cfg;
    int index;
    uint8_t fp[32];
    float *grads[NSTEP];        // full-size buffers; the stage fills its range
    float loss[NSTEP];
    size_t off, len;
    pipe_stats_t st;
    int rc;
    char err[512];
} stage_arg_t;

static void *s_stage_thread(void *arg) {
    stage_arg_t *a = arg;
    loco_config_t c = a->cfg;
    c.batch = a->plan->micro_batch;
    int stage0 = a->plan->nodes[a->index].stage == 0;
    part_t part; // the stage holds only its part of the model, as in loco run
    pipe_plan_part(a->plan, a->index, &c.model, &part);
    trainer_t *t = trainer_new_part(&c, TRAINER_PARAMS_ONLY | (stage0 ? TRAINER_TRAIN_DATA : 0), 7, &part, a->err,
                                    sizeof a->err);
    if (!t) {
        a->rc = -1;
        return NULL;
    }
    pipe_opts_t o = {.plan = a->plan, .timeout_ms = 20000, .route_seed = 1};
    s_identity(&o.identity, a->index);
    memcpy(o.fp, a->fp, 32);
    pipe_t *p = pipe_new(&o, t, a->err, sizeof a->err);
    if (!p) {
        a->rc = -1;
        trainer_destroy(&t);
        return NULL;
    }
    pipe_range(p, &a->off, &a->len);
    volatile sig_atomic_t stop = 0;
    for (int k = 0; k < NSTEP && a->rc == 0; k++) {
        if (pipe_grads(p, t, &stop) != 0) a->rc = -2;
        a->loss[k] = t->loss;
        if (a->rc == 0 && pipe_apply(p, t, &stop) != 0) a->rc = -3;
        // After the step, as the single node's are read: clipped in place when clipping binds
        // (AdamW leaves the gradients as they are).
        memset(a->grads[k], 0, t->model->num_params * sizeof(float));
        for (int q = 0; q < part.n; q++) // only the parts exist (all of it with one stage)
            memcpy(a->grads[k] + part.off[q], t->model->grads + part.off[q], part.len[q] * sizeof(float));
        if (part.n == 0) memcpy(a->grads[k], t->model->grads, t->model->num_params * sizeof(float));
    }
    pipe_service(p, 300); // late bad messages are still counted
    pipe_stats(p, &a->st);
    pipe_log_stats(p);
    pipe_destroy(&p);
    trainer_destroy(&t);
    return NULL;
}

static int s_close(const char *label, const float *got, const float *ref, size_t n, double atol, double rtol) {
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)ref[i]), b = atol + rtol * fabs((double)ref[i]);
        double r = e / b;
        if (!(r <= worst)) worst = r, wi = i;
    }
    int ok = worst <= 1.0;
    printf("%s %-34s n=%-6zu worst err/bound %.3f at %zu (got %.9g ref %.9g)\n", ok ? "ok  " : "FAIL", label, n, worst, wi,
           n ? got[wi] : 0.0f, n ? ref[wi] : 0.0f);
    fflush(stdout);
    return ok;
}

// Sends malformed messages to plan node `to` with the key of plan node `as` (so they pass CURVE and
// ZAP and reach the checks). Returns how many were sent.
static int s_send_bad(const plan_t *pl, int as, int to, const uint8_t fp[32], const loco_config_t *c) {
    void *ctx = zmq_ctx_new();
    void *d = zmq_socket(ctx, ZMQ_DEALER);
    net_identity_t id, srv;
    s_identity(&id, as);
    s_identity(&srv, to);
    int linger = 2000;
    zmq_setsockopt(d, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(d, ZMQ_CURVE_SERVERKEY, srv.curve_pk, 32);
    zmq_setsockopt(d, ZMQ_CURVE_PUBLICKEY, id.curve_pk, 32);
    zmq_setsockopt(d, ZMQ_CURVE_SECRETKEY, id.curve_sk, 32);
    cr_assert_eq(zmq_connect(d, pl->nodes[to].endpoint), 0);
    size_t B = (size_t)pl->micro_batch, T = (size_t)c->model.seq_len, C = (size_t)c->model.d_model;
    size_t na = B * T * C, nt = B * T;
    float *x = calloc(na, 4);
    int32_t *tg = calloc(nt, 4);
    int sent = 0;
    for (int kind = 0; kind < 6; kind++) {
        uint8_t h[PIPE_HDR_SIZE] = {'L', 'P', 'I', 'P'};
        net_put_u16(h + 4, PIPE_PROTOCOL_VERSION);
        net_put_u16(h + 6, PIPE_MSG_ACT);
        net_put_u64(h + 8, net_run_id(fp));
        net_put_u64(h + 16, 0);
        net_put_u32(h + 32, (uint32_t)B);
        net_put_u32(h + 36, (uint32_t)T);
        net_put_u64(h + 48, na * 4);
        net_put_u64(h + 56, nt * 4);
        size_t n1 = na * 4;
        memset(x, 0, na * 4);
        memset(tg, 0, nt * 4);
        switch (kind) {
        case 0: h[0] = 'X'; break;                           // header
        case 1: net_put_u64(h + 8, 12345); break;            // run
        case 2: n1 -= 4; break;                              // shape: frame shorter than announced
        case 3: x[17] = NAN; break;                          // value
        case 4: tg[3] = c->model.vocab; break;               // value: target ≥ vocab
        case 5: net_put_u64(h + 16, 1000); break;            // stale: far ahead
        }
        zmq_send(d, h, sizeof h, ZMQ_SNDMORE);
        zmq_send(d, x, n1, ZMQ_SNDMORE);
        zmq_send(d, tg, nt * 4, 0);
        sent++;
    }
    zmq_close(d);
    zmq_ctx_term(ctx); // lingers until delivered (2 s at most)
    free(x);
    free(tg);
    return sent;
}

// S stages × R replicas (R > 1: routing chain, R independent pipelines on the same data stream, so
// each must equal the single node).
static int s_window;  // the plan's 1F1B window for the next s_check_pipeline (0: the default)
static float s_clip;  // [train] grad_clip for the next s_check_pipeline (0: off)

static void s_check_pipeline(int S, int R, const int *cuts, int M, plan_schedule_t sch, int bad) {
    s_make_data(64);
    loco_config_t c;
    s_config(&c);
    c.grad_clip = s_clip;
    int mb = 2;
    plan_t *pl = malloc(sizeof *pl);
    s_plan(pl, S, R, cuts, c.model.layers, mb, M, sch);
    pl->window = s_window;
    int N = S * R;

    // The single node: `loco train` with batch M·B, same seed, same stream.
    loco_config_t rc = c;
    rc.batch = M * mb;
    char err[512];
    trainer_t *ref = trainer_new(&rc, TRAINER_TRAIN_DATA, 7, err, sizeof err);
    cr_assert(ref, "%s", err);
    size_t np = ref->model->num_params;
    float *rg[NSTEP], rl[NSTEP];
    for (int k = 0; k < NSTEP; k++) {
        rl[k] = trainer_step(ref);
        rg[k] = malloc(np * sizeof(float));
        memcpy(rg[k], ref->model->grads, np * sizeof(float)); // clipped in place when clipping binds
    }

    stage_arg_t a[MAXN];
    pthread_t th[MAXN];
    uint8_t fp[32];
    net_run_fingerprint(&c, fp);
    for (int s = 0; s < N; s++) {
        memset(&a[s], 0, sizeof a[s]);
        a[s].plan = pl;
        a[s].cfg = c;
        a[s].index = s;
        memcpy(a[s].fp, fp, 32);
        for (int k = 0; k < NSTEP; k++) a[s].grads[k] = calloc(np, sizeof(float));
        cr_assert_eq(pthread_create(&th[s], NULL, s_stage_thread, &a[s]), 0);
    }
    int nbad = bad ? s_send_bad(pl, 0, 1, fp, &c) : 0;
    for (int s = 0; s < N; s++) pthread_join(th[s], NULL);
    for (int s = 0; s < N; s++) cr_assert_eq(a[s].rc, 0, "node %d: rc %d: %s", s, a[s].rc, a[s].err);

    int ok = 1;
    for (int k = 0; k < NSTEP; k++) {
        float last_loss = a[N - 1].loss[k], first_loss = a[0].loss[k];
        printf("step %d: single node loss %.7f, last stage %.7f, stage 0 %.7f\n", k, rl[k], last_loss, first_loss);
        for (int s = 0; s < N; s++) ok &= fabsf(a[s].loss[k] - rl[k]) <= 1e-5f * fabsf(rl[k]);
        for (int s = 0; s < N; s++) {
            char label[64];
            snprintf(label, sizeof label, "step %d node %s grads [%zu, %zu)", k, pl->nodes[s].name, a[s].off,
                     a[s].off + a[s].len);
            ok &= s_close(label, a[s].grads[k] + a[s].off, rg[k] + a[s].off, a[s].len, 2e-6, 2e-4);
        }
    }
    cr_expect(ok, "the pipeline differs from the single node (see above)");
    for (int s = 0; s < N; s++) {
        cr_expect_eq(a[s].st.steps, NSTEP);
        cr_expect_eq(a[s].st.fwd, (uint64_t)(NSTEP * M), "stage %d ran %llu forwards", s, (unsigned long long)a[s].st.fwd);
        cr_expect_eq(a[s].st.rerouted, 0);
        if (!bad || s != 1) cr_expect_eq(a[s].st.dropped, 0, "stage %d dropped %llu", s, (unsigned long long)a[s].st.dropped);
    }
    if (bad) {
        const pipe_stats_t *st = &a[1].st;
        printf("stage 1 drops: header %llu run %llu shape %llu value %llu stale %llu\n",
               (unsigned long long)st->drop[PIPE_DROP_HEADER], (unsigned long long)st->drop[PIPE_DROP_RUN],
               (unsigned long long)st->drop[PIPE_DROP_SHAPE], (unsigned long long)st->drop[PIPE_DROP_VALUE],
               (unsigned long long)st->drop[PIPE_DROP_STALE]);
        cr_expect_eq(st->dropped, (uint64_t)nbad);
        cr_expect_eq(st->drop[PIPE_DROP_HEADER], 1);
        cr_expect_eq(st->drop[PIPE_DROP_RUN], 1);
        cr_expect_eq(st->drop[PIPE_DROP_SHAPE], 1);
        cr_expect_eq(st->drop[PIPE_DROP_VALUE], 2);
        cr_expect_eq(st->drop[PIPE_DROP_STALE], 1);
    }
    for (int k = 0; k < NSTEP; k++) {
        free(rg[k]);
        for (int s = 0; s < N; s++) free(a[s].grads[k]);
    }
    trainer_destroy(&ref);
    free(pl);
    s_cleanup_data();
}

Test(pipe, two_stages_1f1b_equal_one_node, .timeout = 120) {
    int cuts[] = {0, 2, 4};
    s_check_pipeline(2, 1, cuts, 4, PLAN_1F1B, 0);
}

Test(pipe, two_chained_pipelines_each_equal_one_node, .timeout = 120) {
    int cuts[] = {0, 2, 4};
    s_check_pipeline(2, 2, cuts, 4, PLAN_1F1B, 0);
}

Test(pipe, three_stages_1f1b_equal_one_node, .timeout = 120) {
    int cuts[] = {0, 1, 3, 4};
    s_check_pipeline(3, 1, cuts, 4, PLAN_1F1B, 0);
}

// A window above S (plan file `window`): stage 0 keeps all 5 micro-batches in flight, stage 1 four.
Test(pipe, three_stages_1f1b_wide_window_equal_one_node, .timeout = 120) {
    int cuts[] = {0, 1, 3, 4};
    s_window = 5;
    s_check_pipeline(3, 1, cuts, 5, PLAN_1F1B, 0);
    s_window = 0;
}

// Clipping that binds every step (the single node's norms are about 1): the stages clip by the
// pipeline's global norm (NORM up, TOTAL down), so the three steps still follow the single node.
Test(pipe, three_stages_clip_by_the_global_norm_equal_one_node, .timeout = 120) {
    int cuts[] = {0, 1, 3, 4};
    s_clip = 0.05f;
    s_check_pipeline(3, 1, cuts, 4, PLAN_1F1B, 0);
    s_clip = 0;
}

Test(pipe, two_chained_pipelines_clip_each_by_its_norm, .timeout = 120) {
    int cuts[] = {0, 2, 4};
    s_clip = 0.05f;
    s_check_pipeline(2, 2, cuts, 4, PLAN_1F1B, 0);
    s_clip = 0;
}

Test(pipe, three_stages_gpipe_equal_one_node, .timeout = 120) {
    int cuts[] = {0, 2, 3, 4};
    s_check_pipeline(3, 1, cuts, 3, PLAN_GPIPE, 0);
}

Test(pipe, bad_messages_dropped_and_counted, .timeout = 120) {
    int cuts[] = {0, 3, 4};
    s_check_pipeline(2, 1, cuts, 2, PLAN_1F1B, 1);
}

Test(pipe, refuses_a_peer_not_in_the_plan) {
    s_make_data(64);
    loco_config_t c;
    s_config(&c);
    c.batch = 2;
    plan_t *pl = malloc(sizeof *pl);
    int cuts[] = {0, 2, 4};
    s_plan(pl, 2, 1, cuts, 4, 2, 2, PLAN_1F1B);
    char err[512];
    trainer_t *t = trainer_new(&c, 0, 7, err, sizeof err);
    cr_assert(t, "%s", err);
    pipe_opts_t o = {.plan = pl, .timeout_ms = 1000};
    s_identity(&o.identity, 9); // not in the plan
    pipe_t *p = pipe_new(&o, t, err, sizeof err);
    cr_expect_null(p);
    cr_expect(strstr(err, "not named in the plan"), "%s", err);
    pipe_destroy(&p);
    // Another layer count than the model's.
    pl->layers = 6;
    s_identity(&o.identity, 0);
    p = pipe_new(&o, t, err, sizeof err);
    cr_expect_null(p);
    cr_expect(strstr(err, "6 layers"), "%s", err);
    pipe_destroy(&p);
    trainer_destroy(&t);
    free(pl);
    s_cleanup_data();
}
