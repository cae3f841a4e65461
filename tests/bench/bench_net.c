// Transport and codec benchmark (issue 3). Budget: about a minute on 2 cores.
//
//   build/<dir>/tests/bench/bench_net [MiB=256] [repeats=3]
//   env: BENCH_NODE_ONLY=1 (only the two net_node arms), BENCH_DEBUG=1 (per net_node run: when the
//        sender returned, when the receiver had the verified tensor, CPU seconds of each side),
//        BENCH_IO_THREADS=N (libzmq I/O threads per net_node; default 2), BENCH_HWM=N (messages;
//        default 16), BENCH_CHUNK_KIB=N (chunk size; default 4096)
//
// Loopback throughput of one tensor (fp32 codec, 4 MiB chunks) between two processes:
//   curve  net_node with CURVE (what peers use): streamed encode+SHA-256 per chunk, receiver
//          hashes and decodes each chunk on arrival, verified before delivery; each run sends
//          twice between the same nodes: cold (fresh buffers) and warm (reused, net_node_recycle)
//   plain  net_node with CURVE off (benchmark-only option)
//   tcp    a raw TCP socket, send/recv of the same bytes
//   raw libzmq CURVE / plain: a PUSH/PULL pair, 4 MiB messages sent zero-copy, no loco framing,
//          no hashing (x2: two connections and two I/O threads per process)
// and, in one process on the same data, libsodium crypto_box_easy_afternm + open_easy_afternm
// (precomputed key, 4 MiB messages): what the cipher alone can do on this machine, and the same plus
// SHA-256 of every byte at both ends (the digest loco must compute). CURVE does the cipher work
// split across the sender's and receiver's I/O threads, so the target is curve ≥ 80% of the
// encrypt+decrypt rate. Codecs: encode and decode GB/s (of fp32 input) vs memcpy.
// Every figure is the median of `repeats` runs, reported with its baseline and ratio.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "model/rng.h"
#include "net/fingerprint.h"
#include "net/node.h"
#include "optim/codec.h"

static double s_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int s_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double s_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, s_cmp);
    return v[n / 2];
}

static void s_opts(net_opts_t *o, uint8_t seed, int plaintext) {
    net_opts_defaults(o);
    uint8_t s[32];
    memset(s, seed, 32);
    net_identity_from_seed(&o->identity, s);
    loco_config_t c;
    config_defaults(&c);
    o->run_desc_len = net_run_describe(&c, o->run_desc, sizeof o->run_desc);
    o->plaintext = plaintext;
    o->limits.max_tensor = 8ull << 30;
    if (getenv("BENCH_IO_THREADS")) o->io_threads = atoi(getenv("BENCH_IO_THREADS"));
    if (getenv("BENCH_HWM")) o->hwm = atoi(getenv("BENCH_HWM"));
    if (getenv("BENCH_CHUNK_KIB")) o->chunk_bytes = (size_t)atoi(getenv("BENCH_CHUNK_KIB")) << 10;
}

