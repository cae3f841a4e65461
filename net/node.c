#include "net/node.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "net/fingerprint.h"
#include "node/log.h"
#include "optim/codec.h"

#define MAX_PEERS 4096
#define REPLAY_WINDOW 256
#define SEND_POOL_MAX 32 // chunk send buffers per node (see send_buf)
#define RECV_SPARE_MAX 4 // recycled tensor buffers kept per node

typedef struct {
    uint8_t curve[32]; // table key: the X25519 key CURVE authenticated
    uint8_t id[32];    // Ed25519 id (known after HELLO/WELCOME, or from the address we dialled)
    int has_id;
    char hex[NET_ID_HEX];
    int admitted;      // a HELLO/WELCOME from it was accepted: its messages are processed
    int welcome_state; // our dealer: 0 waiting, 1 welcomed, -1 refused
    char refuse_text[200];
    uint64_t incarnation, max_seq, window[REPLAY_WINDOW / 64];
    int seen_seq;
    uint8_t rid[256]; // ROUTER routing id of its latest connection to us
    size_t rid_len;
    void *dealer;     // our connection to it, if we dialled
    void *monitor;    // PAIR receiving the dealer's connection events (re-HELLO on reconnect)
    int handshakes;   // CURVE/ZMTP handshakes the dealer completed
    net_xfer_rx_t **rx;
    uint32_t nrx;
    uint64_t probe_id, probe_got, probe_total; // bandwidth probe, receiving side
    net_stats_t stats;
} peer_t;

typedef struct send_buf send_buf_t;

// A token bucket in bytes: rate bytes/s (0 = unlimited), at most `burst` saved up; sends may take it
// below zero (one chunk of debt), which the next sends wait out.
typedef struct {
    double rate, tokens, burst;
    int64_t t_ms;
} bucket_t;

// A queued tensor transfer (net_node_queue_tensor), sent chunk by chunk as the socket, the send
// buffers and the rate caps allow, from every pass of the node's service loop.
typedef struct send_job {
    struct send_job *next;
    uint8_t peer[32];
    uint64_t round;
    uint32_t quantity;
    net_xfer_tx_t *tx;
    float *owned;          // the private copy sent from, when the caller asked for one
    int64_t deadline;
    send_buf_t *buf;       // an encoded chunk the socket has not taken yet
    size_t buf_len;
    uint8_t chb[NET_CHUNK_HDR_SIZE];
} send_job_t;

#define RATE_TAB 128

typedef struct ev_node {
    net_event_t ev;
    struct ev_node *next;
} ev_node_t;

struct net_node_t {
    net_opts_t o;
    uint8_t fp[32];
    uint64_t run_id, seq, xfer_id, round_floor;
    void *ctx, *router, *zap;
    void *wake;            // PAIR bound to inproc://loco-wake-<node>: another thread's net_waker_t
    int woken;
    char endpoint[300];
    uint8_t allow_curve[NET_MAX_LIST][32], deny_curve[NET_MAX_LIST][32];
    peer_t **peers;
    int npeers;
    ev_node_t *ev_head, *ev_tail;
    net_stats_t stats;
    uint64_t pong_seq, probe_acked; // probe, sending side
    int64_t last_sweep_ms;
    send_buf_t *pool[SEND_POOL_MAX];
    int npool;
    float *spare[RECV_SPARE_MAX]; // tensors handed back by net_node_recycle, for the next transfers
    size_t spare_n[RECV_SPARE_MAX];
    send_job_t *jobs;             // queued transfers, in order
    int njobs, pumping;
    bucket_t up;                  // [limits] upload_rate: every tensor chunk we send
    struct { uint8_t id[32]; bucket_t b; } dest[RATE_TAB]; // per destination: its announced download cap
    int ndest;
    size_t chunk_eff;             // chunk bytes actually used (smaller under an upload cap)
};

static int64_t s_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double s_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// --- options -----------------------------------------------------------------------------------

void net_opts_defaults(net_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->admission = NET_ADMIT_OPEN;
    o->limits.max_message = 16u << 20;
    o->limits.max_tensor = 4ull << 30;
    o->limits.max_inflight = 4;
    o->chunk_bytes = 4u << 20;
    o->hwm = 16;
    o->transfer_timeout_ms = 60000;
    o->io_threads = 2;
}

static int s_parse_ids(const config_list_t *l, uint8_t out[][32], int *n, const char *what, char *err, size_t errlen) {
    *n = 0;
    for (int i = 0; i < l->n; i++) {
        uint8_t curve[32];
        if (i >= NET_MAX_LIST || net_id_from_hex(l->item[i], out[i]) != 0 || net_id_to_curve(out[i], curve) != 0) {
            snprintf(err, errlen, "[run] %s = %s: not a peer id (64 hex digits of an Ed25519 key)", what, l->item[i]);
            return -1;
        }
        (*n)++;
    }
    return 0;
}

int net_opts_from_config(net_opts_t *o, const loco_config_t *c, char *err, size_t errlen) {
    net_opts_defaults(o);
    if (!c->key[0]) {
        snprintf(err, errlen, "[node] key is not set (create a key with 'loco keygen --out FILE')");
        return -1;
    }
    if (net_identity_load(&o->identity, c->key, err, errlen) != 0) return -1;
    snprintf(o->listen, sizeof o->listen, "%s", c->net_listen);
    o->admission = !strcmp(c->admission, "ticket") ? NET_ADMIT_TICKET
                   : !strcmp(c->admission, "allowlist") ? NET_ADMIT_ALLOWLIST
                                                        : NET_ADMIT_OPEN;
    if (s_parse_ids(&c->allow, o->allow, &o->n_allow, "allow", err, errlen) != 0) return -1;
    if (s_parse_ids(&c->deny, o->deny, &o->n_deny, "deny", err, errlen) != 0) return -1;
    if (c->authority[0]) {
        if (net_id_from_hex(c->authority, o->authority) != 0) {
            snprintf(err, errlen, "[run] authority = %s: not a peer id (64 hex digits)", c->authority);
            return -1;
        }
        o->has_authority = 1;
    }
    if (o->admission == NET_ADMIT_TICKET && !o->has_authority) {
        snprintf(err, errlen, "[run] admission = ticket needs [run] authority (the id that signs tickets)");
        return -1;
    }
    if (c->ticket[0]) {
        net_ticket_t t;
        if (net_ticket_load(&t, c->ticket, err, errlen) != 0) return -1;
        net_ticket_encode(&t, o->ticket);
        o->has_ticket = 1;
    }
    o->limits.max_message = (uint64_t)c->max_message;
    o->limits.max_tensor = (uint64_t)c->max_tensor;
    o->limits.max_inflight = (uint32_t)c->max_inflight;
    o->chunk_bytes = (size_t)c->chunk_size;
    o->hwm = c->hwm;
    if (o->chunk_bytes > o->limits.max_message) {
        snprintf(err, errlen, "[net] chunk_size (%zu) is larger than [limits] max_message (%llu)", o->chunk_bytes,
                 (unsigned long long)o->limits.max_message);
        return -1;
    }
    o->run_desc_len = net_run_describe(c, o->run_desc, sizeof o->run_desc);
    return 0;
}

// --- events and peers --------------------------------------------------------------------------

void net_event_clear(net_event_t *ev) {
    free(ev->payload);
    free(ev->data);
    memset(ev, 0, sizeof *ev);
}

static void s_push(net_node_t *n, const net_event_t *ev) {
    ev_node_t *e = malloc(sizeof *e);
    if (!e) return; // the event is lost; payloads leak-free because the caller owns them below
    e->ev = *ev;
    e->next = NULL;
    if (n->ev_tail) n->ev_tail->next = e;
    else n->ev_head = e;
    n->ev_tail = e;
}

static peer_t *s_peer_by_curve(net_node_t *n, const uint8_t curve[32], int create) {
    for (int i = 0; i < n->npeers; i++)
        if (!memcmp(n->peers[i]->curve, curve, 32)) return n->peers[i];
    if (!create || n->npeers >= MAX_PEERS) return NULL;
    peer_t **np = realloc(n->peers, (size_t)(n->npeers + 1) * sizeof *np);
    if (!np) return NULL;
    n->peers = np;
    peer_t *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->rx = calloc(n->o.limits.max_inflight ? n->o.limits.max_inflight : 1, sizeof *p->rx);
    if (!p->rx) {
        free(p);
        return NULL;
    }
    memcpy(p->curve, curve, 32);
    net_hex_encode(curve, 32, p->hex); // the key's prefix until the Ed25519 id is known
    p->hex[16] = '\0';
    n->peers[n->npeers++] = p;
    return p;
}

