#include "node/pipe.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "model/rng.h"
#include "net/frame.h"
#include "node/log.h"
#include "node/train_loop.h"
#include "optim/adamw.h"

// Slot states.
enum { SL_FREE = 0, SL_UNSENT, SL_WAIT, SL_READY };

typedef struct {
    int state;
    gpt_t *m;                   // activation context over the trainer's weights
    int32_t *inputs, *targets;  // (B,T)
    float *x;                   // (B,T,C) input activation (stage > 0)
    float *dx;                  // (B,T,C) gradient of x, sent back (stage > 0)
    float *dout;                // (B,T,C) gradient of our output, received (not the last stage)
    uint64_t step;
    uint32_t origin, mb;
    int from, to;               // plan indices: who sent the ACT (-1 at stage 0), where the output went
    int exclude;                // rerouting: the node that timed out (-1 none)
    uint64_t sent_ms;
    float loss;
} slot_t;

typedef struct { // an ACT waiting for a slot or for its step
    uint64_t step;
    uint32_t origin, mb;
    int from;
    float *x;
    int32_t *tg;
} pend_t;

typedef struct { // a message to one node that could not be queued yet (not connected)
    int to, type;
    uint64_t step, since_ms;
    uint32_t origin, mb, count;
    float loss;
    void *f1;
    size_t n1;
} out_t;

#define PIPE_OUTBOX 256

typedef struct {
    void *dealer;               // NULL until first needed
    uint8_t curve[32];
    int dead;
    uint64_t dead_ms;           // when it was taken for dead
    uint64_t heard_ms;          // last valid message from it
    uint32_t gone_seen;
    int has_end;
    uint64_t end_step;
    uint32_t end_count;
    uint32_t done_from;         // this step: its micro-batches completed here
    uint32_t done_to;           // this step: our micro-batches it completed
    int wgrad_got;              // stage 0: its WGRAD of this step arrived
    uint64_t ahead;             // 1 + the highest step of an ACT/END it sent us (0: none yet)
    uint64_t at_sent_ms;        // last AT sent to it
    uint64_t lost_log_ms;       // last warning about messages to it that were lost (rate-limited)
    uint64_t lost_quiet;        // messages to it lost since that warning
} peer_t;

struct pipe_t {
    pipe_opts_t o;
    const plan_t *plan;
    trainer_t *t;
    int self, stage, S, replica, R0;
    int l0, l1, L, B, T, C, V, M;
    size_t off, len, wte_n, act_n, tok_n;
    uint64_t run_id;
    void *ctx, *router, *zap;
    char endpoint[160];
    peer_t *peers;              // plan->n_nodes
    slot_t *slots;
    int nslots, window;
    pend_t *pend;
    int npend, pend_max;
    rng_t rng;
    // The step in progress.
    uint64_t step;
    int issued, ndone, nproc;
    double loss_sum;
    float *wgrad_sum;           // stage 0: sum of received head wte gradients (V,C)
    float *rx;                  // a received frame's floats, aligned (max of act_n, wte_n)
    int wgrad_n;
    uint64_t wte_got;           // last stage: step + 1 of the last WTE taken
    int wte_from;               // last stage: the stage-0 node our WGRAD went to
    out_t outbox[PIPE_OUTBOX];
    int nout;
    pipe_stats_t st;
    uint64_t drop_log_ms[PIPE_DROP_COUNT];
    uint64_t wait_log_ms;
    uint64_t skip_to;           // an AT said the next stage is at this step (> ours): skip to it
    // Global gradient clipping (PIPE_MSG_NORM/TOTAL): on when [train] grad_clip > 0 and the stages
    // form R separate pipelines (one replica each, or routing chain with equal counts).
    int global_clip, up, down;  // up/down: the plan nodes of the same replica one stage before/after (-1)
    double norm_in, total_in;
    uint64_t norm_in_step, total_in_step; // step + 1 of the value held
    uint64_t partial_log_ms;
};

static uint64_t s_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

const char *pipe_drop_name(pipe_drop_t d) {
    static const char *names[PIPE_DROP_COUNT] = {"frames", "header", "run", "sender", "shape",
                                                 "value", "stale", "unexpected", "full"};
    return (unsigned)d < PIPE_DROP_COUNT ? names[d] : "?";
}

static const char *s_type_name(int type) {
    static const char *names[] = {"?", "ACT", "GRAD", "END", "WGRAD", "WTE", "AT", "NORM", "TOTAL"};
    return type >= 1 && type <= 8 ? names[type] : "?";
}

static const char *s_name(const pipe_t *p, int i) { return i >= 0 ? p->plan->nodes[i].name : "?"; }