static double s_cpu(int who) {
    struct rusage ru;
    getrusage(who, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

// Two net_node transfers of n floats in a row between the same two nodes: the first cold (fresh
// processes: send buffers and the destination fault their pages in), the second warm (send buffers
// reused, the first tensor handed back with net_node_recycle), as in a training loop that sends
// the same tensor every round. Each MB/s is of fp32 payload until the receiver holds the verified
// tensor; -1 on failure.
static void s_node_arm(const float *x, size_t n, int plaintext, double *cold, double *warm) {
    double cs0 = s_cpu(RUSAGE_SELF), cc0 = s_cpu(RUSAGE_CHILDREN);
    *cold = *warm = -1;
    int fd[2];
    if (pipe(fd) != 0) return;
    pid_t pid = fork();
    if (pid == 0) { // receiver
        net_opts_t o;
        s_opts(&o, 1, plaintext);
        snprintf(o.listen, sizeof o.listen, "tcp://127.0.0.1:0");
        char err[256], addr[400];
        net_node_t *nd = net_node_new(&o, err, sizeof err);
        if (!nd) _exit(1);
        net_node_address(nd, addr, sizeof addr);
        if (write(fd[1], addr, sizeof addr) != sizeof addr) _exit(1);
        for (int k = 0, got = 0; k < 1200 && got < 2; k++) {
            net_event_t ev;
            if (net_node_poll(nd, &ev, 100) == 1) {
                if (ev.kind == NET_EV_TENSOR) {
                    double t = s_now();
                    if (write(fd[1], &t, sizeof t) != sizeof t) _exit(1);
                    net_node_recycle(nd, ev.data, ev.n);
                    ev.data = NULL;
                    got++;
                }
                net_event_clear(&ev);
            }
        }
        net_node_destroy(&nd);
        _exit(0);
    }
    char addr[400];
    if (read(fd[0], addr, sizeof addr) != sizeof addr) return;
    net_opts_t o;
    s_opts(&o, 2, plaintext);
    char err[256];
    net_node_t *nd = net_node_new(&o, err, sizeof err);
    uint8_t pid_id[32];
    char ep[300];
    net_peer_addr_parse(addr, pid_id, ep, sizeof ep, err, sizeof err);
    if (net_node_connect(nd, addr, err, sizeof err) != 0 || net_node_handshake(nd, pid_id, 5000, err, sizeof err) != 0) {
        fprintf(stderr, "bench: %s\n", err);
        return;
    }
    double rate[2] = {-1, -1};
    for (int round = 0; round < 2; round++) {
        double t0 = s_now();
        if (net_node_send_tensor(nd, pid_id, 1, (uint64_t)round, CODEC_FP32, x, n, NULL, 120000, err, sizeof err) != 0)
            fprintf(stderr, "bench: %s\n", err);
        double ts = s_now();
        // Keep servicing (the receiver needs nothing from us, but our queue must drain).
        double t1 = 0;
        for (int k = 0; k < 1200 && t1 == 0; k++) {
            net_event_t ev;
            if (net_node_poll(nd, &ev, 1) == 1) net_event_clear(&ev);
            struct timeval tv = {0, 0};
            fd_set rs;
            FD_ZERO(&rs);
            FD_SET(fd[0], &rs);
            if (select(fd[0] + 1, &rs, NULL, NULL, &tv) == 1 && read(fd[0], &t1, sizeof t1) != sizeof t1) t1 = -1;
        }
        if (t1 > t0) rate[round] = n * 4.0 / (t1 - t0) / 1e6;
        if (getenv("BENCH_DEBUG"))
            fprintf(stderr, "node arm plaintext=%d %s: send returned %.3f s, received %.3f s\n", plaintext,
                    round ? "warm" : "cold", ts - t0, t1 - t0);
    }
    waitpid(pid, NULL, 0);
    net_node_destroy(&nd);
    close(fd[0]), close(fd[1]);
    if (getenv("BENCH_DEBUG"))
        fprintf(stderr, "node arm plaintext=%d: cpu sender %.3f s receiver %.3f s (both transfers, setup included)\n",
                plaintext, s_cpu(RUSAGE_SELF) - cs0, s_cpu(RUSAGE_CHILDREN) - cc0);
    *cold = rate[0], *warm = rate[1];
}

static double s_tcp_arm(const float *x, size_t n) {
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1) || getsockname(ls, (struct sockaddr *)&a, &al))
        return -1;
    size_t bytes = n * 4;
    int fd[2];
    if (pipe(fd) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        int c = accept(ls, NULL, NULL);
        char *buf = malloc(4 << 20);
        size_t got = 0;
        while (got < bytes) {
            ssize_t r = recv(c, buf, 4 << 20, 0);
            if (r <= 0) _exit(1);
            got += (size_t)r;
        }
        double t = s_now();
        if (write(fd[1], &t, sizeof t) != sizeof t) _exit(1);
        _exit(0);
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) return -1;
    double t0 = s_now();
    const char *p = (const char *)x;
    for (size_t sent = 0; sent < bytes;) {
        ssize_t w = send(s, p + sent, bytes - sent < (4u << 20) ? bytes - sent : (4u << 20), 0);
        if (w <= 0) return -1;
        sent += (size_t)w;
    }
    double t1;
    if (read(fd[0], &t1, sizeof t1) != sizeof t1) t1 = 0;
    waitpid(pid, NULL, 0);
    close(s), close(ls), close(fd[0]), close(fd[1]);
    return t1 > t0 ? bytes / (t1 - t0) / 1e6 : -1;
}

