// Queued tensor transfers and rate caps (net_node_queue_tensor, net_node_set_upload_rate,
// net_node_set_peer_rate) between two live nodes on 127.0.0.1, driven in turn by this one thread:
//   - a message sent after a large capped transfer was queued arrives before the transfer ends
//     (gossip is never stuck behind a tensor on a slow link)
//   - a transfer sent from a private copy is intact although the caller rewrote its buffer at once
//   - per-destination pacing (the receiver's announced download cap) holds the same way
//   - chunks shrink under an upload cap
// Counters and event order only: no timing assertions (the caps' accuracy is in bench_caps).
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/node.h"
#include "optim/codec.h"

static loco_config_t s_cfg;

static net_node_t *s_node_chunk(uint8_t seed, int listen, size_t chunk) {
    net_opts_t o;
    net_opts_defaults(&o);
    if (chunk) o.chunk_bytes = chunk;
    uint8_t s[32];
    memset(s, seed, 32);
    cr_assert_eq(net_identity_from_seed(&o.identity, s), 0);
    config_defaults(&s_cfg);
    o.run_desc_len = net_run_describe(&s_cfg, o.run_desc, sizeof o.run_desc);
    o.incarnation = 1000 + seed;
    snprintf(o.listen, sizeof o.listen, "%s", listen ? "tcp://127.0.0.1:0" : "");
    char err[256];
    net_node_t *n = net_node_new(&o, err, sizeof err);
    cr_assert_not_null(n, "%s", err);
    return n;
}

static net_node_t *s_node(uint8_t seed, int listen) { return s_node_chunk(seed, listen, 0); }

static void s_connect(net_node_t *client, net_node_t *server) {
    char addr[400], why[300];
    net_node_address(server, addr, sizeof addr);
    cr_assert_eq(net_node_connect(client, addr, why, sizeof why), 0, "%s", why);
    for (int i = 0; i < 200; i++) {
        net_event_t ev;
        while (net_node_poll(server, &ev, 5) == 1) net_event_clear(&ev);
        if (net_node_handshake(client, net_node_id(server), 10, why, sizeof why) == 0) return;
    }
    cr_assert_fail("no handshake: %s", why);
}

// Drives both nodes until the server delivered a tensor (or max_iter passes). Records the order of
// what the server delivered: 'm' message, 't' tensor.
static float *s_run(net_node_t *client, net_node_t *server, char *order, size_t cap, size_t *n_out) {
    size_t k = 0;
    float *got = NULL;
    for (int it = 0; it < 20000 && !got; it++) {
        net_event_t ev;
        while (net_node_poll(client, &ev, 1) == 1) net_event_clear(&ev);
        while (!got && net_node_poll(server, &ev, 1) == 1) {
            if (ev.kind == NET_EV_MESSAGE && k + 1 < cap) order[k++] = 'm';
            if (ev.kind == NET_EV_TENSOR) {
                if (k + 1 < cap) order[k++] = 't';
                got = ev.data;
                *n_out = ev.n;
                ev.data = NULL;
            }
            net_event_clear(&ev);
        }
    }
    order[k] = '\0';
    return got;
}

static void s_fill(float *x, size_t n, float base) {
    for (size_t i = 0; i < n; i++) x[i] = base + (float)(i % 1000) * 1e-3f;
}