// Counts, and logs at most once a second per reason (a flood of bad messages must not flood the log).
static void s_drop(pipe_t *p, pipe_drop_t d, int from, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void s_drop(pipe_t *p, pipe_drop_t d, int from, const char *fmt, ...) {
    if ((unsigned)d >= PIPE_DROP_COUNT) d = PIPE_DROP_HEADER; // never: every reason is in range
    p->st.dropped++;
    p->st.drop[d]++;
    uint64_t now = s_mono_ms();
    if (now - p->drop_log_ms[d] < 1000 && p->drop_log_ms[d]) return;
    p->drop_log_ms[d] = now;
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    log_warn("pipe", "dropped a message from %s (%s): %s [%llu %s drops]", s_name(p, from), pipe_drop_name(d), why,
             (unsigned long long)p->st.drop[d], pipe_drop_name(d));
}

static int s_finite(const float *x, size_t n) {
    float acc = 0.0f;
    for (size_t i = 0; i < n; i++) acc += x[i] * 0.0f; // NaN/Inf poison the sum; no branch per element
    return acc == 0.0f;
}

static void s_mark_dead(pipe_t *p, int i, const char *why) {
    if (p->peers[i].dead) return;
    p->peers[i].dead = 1;
    p->peers[i].dead_ms = s_mono_ms();
    p->st.dead_marks++;
    log_warn("pipe", "stage %d replica %d (%s) taken for dead: %s", p->plan->nodes[i].stage, p->plan->nodes[i].replica,
             s_name(p, i), why);
}

// ---------------------------------------------------------------------------------------------
// Sockets

static int s_setopt_int(void *s, int opt, int v) { return zmq_setsockopt(s, opt, &v, sizeof v); }

static void *s_dealer(pipe_t *p, int i) {
    peer_t *q = &p->peers[i];
    if (q->dealer) return q->dealer;
    void *d = zmq_socket(p->ctx, ZMQ_DEALER);
    if (!d) return NULL;
    int rc = s_setopt_int(d, ZMQ_LINGER, 0) | s_setopt_int(d, ZMQ_IMMEDIATE, 1) | s_setopt_int(d, ZMQ_SNDHWM, 256) |
             zmq_setsockopt(d, ZMQ_CURVE_SERVERKEY, q->curve, 32) |
             zmq_setsockopt(d, ZMQ_CURVE_PUBLICKEY, p->o.identity.curve_pk, 32) |
             zmq_setsockopt(d, ZMQ_CURVE_SECRETKEY, p->o.identity.curve_sk, 32);
    if (rc || zmq_connect(d, p->plan->nodes[i].endpoint) != 0) {
        log_warn("pipe", "cannot connect to %s at %s: %s", s_name(p, i), p->plan->nodes[i].endpoint, zmq_strerror(errno));
        zmq_close(d);
        return NULL;
    }
    q->dealer = d;
    return d;
}

// Sends header + up to two frames to plan node i without waiting. 0, or -1 when the node is not
// connected (ZMQ_IMMEDIATE) or its queue is full.
static int s_send(pipe_t *p, int i, int type, uint64_t step, uint32_t origin, uint32_t mb, uint32_t count, float loss,
                  const void *f1, size_t n1, const void *f2, size_t n2) {
    void *d = s_dealer(p, i);
    if (!d) return -1;
    uint8_t h[PIPE_HDR_SIZE] = {'L', 'P', 'I', 'P'};
    net_put_u16(h + 4, PIPE_PROTOCOL_VERSION);
    net_put_u16(h + 6, (uint16_t)type);
    net_put_u64(h + 8, p->run_id);
    net_put_u64(h + 16, step);
    net_put_u32(h + 24, origin);
    net_put_u32(h + 28, mb);
    net_put_u32(h + 32, (uint32_t)p->B);
    net_put_u32(h + 36, (uint32_t)p->T);
    net_put_u32(h + 40, count);
    uint32_t lb;
    memcpy(&lb, &loss, 4);
    net_put_u32(h + 44, lb);
    net_put_u64(h + 48, n1);
    net_put_u64(h + 56, n2);
    int nf = f2 ? 2 : f1 ? 1 : 0;
    if (zmq_send(d, h, sizeof h, (nf ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0) return -1;
    // After the first part is queued, libzmq takes the rest of the message.
    if (nf >= 1) zmq_send(d, f1, n1, nf == 2 ? ZMQ_SNDMORE : 0);
    if (nf == 2) zmq_send(d, f2, n2, 0);
    p->st.sent++;
    p->st.bytes_sent += sizeof h + n1 + n2;
    return 0;
}

// A message to node `to` given up: counted; warned about at most every 10 s per node, with the
// count since the last warning (a node that is gone would otherwise fill the log, one line per step).
static void s_lost(pipe_t *p, int to, int type, uint64_t step, const char *why) {
    peer_t *q = &p->peers[to];
    uint64_t now = s_mono_ms();
    p->st.undelivered++;
    q->lost_quiet++;
    if (q->lost_log_ms && now - q->lost_log_ms < 10000) return;
    log_warn("pipe", "%s to %s for step %llu lost: %s (%llu lost to it since the last warning, %llu in all)",
             s_type_name(type), s_name(p, to), (unsigned long long)step, why, (unsigned long long)q->lost_quiet,
             (unsigned long long)p->st.undelivered);
    q->lost_log_ms = now;
    q->lost_quiet = 0;
}

// A message that must reach node `to` (GRAD, END, WGRAD, WTE): sent now, or kept in the outbox and
// retried (a connection still being set up takes a few milliseconds) until timeout_ms.
static void s_post(pipe_t *p, int to, int type, uint64_t step, uint32_t origin, uint32_t mb, uint32_t count, float loss,
                   const void *f1, size_t n1) {
    if (p->nout == 0 && s_send(p, to, type, step, origin, mb, count, loss, f1, n1, NULL, 0) == 0) return;
    void *copy = n1 ? malloc(n1) : NULL;
    if (p->nout == PIPE_OUTBOX || (n1 && !copy)) {
        free(copy);
        s_lost(p, to, type, step, "the outbox is full");
        return;
    }
    if (n1) memcpy(copy, f1, n1);
    p->outbox[p->nout++] = (out_t){.to = to, .type = type, .step = step, .since_ms = s_mono_ms(), .origin = origin,
                                   .mb = mb, .count = count, .loss = loss, .f1 = copy, .n1 = n1};
}

// Retries the outbox in order; gives up on a message older than timeout_ms (its node is gone).
static void s_flush(pipe_t *p) {
    int k = 0;
    uint64_t now = s_mono_ms();
    for (int i = 0; i < p->nout; i++) {
        out_t *m = &p->outbox[i];
        if (s_send(p, m->to, m->type, m->step, m->origin, m->mb, m->count, m->loss, m->f1, m->n1, NULL, 0) == 0 ||
            now - m->since_ms > (uint64_t)p->o.timeout_ms) {
            if (now - m->since_ms > (uint64_t)p->o.timeout_ms) {
                char why[64];
                snprintf(why, sizeof why, "not deliverable within %d ms", p->o.timeout_ms);
                s_lost(p, m->to, m->type, m->step, why);
            }
            free(m->f1);
            continue;
        }
        p->outbox[k++] = *m;
    }
    p->nout = k;
}

// ZAP (net_zap_answer_one): only the CURVE keys of the plan's nodes get in; User-Id = the Ed25519 id in hex.
static int s_zap_decide(void *ctx, const uint8_t key[32], char uid[NET_ID_HEX], const char **text) {
    const pipe_t *p = ctx;
    for (int i = 0; i < p->plan->n_nodes; i++)
        if (!memcmp(p->peers[i].curve, key, 32)) {
            net_id_to_hex(p->plan->nodes[i].id, uid);
            return 1;
        }
    char hex[65];
    net_hex_encode(key, 32, hex);
    log_warn("pipe", "refused a pipeline connection from CURVE key %.16s…: not a node of the plan", hex);
    *text = "not a node of the plan";
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Receiving

static int s_partner(const pipe_t *p, int j);

static int s_slot_busy(const pipe_t *p) {
    for (int i = 0; i < p->nslots; i++)
        if (p->slots[i].state != SL_FREE) return 1;
    return 0;
}

// Floats of an unaligned frame are all finite (copied in blocks: no unaligned loads).
static int s_finite_bytes(const uint8_t *b, size_t n) {
    float buf[1024];
    for (size_t i = 0; i < n;) {
        size_t k = n - i < 1024 ? n - i : 1024;
        memcpy(buf, b + 4 * i, 4 * k);
        if (!s_finite(buf, k)) return 0;
        i += k;
    }
    return 1;
}

void pipe_hdr_encode(const pipe_hdr_t *h, uint8_t out[PIPE_HDR_SIZE]) {
    memset(out, 0, PIPE_HDR_SIZE);
    memcpy(out, "LPIP", 4);
    net_put_u16(out + 4, PIPE_PROTOCOL_VERSION);
    net_put_u16(out + 6, (uint16_t)h->type);
    net_put_u64(out + 8, h->run_id);
    net_put_u64(out + 16, h->step);
    net_put_u32(out + 24, h->origin);
    net_put_u32(out + 28, h->mb);
    net_put_u32(out + 32, h->B);
    net_put_u32(out + 36, h->T);
    net_put_u32(out + 40, h->count);
    uint32_t lb;
    memcpy(&lb, &h->loss, 4);
    net_put_u32(out + 44, lb);
    net_put_u64(out + 48, h->n1);
    net_put_u64(out + 56, h->n2);
}

int pipe_msg_check(const uint8_t *const *frames, const size_t *lens, int nframes, const pipe_shape_t *sh,
                   pipe_hdr_t *h, pipe_drop_t *reason, char *why, size_t wl) {
    static const int want_frames[] = {0, 2, 1, 0, 1, 1, 0, 0, 0};
    memset(h, 0, sizeof *h);
    if (nframes < 1 || nframes > 3 || lens[0] != PIPE_HDR_SIZE) {
        *reason = PIPE_DROP_FRAMES;
        snprintf(why, wl, "%d frames, header %zu bytes", nframes, nframes >= 1 ? lens[0] : 0);
        return -1;
    }
    const uint8_t *b = frames[0];
    int type = net_get_u16(b + 6);
    if (memcmp(b, "LPIP", 4) != 0 || net_get_u16(b + 4) != PIPE_PROTOCOL_VERSION || type < 1 || type > PIPE_MSG_TOTAL ||
        (net_get_u32(b + 40) != 0 && type != PIPE_MSG_END && type != PIPE_MSG_WGRAD)) {
        *reason = PIPE_DROP_HEADER;
        snprintf(why, wl, "bad magic, version %u, type %d or count", net_get_u16(b + 4), type);
        return -1;
    }
    h->type = type;
    h->run_id = net_get_u64(b + 8);
    h->step = net_get_u64(b + 16);
    h->origin = net_get_u32(b + 24);
    h->mb = net_get_u32(b + 28);
    h->B = net_get_u32(b + 32);
    h->T = net_get_u32(b + 36);
    h->count = net_get_u32(b + 40);
    uint32_t lb = net_get_u32(b + 44);
    memcpy(&h->loss, &lb, 4);
    h->n1 = net_get_u64(b + 48);
    h->n2 = net_get_u64(b + 56);
    if (h->run_id != sh->run_id) {
        *reason = PIPE_DROP_RUN;
        snprintf(why, wl, "%s for another run (different fingerprint: config or plan)", s_type_name(type));
        return -1;
    }
    size_t e1 = type == PIPE_MSG_ACT || type == PIPE_MSG_GRAD ? sh->act_n * 4
              : type == PIPE_MSG_END || type >= PIPE_MSG_AT ? 0 : sh->wte_n * 4;
    size_t e2 = type == PIPE_MSG_ACT ? sh->tok_n * 4 : 0;
    if (nframes - 1 != want_frames[type] || h->B != sh->B || h->T != sh->T || h->n1 != e1 || h->n2 != e2 ||
        (nframes > 1 && lens[1] != e1) || (nframes > 2 && lens[2] != e2)) {
        *reason = PIPE_DROP_SHAPE;
        snprintf(why, wl, "%s: %d frames, B %u, T %u, sizes %llu/%llu (want %d, %u, %u, %zu/%zu)", s_type_name(type),
                 nframes - 1, h->B, h->T, (unsigned long long)h->n1, (unsigned long long)h->n2, want_frames[type], sh->B,
                 sh->T, e1, e2);
        return -1;
    }
    if ((nframes > 1 && !s_finite_bytes(frames[1], e1 / 4)) || (type == PIPE_MSG_GRAD && !isfinite(h->loss))) {
        *reason = PIPE_DROP_VALUE;
        snprintf(why, wl, "%s step %llu: non-finite values", s_type_name(type), (unsigned long long)h->step);
        return -1;
    }
    if (type == PIPE_MSG_ACT) {
        for (size_t i = 0; i < sh->tok_n; i++) {
            uint32_t v = net_get_u32(frames[2] + 4 * i);
            if (v >= (uint32_t)sh->vocab) {
                *reason = PIPE_DROP_VALUE;
                snprintf(why, wl, "ACT: target %u >= vocab %d", v, sh->vocab);
                return -1;
            }
        }
    }
    return 0;
}

// Checks and takes one message (frames fr[0..nf), fr[0] the routing id).
static void s_handle(pipe_t *p, zmq_msg_t *fr, int nf) {
    int from = -1;
    if (nf >= 2) {
        const char *uid = zmq_msg_gets(&fr[1], "User-Id");
        uint8_t id[32];
        if (uid && strlen(uid) == 64 && net_id_from_hex(uid, id) == 0) from = plan_find(p->plan, id);
    }
    if (from < 0 || from == p->self) {
        s_drop(p, PIPE_DROP_SENDER, from, "no authenticated plan node");
        return;
    }
    const uint8_t *frames[3];
    size_t lens[3];
    int n = nf - 1 > 3 ? 4 : nf - 1;
    for (int i = 0; i < n && i < 3; i++) frames[i] = zmq_msg_data(&fr[1 + i]), lens[i] = zmq_msg_size(&fr[1 + i]);
    pipe_shape_t sh = {.B = (uint32_t)p->B, .T = (uint32_t)p->T, .act_n = p->act_n, .tok_n = p->tok_n,
                       .wte_n = p->wte_n, .vocab = p->V, .run_id = p->run_id};
    pipe_hdr_t hd;
    pipe_drop_t reason = PIPE_DROP_FRAMES;
    char why[256];
    if (pipe_msg_check(frames, lens, n, &sh, &hd, &reason, why, sizeof why) != 0) {
        s_drop(p, reason, from, "%s", why);
        return;
    }
    int type = hd.type;
    uint64_t step = hd.step, n1 = hd.n1, n2 = hd.n2;
    uint32_t origin = hd.origin, mb = hd.mb, count = hd.count;
    float loss = hd.loss;
    int fs = p->plan->nodes[from].stage;
    static const int from_stage_delta[] = {0, -1, +1, -1, 0, 0, +1, +1, -1};
    int ok_sender = type <= 3 || type >= PIPE_MSG_AT ? fs == p->stage + from_stage_delta[type]
                  : type == PIPE_MSG_WGRAD ? p->stage == 0 && fs == p->S - 1 && p->S > 1
                                           : p->stage == p->S - 1 && fs == 0 && p->S > 1;
    if (!ok_sender) {
        s_drop(p, PIPE_DROP_SENDER, from, "%s from stage %d to stage %d", s_type_name(type), fs, p->stage);
        return;
    }
    // Frame data has no alignment guarantee: the floats are copied into an aligned buffer.
    const float *f1 = NULL;
    if (n1) {
        memcpy(p->rx, frames[1], n1);
        f1 = p->rx;
    }
    // END for a step says the sender is through with it and every earlier one (s_step_done), even when
    // it is too far ahead to keep: a stage that fell far behind catches up on the ENDs. (An ACT far
    // ahead is only dropped: it says the same, but ENDs are what a sender sends every stage node.)
    if (type == PIPE_MSG_END && step + 1 > p->peers[from].ahead) p->peers[from].ahead = step + 1;
    // AT: the next stage's node is at `step`, past the step of an ACT we sent it. It moves past a
    // step only once we are through with it (our END, or our TOTAL and WTE), or once it gave up on
    // us (taken for dead) — or when this node restarted behind it: either way our step is lost
    // there, so skip ahead to its. Behind ours (it restarted from an older checkpoint): an END of
    // our last finished step lets it step through to ours (an END is what says a step is over; an
    // ACT alone is never trusted so).
    if (type == PIPE_MSG_AT) {
        if (step > p->step && step > p->skip_to) p->skip_to = step;
        else if (step + 1 < p->step)
            s_send(p, from, PIPE_MSG_END, p->step - 1, 0, 0, 0, 0.0f, NULL, 0, NULL, 0);
        p->peers[from].heard_ms = s_mono_ms();
        p->st.recv++;
        p->st.bytes_recv += PIPE_HDR_SIZE;
        return;
    }
    // A NORM of a step this node finished (the next stage restarted behind and steps through the
    // steps it missed): its own sum comes back as the total at once, instead of a wait for nothing.
    if (type == PIPE_MSG_NORM && step < p->step && from == p->down) {
        if (s_send(p, from, PIPE_MSG_TOTAL, step, origin, mb, 0, 0.0f, NULL, 0, NULL, 0) != 0) p->st.undelivered++;
        p->peers[from].heard_ms = s_mono_ms();
        return;
    }
    // An ACT of a step this node finished, or far ahead of it: one of the two restarted behind the
    // other; tell the sender where we are (at most every 500 ms per sender).
    if (type == PIPE_MSG_ACT && (step < p->step || step > p->step + 8) &&
        s_mono_ms() - p->peers[from].at_sent_ms > 500) {
        p->peers[from].at_sent_ms = s_mono_ms();
        s_send(p, from, PIPE_MSG_AT, p->step, 0, 0, 0, 0.0f, NULL, 0, NULL, 0);
    }
    // The step: a finished one is stale. A node runs at most a step or two ahead of us (it finishes
    // a step only once its next stage answered it), more only while it takes us for dead.
    // A WTE newer than the copy we hold is taken even after its step (one we did not wait for).
    int newer_wte = type == PIPE_MSG_WTE && step + 1 > p->wte_got && step <= p->step;
    if ((step < p->step && !newer_wte) || step > p->step + 8) {
        s_drop(p, PIPE_DROP_STALE, from, "%s for step %llu at step %llu", s_type_name(type), (unsigned long long)step,
               (unsigned long long)p->step);
        return;
    }
    peer_t *q = &p->peers[from];
    q->heard_ms = s_mono_ms();
    if (q->dead) {
        q->dead = 0;
        p->st.revived++;
        log_info("pipe", "%s is back", s_name(p, from));
    }
    p->st.recv++;
    p->st.bytes_recv += PIPE_HDR_SIZE + n1 + n2;

    switch (type) {
    case PIPE_MSG_ACT: {
        if (p->npend == p->pend_max) {
            s_drop(p, PIPE_DROP_FULL, from, "ACT step %llu: %d activations queued", (unsigned long long)step, p->npend);
            return;
        }
        pend_t *e = &p->pend[p->npend];
        if (!e->x) e->x = malloc(p->act_n * 4);
        if (!e->tg) e->tg = malloc(p->tok_n * 4);
        if (!e->x || !e->tg) {
            s_drop(p, PIPE_DROP_FULL, from, "out of memory");
            return;
        }
        memcpy(e->x, f1, p->act_n * 4);
        const uint8_t *tg = frames[2];
        for (size_t i = 0; i < p->tok_n; i++) e->tg[i] = (int32_t)net_get_u32(tg + 4 * i);
        e->step = step, e->origin = origin, e->mb = mb, e->from = from;
        p->npend++;
        if (step + 1 > q->ahead) q->ahead = step + 1;
        return;
    }
    case PIPE_MSG_GRAD:
        for (int i = 0; i < p->nslots; i++) {
            slot_t *s = &p->slots[i];
            if (s->state != SL_WAIT || s->step != step || s->origin != origin || s->mb != mb || s->to != from) continue;
            memcpy(s->dout, f1, p->act_n * 4);
            s->loss = loss;
            s->state = SL_READY;
            return;
        }
        s_drop(p, PIPE_DROP_UNEXPECTED, from, "GRAD step %llu micro-batch %u/%u: not waited for here (rerouted?)",
               (unsigned long long)step, origin, mb);
        return;
    case PIPE_MSG_END:
        q->has_end = 1;
        q->end_step = step;
        q->end_count = count;
        return;
    case PIPE_MSG_WGRAD:
        if (step != p->step || q->wgrad_got) {
            s_drop(p, PIPE_DROP_UNEXPECTED, from, "WGRAD for step %llu at step %llu%s", (unsigned long long)step,
                   (unsigned long long)p->step, q->wgrad_got ? " (a repeat)" : "");
            return;
        }
        q->wgrad_got = 1;
        if (count == 0) return; // it processed no micro-batch this step: nothing to add
        for (size_t i = 0; i < p->wte_n; i++) p->wgrad_sum[i] += f1[i];
        p->wgrad_n++;
        return;
    case PIPE_MSG_NORM:
    case PIPE_MSG_TOTAL: {
        int norm = type == PIPE_MSG_NORM;
        uint64_t bits = (uint64_t)origin << 32 | mb;
        double v;
        memcpy(&v, &bits, 8);
        if (step != p->step || from != (norm ? p->down : p->up) || !(v >= 0) || !isfinite(v)) {
            s_drop(p, PIPE_DROP_UNEXPECTED, from, "%s for step %llu at step %llu (value %g)", s_type_name(type),
                   (unsigned long long)step, (unsigned long long)p->step, v);
            return;
        }
        if (norm) p->norm_in = v, p->norm_in_step = step + 1;
        else p->total_in = v, p->total_in_step = step + 1;
        return;
    }
    case PIPE_MSG_WTE:
        if (step + 1 <= p->wte_got || step > p->step) {
            s_drop(p, PIPE_DROP_UNEXPECTED, from, "WTE for step %llu at step %llu", (unsigned long long)step,
                   (unsigned long long)p->step);
            return;
        }
        memcpy(p->t->model->params, f1, p->wte_n * 4); // wte is the head's copy here: the optimizer never touches it
        p->wte_got = step + 1;
        return;
    }
}

// Receives every message already there (or waits up to wait_ms for the first). Returns the count.
static int s_recv(pipe_t *p, int wait_ms) {
    int got = 0;
    if (p->nout) s_flush(p);
    for (;;) {
        zmq_pollitem_t items[2] = {{p->router, 0, ZMQ_POLLIN, 0}, {p->zap, 0, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(items, 2, got ? 0 : wait_ms);
        if (rc <= 0) return got;
        if (items[1].revents & ZMQ_POLLIN) net_zap_answer_one(p->zap, s_zap_decide, p);
        if (!(items[0].revents & ZMQ_POLLIN)) {
            if (got || !wait_ms) return got;
            continue;
        }
        zmq_msg_t fr[6];
        int nf = 0, more = 1, extra = 0;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, p->router, nf == 0 && !extra ? ZMQ_DONTWAIT : 0) < 0) {
                zmq_msg_close(&m);
                break;
            }
            more = zmq_msg_more(&m);
            if (nf < 6) fr[nf++] = m;
            else zmq_msg_close(&m), extra = 1;
        }
        if (nf == 0) return got;
        if (extra) s_drop(p, PIPE_DROP_FRAMES, -1, "more than 5 frames");
        else s_handle(p, fr, nf);
        for (int i = 0; i < nf; i++) zmq_msg_close(&fr[i]);
        got++;
    }
}

void pipe_service(pipe_t *p, int ms) {
    uint64_t until = s_mono_ms() + (uint64_t)ms;
    for (;;) {
        uint64_t now = s_mono_ms();
        if (now >= until) break;
        s_recv(p, (int)(until - now));
    }
}

// Membership's reports (another thread bumps gone[i]).
static void s_check_gone(pipe_t *p) {
    if (!p->o.gone) return;
    for (int i = 0; i < p->plan->n_nodes; i++) {
        uint32_t g = atomic_load(&p->o.gone[i]);
        if (g == p->peers[i].gone_seen) continue;
        p->peers[i].gone_seen = g;
        if (i != p->self) s_mark_dead(p, i, "membership reports it dead or gone");
    }
}

// ---------------------------------------------------------------------------------------------
// Routing

// Sends the slot's output to a replica of the next stage drawn at random among the live ones,
// trying the others when one is not connected. The slot is then waiting, or stays unsent.
static void s_route(pipe_t *p, slot_t *s) {
    int cand[PLAN_MAX_NODES], nc = 0;
    uint64_t now = s_mono_ms(), probation = 4 * (uint64_t)p->o.timeout_ms;
    // routing chain: replica r sends to replica r mod R of the next stage while that one is usable;
    // random, or when it is not: any usable replica; when all are taken for dead, any.
    int chain = p->plan->routing == PLAN_ROUTE_CHAIN, rnext = plan_replicas(p->plan, p->stage + 1);
    for (int pass = chain ? 0 : 1; pass < 3 && nc == 0; pass++)
        for (int i = 0; i < p->plan->n_nodes; i++) {
            const peer_t *q = &p->peers[i];
            // A node taken for dead gets a micro-batch again after a while (a killed one is not
            // connected, so the send fails at once; one that answers is back).
            int usable = (!q->dead || now - q->dead_ms > probation) && i != s->exclude;
            if (p->plan->nodes[i].stage != p->stage + 1) continue;
            if ((pass == 0 && usable && rnext > 0 && p->plan->nodes[i].replica == p->replica % rnext) ||
                (pass == 1 && usable) || pass == 2)
                cand[nc++] = i;
        }
    const float *out = gpt_range_output(s->m);
    while (nc > 0) {
        int k = (int)rng_below(&p->rng, (uint64_t)nc);
        int j = cand[k];
        cand[k] = cand[--nc];
        if (s_send(p, j, PIPE_MSG_ACT, s->step, s->origin, s->mb, 0, 0.0f, out, p->act_n * 4, s->targets,
                   p->tok_n * 4) == 0) {
            if (s->exclude >= 0) {
                p->st.rerouted++;
                log_info("pipe", "step %llu micro-batch %u/%u rerouted from %s to %s", (unsigned long long)s->step,
                         s->origin, s->mb, s_name(p, s->exclude), s_name(p, j));
            }
            if (p->peers[j].dead) p->peers[j].dead_ms = s_mono_ms(); // on probation: next try after another while
            s->to = j;
            s->exclude = -1;
            s->state = SL_WAIT;
            s->sent_ms = s_mono_ms();
            return;
        }
    }
    s->state = SL_UNSENT;
}

// Unsent outputs are retried; one unanswered for timeout_ms goes to another replica.
static void s_timeouts(pipe_t *p) {
    uint64_t now = s_mono_ms();
    for (int i = 0; i < p->nslots; i++) {
        slot_t *s = &p->slots[i];
        if (s->state == SL_UNSENT) {
            s_route(p, s);
        } else if (s->state == SL_WAIT && now - s->sent_ms > (uint64_t)p->o.timeout_ms) {
            char why[96];
            snprintf(why, sizeof why, "micro-batch %u/%u of step %llu unanswered for %d ms", s->origin, s->mb,
                     (unsigned long long)s->step, p->o.timeout_ms);
            s_mark_dead(p, s->to, why);
            s->exclude = s->to;
            s_route(p, s);
        }
    }
}

// Stage 0's partner of last-stage node j for the tied wte: replica j mod R0, or the next live one.
static int s_partner(const pipe_t *p, int j) {
    int want = p->plan->nodes[j].replica % p->R0, first = -1;
    for (int k = 0; k < p->R0; k++) {
        int r = (want + k) % p->R0;
        for (int i = 0; i < p->plan->n_nodes; i++) {
            if (p->plan->nodes[i].stage != 0 || p->plan->nodes[i].replica != r) continue;
            if (first < 0) first = i;
            if (!p->peers[i].dead || i == p->self) return i;
        }
    }
    return first;
}

// ---------------------------------------------------------------------------------------------
// Compute

static slot_t *s_free_slot(pipe_t *p) {
    for (int i = 0; i < p->nslots; i++)
        if (p->slots[i].state == SL_FREE) return &p->slots[i];
    return NULL;
}

static int s_inflight(const pipe_t *p) {
    int n = 0;
    for (int i = 0; i < p->nslots; i++) n += p->slots[i].state != SL_FREE;
    return n;
}

static void s_finish_mb(pipe_t *p, slot_t *s, float loss) {
    p->loss_sum += loss;
    p->nproc++;
    if (s->from >= 0) p->peers[s->from].done_from++;
    if (s->to >= 0) p->peers[s->to].done_to++;
    if (p->stage == 0) p->ndone++;
    s->state = SL_FREE;
}

// Backward of a slot whose output gradient arrived; the input gradient goes back to its sender.
static void s_backward(pipe_t *p, slot_t *s) {
    gpt_backward_range(s->m, s->dout, p->stage > 0 ? s->dx : NULL);
    p->st.bwd++;
    if (p->stage > 0) s_post(p, s->from, PIPE_MSG_GRAD, s->step, s->origin, s->mb, 0, s->loss, s->dx, p->act_n * 4);
    s_finish_mb(p, s, s->loss);
}

// Stage 0: draws micro-batch `issued` of the step and runs its forward.
static void s_forward_new(pipe_t *p, slot_t *s) {
    data_stream_next(&p->t->stream, s->inputs, s->targets, p->B, p->T);
    s->step = p->step;
    s->origin = (uint32_t)p->self;
    s->mb = (uint32_t)p->issued++;
    s->from = -1, s->to = -1, s->exclude = -1;
    p->st.fwd++;
    if (p->S == 1) {
        float loss = gpt_forward_range(s->m, 0, p->L, s->inputs, NULL, s->targets, p->B, p->T);
        gpt_backward_range(s->m, NULL, NULL);
        p->st.bwd++;
        s_finish_mb(p, s, loss);
        return;
    }
    gpt_forward_range(s->m, 0, p->l1, s->inputs, NULL, NULL, p->B, p->T);
    s_route(p, s);
}

// Later stages: runs a queued activation of this step.
static void s_forward_pend(pipe_t *p, int k, slot_t *s) {
    pend_t *e = &p->pend[k];
    float *x = s->x;
    int32_t *tg = s->targets;
    s->x = e->x, s->targets = e->tg;
    s->step = e->step, s->origin = e->origin, s->mb = e->mb, s->from = e->from;
    s->to = -1, s->exclude = -1;
    // Keep the queue in arrival order (1F1B: first in, first out); the slot's old buffers take the entry's place.
    memmove(&p->pend[k], &p->pend[k + 1], (size_t)(p->npend - k - 1) * sizeof *p->pend);
    p->npend--;
    p->pend[p->npend].x = x;
    p->pend[p->npend].tg = tg;
    p->st.fwd++;
    if (p->stage == p->S - 1) {
        float loss = gpt_forward_range(s->m, p->l0, p->L, NULL, s->x, s->targets, p->B, p->T);
        gpt_backward_range(s->m, NULL, s->dx);
        p->st.bwd++;
        s->loss = loss;
        s_post(p, s->from, PIPE_MSG_GRAD, s->step, s->origin, s->mb, 0, loss, s->dx, p->act_n * 4);
        s_finish_mb(p, s, loss);
        return;
    }
    gpt_forward_range(s->m, p->l0, p->l1, NULL, s->x, NULL, p->B, p->T);
    s_route(p, s);
}

static int s_step_done(pipe_t *p) {
    if (s_slot_busy(p)) return 0;
    if (p->stage == 0) return p->issued == p->M;
    for (int k = 0; k < p->npend; k++)
        if (p->pend[k].step == p->step) return 0;
    // An upstream node is through with this step when it sent END for it and we did all it counted,
    // or when it already sent us something of a later step (one connection keeps order, so nothing
    // of this step can still be on its way from it: this covers an END lost while we were not yet
    // connected, and lets a node that fell behind catch up).
    int ended = 0, waiting = -1;
    for (int i = 0; i < p->plan->n_nodes; i++) {
        if (p->plan->nodes[i].stage != p->stage - 1) continue;
        peer_t *q = &p->peers[i];
        if ((q->has_end && q->end_step == p->step && q->done_from >= q->end_count) || q->ahead > p->step + 1) ended++;
        else if (!q->dead) waiting = i;
    }
    if (!ended) return 0; // nothing to step on yet (every upstream node is taken for dead, or none ended)
    if (waiting < 0) return 1;
    // Others ended this step; one upstream node silent for the timeout is taken for dead.
    if (s_mono_ms() - p->peers[waiting].heard_ms > (uint64_t)p->o.timeout_ms)
        s_mark_dead(p, waiting, "silent while its replicas ended the step");
    return 0;
}

// Every upstream node taken for dead (or gone) for three timeouts, and nothing of ours in flight.
static int s_upstream_gone(const pipe_t *p) {
    if (s_slot_busy(p) || p->npend) return 0;
    uint64_t now = s_mono_ms();
    for (int i = 0; i < p->plan->n_nodes; i++) {
        const peer_t *q = &p->peers[i];
        if (p->plan->nodes[i].stage == p->stage - 1 && (!q->dead || now - q->dead_ms < 3 * (uint64_t)p->o.timeout_ms))
            return 0;
    }
    return 1;
}

static void s_scale(float *g, size_t n, float k) {
    for (size_t i = 0; i < n; i++) g[i] *= k;
}

int pipe_grads(pipe_t *p, trainer_t *t, volatile sig_atomic_t *stop) {
    p->t = t;
    p->step = t->step;
    p->issued = p->ndone = p->nproc = 0;
    p->loss_sum = 0;
    for (int i = 0; i < p->plan->n_nodes; i++) {
        p->peers[i].done_from = p->peers[i].done_to = 0;
        p->peers[i].wgrad_got = 0;
    }
    p->wgrad_n = 0;
    if (p->wgrad_sum) memset(p->wgrad_sum, 0, p->wte_n * 4);
    // Leftovers of finished steps (a rerouted micro-batch that came in late) are stale.
    for (int k = 0; k < p->npend;) {
        if (p->pend[k].step < p->step) {
            float *x = p->pend[k].x;
            int32_t *tg = p->pend[k].tg;
            memmove(&p->pend[k], &p->pend[k + 1], (size_t)(p->npend - k - 1) * sizeof *p->pend);
            p->npend--;
            p->pend[p->npend].x = x, p->pend[p->npend].tg = tg;
            p->st.drop[PIPE_DROP_STALE]++, p->st.dropped++;
        } else {
            k++;
        }
    }
    gpt_zero_grad(t->model);
    uint64_t t_wait0 = s_mono_ms();
    for (;;) {
        if (*stop) return 1;
        s_check_gone(p);
        s_recv(p, 0);
        int worked = 0;
        for (int i = 0; i < p->nslots; i++)
            if (p->slots[i].state == SL_READY) s_backward(p, &p->slots[i]), worked = 1;
        slot_t *s = s_free_slot(p);
        if (s && p->stage == 0) {
            if (p->issued < p->M && s_inflight(p) < p->window) s_forward_new(p, s), worked = 1;
        } else if (s) {
            for (int k = 0; k < p->npend; k++) {
                if (p->pend[k].step != p->step) continue;
                s_forward_pend(p, k, s);
                worked = 1;
                break;
            }
        }
        s_timeouts(p);
        if (p->skip_to > p->step) { // restarted behind the stages after us: abandon this step
            for (int i = 0; i < p->nslots; i++) p->slots[i].state = SL_FREE, p->slots[i].exclude = -1;
            return 3;
        }
        if (s_step_done(p)) break;
        if (p->stage > 0 && !worked && s_upstream_gone(p)) {
            log_info("pipe", "step %llu: every node of stage %d is gone: this stage stops", (unsigned long long)p->step,
                     p->stage - 1);
            return 2;
        }
        if (!worked) {
            uint64_t w0 = s_mono_ms();
            s_recv(p, 5);
            p->st.wait_s += (double)(s_mono_ms() - w0) / 1000.0;
            if (w0 - t_wait0 > 10000 && w0 - p->wait_log_ms > 10000) {
                p->wait_log_ms = w0;
                log_info("pipe", "step %llu: waiting (%d of %d micro-batches done here, %d in flight, %d queued)",
                         (unsigned long long)p->step, p->stage == 0 ? p->ndone : p->nproc, p->M, s_inflight(p), p->npend);
            }
        }
    }
    // Tell the next stage: every replica, with the count of our micro-batches it completed (also the
    // ones taken for dead: one that was only slow catches up on these).
    // To one taken for dead the END goes only when it can go at once: no outbox entry that would
    // wait the timeout for a node that is likely gone.
    if (p->stage < p->S - 1)
        for (int i = 0; i < p->plan->n_nodes; i++) {
            if (p->plan->nodes[i].stage != p->stage + 1) continue;
            if (!p->peers[i].dead)
                s_post(p, i, PIPE_MSG_END, p->step, 0, 0, p->peers[i].done_to, 0.0f, NULL, 0);
            else if (s_send(p, i, PIPE_MSG_END, p->step, 0, 0, p->peers[i].done_to, 0.0f, NULL, 0, NULL, 0) != 0)
                p->st.undelivered++;
        }
    float k = p->nproc ? 1.0f / (float)p->nproc : 0.0f;
    s_scale(t->model->grads + p->off, p->len, k);
    t->loss = p->nproc ? (float)(p->loss_sum / p->nproc) : NAN;
    if (p->nproc == 0) log_info("pipe", "step %llu: no micro-batch came here", (unsigned long long)p->step);
    if (p->S > 1 && p->stage == p->S - 1) { // the head's part of the tied wte goes to stage 0 (count 0: none)
        s_scale(t->model->grads, p->wte_n, k);
        p->wte_from = s_partner(p, p->self);
        s_post(p, p->wte_from, PIPE_MSG_WGRAD, p->step, 0, 0, (uint32_t)p->nproc, 0.0f, t->model->grads, p->wte_n * 4);
    } else if (p->S > 1 && p->stage == 0) { // add the head parts of the last-stage nodes we partner
        uint64_t t0 = s_mono_ms();
        for (;;) {
            if (*stop) return 1;
            s_check_gone(p);
            int missing = -1, expected = 0;
            for (int j = 0; j < p->plan->n_nodes; j++) {
                if (p->plan->nodes[j].stage != p->S - 1 || p->peers[j].dead || s_partner(p, j) != p->self) continue;
                expected++;
                if (!p->peers[j].wgrad_got) missing = j;
            }
            if (missing < 0) break;
            if (s_mono_ms() - t0 > (uint64_t)p->o.timeout_ms) {
                p->st.wte_missing++;
                s_mark_dead(p, missing, "no wte gradient within the timeout");
                continue;
            }
            uint64_t w0 = s_mono_ms();
            s_recv(p, 5);
            p->st.wait_s += (double)(s_mono_ms() - w0) / 1000.0;
        }
        if (p->wgrad_n > 0) {
            float m = 1.0f / (float)p->wgrad_n;
            float *g = t->model->grads;
            for (size_t i = 0; i < p->wte_n; i++) g[i] += p->wgrad_sum[i] * m;
        }
    }
    return 0;
}

// Sends a double to plan node `to` as NORM or TOTAL.
static void s_send_sum(pipe_t *p, int to, int type, double v) {
    uint64_t bits;
    memcpy(&bits, &v, 8);
    if (s_send(p, to, type, p->step, (uint32_t)(bits >> 32), (uint32_t)bits, 0, 0.0f, NULL, 0, NULL, 0) != 0)
        p->st.undelivered++;
}

// Waits for *have_step to reach step + 1 (a NORM or TOTAL from node `from`): 1 when it came, 0 when
// `from` is taken for dead or did not send within the timeout (then taken for dead), -1 on stop.
static int s_wait_sum(pipe_t *p, const uint64_t *have_step, int from, volatile sig_atomic_t *stop) {
    uint64_t t0 = s_mono_ms();
    while (*have_step < p->step + 1) {
        if (*stop) return -1;
        s_check_gone(p);
        if (p->peers[from].dead) return 0;
        if (s_mono_ms() - t0 > (uint64_t)p->o.timeout_ms) {
            s_mark_dead(p, from, "no gradient norm within the timeout");
            return 0;
        }
        uint64_t w0 = s_mono_ms();
        s_recv(p, 5);
        p->st.wait_s += (double)(s_mono_ms() - w0) / 1000.0;
    }
    return 1;
}

// The global gradient norm of this step's pipeline: sums of squares go up (each stage adds its own
// to what the next one sent), stage 0 has the total and sends it back down. With a part missing
// (a node dead or late) the norm is of what came, counted and logged. 0, or -1 on stop.
static int s_global_norm(pipe_t *p, const float *g, volatile sig_atomic_t *stop, float *norm) {
    double sum = optim_grad_sumsq(g, p->len), total;
    int whole = 1, r;
    if (p->down >= 0) {
        if ((r = s_wait_sum(p, &p->norm_in_step, p->down, stop)) < 0) return -1;
        if (r) sum += p->norm_in;
        whole &= r;
    }
    if (p->up >= 0) {
        s_send_sum(p, p->up, PIPE_MSG_NORM, sum);
        if ((r = s_wait_sum(p, &p->total_in_step, p->up, stop)) < 0) return -1;
        total = r ? p->total_in : sum;
        whole &= r;
    } else {
        total = sum;
    }
    if (p->down >= 0) s_send_sum(p, p->down, PIPE_MSG_TOTAL, total);
    if (!whole) {
        p->st.partial_norms++;
        uint64_t now = s_mono_ms();
        if (!p->partial_log_ms || now - p->partial_log_ms > 10000) {
            p->partial_log_ms = now;
            log_warn("pipe", "step %llu: part of the pipeline's gradient norm did not come: clipping by a partial "
                     "norm (%llu steps so far)", (unsigned long long)p->step, (unsigned long long)p->st.partial_norms);
        }
    }
    *norm = (float)sqrt(total);
    return 0;
}

int pipe_apply(pipe_t *p, trainer_t *t, volatile sig_atomic_t *stop) {
    const loco_config_t *c = &t->cfg;
    float *g = t->model->grads + p->off, *w = t->model->params + p->off;
    t->lr = optim_lr_schedule(t->step, (uint64_t)c->warmup, (uint64_t)c->steps, c->lr, c->lr_min);
    // Every stage takes part in the norm every step, with micro-batches or not (its part is then 0).
    float gnorm = 0.0f;
    if (p->global_clip && s_global_norm(p, g, stop, &gnorm) != 0) return 1;
    if (p->nproc > 0) { // with no micro-batch there is nothing to learn from: only the counter moves
        if (!p->global_clip) gnorm = optim_grad_norm(g, p->len);
        optim_clip_to_norm(g, p->len, gnorm, c->grad_clip);
        t->grad_norm = gnorm;
        // AdamW over the stage's range: a view into the trainer's moments (the checkpoint keeps them all).
        optim_adamw_t view = *t->opt;
        view.n = p->len;
        view.m = t->opt->m + p->off;
        view.v = t->opt->v + p->off;
        view.decay = t->opt->decay + p->off;
        optim_adamw_update(&view, w, g, t->lr);
        t->opt->step = view.step;
    }
    if (p->S > 1 && p->stage == 0) {
        for (int j = 0; j < p->plan->n_nodes; j++)
            if (p->plan->nodes[j].stage == p->S - 1 && !p->peers[j].dead && s_partner(p, j) == p->self)
                s_post(p, j, PIPE_MSG_WTE, p->step, 0, 0, 0, 0.0f, t->model->params, p->wte_n * 4);
    } else if (p->S > 1 && p->stage == p->S - 1 && p->nproc > 0) {
        // (With no micro-batch this step, stage 0 may be elsewhere — a node catching up — so no wait:
        // the WTE is taken whenever it comes.)
        uint64_t t0 = s_mono_ms();
        while (p->wte_got < p->step + 1) {
            if (*stop) return 1;
            if (s_mono_ms() - t0 > 2 * (uint64_t)p->o.timeout_ms) { // stage 0 may wait timeout_ms for a WGRAD first
                p->st.wte_missing++;
                s_mark_dead(p, p->wte_from, "no updated wte within twice the timeout");
                break;
            }
            uint64_t w0 = s_mono_ms();
            s_recv(p, 5);
            p->st.wait_s += (double)(s_mono_ms() - w0) / 1000.0;
        }
    }
    t->step++;
    atomic_store(&t->progress, t->step);
    p->st.steps++;
    return 0;
}

int pipe_step(pipe_t *p, trainer_t *t, volatile sig_atomic_t *stop) {
    int rc = pipe_grads(p, t, stop);
    if (rc == 3) {
        log_warn("pipe", "step %llu: the next stage is at step %llu (this node restarted behind it): skipping to it; "
                 "steps %llu..%llu are lost here", (unsigned long long)t->step, (unsigned long long)p->skip_to,
                 (unsigned long long)t->step, (unsigned long long)p->skip_to - 1);
        p->st.skipped += p->skip_to - t->step;
        t->step = p->skip_to;
        atomic_store(&t->progress, t->step);
        return 3;
    }
    return rc ? rc : pipe_apply(p, t, stop);
}

// ---------------------------------------------------------------------------------------------
// Construction

pipe_t *pipe_new(const pipe_opts_t *o, trainer_t *t, char *err, size_t errlen) {
    const plan_t *pl = o->plan;
    const gpt_config_t *mc = &t->cfg.model;
    int self = plan_find(pl, o->identity.pk);
    if (self < 0) {
        char hex[NET_ID_HEX];
        net_id_to_hex(o->identity.pk, hex);
        snprintf(err, errlen, "this peer (%.16s…) is not named in the plan: add a node line with its id, or start it "
                 "without [pipeline] plan", hex);
        return NULL;
    }
    if (pl->layers != mc->layers) {
        snprintf(err, errlen, "the plan is for %d layers, [model] layers is %d", pl->layers, mc->layers);
        return NULL;
    }
    if (t->gpu) {
        snprintf(err, errlen, "pipeline stages run on the CPU only ([train] device = cpu)");
        return NULL;
    }
    pipe_t *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->o = *o;
    p->plan = pl;
    p->t = t;
    p->self = self;
    p->stage = pl->nodes[self].stage;
    p->replica = pl->nodes[self].replica;
    p->S = pl->n_stages;
    p->R0 = plan_replicas(pl, 0);
    p->L = mc->layers, p->C = mc->d_model, p->V = mc->vocab, p->T = mc->seq_len;
    p->B = pl->micro_batch, p->M = pl->micro_batches;
    p->l0 = pl->stages[p->stage].l0, p->l1 = pl->stages[p->stage].l1;
    p->act_n = (size_t)p->B * p->T * p->C;
    p->tok_n = (size_t)p->B * p->T;
    p->wte_n = (size_t)p->V * p->C;
    p->run_id = net_run_id(o->fp);
    pipe_plan_range(pl, self, mc, &p->off, &p->len);
    rng_seed(&p->rng, o->route_seed ^ 0x5049504550495045ULL);
    if (p->o.timeout_ms <= 0) p->o.timeout_ms = 10000;

    // Slots: stage 0 keeps `window` micro-batches in flight; stage s sees about R0·W_s / R_s of them.
    int gpipe = pl->schedule == PLAN_GPIPE;
    int ws = plan_stage_window(pl->schedule, p->M, p->S, pl->window, p->stage);
    int rs = plan_replicas(pl, p->stage);
    p->window = ws;
    p->nslots = p->stage == 0 ? ws : p->stage == p->S - 1 ? 1 : (p->R0 * ws + rs - 1) / rs;
    if (p->nslots < 1) p->nslots = 1;
    p->pend_max = 2 * p->R0 * p->M + 8;
    // Global clipping needs R separate pipelines: the same replica count on every stage, and each
    // replica feeding the same replica of the next stage (one replica, or routing chain).
    p->up = p->down = -1;
    int separate = p->S > 1 && t->cfg.grad_clip > 0;
    for (int s = 0; s < p->S && separate; s++) separate = plan_replicas(pl, s) == p->R0;
    separate = separate && (p->R0 == 1 || pl->routing == PLAN_ROUTE_CHAIN);
    for (int i = 0; separate && i < pl->n_nodes; i++) {
        if (pl->nodes[i].replica != p->replica) continue;
        if (pl->nodes[i].stage == p->stage - 1) p->up = i;
        if (pl->nodes[i].stage == p->stage + 1) p->down = i;
    }
    p->global_clip = separate;
    p->peers = calloc((size_t)pl->n_nodes, sizeof *p->peers);
    p->slots = calloc((size_t)p->nslots, sizeof *p->slots);
    p->pend = calloc((size_t)p->pend_max, sizeof *p->pend);
    if (p->S > 1 && p->stage == 0) p->wgrad_sum = malloc(p->wte_n * 4);
    p->rx = malloc((p->act_n > p->wte_n ? p->act_n : p->wte_n) * 4);
    if (!p->peers || !p->slots || !p->pend || !p->rx || (p->S > 1 && p->stage == 0 && !p->wgrad_sum)) goto oom;
    for (int i = 0; i < p->nslots; i++) {
        slot_t *s = &p->slots[i];
        s->m = gpt_new_shared(t->model, p->l0, p->l1, p->B, p->T, err, errlen);
        if (!s->m) goto fail;
        s->inputs = malloc(p->tok_n * 4);
        s->targets = malloc(p->tok_n * 4);
        s->x = malloc(p->act_n * 4);
        s->dx = malloc(p->act_n * 4);
        s->dout = malloc(p->act_n * 4);
        if (!s->inputs || !s->targets || !s->x || !s->dx || !s->dout) goto oom;
    }
    uint64_t now = s_mono_ms();
    for (int i = 0; i < pl->n_nodes; i++) {
        p->peers[i].heard_ms = now;
        if (p->o.gone) p->peers[i].gone_seen = atomic_load(&p->o.gone[i]);
        if (net_id_to_curve(pl->nodes[i].id, p->peers[i].curve) != 0) {
            snprintf(err, errlen, "plan node %s: its id is not a valid Ed25519 public key", pl->nodes[i].name);
            goto fail;
        }
    }

    p->ctx = zmq_ctx_new();
    if (!p->ctx) {
        snprintf(err, errlen, "zmq_ctx_new: %s", zmq_strerror(errno));
        goto fail;
    }
    // Its own context, so its own ZAP handler: bound before the CURVE server accepts anything.
    p->zap = zmq_socket(p->ctx, ZMQ_REP);
    if (!p->zap || zmq_bind(p->zap, "inproc://zeromq.zap.01") != 0) {
        snprintf(err, errlen, "pipeline ZAP handler: %s", zmq_strerror(errno));
        goto fail;
    }
    p->router = zmq_socket(p->ctx, ZMQ_ROUTER);
    size_t biggest = p->act_n * 4 > p->wte_n * 4 ? p->act_n * 4 : p->wte_n * 4;
    int64_t maxmsg = (int64_t)biggest + 1024;
    const char *ep = pl->nodes[self].endpoint;
    if (!p->router || zmq_setsockopt(p->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) ||
        s_setopt_int(p->router, ZMQ_LINGER, 0) || s_setopt_int(p->router, ZMQ_RCVHWM, 4 * p->pend_max) ||
        s_setopt_int(p->router, ZMQ_CURVE_SERVER, 1) ||
        zmq_setsockopt(p->router, ZMQ_CURVE_SECRETKEY, o->identity.curve_sk, 32) ||
        zmq_setsockopt(p->router, ZMQ_ZAP_DOMAIN, "loco-pipe", 9) || zmq_bind(p->router, ep) != 0) {
        snprintf(err, errlen, "cannot bind the pipeline endpoint %s (plan node %s): %s", ep, pl->nodes[self].name,
                 zmq_strerror(errno));
        goto fail;
    }
    snprintf(p->endpoint, sizeof p->endpoint, "%s", ep);
    // Connect to every node we will send to now, so the handshakes are done by the first message.
    for (int i = 0; i < pl->n_nodes; i++) {
        int s = pl->nodes[i].stage;
        if (i != self && (s == p->stage - 1 || s == p->stage + 1 || (p->S > 1 && p->stage == 0 && s == p->S - 1) ||
                          (p->S > 1 && p->stage == p->S - 1 && s == 0)))
            s_dealer(p, i);
    }
    if (p->S > 1 && t->cfg.grad_clip > 0)
        log_info("pipe", "gradient clipping at %g by %s", t->cfg.grad_clip,
                 p->global_clip ? "the pipeline's global norm (sums of squares up the stages, the total back down)"
                                : "each stage's own norm (the replicas do not form separate pipelines: use "
                                  "routing chain with the same replica count on every stage for a global norm)");
    log_info("pipe", "plan node %s: stage %d of %d (blocks %d..%d), replica %d of %d, %s, %d x %d micro-batches, "
             "%s routing, %d activation slot(s), listening on %s", pl->nodes[self].name, p->stage, p->S, p->l0, p->l1 - 1,
             p->replica, rs, gpipe ? "GPipe" : "1F1B", p->M, p->B, pl->routing == PLAN_ROUTE_CHAIN ? "chain" : "random",
             p->nslots, ep);
    return p;
oom:
    snprintf(err, errlen, "out of memory for the pipeline stage");
fail:
    pipe_destroy(&p);
    return NULL;
}

void pipe_destroy(pipe_t **self_p) {
    if (!self_p || !*self_p) return;
    pipe_t *p = *self_p;
    if (p->peers)
        for (int i = 0; i < p->plan->n_nodes; i++)
            if (p->peers[i].dealer) zmq_close(p->peers[i].dealer);
    if (p->router) zmq_close(p->router);
    if (p->zap) zmq_close(p->zap);
    if (p->ctx) zmq_ctx_term(p->ctx);
    for (int i = 0; p->slots && i < p->nslots; i++) {
        slot_t *s = &p->slots[i];
        gpt_destroy(&s->m);
        free(s->inputs), free(s->targets), free(s->x), free(s->dx), free(s->dout);
    }
    for (int k = 0; p->pend && k < p->pend_max; k++) free(p->pend[k].x), free(p->pend[k].tg);
    for (int k = 0; k < p->nout; k++) free(p->outbox[k].f1);
    free(p->pend);
    free(p->slots);
    free(p->peers);
    free(p->wgrad_sum);
    free(p->rx);
    net_identity_wipe(&p->o.identity);
    free(p);
    *self_p = NULL;
}

int pipe_stage(const pipe_t *p) { return p->stage; }
int pipe_replica(const pipe_t *p) { return p->replica; }
int pipe_index(const pipe_t *p) { return p->self; }

void pipe_range(const pipe_t *p, size_t *off, size_t *len) {
    *off = p->off;
    *len = p->len;
}

void pipe_stats(const pipe_t *p, pipe_stats_t *out) { *out = p->st; }

void pipe_log_stats(const pipe_t *p) {
    const pipe_stats_t *s = &p->st;
    char drops[256] = "";
    size_t at = 0;
    for (int d = 0; d < PIPE_DROP_COUNT; d++)
        if (s->drop[d] && at < sizeof drops)
            at += (size_t)snprintf(drops + at, sizeof drops - at, " %s=%llu", pipe_drop_name((pipe_drop_t)d),
                                   (unsigned long long)s->drop[d]);
    log_info("pipe", "pipeline stage %d replica %d: %llu steps, %llu forward / %llu backward micro-batches, "
             "%llu rerouted, %llu dead marks, %llu revived, %llu wte timeouts, %llu messages sent (%.2f MB), "
             "%llu received (%.2f MB), %llu dropped%s, %llu undelivered, waited %.1fs",
             p->stage, p->replica, (unsigned long long)s->steps, (unsigned long long)s->fwd, (unsigned long long)s->bwd,
             (unsigned long long)s->rerouted, (unsigned long long)s->dead_marks, (unsigned long long)s->revived,
             (unsigned long long)s->wte_missing, (unsigned long long)s->sent, s->bytes_sent / 1e6,
             (unsigned long long)s->recv, s->bytes_recv / 1e6, (unsigned long long)s->dropped, drops,
             (unsigned long long)s->undelivered, s->wait_s);
}

void pipe_plan_part(const plan_t *plan, int i, const gpt_config_t *cfg, part_t *part) {
    memset(part, 0, sizeof *part);
    if (plan->n_stages < 2) return; // one stage: the whole model
    size_t off, len, wte_n = (size_t)cfg->vocab * cfg->d_model;
    pipe_plan_range(plan, i, cfg, &off, &len);
    if (off > 0 && plan->nodes[i].stage == plan->n_stages - 1) {
        part->off[part->n] = 0;
        part->len[part->n++] = wte_n < off ? wte_n : off;
    }
    part->off[part->n] = off;
    part->len[part->n++] = len;
}

void pipe_plan_range(const plan_t *plan, int i, const gpt_config_t *cfg, size_t *off, size_t *len) {
    int s = plan->nodes[i].stage;
    size_t b0, b1;
    gpt_layer_span(cfg, plan->stages[s].l0, plan->stages[s].l1, &b0, &b1);
    size_t begin = s == 0 ? 0 : b0, end = s == plan->n_stages - 1 ? gpt_num_params(cfg) : b1;
    *off = begin;
    *len = end - begin;
}

// ---------------------------------------------------------------------------------------------
// The run loops

// The metrics record and (every 10 steps) the log line of an inner step that took t1 - t0.
static void s_log_step(pipe_t *p, trainer_t *t, train_ctx_t *x, double t0, double t1) {
    size_t tok = (size_t)p->B * p->T * (size_t)p->M;
    uint64_t total = (uint64_t)t->cfg.steps;
    x->compute_s += t1 - t0;
    metrics_write(x->mx, "step", t->step, "\"loss\":%.6f,\"lr\":%.6g,\"grad_norm\":%.6f,\"tokens_per_s\":%.1f,"
                  "\"elapsed_s\":%.3f,\"stage\":%d,\"micro_batches\":%d,\"rerouted\":%llu,\"dead_marks\":%llu,"
                  "\"dropped\":%llu", t->loss, t->lr, t->grad_norm, (double)tok / (t1 - t0), t1 - x->t_start,
                  p->stage, p->nproc, (unsigned long long)p->st.rerouted, (unsigned long long)p->st.dead_marks,
                  (unsigned long long)p->st.dropped);
    if (t->step % 10 == 0 || t->step == total || t1 - x->t_last > 30) {
        log_info("train", "step %llu/%llu loss %.4f lr %.2e grad_norm %.3f %.0f tok/s | stage %d, %d micro-batches, "
                 "%llu rerouted%s", (unsigned long long)t->step, (unsigned long long)total, t->loss, t->lr, t->grad_norm,
                 (double)tok / (t1 - t0), p->stage, p->nproc, (unsigned long long)p->st.rerouted, x->status);
        x->t_last = t1;
    }
}

int pipe_outer_member_ok(void *hook_ctx, const uint8_t id[32]) {
    const pipe_outer_t *oc = hook_ctx;
    int i = plan_find(oc->plan, id);
    return i >= 0 && oc->plan->nodes[i].stage == oc->stage;
}

int pipe_outer_inner_step(void *hook_ctx, trainer_t *t, train_ctx_t *x) {
    pipe_outer_t *oc = hook_ctx;
    double t0 = metrics_mono();
    int r = pipe_step(oc->pipe, t, x->stop);
    if (r == 1 || r == 3) return 0; // stopped (the round loop sees *stop), or skipped ahead
    if (r == 2) {         // the stages before this one are gone: end here, as at [train] steps
        t->step = (uint64_t)t->cfg.steps;
        atomic_store(&t->progress, t->step);
        return 0;
    }
    if (r != 0) return 1;
    s_log_step(oc->pipe, t, x, t0, metrics_mono());
    return 0;
}

int pipe_train(pipe_t *p, trainer_t *t, metrics_t *mx, volatile sig_atomic_t *stop) {
    train_ctx_t x;
    train_ctx_init(&x, t, mx, stop);
    uint64_t total = (uint64_t)t->cfg.steps, every = t->cfg.checkpoint_every > 0 ? (uint64_t)t->cfg.checkpoint_every : 0;
    int rc = 0, ended = 0;
    char err[1536];
    while (t->step < total && !*stop) {
        double t0 = metrics_mono();
        int r = pipe_step(p, t, stop);
        if (r == 2) { // the stages before this one are gone: the run is over for it
            ended = 1;
            break;
        }
        if (r == 3) continue; // restarted behind the next stage: skipped ahead to it
        if (r != 0) {
            rc = r < 0;
            break;
        }
        s_log_step(p, t, &x, t0, metrics_mono());
        // Every stage checkpoints at the same steps ([train] checkpoint_every), so the newest
        // checkpoints of a pipeline's nodes are one consistent cut. Written here, in the step: the
        // pipeline waits for it (the stage's part only).
        if (every && t->step % every == 0 && t->step < total && train_save(t, &x, err, sizeof err) != 0) {
            log_error("train", "checkpoint failed (the previous one is intact): %s", err); // e.g. a full disk: train on
        }
    }
    if (rc == 0 && (t->step >= total || ended) && train_save(t, &x, err, sizeof err) != 0) {
        log_error("train", "checkpoint failed: %s", err);
        rc = 1;
    }
    pipe_log_stats(p);
    x.tty = 0;
    return train_finish(t, &x, rc);
}

// ---------------------------------------------------------------------------------------------
// loco run

int pipe_plan_load(const loco_config_t *cfg, const uint8_t self_id[32], plan_t *plan, char *err, size_t errlen) {
    char why[768];
    if (plan_read(cfg->pipeline_plan, plan, why, sizeof why) != 0) {
        snprintf(err, errlen, "[pipeline] plan: %s", why);
        return -1;
    }
    int self = plan_find(plan, self_id);
    if (self < 0) {
        char hex[NET_ID_HEX];
        net_id_to_hex(self_id, hex);
        snprintf(err, errlen, "[pipeline] plan = %.600s does not name this peer (%s): every node of a pipelined run "
                 "must have a node line with its id", cfg->pipeline_plan, hex);
        return -1;
    }
    if (plan->layers != cfg->model.layers) {
        snprintf(err, errlen, "[pipeline] plan = %.600s is for %d layers, [model] layers = %d", cfg->pipeline_plan,
                 plan->layers, cfg->model.layers);
        return -1;
    }
    if (strcmp(cfg->device, "cpu") != 0) {
        snprintf(err, errlen, "[pipeline] plan: pipeline stages run on the CPU only ([train] device = %s)", cfg->device);
        return -1;
    }
    return 0;
}

void pipe_member_gone(const plan_t *plan, _Atomic uint32_t *gone, const uint8_t id[32]) {
    int i = plan_find(plan, id);
    if (i >= 0) atomic_fetch_add(&gone[i], 1);
}

int pipe_run(const loco_config_t *cfg0, const plan_t *plan, const net_identity_t *id, const uint8_t fp[32],
             _Atomic uint32_t *gone, metrics_t *mx, _Atomic(trainer_t *) *trainer_out, outer_run_t *outer,
             pipe_outer_t *oc, volatile sig_atomic_t *stop) {
    char err[1536];
    loco_config_t cfg = *cfg0;
    int self = plan_find(plan, id->pk);
    int stage0 = plan->nodes[self].stage == 0;
    cfg.batch = plan->micro_batch;
    if (cfg.eval_every > 0) log_info("pipe", "[train] eval_every is ignored in a pipelined run (a stage holds part of the model)");
    cfg.eval_every = 0;
    uint64_t stream = (uint64_t)cfg.data_stream;
    if (cfg.data_stream < 0) { // each stage-0 replica draws its own stream, derived from its id
        stream = 0;
        for (int i = 0; i < 8; i++) stream |= (uint64_t)id->pk[i] << (8 * i);
    }
    // The stage holds only its part of the model: its range, and at the last stage also the tied wte
    // (the head's copy); parameters, gradients and AdamW moments exist for these floats only.
    part_t part;
    pipe_plan_part(plan, self, &cfg.model, &part);
    trainer_t *t = trainer_new_part(&cfg, TRAINER_PARAMS_ONLY | (stage0 ? TRAINER_TRAIN_DATA : 0), stream, &part, err,
                                    sizeof err);
    if (!t) {
        log_error("train", "%s", err);
        return 1;
    }
    pipe_opts_t o = {.plan = plan, .identity = *id, .timeout_ms = cfg.pipeline_timeout_ms, .route_seed = stream ^ 0x9e37,
                     .gone = gone};
    memcpy(o.fp, fp, 32);
    pipe_t *p = pipe_new(&o, t, err, sizeof err);
    net_identity_wipe(&o.identity);
    if (!p) {
        log_error("pipe", "%s", err);
        trainer_destroy(&t);
        return 1;
    }
    size_t off, len;
    pipe_range(p, &off, &len);
    size_t whole = 4 * t->model->num_params * sizeof(float) + t->model->num_params;
    size_t held = 2 * part_bytes(t->model->num_params, sizeof(float), &t->model->part) +
                  2 * part_bytes(t->opt->n, sizeof(float), &t->opt->part) + part_bytes(t->opt->n, 1, &t->opt->part);
    log_info("train", "%zu parameters, %zu of them this stage's; holds %.2f MB of the model's %.2f MB of parameters, "
             "gradients and AdamW state (%zu part(s)); data stream %llu", t->model->num_params, len, held / 1e6,
             whole / 1e6, (size_t)t->model->part.n, (unsigned long long)stream);
    int rc;
    // Outer steps with this stage's other replicas (outer_run resumes from checkpoints itself); a stage
    // with one node has no one to mix with and trains on, as a pipeline without replicas does.
    if (outer && oc && plan_replicas(plan, plan->nodes[self].stage) > 1) {
        oc->pipe = p;
        if (trainer_out) atomic_store(trainer_out, t);
        rc = outer_run_train(outer, t, stop);
        pipe_log_stats(p);
    } else {
        int resumed = 0;
        if (train_resume(t, &resumed, err, sizeof err) != 0) {
            log_error("train", "%s", err);
            pipe_destroy(&p);
            trainer_destroy(&t);
            return 1;
        }
        if (trainer_out) atomic_store(trainer_out, t);
        rc = pipe_train(p, t, mx, stop);
    }
    if (trainer_out) atomic_store(trainer_out, NULL);
    pipe_destroy(&p);
    trainer_destroy(&t);
    return rc;
}
