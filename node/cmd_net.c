// loco keygen, loco admit, and the transport test helper loco net-test.
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/rng.h"
#include "net/fingerprint.h"
#include "net/identity.h"
#include "net/node.h"
#include "net/ticket.h"
#include "node/cli.h"
#include "node/log.h"
#include "optim/codec.h"

int cmd_keygen(int argc, char **argv) {
    const char *out = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            printf("usage: loco keygen --out FILE\n"
                   "  Creates an Ed25519 identity: FILE (secret, mode 0600; never share it) and FILE.pub.\n"
                   "  Prints the peer id (64 hex digits) that other peers' configs name in [run] allow,\n"
                   "  [run] deny, [run] authority and peer addresses ID@tcp://host:port.\n");
            return 0;
        } else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
        } else {
            return cli_usage_error("keygen", "unknown argument '%s'", argv[i]);
        }
    }
    if (!out) return cli_usage_error("keygen", "--out FILE is required");
    net_identity_t id;
    char err[512], hex[NET_ID_HEX];
    if (net_identity_generate(&id) != 0) {
        fprintf(stderr, "loco keygen: libsodium failed to initialise\n");
        return 1;
    }
    int rc = net_identity_save(&id, out, err, sizeof err);
    net_id_to_hex(id.pk, hex);
    net_identity_wipe(&id);
    if (rc != 0) {
        fprintf(stderr, "loco keygen: %s\n", err);
        return 1;
    }
    printf("%s\n", hex);
    return 0;
}

int cmd_admit(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (argv[i] && !strcmp(argv[i], "--help")) {
            printf("usage: loco admit -c RUN.ini --authority-key FILE --id PEER_ID [--expires DATE]\n"
                   "  Prints a ticket admitting PEER_ID to the run of RUN.ini (bound to the run's\n"
                   "  fingerprint), signed with the run authority's key. The peer names it in\n"
                   "  [node] ticket (the text, or a file holding it); the run's nodes name the\n"
                   "  authority's id in [run] authority and use admission = ticket.\n"
                   "  DATE: YYYY-MM-DD (valid through that day, UTC), YYYY-MM-DDTHH:MM[:SS]Z,\n"
                   "  +Nd / +Nh / +Ns from now, or never (the default).\n");
            return 0;
        }
    loco_config_t cfg;
    int rc = cli_load_config(&cfg, argc, argv, 1);
    if (rc) return rc;
    const char *keyfile = NULL, *idhex = NULL, *expires = "never";
    for (int i = 0; i < argc; i++) {
        if (!argv[i]) continue;
        if (!strcmp(argv[i], "--authority-key") && i + 1 < argc) keyfile = argv[++i];
        else if (!strcmp(argv[i], "--id") && i + 1 < argc) idhex = argv[++i];
        else if (!strcmp(argv[i], "--expires") && i + 1 < argc) expires = argv[++i];
        else return cli_usage_error("admit", "unknown argument '%s'", argv[i]);
    }
    if (!keyfile || !idhex) return cli_usage_error("admit", "--authority-key FILE and --id PEER_ID are required");
    net_ticket_t t;
    memset(&t, 0, sizeof t);
    uint8_t curve[32];
    if (net_id_from_hex(idhex, t.peer) != 0 || net_id_to_curve(t.peer, curve) != 0)
        return cli_usage_error("admit", "--id %s: not a peer id (64 hex digits of an Ed25519 key)", idhex);
    uint64_t now = (uint64_t)time(NULL);
    if (net_ticket_parse_expiry(expires, now, &t.expires) != 0)
        return cli_usage_error("admit", "--expires %s: expected YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS]Z, +Nd, +Nh, +Ns or never",
                               expires);
    net_identity_t auth;
    char err[512];
    if (net_identity_load(&auth, keyfile, err, sizeof err) != 0) {
        fprintf(stderr, "loco admit: %s\n", err);
        return 1;
    }
    if (cfg.authority[0]) {
        uint8_t want[32];
        if (net_id_from_hex(cfg.authority, want) != 0 || memcmp(want, auth.pk, 32) != 0) {
            net_identity_wipe(&auth);
            fprintf(stderr, "loco admit: %s is not the run authority named in [run] authority of %s\n", keyfile,
                    cfg.source);
            return 2;
        }
    }
    net_run_fingerprint(&cfg, t.run_fp);
    t.issued = now;
    net_ticket_sign(&t, &auth);
    net_identity_wipe(&auth);
    char text[NET_TICKET_TEXT];
    net_ticket_to_text(&t, text);
    printf("%s\n", text);
    return 0;
}

// --- net-test: a helper for tests/integration/test_net_*.sh --------------------------------------