static peer_t *s_peer_by_id(net_node_t *n, const uint8_t id[32]) {
    uint8_t curve[32];
    if (n->o.plaintext) memcpy(curve, id, 32);
    else if (net_id_to_curve(id, curve) != 0) return NULL;
    peer_t *p = s_peer_by_curve(n, curve, 0);
    return p;
}

static void s_peer_set_id(peer_t *p, const uint8_t id[32]) {
    memcpy(p->id, id, 32);
    p->has_id = 1;
    net_id_to_hex(id, p->hex);
    p->hex[16] = '\0'; // logs show a 16-digit prefix
}

static void s_peer_free(peer_t *p) {
    for (uint32_t i = 0; i < p->nrx; i++) net_xfer_rx_destroy(&p->rx[i]);
    free(p->rx);
    if (p->dealer) zmq_close(p->dealer);
    if (p->monitor) zmq_close(p->monitor);
    free(p);
}

// Counts and logs a drop; logs the 1st, 2nd, 4th, 8th... of each reason per peer, so a flood
// cannot fill the disk.
static void s_drop(net_node_t *n, peer_t *p, net_drop_t why, const char *fmt, ...) {
    n->stats.drops[why]++;
    uint64_t c = p ? ++p->stats.drops[why] : n->stats.drops[why];
    if (c & (c - 1)) return;
    char detail[256] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, sizeof detail, fmt, ap);
        va_end(ap);
    }
    log_warn("net", "dropped message from %s: %s%s%s (%llu so far)", p ? p->hex : "?", net_drop_name(why),
             detail[0] ? ": " : "", detail, (unsigned long long)c);
}

// --- sending -----------------------------------------------------------------------------------

// Chunk send buffers: reused across transfers (so their pages are faulted in once, not per
// transfer) and lent to libzmq zero-copy; its I/O thread hands each back (busy = 0) once it has
// encrypted or written the data. At most SEND_POOL_MAX exist, so memory stays bounded.
struct send_buf {
    uint8_t *data;
    size_t cap;
    atomic_int busy;
};

static void s_buf_release(void *data, void *hint) {
    (void)data;
    atomic_store_explicit(&((send_buf_t *)hint)->busy, 0, memory_order_release);
}

static int s_service(net_node_t *n, int timeout_ms, void *want_out);
static void s_pump(net_node_t *n);
static void s_job_free(send_job_t *j);
static int s_bucket_ok(bucket_t *b, int64_t now);
static bucket_t *s_dest(net_node_t *n, const uint8_t id[32]);