// Raw libzmq, no loco framing: a PUSH/PULL pair in two processes, 4 MiB messages sent zero-copy
// from the tensor, CURVE on (curve = 1) or off; the receiver only counts bytes. What libzmq itself
// can move through one connection on this machine (its I/O threads do the cipher and the copies).
static void s_nofree(void *d, void *h) { (void)d, (void)h; }
static double s_zmq_arm(const float *x, size_t n, int curve, int io_threads, int conns) {
    char spk[41], ssk[41], cpk[41], csk[41];
    zmq_curve_keypair(spk, ssk);
    zmq_curve_keypair(cpk, csk);
    size_t bytes = n * 4, msg = 4u << 20;
    int fd[2];
    if (pipe(fd) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) { // receiver (CURVE server)
        void *ctx = zmq_ctx_new();
        zmq_ctx_set(ctx, ZMQ_IO_THREADS, io_threads);
        void *s = zmq_socket(ctx, ZMQ_PULL);
        int one = 1;
        if (curve) {
            zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof one);
            zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, ssk, 40);
        }
        char ep[128];
        size_t el = sizeof ep;
        if (zmq_bind(s, "tcp://127.0.0.1:*") != 0) _exit(1);
        zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &el);
        if (write(fd[1], ep, sizeof ep) != sizeof ep) _exit(1);
        size_t got = 0;
        while (got < bytes) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, s, 0) < 0) _exit(1);
            got += zmq_msg_size(&m);
            zmq_msg_close(&m);
        }
        double t = s_now();
        if (write(fd[1], &t, sizeof t) != sizeof t) _exit(1);
        zmq_close(s);
        zmq_ctx_term(ctx);
        _exit(0);
    }
    char ep[128];
    if (read(fd[0], ep, sizeof ep) != sizeof ep) return -1;
    void *ctx = zmq_ctx_new();
    zmq_ctx_set(ctx, ZMQ_IO_THREADS, io_threads);
    void *s = zmq_socket(ctx, ZMQ_PUSH);
    if (curve) {
        zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, spk, 40);
        zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, cpk, 40);
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, csk, 40);
    }
    int hwm = 16;
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    for (int c = 0; c < conns; c++) zmq_connect(s, ep);
    // Wait for the connection (and the CURVE handshake) before the clock starts.
    zmq_pollitem_t it = {s, 0, ZMQ_POLLOUT, 0};
    zmq_poll(&it, 1, 5000);
    usleep(100000);
    double t0 = s_now();
    for (size_t off = 0; off < bytes; off += msg) {
        size_t l = bytes - off < msg ? bytes - off : msg;
        zmq_msg_t m;
        zmq_msg_init_data(&m, (char *)x + off, l, s_nofree, NULL);
        if (zmq_msg_send(&m, s, 0) < 0) return -1;
    }
    double t1;
    if (read(fd[0], &t1, sizeof t1) != sizeof t1) t1 = 0;
    waitpid(pid, NULL, 0);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(s);
    zmq_ctx_term(ctx);
    close(fd[0]), close(fd[1]);
    return t1 > t0 ? bytes / (t1 - t0) / 1e6 : -1;
}