// The reference tensor of a transfer: N(0, 0.01²) from the quantity as seed, so the receiver can
// check what arrived without a second copy travelling.
static float *s_reference(uint32_t quantity, size_t n) {
    float *x = malloc(n * sizeof *x);
    if (!x) return NULL;
    rng_t r;
    rng_seed(&r, 0x6c6f636f00000000ull ^ quantity);
    for (size_t i = 0; i < n; i++) x[i] = 0.01f * rng_normal(&r);
    return x;
}

// Largest error allowed for a codec on the reference data (ALGORITHMS.md): fp32 exact; bf16 2^-8
// relative; int8 one bin (6σ/256) inside ±2.9σ; int4 half a step of its block (absmax/7).
static int s_check(int codec, const float *ref, const float *got, size_t n, double *maxerr, double *bound) {
    *maxerr = 0;
    *bound = 0;
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)ref[i] * ref[i];
    double sigma = sqrt(ss / (double)(n - 1));
    int ok = 1;
    for (size_t b = 0; b < n; b += 64) {
        size_t hi = b + 64 < n ? b + 64 : n;
        float amax = 0;
        for (size_t i = b; i < hi; i++) amax = fmaxf(amax, fabsf(ref[i]));
        for (size_t i = b; i < hi; i++) {
            double e = fabs((double)got[i] - ref[i]), lim;
            switch (codec) {
            case CODEC_FP32: lim = 0; break;
            case CODEC_BF16: lim = fabs(ref[i]) / 256; break;
            case CODEC_INT8: lim = fabs(ref[i]) < 2.9 * sigma ? 6 * sigma / 256 * 1.01 : INFINITY; break;
            default: lim = 0.5 * amax / 7 * 1.002 + 1e-9; break;
            }
            if (isfinite(lim) && e > *maxerr) *maxerr = e;
            if (isfinite(lim) && lim > *bound) *bound = lim;
            if (e > lim) ok = 0;
        }
    }
    return ok;
}

static int s_net_serve(const loco_config_t *cfg, int expect, int timeout_s) {
    net_opts_t o;
    char err[512];
    if (net_opts_from_config(&o, cfg, err, sizeof err) != 0) {
        fprintf(stderr, "loco net-test: %s\n", err);
        return 2;
    }
    net_node_t *n = net_node_new(&o, err, sizeof err);
    net_identity_wipe(&o.identity);
    if (!n) {
        fprintf(stderr, "loco net-test: %s\n", err);
        return 1;
    }
    char addr[400];
    net_node_address(n, addr, sizeof addr);
    printf("listening %s\n", addr);
    fflush(stdout);
    int got = 0, bad = 0;
    time_t end = time(NULL) + timeout_s;
    while (got < expect && time(NULL) < end) {
        net_event_t ev;
        int r = net_node_poll(n, &ev, 200);
        if (r < 0) break;
        if (r == 0) continue;
        char hex[NET_ID_HEX];
        net_id_to_hex(ev.peer, hex);
        if (ev.kind == NET_EV_TENSOR) {
            float *ref = s_reference(ev.quantity, ev.n);
            double maxerr = 0, bound = 0;
            int ok = ref && s_check(ev.codec, ref, ev.data, ev.n, &maxerr, &bound);
            printf("tensor from %.16s quantity=%u n=%zu codec=%s maxerr=%.3g bound=%.3g ok=%d\n", hex, ev.quantity,
                   ev.n, codec_name(ev.codec), maxerr, bound, ok);
            fflush(stdout);
            bad += !ok;
            got++;
            free(ref);
        } else if (ev.kind == NET_EV_MESSAGE) {
            printf("message from %.16s type=%u len=%zu\n", hex, ev.type, ev.len);
            got++;
        } else if (ev.kind == NET_EV_ADMITTED) {
            printf("admitted %.16s\n", hex);
        }
        fflush(stdout);
        net_event_clear(&ev);
    }
    // Keep answering for a moment: the sender's closing ping must get its PONG.
    for (time_t linger = time(NULL) + 1; time(NULL) <= linger;) {
        net_event_t ev;
        if (net_node_poll(n, &ev, 100) == 1) net_event_clear(&ev);
    }
    const net_stats_t *s = net_node_stats(n);
    printf("stats delivered=%" PRIu64, s->delivered);
    for (int d = 1; d < NET_DROP_COUNT; d++)
        if (s->drops[d]) printf(" drop[%s]=%" PRIu64, net_drop_name(d), s->drops[d]);
    printf(" rx_chunk_bytes=%" PRIu64 "\n", s->rx_bytes[NET_MSG_CHUNK]);
    net_node_log_stats(n);
    net_node_destroy(&n);
    return got >= expect && !bad ? 0 : 1;
}