// Sends header + payload frames to a peer, over our dealer if we have one, else back over the
// ROUTER connection it made. Blocks under backpressure (servicing the node) until deadline_ms.
// hold: if set, payload frame `hold_frame` is sent zero-copy from hold's buffer (frames[hold_frame]),
// which libzmq hands back when done; if s_send fails before queueing it, hold is not touched.
// Sends one message; under backpressure services the node until deadline_ms. deadline_ms = 0: never
// waits, returns 1 when the socket would block (nothing was sent). 0 sent, -1 error.
static int s_send(net_node_t *n, peer_t *p, uint16_t type, uint64_t round, int nframes, const void *const *frames,
                  const size_t *lens, int64_t deadline_ms, send_buf_t *hold, int hold_frame, char *err,
                  size_t errlen) {
    void *sock = p->dealer ? p->dealer : n->router;
    if (!p->dealer && !p->rid_len) {
        snprintf(err, errlen, "no connection to peer %s", p->hex);
        return -1;
    }
    uint8_t hdr[NET_HDR_SIZE];
    uint64_t plen = 0;
    for (int i = 0; i < nframes; i++) plen += lens[i];
    net_hdr_t h = {.version = NET_PROTOCOL_VERSION,
                   .type = type,
                   .run_id = n->run_id,
                   .incarnation = n->o.incarnation,
                   .round = round,
                   .seq = n->seq,
                   .payload_len = plen};
    net_hdr_encode(&h, hdr);
    for (;;) {
        int rc = 0;
        if (!p->dealer) rc = zmq_send(sock, p->rid, p->rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        if (rc >= 0) rc = zmq_send(sock, hdr, sizeof hdr, (nframes ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT);
        if (rc >= 0) break;
        if (errno != EAGAIN) {
            snprintf(err, errlen, "send to %s: %s", p->hex, zmq_strerror(errno));
            return -1;
        }
        if (deadline_ms == 0) return 1; // no waiting: the caller tries again later
        int64_t left = deadline_ms - s_now_ms();
        if (left <= 0) {
            snprintf(err, errlen, "send to %s: timed out under backpressure (peer not draining)", p->hex);
            return -1;
        }
        if (s_service(n, (int)(left < 100 ? left : 100), sock) < 0) {
            snprintf(err, errlen, "send to %s: socket error", p->hex);
            return -1;
        }
    }
    // Once the first frame is queued, ZeroMQ accepts the rest of the message atomically.
    for (int i = 0; i < nframes; i++) {
        int more = i + 1 < nframes ? ZMQ_SNDMORE : 0;
        if (hold && i == hold_frame) {
            zmq_msg_t m;
            zmq_msg_init_data(&m, (void *)frames[i], lens[i], s_buf_release, hold);
            if (zmq_msg_send(&m, sock, more) < 0) zmq_msg_close(&m);
        } else {
            zmq_send(sock, frames[i], lens[i], more);
        }
    }
    n->seq++;
    uint64_t total = plen + NET_HDR_SIZE;
    n->stats.tx_bytes[type] += total, p->stats.tx_bytes[type] += total;
    n->stats.tx_msgs[type]++, p->stats.tx_msgs[type]++;
    return 0;
}

static int s_send1(net_node_t *n, peer_t *p, uint16_t type, uint64_t round, const void *data, size_t len) {
    char err[200];
    const void *f[1] = {data};
    size_t l[1] = {len};
    if (s_send(n, p, type, round, 1, f, l, s_now_ms() + 2000, NULL, 0, err, sizeof err) != 0) {
        log_warn("net", "%s", err);
        return -1;
    }
    return 0;
}

static size_t s_hello_body(net_node_t *n, uint8_t *buf, size_t len) {
    return net_hello_encode(n->o.identity.pk, n->o.run_desc, n->o.run_desc_len, n->o.has_ticket ? n->o.ticket : NULL,
                            buf, len);
}

// --- admission ---------------------------------------------------------------------------------

static int s_listed(const uint8_t list[][32], int n, const uint8_t key[32]) {
    for (int i = 0; i < n; i++)
        if (!memcmp(list[i], key, 32)) return 1;
    return 0;
}

// Decides whether `id` (which proved its CURVE key) may train with us. pub is what the peer is
// told; reason what we log. dialled: a peer we connected to by its id (its WELCOME): we chose it,
// so the admission mode does not apply, only deny and the run fingerprint.
static int s_admit(net_node_t *n, const net_hello_t *h, int dialled, char *reason, size_t rlen, char *pub,
                   size_t plen) {
    if (s_listed(n->o.deny, n->o.n_deny, h->id)) {
        snprintf(reason, rlen, "id is on the deny list");
        snprintf(pub, plen, "refused");
        return -1;
    }
    int ok = dialled || n->o.admission == NET_ADMIT_OPEN || s_listed(n->o.allow, n->o.n_allow, h->id) ||
             (n->o.has_authority && !memcmp(n->o.authority, h->id, 32));
    if (!ok && n->o.admission == NET_ADMIT_TICKET) {
        if (!h->ticket) {
            snprintf(reason, rlen, "no ticket (admission = ticket)");
            snprintf(pub, plen, "refused: a ticket is required");
            return -1;
        }
        net_ticket_t t;
        char why[160];
        if (net_ticket_decode(&t, h->ticket, NET_TICKET_BYTES, why, sizeof why) != 0) {
            snprintf(reason, rlen, "ticket malformed: %s", why);
            snprintf(pub, plen, "refused: ticket malformed");
            return -1;
        }
        net_ticket_status_t st = net_ticket_verify(&t, n->o.authority, n->fp, h->id, (uint64_t)time(NULL), why,
                                                   sizeof why);
        if (st != NET_TICKET_OK) {
            snprintf(reason, rlen, "ticket %s: %s", net_ticket_status_name(st), why);
            snprintf(pub, plen, "refused: ticket %s", net_ticket_status_name(st));
            return -1;
        }
        ok = 1;
    }
    if (!ok) {
        snprintf(reason, rlen, "id is not on the allow list");
        snprintf(pub, plen, "refused");
        return -1;
    }
    char diff[200];
    if (net_run_diff(n->o.run_desc, n->o.run_desc_len, h->desc, h->desc_len, diff, sizeof diff)) {
        snprintf(reason, rlen, "different run: %s", diff);
        snprintf(pub, plen, "refused: different run: %s", diff); // admitted by key: may know why
        return -1;
    }
    return 0;
}

// --- receiving ---------------------------------------------------------------------------------

static int s_window_accept(peer_t *p, uint64_t seq) {
    if (seq == 0) return 0;
    if (!p->seen_seq || seq > p->max_seq) {
        uint64_t shift = p->seen_seq ? seq - p->max_seq : REPLAY_WINDOW;
        if (shift >= REPLAY_WINDOW) {
            memset(p->window, 0, sizeof p->window);
        } else {
            for (uint64_t s = 0; s < shift; s++) { // shift left by one bit, `shift` times (shift < 256)
                for (int w = REPLAY_WINDOW / 64 - 1; w > 0; w--) p->window[w] = p->window[w] << 1 | p->window[w - 1] >> 63;
                p->window[0] <<= 1;
            }
        }
        p->window[0] |= 1;
        p->max_seq = seq;
        p->seen_seq = 1;
        return 1;
    }
    uint64_t back = p->max_seq - seq;
    if (back >= REPLAY_WINDOW) return 0;
    uint64_t bit = 1ull << (back % 64);
    if (p->window[back / 64] & bit) return 0;
    p->window[back / 64] |= bit;
    return 1;
}

static void s_reset_peer_session(peer_t *p, uint64_t incarnation) {
    p->incarnation = incarnation;
    p->seen_seq = 0;
    p->max_seq = 0;
    memset(p->window, 0, sizeof p->window);
    for (uint32_t i = 0; i < p->nrx; i++) net_xfer_rx_destroy(&p->rx[i]);
    p->nrx = 0;
}

static void s_rx_remove(peer_t *p, uint32_t i) {
    net_xfer_rx_destroy(&p->rx[i]);
    p->rx[i] = p->rx[--p->nrx];
    p->rx[p->nrx] = NULL;
}

static void s_on_chunk(net_node_t *n, peer_t *p, const net_hdr_t *h, zmq_msg_t *fr) {
    net_chunk_hdr_t ch;
    net_drop_t d = net_chunk_hdr_decode(&ch, zmq_msg_data(&fr[0]), zmq_msg_size(&fr[0]), zmq_msg_size(&fr[1]),
                                        &n->o.limits);
    if (d != NET_DROP_NONE) {
        s_drop(n, p, d, "chunk header (transfer %llu, chunk %u of %u)", (unsigned long long)ch.xfer_id, ch.index,
               ch.nchunks);
        return;
    }
    net_xfer_rx_t *rx = NULL;
    uint32_t ri = 0;
    for (; ri < p->nrx; ri++)
        if (p->rx[ri]->h.xfer_id == ch.xfer_id) {
            rx = p->rx[ri];
            break;
        }
    if (!rx) {
        if (p->nrx >= n->o.limits.max_inflight) {
            s_drop(n, p, NET_DROP_INFLIGHT, "%u transfers already incomplete", p->nrx);
            return;
        }
        float *buf = NULL; // a recycled tensor of the same size: its pages are already faulted in
        for (int i = 0; i < RECV_SPARE_MAX && !buf; i++)
            if (n->spare[i] && n->spare_n[i] == ch.total) buf = n->spare[i], n->spare[i] = NULL;
        if (!(rx = net_xfer_rx_new(&ch, buf))) {
            s_drop(n, p, NET_DROP_TOO_LARGE, "cannot allocate %llu bytes", (unsigned long long)ch.encoded_total);
            return;
        }
        ri = p->nrx;
        p->rx[p->nrx++] = rx;
    }
    d = net_xfer_rx_add(rx, &ch, zmq_msg_data(&fr[1]), zmq_msg_size(&fr[1]));
    if (d != NET_DROP_NONE) {
        s_drop(n, p, d, "transfer %llu chunk %u", (unsigned long long)ch.xfer_id, ch.index);
        return;
    }
    rx->last_ms = s_now_ms();
    if (!net_xfer_rx_complete(rx)) return;
    float *data = NULL;
    char why[256];
    d = net_xfer_rx_finish(rx, &data, why, sizeof why);
    if (d != NET_DROP_NONE) {
        s_drop(n, p, d, "transfer %llu: %s", (unsigned long long)ch.xfer_id, why);
        s_rx_remove(p, ri);
        return;
    }
    net_event_t ev = {.kind = NET_EV_TENSOR, .round = h->round, .data = data, .n = rx->h.total,
                      .quantity = rx->h.quantity, .codec = rx->h.codec};
    memcpy(ev.peer, p->id, 32);
    s_rx_remove(p, ri);
    s_push(n, &ev);
    n->stats.delivered++, p->stats.delivered++;
}

static void s_on_hello(net_node_t *n, peer_t *p, const net_hdr_t *hd, const uint8_t *body, size_t len, int is_welcome) {
    net_hello_t h;
    if (net_hello_decode(&h, body, len) != NET_DROP_NONE) {
        s_drop(n, p, NET_DROP_BAD_HELLO, "malformed body");
        return;
    }
    uint8_t curve[32];
    if (!n->o.plaintext && (net_id_to_curve(h.id, curve) != 0 || memcmp(curve, p->curve, 32) != 0)) {
        s_drop(n, p, NET_DROP_BAD_HELLO, "claimed id does not own the connection's CURVE key");
        return;
    }
    if (is_welcome && p->has_id && memcmp(p->id, h.id, 32) != 0) {
        s_drop(n, p, NET_DROP_BAD_HELLO, "WELCOME from a different id than dialled");
        return;
    }
    s_peer_set_id(p, h.id);
    char reason[300], pub[250];
    if (s_admit(n, &h, is_welcome, reason, sizeof reason, pub, sizeof pub) != 0) {
        p->admitted = 0;
        s_drop(n, p, NET_DROP_REFUSED, "%s", reason);
        if (!is_welcome) s_send1(n, p, NET_MSG_REFUSE, 0, pub, strlen(pub));
        else {
            p->welcome_state = -1;
            snprintf(p->refuse_text, sizeof p->refuse_text, "we refuse them: %.170s", reason);
        }
        return;
    }
    if (hd->incarnation > p->incarnation || !p->admitted) s_reset_peer_session(p, hd->incarnation);
    s_window_accept(p, hd->seq);
    p->admitted = 1;
    net_event_t ev = {.kind = is_welcome ? NET_EV_WELCOME : NET_EV_ADMITTED};
    memcpy(ev.peer, h.id, 32);
    if (is_welcome) {
        p->welcome_state = 1;
        log_info("net", "peer %s welcomed us", p->hex);
    } else {
        log_info("net", "admitted peer %s", p->hex);
        uint8_t buf[64 + NET_RUN_DESC_MAX + NET_TICKET_BYTES];
        size_t bl = s_hello_body(n, buf, sizeof buf);
        s_send1(n, p, NET_MSG_WELCOME, 0, buf, bl);
    }
    s_push(n, &ev);
}

// One received message: frames[0] is the header. via_dealer: it came on our connection to p.
static void s_handle(net_node_t *n, peer_t *p, zmq_msg_t *fr, int nfr, int too_many, int via_dealer) {
    uint64_t bytes = 0;
    for (int i = 0; i < nfr; i++) bytes += zmq_msg_size(&fr[i]);
    net_hdr_t h;
    net_drop_t d = too_many || nfr < 1 ? NET_DROP_FRAMES : net_hdr_decode(&h, zmq_msg_data(&fr[0]), zmq_msg_size(&fr[0]));
    uint16_t ctype = d == NET_DROP_NONE ? h.type : 0;
    n->stats.rx_bytes[ctype] += bytes, p->stats.rx_bytes[ctype] += bytes;
    if (d != NET_DROP_NONE) {
        s_drop(n, p, d, "%d frames, header %zu bytes", nfr, nfr ? zmq_msg_size(&fr[0]) : 0);
        return;
    }
    if (nfr - 1 != net_msg_frames(h.type)) {
        s_drop(n, p, NET_DROP_FRAMES, "type %u with %d payload frames", h.type, nfr - 1);
        return;
    }
    uint64_t plen = bytes - zmq_msg_size(&fr[0]);
    if (h.payload_len != plen) {
        s_drop(n, p, NET_DROP_LENGTH, "header says %llu payload bytes, %llu arrived", (unsigned long long)h.payload_len,
               (unsigned long long)plen);
        return;
    }
    int handshake = h.type == NET_MSG_HELLO || h.type == NET_MSG_WELCOME || h.type == NET_MSG_REFUSE;
    if (handshake && (h.type == NET_MSG_HELLO) == via_dealer) {
        s_drop(n, p, NET_DROP_BAD_HELLO, "%s on the wrong side of a connection",
               h.type == NET_MSG_HELLO ? "HELLO" : "WELCOME/REFUSE");
        return;
    }
    if (!handshake && !p->admitted) {
        s_drop(n, p, NET_DROP_NOT_ADMITTED, "type %u before an accepted HELLO", h.type);
        return;
    }
    if (!handshake && h.run_id != n->run_id) {
        s_drop(n, p, NET_DROP_RUN, "run id %016llx", (unsigned long long)h.run_id);
        return;
    }
    if (p->admitted && h.incarnation < p->incarnation) {
        s_drop(n, p, NET_DROP_STALE_INCARNATION, "incarnation %llu < %llu", (unsigned long long)h.incarnation,
               (unsigned long long)p->incarnation);
        return;
    }
    if (!handshake && h.incarnation != p->incarnation) {
        s_drop(n, p, NET_DROP_NOT_ADMITTED, "new incarnation without a HELLO");
        return;
    }
    if (!handshake && !s_window_accept(p, h.seq)) {
        s_drop(n, p, NET_DROP_REPLAY, "sequence %llu (highest %llu)", (unsigned long long)h.seq,
               (unsigned long long)p->max_seq);
        return;
    }
    if ((h.type == NET_MSG_CHUNK || h.type >= NET_MSG_USER) && h.round < n->round_floor) {
        s_drop(n, p, NET_DROP_STALE_ROUND, "round %llu < %llu", (unsigned long long)h.round,
               (unsigned long long)n->round_floor);
        return;
    }
    n->stats.rx_msgs[h.type]++, p->stats.rx_msgs[h.type]++;
    const uint8_t *body = nfr > 1 ? zmq_msg_data(&fr[1]) : NULL;
    size_t blen = nfr > 1 ? zmq_msg_size(&fr[1]) : 0;
    switch (h.type) {
    case NET_MSG_HELLO:
    case NET_MSG_WELCOME: s_on_hello(n, p, &h, body, blen, h.type == NET_MSG_WELCOME); break;
    case NET_MSG_REFUSE: {
        p->welcome_state = -1;
        p->admitted = 0;
        size_t l = blen < sizeof p->refuse_text - 1 ? blen : sizeof p->refuse_text - 1;
        for (size_t i = 0; i < l; i++) p->refuse_text[i] = body[i] >= 32 && body[i] < 127 ? (char)body[i] : '?';
        p->refuse_text[l] = '\0';
        log_warn("net", "peer %s refused us: %s", p->hex, p->refuse_text);
        net_event_t ev = {.kind = NET_EV_REFUSED};
        memcpy(ev.peer, p->id, 32);
        snprintf(ev.text, sizeof ev.text, "%s", p->refuse_text);
        s_push(n, &ev);
        break;
    }
    case NET_MSG_PING: s_send1(n, p, NET_MSG_PONG, h.round, body, blen); break;
    case NET_MSG_PONG:
        if (blen == 8) n->pong_seq = net_get_u64(body);
        break;
    case NET_MSG_PROBE:
        if (blen < 16) {
            s_drop(n, p, NET_DROP_BAD_PAYLOAD, "probe of %zu bytes", blen);
            break;
        }
        if (net_get_u64(body) != p->probe_id) p->probe_id = net_get_u64(body), p->probe_got = 0;
        p->probe_total = net_get_u64(body + 8);
        p->probe_got += blen;
        if (p->probe_got >= p->probe_total) {
            uint8_t ack[8];
            net_put_u64(ack, p->probe_id);
            s_send1(n, p, NET_MSG_PROBE_ACK, 0, ack, 8);
            p->probe_got = 0;
        }
        break;
    case NET_MSG_PROBE_ACK:
        if (blen == 8) n->probe_acked = net_get_u64(body);
        break;
    case NET_MSG_CHUNK: s_on_chunk(n, p, &h, fr + 1); break;
    default: {
        net_event_t ev = {.kind = NET_EV_MESSAGE, .type = h.type, .round = h.round, .len = blen};
        memcpy(ev.peer, p->id, 32);
        ev.payload = malloc(blen ? blen : 1);
        if (!ev.payload) break;
        if (blen) memcpy(ev.payload, body, blen);
        s_push(n, &ev);
        n->stats.delivered++, p->stats.delivered++;
    }
    }
}

// Reads one whole multipart message from sock without blocking. Returns 1 if one was read, 0 if
// none was waiting, -1 on error.
static int s_read_one(net_node_t *n, void *sock, peer_t *dealer_peer) {
    enum { MAXF = 1 + 1 + NET_MAX_PAYLOAD_FRAMES };
    zmq_msg_t fr[MAXF];
    int nf = 0, too_many = 0, more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, nf == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(&m);
            for (int i = 0; i < nf; i++) zmq_msg_close(&fr[i]);
            return errno == EAGAIN ? 0 : (errno == EINTR ? 0 : -1);
        }
        more = zmq_msg_more(&m);
        if (nf < MAXF) fr[nf++] = m;
        else too_many = 1, zmq_msg_close(&m); // drained, never kept
    }
    peer_t *p = dealer_peer;
    int first = 0;
    if (!p) { // ROUTER: frame 0 is the routing id; the CURVE key comes from ZAP's User-Id
        first = 1;
        uint8_t key[32];
        int ok = 0;
        if (n->o.plaintext) {
            ok = zmq_msg_size(&fr[0]) == 33;
            if (ok) memcpy(key, (uint8_t *)zmq_msg_data(&fr[0]) + 1, 32);
        } else if (nf > 1) {
            const char *uid = zmq_msg_gets(&fr[1], "User-Id");
            ok = uid && strlen(uid) == 64 && net_hex_decode(uid, 64, key) == 0;
        }
        p = ok ? s_peer_by_curve(n, key, 1) : NULL;
        if (!p) {
            s_drop(n, NULL, NET_DROP_FRAMES, "no authenticated key or peer table full");
        } else if (zmq_msg_size(&fr[0]) <= sizeof p->rid) {
            memcpy(p->rid, zmq_msg_data(&fr[0]), zmq_msg_size(&fr[0]));
            p->rid_len = zmq_msg_size(&fr[0]);
        }
    }
    if (p) s_handle(n, p, fr + first, nf - first, too_many, dealer_peer != NULL);
    for (int i = 0; i < nf; i++) zmq_msg_close(&fr[i]);
    return 1;
}