// crypto_box with a precomputed key, 4 MiB messages: encrypt + decrypt every byte once.
static double s_box_arm(const float *x, size_t n, int with_sha) {
    unsigned char pk1[32], sk1[32], pk2[32], sk2[32], k[crypto_box_BEFORENMBYTES], nonce[crypto_box_NONCEBYTES] = {0};
    crypto_box_keypair(pk1, sk1);
    crypto_box_keypair(pk2, sk2);
    if (crypto_box_beforenm(k, pk2, sk1) != 0) return -1;
    size_t msg = 4 << 20, bytes = n * 4;
    unsigned char *c = malloc(msg + crypto_box_MACBYTES), *m = malloc(msg);
    double t0 = s_now();
    for (size_t off = 0; off < bytes; off += msg) {
        size_t l = bytes - off < msg ? bytes - off : msg;
        uint8_t d1[32], d2[32];
        if (with_sha) net_sha256((const unsigned char *)x + off, l, d1);
        crypto_box_easy_afternm(c, (const unsigned char *)x + off, l, nonce, k);
        if (crypto_box_open_easy_afternm(m, c, l + crypto_box_MACBYTES, nonce, k) != 0) return -1;
        if (with_sha) {
            net_sha256(m, l, d2);
            if (memcmp(d1, d2, 32) != 0) return -1;
        }
        sodium_increment(nonce, sizeof nonce);
    }
    double dt = s_now() - t0;
    free(c), free(m);
    return bytes / dt / 1e6;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? (size_t)atoi(argv[1]) : 256;
    int reps = argc > 2 ? atoi(argv[2]) : 3;
    if (reps < 1 || reps > 15 || mib < 1) return 2;
    if (sodium_init() < 0) return 1;
    signal(SIGPIPE, SIG_IGN);
    size_t n = mib << 18;
    float *x = malloc(n * 4);
    rng_t r;
    rng_seed(&r, 1);
    for (size_t i = 0; i < n; i++) x[i] = 0.01f * rng_normal(&r);
    printf("bench_net: %zu MiB fp32 tensor, 4 MiB chunks, loopback, median of %d\n", mib, reps);
    double v[8][15] = {{0}}, w[2][15] = {{0}};
    for (int k = 0; k < reps; k++) {
        s_node_arm(x, n, 0, &v[0][k], &w[0][k]);
        s_node_arm(x, n, 1, &v[1][k], &w[1][k]);
        if (getenv("BENCH_NODE_ONLY")) continue; // profiling: the two net_node arms alone
        v[2][k] = s_tcp_arm(x, n);
        v[3][k] = s_box_arm(x, n, 0);
        v[7][k] = s_box_arm(x, n, 1);
        v[4][k] = s_zmq_arm(x, n, 1, 1, 1);
        v[6][k] = s_zmq_arm(x, n, 1, 2, 2);
        v[5][k] = s_zmq_arm(x, n, 0, 1, 1);
    }
    double curve = s_median(v[0], reps), plain = s_median(v[1], reps), tcp = s_median(v[2], reps),
           box = s_median(v[3], reps), zc = s_median(v[4], reps), zp = s_median(v[5], reps),
           boxsha = s_median(v[7], reps), wcurve = s_median(w[0], reps), wplain = s_median(w[1], reps);
    printf("  (cold: first transfer between fresh nodes; warm: the next one, buffers reused)\n");
    printf("  net_node CURVE       %8.0f MB/s cold  %8.0f MB/s warm\n", curve, wcurve);
    printf("  net_node plaintext   %8.0f MB/s cold  %8.0f MB/s warm   CURVE/plain %.2f cold %.2f warm\n", plain,
           wplain, curve / plain, wcurve / wplain);
    printf("  raw TCP              %8.0f MB/s   CURVE/TCP %.2f  plain/TCP %.2f (warm)\n", tcp, wcurve / tcp, wplain / tcp);
    printf("  crypto_box enc+dec   %8.0f MB/s   CURVE/box %.2f cold %.2f warm  (target >= 0.80)\n", box, curve / box,
           wcurve / box);
    printf("  box + 2x SHA-256     %8.0f MB/s   CURVE/(box+sha) %.2f warm  (the cipher plus the digest both ends "
           "compute, one core)\n", boxsha, wcurve / boxsha);
    printf("  raw libzmq CURVE     %8.0f MB/s   zmqCURVE/box %.2f  CURVE/zmqCURVE %.2f warm\n", zc, zc / box, wcurve / zc);
    printf("  raw libzmq CURVE x2  %8.0f MB/s   (2 connections, 2 I/O threads per process)\n", s_median(v[6], reps));
    printf("  raw libzmq plain     %8.0f MB/s   plain/zmqplain %.2f warm\n", zp, wplain / zp);

    if (getenv("BENCH_NODE_ONLY")) return 0;
    // Codecs vs memcpy on the same data (chunks of 4 MiB encoded, as the transport does).
    float *y = malloc(n * 4);
    size_t enc_cap = codec_encoded_size(CODEC_FP32, n) + (1u << 20); // fp32 is the largest encoding
    uint8_t *enc = malloc(enc_cap);
    memset(y, 0, n * 4); // fault the pages in first: measure copying, not the kernel
    memset(enc, 0, enc_cap);
    double mc[15];
    for (int k = 0; k < reps; k++) {
        double t0 = s_now();
        memcpy(y, x, n * 4);
        mc[k] = n * 4 / (s_now() - t0) / 1e9;
    }
    double mcm = s_median(mc, reps);
    printf("  memcpy               %8.2f GB/s\n", mcm);
    for (int id = 0; id < CODEC_COUNT; id++) {
        double e[15], d[15];
        size_t per = codec_chunk_elems(id, 4u << 20), stride = codec_encoded_size(id, per);
        char err[128];
        for (int k = 0; k < reps; k++) {
            double t0 = s_now();
            for (size_t lo = 0, c = 0; lo < n; lo += per, c++) {
                size_t m = n - lo < per ? n - lo : per;
                codec_encode(id, x + lo, m, enc + c * stride, NULL);
            }
            double t1 = s_now();
            for (size_t lo = 0, c = 0; lo < n; lo += per, c++) {
                size_t m = n - lo < per ? n - lo : per;
                codec_decode(id, enc + c * stride, codec_encoded_size(id, m), m, y + lo, err, sizeof err);
            }
            double t2 = s_now();
            e[k] = n * 4 / (t1 - t0) / 1e9, d[k] = n * 4 / (t2 - t1) / 1e9;
        }
        double em = s_median(e, reps), dm = s_median(d, reps);
        printf("  codec %-4s encode %6.2f GB/s (%.0f%% of memcpy)  decode %6.2f GB/s (%.0f%%)\n", codec_name(id), em,
               100 * em / mcm, dm, 100 * dm / mcm);
    }
    free(x), free(y), free(enc);
    return 0;
}
