// The rate caps' accuracy: achieved against configured, for [limits] upload_rate and for a peer's
// announced download cap, over loopback with CURVE. A client thread queues one tensor of about
// SECONDS × rate bytes and services its node; the server thread services its own until the tensor is
// delivered. Achieved = tensor-chunk bytes on the wire (the client's counters) / wall time from the
// queueing to the delivery. Baseline in the same run: the same transfer uncapped.
//
//   bench_caps [SECONDS]     (default 3)
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "net/node.h"
#include "node/log.h"
#include "optim/codec.h"

static double s_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static net_node_t *s_node(uint8_t seed, int listen) {
    static loco_config_t cfg;
    net_opts_t o;
    net_opts_defaults(&o);
    uint8_t s[32];
    memset(s, seed, 32);
    net_identity_from_seed(&o.identity, s);
    config_defaults(&cfg);
    o.run_desc_len = net_run_describe(&cfg, o.run_desc, sizeof o.run_desc);
    o.incarnation = 1000 + seed;
    snprintf(o.listen, sizeof o.listen, "%s", listen ? "tcp://127.0.0.1:0" : "");
    char err[256];
    net_node_t *n = net_node_new(&o, err, sizeof err);
    if (!n) {
        fprintf(stderr, "bench_caps: %s\n", err);
        exit(1);
    }
    return n;
}

typedef struct {
    net_node_t *server;
    atomic_int got, stop;
    double t_got;
} srv_t;

static void *s_serve(void *arg) {
    srv_t *s = arg;
    while (!atomic_load(&s->stop)) {
        net_event_t ev;
        if (net_node_poll(s->server, &ev, 5) == 1) {
            if (ev.kind == NET_EV_TENSOR) {
                s->t_got = s_now();
                atomic_store(&s->got, 1);
            }
            net_event_clear(&ev);
        }
    }
    return NULL;
}

// One transfer; returns achieved bytes/s on the wire.
static double s_measure(uint64_t up, uint64_t dest, double seconds, double *secs_out) {
    net_node_t *server = s_node(1, 1), *client = s_node(2, 0);
    srv_t s = {.server = server};
    pthread_t th;
    pthread_create(&th, NULL, s_serve, &s);
    char addr[400], err[300];
    net_node_address(server, addr, sizeof addr);
    net_node_connect(client, addr, err, sizeof err);
    if (net_node_handshake(client, net_node_id(server), 5000, err, sizeof err) != 0) {
        fprintf(stderr, "bench_caps: %s\n", err);
        exit(1);
    }
    net_node_set_upload_rate(client, up);
    if (dest) net_node_set_peer_rate(client, net_node_id(server), dest);
    double rate = (double)(up ? up : dest ? dest : 200e6);
    size_t n = (size_t)(rate * seconds / 4);
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)(i % 977) * 1e-3f;
    uint64_t b0 = net_node_stats(client)->tx_bytes[NET_MSG_CHUNK];
    double t0 = s_now();
    if (net_node_queue_tensor(client, net_node_id(server), 1, 0, CODEC_FP32, x, n, NULL, 0, 0, 600000, err, sizeof err) != 0) {
        fprintf(stderr, "bench_caps: %s\n", err);
        exit(1);
    }
    while (!atomic_load(&s.got)) {
        net_event_t ev;
        if (net_node_poll(client, &ev, 2) == 1) net_event_clear(&ev);
    }
    double dt = s.t_got - t0;
    uint64_t bytes = net_node_stats(client)->tx_bytes[NET_MSG_CHUNK] - b0;
    atomic_store(&s.stop, 1);
    pthread_join(th, NULL);
    net_node_destroy(&client);
    net_node_destroy(&server);
    free(x);
    *secs_out = dt;
    return (double)bytes / dt;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 3.0;
    log_set_level("warn");
    double dt;
    double base = s_measure(0, 0, 0.5, &dt);
    printf("uncapped baseline: %.1f MB/s (%.2f s)\n", base / 1e6, dt);
    printf("%-26s %12s %12s %8s %8s\n", "cap", "configured", "achieved", "ratio", "seconds");
    const uint64_t rates[] = {1000000, 4000000, 16000000};
    for (int i = 0; i < 3; i++) {
        double a = s_measure(rates[i], 0, seconds, &dt);
        printf("%-26s %9.2f MB/s %9.2f MB/s %8.3f %8.2f\n", "[limits] upload_rate", rates[i] / 1e6, a / 1e6, a / (double)rates[i], dt);
    }
    for (int i = 0; i < 3; i++) {
        double a = s_measure(0, rates[i], seconds, &dt);
        printf("%-26s %9.2f MB/s %9.2f MB/s %8.3f %8.2f\n", "peer's download_rate", rates[i] / 1e6, a / 1e6, a / (double)rates[i], dt);
    }
    return 0;
}