void net_zap_answer_one(void *zap, net_zap_decide_fn decide, void *ctx) {
    zmq_msg_t fr[8];
    int nf = 0, more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, zap, nf == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(&m);
            for (int i = 0; i < nf; i++) zmq_msg_close(&fr[i]);
            return;
        }
        more = zmq_msg_more(&m);
        if (nf < 8) fr[nf++] = m;
        else zmq_msg_close(&m);
    }
    const char *status = "400", *text = "refused";
    char uid[NET_ID_HEX] = "";
    if (nf >= 7 && zmq_msg_size(&fr[5]) == 5 && !memcmp(zmq_msg_data(&fr[5]), "CURVE", 5) &&
        zmq_msg_size(&fr[6]) == 32 && decide(ctx, zmq_msg_data(&fr[6]), uid, &text))
        status = "200", text = "OK";
    if (nf >= 2) {
        zmq_send(zap, "1.0", 3, ZMQ_SNDMORE);
        zmq_send(zap, zmq_msg_data(&fr[1]), zmq_msg_size(&fr[1]), ZMQ_SNDMORE);
        zmq_send(zap, status, 3, ZMQ_SNDMORE);
        zmq_send(zap, text, strlen(text), ZMQ_SNDMORE);
        zmq_send(zap, uid, strlen(uid), ZMQ_SNDMORE);
        zmq_send(zap, "", 0, 0);
    }
    for (int i = 0; i < nf; i++) zmq_msg_close(&fr[i]);
}

// The net node's ZAP decision: deny list, then allow list in allowlist mode; open and ticket modes
// admit every key here (the HELLO decides; nothing else is processed before). User-Id = the key.
static int s_zap_decide(void *ctx, const uint8_t key[32], char uid[NET_ID_HEX], const char **text) {
    net_node_t *n = ctx;
    net_hex_encode(key, 32, uid);
    if (s_listed(n->deny_curve, n->o.n_deny, key)) {
        *text = "denied";
        log_warn("net", "refused connection from key %.16s…: on the deny list", uid);
        return 0;
    }
    if (n->o.admission == NET_ADMIT_ALLOWLIST && !s_listed(n->allow_curve, n->o.n_allow, key)) {
        *text = "not allowed";
        log_warn("net", "refused connection from key %.16s…: not on the allow list", uid);
        n->stats.drops[NET_DROP_REFUSED]++;
        return 0;
    }
    return 1;
}

static int s_send_hello(net_node_t *n, peer_t *p, char *err, size_t errlen);