Test(queue, message_overtakes_a_capped_transfer_and_the_copy_is_intact, .timeout = 60) {
    net_node_t *server = s_node(1, 1), *client = s_node(2, 0);
    s_connect(client, server);
    net_node_set_upload_rate(client, 1 << 20); // 1 MiB/s: the 2 MiB tensor takes about 2 s
    cr_assert_lt(net_node_chunk_bytes(client), 4u << 20, "chunks shrink under a cap");
    size_t n = 512 * 1024;
    float *x = malloc(n * sizeof(float)), *want = malloc(n * sizeof(float));
    s_fill(x, n, 1.0f);
    memcpy(want, x, n * sizeof(float));
    char err[256];
    cr_assert_eq(net_node_queue_tensor(client, net_node_id(server), 7, 0, CODEC_FP32, x, n, NULL, 1, 0, 60000, err, sizeof err),
                 0, "%s", err);
    s_fill(x, n, -5.0f); // the caller reuses its buffer at once
    cr_assert_eq(net_node_queued(client), 1);
    cr_assert_eq(net_node_send(client, net_node_id(server), NET_MSG_USER, 0, "ping", 4, 1000, err, sizeof err), 0);
    char order[16];
    size_t got_n = 0;
    float *got = s_run(client, server, order, sizeof order, &got_n);
    cr_assert_not_null(got, "the tensor never arrived");
    cr_assert_str_eq(order, "mt", "the message must arrive before the capped tensor completes (order %s)", order);
    cr_assert_eq(got_n, n);
    cr_assert_eq(memcmp(got, want, n * sizeof(float)), 0, "the copy sent is the buffer as queued");
    net_event_t ev;
    for (int i = 0; i < 100 && net_node_queued(client); i++)
        while (net_node_poll(client, &ev, 1) == 1) net_event_clear(&ev);
    cr_assert_eq(net_node_queued(client), 0, "a finished transfer leaves the queue");
    free(got);
    free(x);
    free(want);
    net_node_destroy(&client);
    net_node_destroy(&server);
}

Test(queue, per_destination_cap_paces_like_the_upload_cap, .timeout = 60) {
    // Per-destination caps never change the chunk size (a DiLoCo owner sends the same encoding to every
    // member): pacing is per chunk, so use 128 KiB chunks here.
    net_node_t *server = s_node(3, 1), *client = s_node_chunk(4, 0, 128 << 10);
    s_connect(client, server);
    net_node_set_peer_rate(client, net_node_id(server), 1 << 20); // the server announced 1 MiB/s down
    size_t n = 512 * 1024;
    float *x = malloc(n * sizeof(float));
    s_fill(x, n, 2.0f);
    char err[256];
    cr_assert_eq(net_node_queue_tensor(client, net_node_id(server), 8, 0, CODEC_INT8, x, n, NULL, 1, 0, 60000, err, sizeof err),
                 0, "%s", err);
    // int8 is a quarter of the bytes: 0.5 MiB at 1 MiB/s, still paced over several chunks.
    cr_assert_eq(net_node_send(client, net_node_id(server), NET_MSG_USER, 0, "ping", 4, 1000, err, sizeof err), 0);
    char order[16];
    size_t got_n = 0;
    float *got = s_run(client, server, order, sizeof order, &got_n);
    cr_assert_not_null(got);
    cr_assert_str_eq(order, "mt", "order %s", order);
    free(got);
    free(x);
    net_node_destroy(&client);
    net_node_destroy(&server);
}

Test(queue, uncapped_transfers_interleave_and_all_arrive, .timeout = 60) {
    net_node_t *server = s_node(5, 1), *client = s_node(6, 0);
    s_connect(client, server);
    size_t n = 300000;
    float *x = malloc(n * sizeof(float));
    char err[256];
    for (int k = 0; k < 3; k++) {
        s_fill(x, n, (float)k);
        cr_assert_eq(net_node_queue_tensor(client, net_node_id(server), (uint32_t)k, 0, CODEC_BF16, x, n, NULL, 1, 0, 60000,
                                           err, sizeof err), 0, "%s", err);
    }
    int seen[3] = {0};
    for (int it = 0; it < 20000 && !(seen[0] && seen[1] && seen[2]); it++) {
        net_event_t ev;
        while (net_node_poll(client, &ev, 1) == 1) net_event_clear(&ev);
        while (net_node_poll(server, &ev, 1) == 1) {
            if (ev.kind == NET_EV_TENSOR && ev.quantity < 3) {
                seen[ev.quantity] = 1;
                cr_assert_float_eq(ev.data[0], (float)ev.quantity, 1e-2);
            }
            net_event_clear(&ev);
        }
    }
    cr_assert(seen[0] && seen[1] && seen[2]);
    free(x);
    net_node_destroy(&client);
    net_node_destroy(&server);
}