static int s_net_send(const loco_config_t *cfg, const char *peer, int codec, double mib, int count, int force) {
    net_opts_t o;
    char err[512];
    if (net_opts_from_config(&o, cfg, err, sizeof err) != 0) {
        fprintf(stderr, "loco net-test: %s\n", err);
        return 2;
    }
    o.listen[0] = '\0'; // a client only
    net_node_t *n = net_node_new(&o, err, sizeof err);
    net_identity_wipe(&o.identity);
    if (!n) {
        fprintf(stderr, "loco net-test: %s\n", err);
        return 1;
    }
    uint8_t pid[32];
    char ep[256];
    int rc = 0;
    if (net_peer_addr_parse(peer, pid, ep, sizeof ep, err, sizeof err) != 0 ||
        net_node_connect(n, peer, err, sizeof err) != 0) {
        fprintf(stderr, "loco net-test: %s\n", err);
        net_node_destroy(&n);
        return 2;
    }
    if (net_node_handshake(n, pid, 10000, err, sizeof err) != 0) {
        printf("refused: %s\n", err);
        fflush(stdout);
        rc = 3;
        if (!force) {
            net_node_destroy(&n);
            return rc;
        }
    } else {
        printf("welcomed\n");
    }
    size_t len = (size_t)(mib * 1048576.0 / 4);
    for (int k = 0; k < count; k++) {
        uint32_t q = (uint32_t)(k + 1);
        float *x = s_reference(q, len);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (force) net_node_send(n, pid, NET_MSG_USER, 0, "x", 1, 2000, err, sizeof err);
        if (!x || net_node_send_tensor(n, pid, q, 0, codec, x, len, NULL, 60000, err, sizeof err) != 0) {
            fprintf(stderr, "loco net-test: send: %s\n", err);
            rc = 1;
        }
        // Drain: keep servicing until the peer answers a ping, so every chunk left our queue.
        net_probe_result_t pr;
        if (rc == 0 && net_probe(n, pid, 1, 0, 60000, &pr, err, sizeof err) != 0) rc = 1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double dt = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
        if (rc == 0)
            printf("sent quantity=%u %.1f MiB as %s in %.3f s (%.1f MiB/s of fp32)\n", q, mib, codec_name(codec), dt,
                   mib / dt);
        free(x);
    }
    // Queued messages die with the socket (linger 0): give them time to leave.
    for (int i = 0; i < 5; i++) {
        net_event_t ev;
        if (net_node_poll(n, &ev, 100) == 1) net_event_clear(&ev);
    }
    net_node_destroy(&n);
    return rc;
}

int cmd_net_test(int argc, char **argv) {
    if (argc < 1 || !strcmp(argv[0], "--help")) {
        printf("usage: loco net-test serve -c FILE [--expect N] [--timeout S]\n"
               "       loco net-test send -c FILE --peer ID@tcp://HOST:PORT [--codec C] [--mib M] [--count K]\n"
               "                          [--force]\n"
               "  Test helper for the transport: 'serve' prints 'listening ADDR', receives N tensors or\n"
               "  messages and checks each tensor against the reference data and the codec's error\n"
               "  bound; 'send' sends K reference tensors of M MiB. --force sends even when refused\n"
               "  (to show a refused peer gets nothing processed).\n");
        return argc < 1 ? 2 : 0;
    }
    const char *mode = argv[0];
    argc--, argv++;
    loco_config_t cfg;
    int rc = cli_load_config(&cfg, argc, argv, 1);
    if (rc) return rc;
    int expect = 1, timeout = 60, count = 1, codec = CODEC_FP32, force = 0;
    double mib = 1;
    const char *peer = NULL;
    for (int i = 0; i < argc; i++) {
        if (!argv[i]) continue;
        if (!strcmp(argv[i], "--expect") && i + 1 < argc) expect = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--count") && i + 1 < argc) count = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--mib") && i + 1 < argc) mib = atof(argv[++i]);
        else if (!strcmp(argv[i], "--peer") && i + 1 < argc) peer = argv[++i];
        else if (!strcmp(argv[i], "--force")) force = 1;
        else if (!strcmp(argv[i], "--codec") && i + 1 < argc) {
            codec = codec_from_name(argv[++i]);
            if (codec < 0) return cli_usage_error("net-test", "--codec %s: expected fp32, bf16, int8 or int4", argv[i]);
        } else return cli_usage_error("net-test", "unknown argument '%s'", argv[i]);
    }
    if (!strcmp(mode, "serve")) return s_net_serve(&cfg, expect, timeout);
    if (!strcmp(mode, "send")) {
        if (!peer) return cli_usage_error("net-test", "send needs --peer ID@tcp://HOST:PORT");
        if (mib <= 0 || count < 1) return cli_usage_error("net-test", "--mib and --count must be positive");
        return s_net_send(&cfg, peer, codec, mib, count, force);
    }
    return cli_usage_error("net-test", "unknown mode '%s' (serve or send)", mode);
}