// One event from a dealer's monitor. Every handshake after the first is a reconnection (the peer
// restarted, or the link dropped): the other side may have forgotten us, so HELLO again — it is
// the only message a fresh node will process from us.
static void s_monitor_one(net_node_t *n, peer_t *p) {
    zmq_msg_t ev, addr;
    zmq_msg_init(&ev);
    zmq_msg_init(&addr);
    int rc = zmq_msg_recv(&ev, p->monitor, ZMQ_DONTWAIT);
    if (rc >= 0 && zmq_msg_more(&ev)) zmq_msg_recv(&addr, p->monitor, 0);
    if (rc >= 6) {
        const uint8_t *b = zmq_msg_data(&ev);
        uint16_t what = (uint16_t)(b[0] | b[1] << 8);
        if (what == ZMQ_EVENT_HANDSHAKE_SUCCEEDED && p->handshakes++ > 0) {
            char err[200];
            log_info("net", "reconnected to peer %s: sending HELLO again", p->hex);
            p->welcome_state = 0;
            if (s_send_hello(n, p, err, sizeof err) != 0) log_warn("net", "re-HELLO to %s: %s", p->hex, err);
        }
    }
    zmq_msg_close(&ev);
    zmq_msg_close(&addr);
}

static void s_sweep(net_node_t *n) {
    int64_t now = s_now_ms();
    if (now - n->last_sweep_ms < 1000) return;
    n->last_sweep_ms = now;
    for (int i = 0; i < n->npeers; i++) {
        peer_t *p = n->peers[i];
        for (uint32_t r = 0; r < p->nrx;) {
            if (now - p->rx[r]->last_ms > n->o.transfer_timeout_ms) {
                s_drop(n, p, NET_DROP_TIMEOUT, "transfer %llu: %u of %u chunks after %d ms idle",
                       (unsigned long long)p->rx[r]->h.xfer_id, p->rx[r]->received, p->rx[r]->h.nchunks,
                       n->o.transfer_timeout_ms);
                s_rx_remove(p, r);
            } else {
                r++;
            }
        }
    }
}

// Polls every socket once (waiting up to timeout_ms) and handles what is ready. want_out: a socket
// whose writability ends the wait. Returns 0, or -1 on a fatal error.
static int s_service(net_node_t *n, int timeout_ms, void *want_out) {
    if (n->jobs && timeout_ms > 5) timeout_ms = 5; // queued chunks go out as the socket and caps allow
    zmq_pollitem_t items[3 + 2 * MAX_PEERS];
    peer_t *owners[3 + 2 * MAX_PEERS];
    int k = 0;
    if (n->router) items[k] = (zmq_pollitem_t){n->router, 0, ZMQ_POLLIN | (want_out == n->router ? ZMQ_POLLOUT : 0), 0}, owners[k++] = NULL;
    if (n->zap) items[k] = (zmq_pollitem_t){n->zap, 0, ZMQ_POLLIN, 0}, owners[k++] = NULL;
    if (n->wake) items[k] = (zmq_pollitem_t){n->wake, 0, ZMQ_POLLIN, 0}, owners[k++] = NULL;
    for (int i = 0; i < n->npeers; i++)
        if (n->peers[i]->dealer) {
            void *s = n->peers[i]->dealer;
            items[k] = (zmq_pollitem_t){s, 0, ZMQ_POLLIN | (want_out == s ? ZMQ_POLLOUT : 0), 0};
            owners[k++] = n->peers[i];
            if (n->peers[i]->monitor) {
                items[k] = (zmq_pollitem_t){n->peers[i]->monitor, 0, ZMQ_POLLIN, 0};
                owners[k++] = n->peers[i];
            }
        }
    int rc = zmq_poll(items, k, timeout_ms);
    if (rc < 0) return errno == EINTR ? 0 : -1;
    for (int i = 0; i < k; i++) {
        if (!(items[i].revents & ZMQ_POLLIN)) continue;
        if (items[i].socket == n->zap) {
            net_zap_answer_one(n->zap, s_zap_decide, n);
            continue;
        }
        if (items[i].socket == n->wake) {
            char b[8];
            while (zmq_recv(n->wake, b, sizeof b, ZMQ_DONTWAIT) >= 0) {}
            n->woken = 1;
            continue;
        }
        if (owners[i] && items[i].socket == owners[i]->monitor) {
            s_monitor_one(n, owners[i]);
            continue;
        }
        // Bounded batch per socket, so one busy peer cannot starve the others or the ZAP handler.
        for (int m = 0; m < 64; m++) {
            int r = s_read_one(n, items[i].socket, owners[i]);
            if (r <= 0) break;
        }
    }
    s_sweep(n);
    s_pump(n);
    return 0;
}

// --- public API --------------------------------------------------------------------------------

static int s_setopt_int(void *s, int opt, int v) { return zmq_setsockopt(s, opt, &v, sizeof v); }

static int s_common_opts(net_node_t *n, void *s) {
    int64_t maxmsg = (int64_t)n->o.limits.max_message;
    int rc = zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    rc |= s_setopt_int(s, ZMQ_SNDHWM, n->o.hwm);
    rc |= s_setopt_int(s, ZMQ_RCVHWM, n->o.hwm);
    rc |= s_setopt_int(s, ZMQ_LINGER, 0);
    return rc;
}

net_node_t *net_node_new(const net_opts_t *o, char *err, size_t errlen) {
    net_node_t *n = calloc(1, sizeof *n);
    if (!n) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    n->o = *o;
    if (!n->o.incarnation) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        n->o.incarnation = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    }
    if (n->o.limits.max_inflight == 0) n->o.limits.max_inflight = 1;
    net_run_fingerprint_desc(n->o.run_desc, n->o.run_desc_len, n->fp);
    n->run_id = net_run_id(n->fp);
    n->seq = 1;
    n->xfer_id = 1;
    for (int i = 0; i < o->n_allow; i++)
        if (net_id_to_curve(o->allow[i], n->allow_curve[i]) != 0) memset(n->allow_curve[i], 0, 32);
    for (int i = 0; i < o->n_deny; i++)
        if (net_id_to_curve(o->deny[i], n->deny_curve[i]) != 0) memset(n->deny_curve[i], 0, 32);
    n->ctx = zmq_ctx_new();
    if (!n->ctx || zmq_ctx_set(n->ctx, ZMQ_IO_THREADS, n->o.io_threads > 0 ? n->o.io_threads : 1) != 0) {
        snprintf(err, errlen, "zmq_ctx_new: %s", zmq_strerror(errno));
        goto fail;
    }
    if (!n->o.plaintext) {
        // The ZAP handler must be bound before any CURVE server socket accepts a connection.
        n->zap = zmq_socket(n->ctx, ZMQ_REP);
        if (!n->zap || zmq_bind(n->zap, "inproc://zeromq.zap.01") != 0) {
            snprintf(err, errlen, "ZAP handler: %s", zmq_strerror(errno));
            goto fail;
        }
    }
    char wake_ep[64];
    snprintf(wake_ep, sizeof wake_ep, "inproc://loco-wake-%p", (void *)n);
    n->wake = zmq_socket(n->ctx, ZMQ_PAIR);
    if (!n->wake || zmq_bind(n->wake, wake_ep) != 0) {
        snprintf(err, errlen, "wake socket: %s", zmq_strerror(errno));
        goto fail;
    }
    if (o->listen[0]) {
        n->router = zmq_socket(n->ctx, ZMQ_ROUTER);
        int rc = !n->router || s_common_opts(n, n->router) || s_setopt_int(n->router, ZMQ_ROUTER_MANDATORY, 1);
        if (!rc && !n->o.plaintext) {
            rc |= s_setopt_int(n->router, ZMQ_CURVE_SERVER, 1);
            rc |= zmq_setsockopt(n->router, ZMQ_CURVE_SECRETKEY, n->o.identity.curve_sk, 32);
            rc |= zmq_setsockopt(n->router, ZMQ_ZAP_DOMAIN, "loco", 4);
        } else if (!rc) {
            rc |= s_setopt_int(n->router, ZMQ_ROUTER_HANDOVER, 1);
        }
        if (rc || zmq_bind(n->router, o->listen) != 0) {
            snprintf(err, errlen, "cannot listen on %s: %s", o->listen, zmq_strerror(errno));
            goto fail;
        }
        size_t len = sizeof n->endpoint;
        zmq_getsockopt(n->router, ZMQ_LAST_ENDPOINT, n->endpoint, &len);
    }
    return n;
fail:
    net_node_destroy(&n);
    return NULL;
}

void net_node_destroy(net_node_t **self_p) {
    if (!self_p || !*self_p) return;
    net_node_t *n = *self_p;
    while (n->jobs) {
        send_job_t *j = n->jobs;
        n->jobs = j->next;
        s_job_free(j);
    }
    for (int i = 0; i < n->npeers; i++) s_peer_free(n->peers[i]);
    free(n->peers);
    while (n->ev_head) {
        ev_node_t *e = n->ev_head;
        n->ev_head = e->next;
        net_event_clear(&e->ev);
        free(e);
    }
    if (n->router) zmq_close(n->router);
    if (n->zap) zmq_close(n->zap);
    if (n->wake) zmq_close(n->wake);
    if (n->ctx) zmq_ctx_term(n->ctx); // linger 0: libzmq hands every lent send buffer back first
    for (int i = 0; i < n->npool; i++) {
        free(n->pool[i]->data);
        free(n->pool[i]);
    }
    for (int i = 0; i < RECV_SPARE_MAX; i++) free(n->spare[i]);
    net_identity_wipe(&n->o.identity);
    free(n);
    *self_p = NULL;
}

const char *net_node_endpoint(const net_node_t *n) { return n->endpoint; }
const uint8_t *net_node_id(const net_node_t *n) { return n->o.identity.pk; }

void net_node_address(const net_node_t *n, char *out, size_t len) {
    char hex[NET_ID_HEX];
    net_id_to_hex(n->o.identity.pk, hex);
    snprintf(out, len, "%s@%s", hex, n->endpoint);
}

int net_node_connect(net_node_t *n, const char *addr, char *err, size_t errlen) {
    uint8_t id[32], curve[32];
    char ep[256];
    if (net_peer_addr_parse(addr, id, ep, sizeof ep, err, errlen) != 0) return -1;
    if (s_listed(n->o.deny, n->o.n_deny, id)) {
        snprintf(err, errlen, "peer %.16s… is on our deny list", addr);
        return -1;
    }
    if (n->o.plaintext) memcpy(curve, id, 32);
    else net_id_to_curve(id, curve);
    peer_t *p = s_peer_by_curve(n, curve, 1);
    if (!p) {
        snprintf(err, errlen, "peer table full");
        return -1;
    }
    s_peer_set_id(p, id);
    if (!p->dealer) {
        void *s = zmq_socket(n->ctx, ZMQ_DEALER);
        int rc = !s || s_common_opts(n, s);
        // A connect whose SYN goes unanswered (a partition, a peer behind a dropped route) would
        // otherwise wait out the kernel's SYN retries (1, 3, 7, 15 s ...) before libzmq tries again;
        // giving up after 2 s makes it retry promptly, so a healed link is used within ~2 s.
        if (!rc) rc |= s_setopt_int(s, ZMQ_CONNECT_TIMEOUT, 2000);
        if (!rc && !n->o.plaintext) {
            rc |= zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, curve, 32);
            rc |= zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, n->o.identity.curve_pk, 32);
            rc |= zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, n->o.identity.curve_sk, 32);
        } else if (!rc) {
            uint8_t rid[33] = {'P'};
            memcpy(rid + 1, n->o.identity.pk, 32);
            rc |= zmq_setsockopt(s, ZMQ_ROUTING_ID, rid, sizeof rid);
        }
        // Connection events (before connecting, so the first handshake is seen too).
        char mep[80];
        static atomic_uint s_monitors;
        snprintf(mep, sizeof mep, "inproc://loco-monitor-%p-%u", (void *)n, atomic_fetch_add(&s_monitors, 1));
        void *mon = NULL;
        if (!rc && zmq_socket_monitor(s, mep, ZMQ_EVENT_HANDSHAKE_SUCCEEDED) == 0 &&
            (mon = zmq_socket(n->ctx, ZMQ_PAIR)) != NULL) {
            s_setopt_int(mon, ZMQ_LINGER, 0);
            if (zmq_connect(mon, mep) != 0) zmq_close(mon), mon = NULL;
        }
        if (rc || !mon || zmq_connect(s, ep) != 0) {
            snprintf(err, errlen, "connect %s: %s", ep, zmq_strerror(errno));
            if (s) zmq_close(s);
            if (mon) zmq_close(mon);
            return -1;
        }
        p->dealer = s;
        p->monitor = mon;
        p->handshakes = 0;
    }
    p->welcome_state = 0;
    return s_send_hello(n, p, err, errlen);
}

static int s_send_hello(net_node_t *n, peer_t *p, char *err, size_t errlen) {
    uint8_t buf[64 + NET_RUN_DESC_MAX + NET_TICKET_BYTES];
    size_t bl = s_hello_body(n, buf, sizeof buf);
    const void *f[1] = {buf};
    size_t l[1] = {bl};
    return s_send(n, p, NET_MSG_HELLO, 0, 1, f, l, s_now_ms() + 5000, NULL, 0, err, errlen);
}

int net_node_handshake(net_node_t *n, const uint8_t peer[32], int timeout_ms, char *err, size_t errlen) {
    peer_t *p = s_peer_by_id(n, peer);
    if (!p || !p->dealer) {
        snprintf(err, errlen, "not connected to that peer");
        return -1;
    }
    int64_t deadline = s_now_ms() + timeout_ms;
    while (p->welcome_state == 0) {
        int64_t left = deadline - s_now_ms();
        if (left <= 0) {
            snprintf(err, errlen, "peer %s did not answer our HELLO within %d ms", p->hex, timeout_ms);
            return -1;
        }
        if (s_service(n, (int)(left < 100 ? left : 100), NULL) < 0) {
            snprintf(err, errlen, "socket error");
            return -1;
        }
    }
    if (p->welcome_state < 0) {
        snprintf(err, errlen, "peer %s: %s", p->hex, p->refuse_text);
        return -1;
    }
    return 0;
}

static peer_t *s_sendable(net_node_t *n, const uint8_t peer[32], char *err, size_t errlen) {
    peer_t *p = s_peer_by_id(n, peer);
    if (!p || (!p->dealer && !p->rid_len)) {
        snprintf(err, errlen, "no connection to that peer");
        return NULL;
    }
    return p;
}

int net_node_send(net_node_t *n, const uint8_t peer[32], uint16_t type, uint64_t round, const void *payload,
                  size_t len, int timeout_ms, char *err, size_t errlen) {
    if (type < NET_MSG_USER || type >= NET_MSG_TYPE_MAX || len > n->o.limits.max_message) {
        snprintf(err, errlen, "bad type %u or payload of %zu bytes over the limit", type, len);
        return -1;
    }
    peer_t *p = s_sendable(n, peer, err, errlen);
    if (!p) return -1;
    const void *f[1] = {payload};
    size_t l[1] = {len};
    return s_send(n, p, type, round, 1, f, l, s_now_ms() + timeout_ms, NULL, 0, err, errlen);
}

// A free send buffer of at least `need` bytes: reuses an idle one, else adds one (up to
// SEND_POOL_MAX), else services the node until libzmq hands one back. NULL on timeout.
static send_buf_t *s_buf_get(net_node_t *n, size_t need, int64_t deadline_ms) {
    for (;;) {
        send_buf_t *small = NULL;
        for (int i = 0; i < n->npool; i++) {
            send_buf_t *b = n->pool[i];
            if (atomic_load_explicit(&b->busy, memory_order_acquire)) continue;
            if (b->cap >= need) {
                atomic_store_explicit(&b->busy, 1, memory_order_relaxed);
                return b;
            }
            small = b;
        }
        if (small || n->npool < SEND_POOL_MAX) { // grow an idle buffer that is too small, or add one
            send_buf_t *b = small;
            if (!b && !(b = calloc(1, sizeof *b))) return NULL;
            uint8_t *d = malloc(need);
            if (!d) {
                if (!small) free(b);
                return NULL;
            }
            free(b->data);
            b->data = d, b->cap = need;
            if (!small) n->pool[n->npool++] = b;
            atomic_store_explicit(&b->busy, 1, memory_order_relaxed);
            return b;
        }
        int64_t left = deadline_ms - s_now_ms();
        if (left <= 0 || s_service(n, left < 5 ? (int)left : 5, NULL) < 0) return NULL;
    }
}

int net_node_send_tensor(net_node_t *n, const uint8_t peer[32], uint32_t quantity, uint64_t round, int codec,
                         const float *x, size_t count, float *residual, int timeout_ms, char *err, size_t errlen) {
    peer_t *p = s_sendable(n, peer, err, errlen);
    if (!p) return -1;
    net_xfer_tx_t *tx =
        net_xfer_tx_new(codec, x, count, net_node_chunk_bytes(n), residual, quantity, n->xfer_id++, err, errlen);
    if (!tx) return -1;
    int64_t deadline = s_now_ms() + timeout_ms;
    size_t stride = net_xfer_tx_stride(tx);
    int rc = 0;
    bucket_t *db = s_dest(n, peer);
    for (;;) {
        // The caps: wait (servicing the node) until the buckets allow the next chunk.
        while (!s_bucket_ok(&n->up, s_now_ms()) || (db && !s_bucket_ok(db, s_now_ms()))) {
            if (s_now_ms() > deadline || s_service(n, 5, NULL) < 0) {
                snprintf(err, errlen, "send to %s: timed out under the rate cap", p->hex);
                net_xfer_tx_destroy(&tx);
                return -1;
            }
        }
        send_buf_t *b = s_buf_get(n, stride, deadline);
        if (!b) {
            snprintf(err, errlen, "send to %s: no send buffer in time (peer not draining, or out of memory)", p->hex);
            rc = -1;
            break;
        }
        uint8_t chb[NET_CHUNK_HDR_SIZE];
        long dl = net_xfer_tx_next(tx, b->data, chb, err, errlen);
        if (dl <= 0) {
            s_buf_release(NULL, b);
            rc = dl < 0 ? -1 : 0;
            break;
        }
        const void *f[2] = {chb, b->data};
        size_t l[2] = {sizeof chb, (size_t)dl};
        if (s_send(n, p, NET_MSG_CHUNK, round, 2, f, l, deadline, b, 1, err, errlen) != 0) {
            s_buf_release(NULL, b);
            rc = -1;
            break;
        }
        double bytes = (double)(l[0] + l[1] + NET_HDR_SIZE);
        if (n->up.rate > 0) n->up.tokens -= bytes;
        if (db && db->rate > 0) db->tokens -= bytes;
    }
    net_xfer_tx_destroy(&tx);
    return rc;
}

// --- rate caps and queued transfers ------------------------------------------------------------

static void s_bucket_set(bucket_t *b, double rate) {
    b->rate = rate;
    // Saved-up allowance: a tenth of a second, at least one 64 KiB chunk.
    b->burst = rate * 0.1 > 65536 ? rate * 0.1 : 65536;
    b->tokens = 0; // no head start: the cap holds from the first byte
    b->t_ms = s_now_ms();
}

static int s_bucket_ok(bucket_t *b, int64_t now) {
    if (b->rate <= 0) return 1;
    b->tokens += b->rate * (double)(now - b->t_ms) / 1000.0;
    if (b->tokens > b->burst) b->tokens = b->burst;
    b->t_ms = now;
    return b->tokens > 0;
}

static bucket_t *s_dest(net_node_t *n, const uint8_t id[32]) {
    for (int i = 0; i < n->ndest; i++)
        if (!memcmp(n->dest[i].id, id, 32)) return &n->dest[i].b;
    return NULL;
}

void net_node_set_upload_rate(net_node_t *n, uint64_t bytes_per_s) {
    s_bucket_set(&n->up, (double)bytes_per_s);
    n->chunk_eff = n->o.chunk_bytes;
    // Under a cap, chunks of at most ~1/8 s of the rate, so gossip never waits long behind one.
    if (bytes_per_s > 0) {
        size_t c = (size_t)(bytes_per_s / 8);
        if (c < 65536) c = 65536;
        if (c < n->chunk_eff) n->chunk_eff = c;
    }
}

void net_node_set_peer_rate(net_node_t *n, const uint8_t peer[32], uint64_t bytes_per_s) {
    bucket_t *b = s_dest(n, peer);
    if (!b) {
        if (bytes_per_s == 0 || n->ndest == RATE_TAB) return;
        memcpy(n->dest[n->ndest].id, peer, 32);
        b = &n->dest[n->ndest++].b;
    }
    if (b->rate != (double)bytes_per_s) s_bucket_set(b, (double)bytes_per_s);
}

size_t net_node_chunk_bytes(const net_node_t *n) { return n->chunk_eff ? n->chunk_eff : n->o.chunk_bytes; }

size_t net_node_chunk_bytes_for(net_node_t *n, const uint8_t peer[32]) {
    size_t c = net_node_chunk_bytes(n);
    bucket_t *b = s_dest(n, peer);
    if (b && b->rate > 0) {
        size_t d = (size_t)(b->rate / 8);
        if (d < 65536) d = 65536;
        if (d < c) c = d;
    }
    return c;
}

static void s_job_free(send_job_t *j) {
    if (j->buf) s_buf_release(NULL, j->buf);
    net_xfer_tx_destroy(&j->tx);
    free(j->owned);
    free(j);
}

int net_node_queue_tensor(net_node_t *n, const uint8_t peer[32], uint32_t quantity, uint64_t round, int codec,
                          const float *x, size_t count, float *residual, int copy, size_t chunk_bytes,
                          int timeout_ms, char *err, size_t errlen) {
    if (!s_sendable(n, peer, err, errlen)) return -1;
    if (!chunk_bytes) chunk_bytes = net_node_chunk_bytes_for(n, peer);
    send_job_t *j = calloc(1, sizeof *j);
    if (!j) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (copy) {
        j->owned = malloc(count * sizeof(float));
        if (!j->owned && count) {
            free(j);
            snprintf(err, errlen, "out of memory for a copy of %zu values", count);
            return -1;
        }
        if (count) memcpy(j->owned, x, count * sizeof(float));
        x = j->owned;
    }
    j->tx = net_xfer_tx_new(codec, x, count, chunk_bytes, residual, quantity, n->xfer_id++, err, errlen);
    if (!j->tx) {
        free(j->owned);
        free(j);
        return -1;
    }
    memcpy(j->peer, peer, 32);
    j->round = round;
    j->quantity = quantity;
    j->deadline = s_now_ms() + timeout_ms;
    send_job_t **tail = &n->jobs;
    while (*tail) tail = &(*tail)->next;
    *tail = j;
    n->njobs++;
    s_pump(n);
    return 0;
}

int net_node_queued(const net_node_t *n) { return n->njobs; }

int net_node_cancel_queued(net_node_t *n, const uint8_t peer[32], uint64_t round) {
    int k = 0;
    for (send_job_t **jp = &n->jobs; *jp;) {
        send_job_t *j = *jp;
        if (j->round == round && !memcmp(j->peer, peer, 32)) {
            *jp = j->next;
            n->njobs--;
            s_job_free(j); // a chunk already handed to libzmq still goes out; the rest never does
            k++;
        } else {
            jp = &j->next;
        }
    }
    return k;
}

// Sends what the queued transfers can: one chunk per transfer per pass (round robin), while the
// socket takes them and the caps allow. Never waits.
static void s_pump(net_node_t *n) {
    if (n->pumping || !n->jobs) return;
    n->pumping = 1;
    char err[300];
    for (int progress = 1; progress;) {
        progress = 0;
        int64_t now = s_now_ms();
        for (send_job_t **jp = &n->jobs; *jp;) {
            send_job_t *j = *jp;
            peer_t *p = s_peer_by_id(n, j->peer);
            const char *drop = NULL;
            if (now > j->deadline) drop = "timed out";
            else if (!p || (!p->dealer && !p->rid_len)) drop = "no connection";
            if (!drop && !s_bucket_ok(&n->up, now)) goto out; // the upload cap holds everything back
            bucket_t *db = s_dest(n, j->peer);
            if (!drop && db && !s_bucket_ok(db, now)) {
                jp = &j->next;
                continue;
            }
            int done = 0;
            if (!drop && !j->buf) {
                send_buf_t *b = s_buf_get(n, net_xfer_tx_stride(j->tx), now);
                if (!b) break; // every buffer is lent to libzmq: later
                long dl = net_xfer_tx_next(j->tx, b->data, j->chb, err, sizeof err);
                if (dl <= 0) {
                    s_buf_release(NULL, b);
                    if (dl < 0) drop = err;
                    else done = 1;
                } else {
                    j->buf = b;
                    j->buf_len = (size_t)dl;
                }
            }
            if (!drop && !done) {
                const void *f[2] = {j->chb, j->buf->data};
                size_t l[2] = {sizeof j->chb, j->buf_len};
                int r = s_send(n, p, NET_MSG_CHUNK, j->round, 2, f, l, 0, j->buf, 1, err, sizeof err);
                if (r == 1) {
                    jp = &j->next; // the socket is full: later
                    continue;
                }
                if (r < 0) {
                    drop = err;
                } else {
                    double bytes = (double)(j->buf_len + sizeof j->chb + NET_HDR_SIZE);
                    j->buf = NULL; // libzmq owns it now
                    if (n->up.rate > 0) n->up.tokens -= bytes;
                    if (db && db->rate > 0) db->tokens -= bytes;
                    progress = 1;
                }
            }
            if (drop || done) {
                if (drop) {
                    char hex[NET_ID_HEX];
                    net_id_to_hex(j->peer, hex);
                    log_warn("net", "transfer of quantity %#x (round %llu) to %.16s abandoned: %s", j->quantity,
                             (unsigned long long)j->round, hex, drop);
                }
                *jp = j->next;
                n->njobs--;
                s_job_free(j);
                continue;
            }
            jp = &j->next;
        }
    }
out:
    n->pumping = 0;
}

int net_node_poll(net_node_t *n, net_event_t *ev, int timeout_ms) {
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : s_now_ms() + timeout_ms;
    for (;;) {
        if (n->ev_head) {
            ev_node_t *e = n->ev_head;
            n->ev_head = e->next;
            if (!n->ev_head) n->ev_tail = NULL;
            *ev = e->ev;
            free(e);
            return 1;
        }
        int64_t left = deadline - s_now_ms();
        if (left < 0) return 0;
        if (s_service(n, (int)(left > 100 ? 100 : left), NULL) < 0) return -1;
        if (n->woken && !n->ev_head) {
            n->woken = 0;
            return 0;
        }
        if (timeout_ms == 0 && !n->ev_head) return 0;
    }
}

void net_node_recycle(net_node_t *n, float *data, size_t count) {
    if (!data) return;
    int slot = 0;
    while (slot < RECV_SPARE_MAX && n->spare[slot]) slot++;
    if (slot == RECV_SPARE_MAX) { // full: the newest replaces the one in slot 0
        slot = 0;
        free(n->spare[0]);
    }
    n->spare[slot] = data;
    n->spare_n[slot] = count;
}

struct net_waker_t {
    void *sock;
};

net_waker_t *net_waker_new(net_node_t *n) {
    net_waker_t *w = calloc(1, sizeof *w);
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://loco-wake-%p", (void *)n);
    if (w) w->sock = zmq_socket(n->ctx, ZMQ_PAIR);
    if (!w || !w->sock || zmq_connect(w->sock, ep) != 0) {
        if (w && w->sock) zmq_close(w->sock);
        free(w);
        return NULL;
    }
    int linger = 0;
    zmq_setsockopt(w->sock, ZMQ_LINGER, &linger, sizeof linger);
    return w;
}

void net_waker_wake(net_waker_t *w) {
    if (w) zmq_send(w->sock, "", 0, ZMQ_DONTWAIT); // a full pipe already holds a wake-up
}

void net_waker_destroy(net_waker_t **w_p) {
    if (!w_p || !*w_p) return;
    zmq_close((*w_p)->sock);
    free(*w_p);
    *w_p = NULL;
}

void net_node_set_round_floor(net_node_t *n, uint64_t round) { n->round_floor = round; }

const net_stats_t *net_node_stats(const net_node_t *n) { return &n->stats; }

int net_node_peer_stats(const net_node_t *n, const uint8_t peer[32], net_stats_t *out) {
    peer_t *p = s_peer_by_id((net_node_t *)n, peer);
    if (!p) return -1;
    *out = p->stats;
    return 0;
}

void net_node_log_stats(const net_node_t *n) {
    for (int i = 0; i < n->npeers; i++) {
        const peer_t *p = n->peers[i];
        uint64_t tx = 0, rx = 0;
        for (int t = 0; t < NET_MSG_TYPE_MAX; t++) tx += p->stats.tx_bytes[t], rx += p->stats.rx_bytes[t];
        log_info("net", "peer %s: sent %llu B, received %llu B, delivered %llu, %s", p->hex, (unsigned long long)tx,
                 (unsigned long long)rx, (unsigned long long)p->stats.delivered,
                 p->admitted ? "admitted" : "not admitted");
    }
    for (int d = 1; d < NET_DROP_COUNT; d++)
        if (n->stats.drops[d])
            log_info("net", "dropped (%s): %llu", net_drop_name(d), (unsigned long long)n->stats.drops[d]);
}

int net_probe(net_node_t *n, const uint8_t peer[32], int pings, size_t bytes, int timeout_ms, net_probe_result_t *r,
              char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    peer_t *p = s_sendable(n, peer, err, errlen);
    if (!p) return -1;
    int64_t deadline = s_now_ms() + timeout_ms;
    double rtts[256];
    if (pings > 256) pings = 256;
    for (int i = 0; i < pings; i++) {
        uint8_t b[8];
        uint64_t tag = n->seq; // unique per ping
        net_put_u64(b, tag);
        double t0 = s_now_s();
        const void *f[1] = {b};
        size_t l[1] = {8};
        if (s_send(n, p, NET_MSG_PING, 0, 1, f, l, deadline, NULL, 0, err, errlen) != 0) return -1;
        while (n->pong_seq != tag) {
            if (s_now_ms() > deadline) {
                snprintf(err, errlen, "probe: no PONG from %s in time", p->hex);
                return -1;
            }
            if (s_service(n, 10, NULL) < 0) return -1;
        }
        rtts[i] = (s_now_s() - t0) * 1e3;
    }
    // insertion sort: pings ≤ 256
    for (int i = 1; i < pings; i++)
        for (int j = i; j > 0 && rtts[j] < rtts[j - 1]; j--) {
            double t = rtts[j];
            rtts[j] = rtts[j - 1], rtts[j - 1] = t;
        }
    if (pings > 0) r->rtt_ms_median = rtts[pings / 2], r->rtt_ms_min = rtts[0];
    if (bytes == 0) return 0;
    size_t chunk = n->o.chunk_bytes < bytes ? n->o.chunk_bytes : bytes;
    if (chunk < 16) chunk = 16;
    uint8_t *buf = calloc(1, chunk);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    uint64_t id = n->seq;
    net_put_u64(buf, id);
    double t0 = s_now_s();
    size_t sent = 0;
    while (sent < bytes) {
        size_t m = bytes - sent < chunk ? bytes - sent : chunk;
        if (m < 16) m = 16;
        net_put_u64(buf + 8, bytes);
        const void *f[1] = {buf};
        size_t l[1] = {m};
        if (s_send(n, p, NET_MSG_PROBE, 0, 1, f, l, deadline, NULL, 0, err, errlen) != 0) {
            free(buf);
            return -1;
        }
        sent += m;
    }
    free(buf);
    while (n->probe_acked != id) {
        if (s_now_ms() > deadline) {
            snprintf(err, errlen, "probe: no acknowledgement from %s in time", p->hex);
            return -1;
        }
        if (s_service(n, 10, NULL) < 0) return -1;
    }
    double dt = s_now_s() - t0;
    r->bytes = sent;
    r->mbytes_per_s = dt > 0 ? sent / dt / 1e6 : 0;
    return 0;
}

int net_node_send_raw(net_node_t *n, const uint8_t peer[32], const void *const *frames, const size_t *lens,
                      int nframes) {
    peer_t *p = s_peer_by_id(n, peer);
    if (!p || (!p->dealer && !p->rid_len)) return -1;
    void *s = p->dealer ? p->dealer : n->router;
    if (!p->dealer && zmq_send(s, p->rid, p->rid_len, ZMQ_SNDMORE) < 0) return -1;
    for (int i = 0; i < nframes; i++)
        if (zmq_send(s, frames[i], lens[i], i + 1 < nframes ? ZMQ_SNDMORE : 0) < 0) return -1;
    n->seq++;
    return 0;
}

uint64_t net_node_next_seq(const net_node_t *n) { return n->seq; }

// ---------------------------------------------------------------------------------------------
// Reachability

int net_tcp_check(const char *endpoint, int timeout_ms, char *why, size_t wlen) {
    char host[256];
    const char *p = strlen(endpoint) >= 6 ? endpoint + 6 : endpoint, *colon = strrchr(p, ':');
    if (strncmp(endpoint, "tcp://", 6) != 0 || !colon || colon == p || (size_t)(colon - p) >= sizeof host) {
        snprintf(why, wlen, "not a tcp://host:port endpoint");
        return -1;
    }
    memcpy(host, p, (size_t)(colon - p));
    host[colon - p] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') { // tcp://[::1]:7700
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int g = getaddrinfo(host, colon + 1, &hints, &ai);
    if (g != 0 || !ai) {
        snprintf(why, wlen, "cannot resolve '%s': %s", host, gai_strerror(g));
        return -1;
    }
    int rc = -1, e = 0;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, wlen, "socket: %s", strerror(errno));
    } else if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
        rc = 0;
    } else if (errno != EINPROGRESS) {
        e = errno;
    } else {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        if (poll(&pfd, 1, timeout_ms) == 1) {
            socklen_t el = sizeof e;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0) e = errno;
            if (e == 0) rc = 0;
        } else {
            if (timeout_ms % 1000 == 0) snprintf(why, wlen, "no answer within %d s", timeout_ms / 1000);
            else snprintf(why, wlen, "no answer within %.1f s", timeout_ms / 1000.0);
        }
    }
    if (rc != 0 && e) {
        if (e == ECONNREFUSED) snprintf(why, wlen, "connection refused (nothing listens on that port)");
        else snprintf(why, wlen, "%s", strerror(e));
    }
    if (fd >= 0) close(fd);
    freeaddrinfo(ai);
    return rc;
}

