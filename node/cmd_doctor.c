// loco doctor: can this node join its run? Checks, in order, the config, the key file and its mode,
// the transport options, that [net] listen can be bound, then for each [bootstrap] seed that its port
// answers, that the CURVE handshake completes and the seed welcomes us (same run), the round trip and
// a short bandwidth probe; last, whether a seed can dial back the endpoint we advertise. One line per
// check ("ok", "warn", "FAIL", "skip" + what was checked + advice on failure), then a verdict.
//
// The doctor is a transport-level client only: it never sends gossip, so it does not appear in the
// seeds' membership views. Its listener stays up (and the node is polled) while the dial-back is
// pending, so the seed's TCP connect has something to reach.
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "net/fingerprint.h"
#include "net/identity.h"
#include "net/node.h"
#include "net/ticket.h"
#include "node/cli.h"
#include "node/log.h"
#include "node/run.h"

#define DOCTOR_PROBE_PINGS 5
#define DOCTOR_PROBE_BYTES (1u << 20)

typedef struct {
    int ok, warn, fail;
} tally_t;

// One verdict line: "ok    what", "FAIL  what — advice".
static void s_line(tally_t *t, const char *verdict, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void s_line(tally_t *t, const char *verdict, const char *fmt, ...) {
    if (!strcmp(verdict, "ok")) t->ok++;
    else if (!strcmp(verdict, "warn")) t->warn++;
    else if (!strcmp(verdict, "FAIL")) t->fail++;
    printf("%-6s", verdict);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static int64_t s_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// "7a02c3d1…": enough of an id to tell peers apart on one screen.
static void s_short(const uint8_t id[32], char out[16]) {
    char hex[NET_ID_HEX];
    net_id_to_hex(id, hex);
    snprintf(out, 16, "%.8s…", hex);
}

static void s_secs(int ms, char *out, size_t len) {
    if (ms % 1000 == 0) snprintf(out, len, "%d s", ms / 1000);
    else snprintf(out, len, "%.1f s", ms / 1000.0);
}

// The seed's refusal, told from this node's side. The transport's diff reads "F: A here, B there"
// from whoever wrote it: the seed ("refused: different run: ..."), or this node checking the seed's
// WELCOME ("we refuse them: different run: ...").
static void s_refusal_advice(const char *text, char *out, size_t len) {
    const char *run = strstr(text, "different run: ");
    if (run) {
        int ours = strncmp(text, "we refuse them", 14) == 0;
        char field[80] = "", a[80] = "", b[80] = "";
        if (sscanf(run + 15, "%79[^:]: %79s here, %79s there", field, a, b) == 3)
            snprintf(out, len, "a different run: %s is %s in this config, %s at the seed — use the run's config "
                     "(every [run] and [model] value must match the seed's)", field, ours ? a : b, ours ? b : a);
        else
            snprintf(out, len, "a different run: %s — use the run's config (every [run] and [model] value must "
                     "match the seed's)", run + 15);
    } else if (strstr(text, "ticket")) {
        snprintf(out, len, "%s — ask the run's authority for a ticket for this node's id (loco admit) and name "
                 "it in [node] ticket", text);
    } else if (strstr(text, "deny list")) {
        snprintf(out, len, "%s — remove the seed's id from [run] deny", text);
    } else {
        snprintf(out, len, "%s — this node's id is not admitted by the seed: ask the run's operator to add it "
                 "to [run] allow, or for a ticket", text);
    }
}

// What the doctor found about one seed.
typedef struct {
    uint8_t id[32];
    char ep[256];
    int welcomed;
} seed_t;

static void s_check_seed(net_node_t *n, seed_t *s, int timeout_ms, tally_t *t) {
    char who[16], err[400], secs[32];
    s_short(s->id, who);
    s_secs(timeout_ms, secs, sizeof secs);
    int64_t t0 = s_now_ms();
    if (!strncmp(s->ep, "tcp://", 6) && net_tcp_check(s->ep, timeout_ms, err, sizeof err) != 0) {
        s_line(t, "FAIL", "seed %s@%s: %s — is the seed running and is the port open (firewall, port "
               "forwarding)? check [bootstrap] seed", who, s->ep, err);
        return;
    }
    char addr[NET_ID_HEX + 260], hex[NET_ID_HEX];
    net_id_to_hex(s->id, hex);
    snprintf(addr, sizeof addr, "%s@%s", hex, s->ep);
    if (net_node_connect(n, addr, err, sizeof err) != 0) {
        s_line(t, "FAIL", "seed %s@%s: %s — check [bootstrap] seed", who, s->ep, err);
        return;
    }
    int left = timeout_ms - (int)(s_now_ms() - t0);
    if (net_node_handshake(n, s->id, left > 100 ? left : 100, err, sizeof err) != 0) {
        if (strstr(err, "did not answer our HELLO")) {
            // The port answered, so the seed is up: a CURVE handshake that never completes means the
            // server key we derived from the id is not the seed's (or its ZAP handler refuses our key).
            s_line(t, "FAIL", "seed %s@%s: the port answers but the CURVE handshake did not complete within %s — "
                   "the id in [bootstrap] seed probably does not match the seed's key (compare it with the "
                   "seed's KEY.pub), or the seed does not admit this node's id ([run] allow)", who, s->ep, secs);
        } else {
            // "peer HEX: reason"
            const char *reason = strstr(err, ": ");
            char advice[600];
            s_refusal_advice(reason ? reason + 2 : err, advice, sizeof advice);
            s_line(t, "FAIL", "seed %s@%s: refused: %s", who, s->ep, advice);
        }
        return;
    }
    s->welcomed = 1;
    s_line(t, "ok", "seed %s@%s: CURVE handshake and HELLO in %lld ms, same run", who, s->ep,
           (long long)(s_now_ms() - t0));
    net_probe_result_t pr;
    if (net_probe(n, s->id, DOCTOR_PROBE_PINGS, DOCTOR_PROBE_BYTES, timeout_ms, &pr, err, sizeof err) != 0) {
        s_line(t, "warn", "probe %s: %s — the seed welcomed us but the probe did not finish within %s: a slow "
               "or lossy link (training traffic will be slow too)", who, err, secs);
        return;
    }
    s_line(t, "ok", "probe %s: round trip %.2f ms (min %.2f), bandwidth %.1f MB/s (%.1f MiB probe)", who,
           pr.rtt_ms_median, pr.rtt_ms_min, pr.mbytes_per_s, (double)pr.bytes / (1 << 20));
}

// Asks seed s to TCP-connect to our advertised endpoint; polls the node (and so keeps the listener
// serviced) until its REACH_RESULT comes or the deadline passes. 1 reachable, 0 not, -1 no answer.
static int s_dial_back(net_node_t *n, const seed_t *s, const char *advertise, int timeout_ms, char *err,
                       size_t errlen) {
    if (net_node_send(n, s->id, RUN_MSG_REACH_CHECK, 0, advertise, strlen(advertise), timeout_ms, err, errlen) != 0)
        return -1;
    int64_t deadline = s_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - s_now_ms();
        if (left <= 0) break;
        net_event_t ev;
        memset(&ev, 0, sizeof ev);
        int rc = net_node_poll(n, &ev, (int)left);
        if (rc < 0) {
            snprintf(err, errlen, "socket error");
            return -1;
        }
        if (rc == 0) continue;
        int got = ev.kind == NET_EV_MESSAGE && ev.type == RUN_MSG_REACH_RESULT && ev.len == 1 &&
                  !memcmp(ev.peer, s->id, 32);
        int yes = got && ev.payload[0] == 1;
        net_event_clear(&ev);
        if (got) return yes;
    }
    snprintf(err, errlen, "the request went out, nothing came back");
    return -1;
}

static int s_help(void) {
    printf("usage: loco doctor -c FILE [--set section.key=value]... [--timeout-ms N] [--offline] [--verbose]\n"
           "  Checks whether this node can join its run: the config, [node] key and its file mode, that\n"
           "  [net] listen can be bound, that each [bootstrap] seed answers, completes the CURVE handshake\n"
           "  and welcomes us with the same run (fingerprint), the round trip and a short bandwidth probe to\n"
           "  each, and whether a seed can dial back the advertised endpoint. Prints one line per check\n"
           "  (ok / warn / FAIL / skip, with advice on what to fix) and a verdict.\n"
           "  --timeout-ms N   deadline per seed for each step (default 5000)\n"
           "  --offline        only the checks that need no network: the config, the key file, the\n"
           "                   transport options, the ticket and the seeds' syntax (for config files\n"
           "                   written for another machine, e.g. deploy/examples/)\n"
           "  --verbose        also print the transport's log lines (stderr)\n"
           "  Exit 0: the node can join; 1: it cannot; 2: usage or config error.\n"
           "  Run it while the node is stopped: it binds [net] listen itself.\n");
    return 0;
}

int cmd_doctor(int argc, char **argv) {
    const char *file = NULL;
    int timeout_ms = 5000, verbose = 0, offline = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) return s_help();
        if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config") || !strcmp(argv[i], "--set")) {
            if (i + 1 >= argc) return cli_usage_error("doctor", "%s needs a value", argv[i]);
            if (strcmp(argv[i], "--set") != 0) file = argv[i + 1];
            i++; // --set is applied below, over the file

        } else if (!strcmp(argv[i], "--timeout-ms")) {
            if (i + 1 >= argc) return cli_usage_error("doctor", "--timeout-ms needs milliseconds");
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 100 || v > 600000)
                return cli_usage_error("doctor", "--timeout-ms %s: want milliseconds, 100 to 600000", argv[i]);
            timeout_ms = (int)v;
        } else if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "-v")) {
            verbose = 1;
        } else if (!strcmp(argv[i], "--offline")) {
            offline = 1;
        } else {
            return cli_usage_error("doctor", "unknown argument '%s'", argv[i]);
        }
    }
    if (!file) return cli_usage_error("doctor", "a config file is required (-c FILE)");
    signal(SIGPIPE, SIG_IGN);
    tally_t t = {0};

    // --- config: parsed and validated here (not by cli_load_config) so a failure is a verdict line.
    static loco_config_t cfg; // large: keep it off the stack
    static char err[2048];
    config_defaults(&cfg);
    int bad = config_load(&cfg, file, err, sizeof err) != 0;
    for (int i = 0; !bad && i < argc; i++) {
        if (!strcmp(argv[i], "--set")) bad = config_set(&cfg, argv[++i], err, sizeof err) != 0;
        else if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config") || !strcmp(argv[i], "--timeout-ms")) i++;
    }
    if (!bad) bad = config_validate(&cfg, err, sizeof err) != 0;
    if (bad) {
        // File errors already start with the file name (and line); --set errors do not.
        if (!strncmp(err, file, strlen(file))) s_line(&t, "FAIL", "config: %s", err);
        else s_line(&t, "FAIL", "config %s: %s", file, err);
        printf("verdict: cannot join — fix the config error above\n");
        return 2;
    }
    log_set_level(verbose ? cfg.log_level : "error");
    uint8_t fp[32];
    char fphex[65];
    net_run_fingerprint(&cfg, fp);
    net_hex_encode(fp, 32, fphex);
    s_line(&t, "ok", "config %s (run '%s', fingerprint %.12s…, %d seed(s))", file, cfg.run_name, fphex, cfg.seeds.n);

    // --- key file: its mode first, so the chmod advice comes even when the file is otherwise fine.
    int key_ok = 0;
    struct stat st;
    if (!cfg.key[0]) {
        s_line(&t, "FAIL", "key: [node] key is not set — create one with 'loco keygen --out FILE' and name it in "
               "[node] key");
    } else if (stat(cfg.key, &st) != 0) {
        s_line(&t, "FAIL", "key file %s: %s — create it with 'loco keygen --out %s' (or fix [node] key)", cfg.key,
               strerror(errno), cfg.key);
    } else if (st.st_mode & 077) {
        s_line(&t, "FAIL", "key file %s (mode %04o): the secret key is readable by group/others, so loco refuses "
               "it — fix: chmod 600 %s", cfg.key, (unsigned)(st.st_mode & 07777), cfg.key);
    } else {
        net_identity_t id;
        if (net_identity_load(&id, cfg.key, err, sizeof err) != 0) {
            s_line(&t, "FAIL", "key file %s: %s — recreate it with 'loco keygen --out FILE' (a new key is a new "
                   "peer id)", cfg.key, err);
        } else {
            char who[16];
            s_short(id.pk, who);
            s_line(&t, "ok", "key file %s (mode %04o, id %s)", cfg.key, (unsigned)(st.st_mode & 07777), who);
            key_ok = 1;
        }
        net_identity_wipe(&id);
    }
    if (!key_ok) {
        s_line(&t, "skip", "listen, seeds, reachability: they need a usable key");
        printf("verdict: cannot join — %d check(s) failed; fix the FAIL lines above\n", t.fail);
        return 1;
    }

    static net_opts_t no;
    if (net_opts_from_config(&no, &cfg, err, sizeof err) != 0) {
        s_line(&t, "FAIL", "transport options: %s", err);
        printf("verdict: cannot join — fix the config error above\n");
        return 2;
    }

    // --- ticket: signed by [run] authority, for this run and this peer id, not expired.
    if (no.admission == NET_ADMIT_TICKET && !no.has_ticket) {
        s_line(&t, "warn", "ticket: [run] admission = ticket but [node] ticket is not set — peers admit this node only "
               "if their [run] allow lists its id; ask the run's authority for a ticket (loco admit)");
    } else if (no.has_ticket) {
        net_ticket_t tk;
        char why[300], idhex[NET_ID_HEX];
        net_id_to_hex(no.identity.pk, idhex);
        net_ticket_status_t ts = NET_TICKET_MALFORMED;
        if (net_ticket_decode(&tk, no.ticket, sizeof no.ticket, why, sizeof why) == 0)
            ts = net_ticket_verify(&tk, no.has_authority ? no.authority : tk.authority, fp, no.identity.pk,
                                   (uint64_t)time(NULL), why, sizeof why);
        if (ts == NET_TICKET_OK && !no.has_authority)
            s_line(&t, "warn", "ticket: valid, but [run] admission is not ticket, so peers do not ask for it");
        else if (ts == NET_TICKET_OK)
            s_line(&t, "ok", "ticket (signed by the run authority for this id and run%s)",
                   tk.expires ? ", with an expiry" : ", no expiry");
        else
            s_line(&t, "FAIL", "ticket [node] ticket: %s — ask the run's authority for a new one: loco admit -c RUN.ini "
                   "--authority-key FILE --id %s", why, idhex);
    }

    if (offline) {
        int bad_seeds = 0;
        for (int i = 0; i < cfg.seeds.n; i++) {
            uint8_t sid[32];
            char sep[256];
            if (net_peer_addr_parse(cfg.seeds.item[i], sid, sep, sizeof sep, err, sizeof err) != 0 && ++bad_seeds)
                s_line(&t, "FAIL", "seed %s: %s — write it as ID@tcp://host:port (the id from the seed's KEY.pub)",
                       cfg.seeds.item[i], err);
        }
        s_line(&t, "skip", "listen, seeds, reachability: --offline (%d seed(s) well-formed)", cfg.seeds.n - bad_seeds);
        if (t.fail) printf("verdict: the config cannot be used — %d check(s) failed; fix the FAIL lines above\n", t.fail);
        else printf("verdict: the config and key are usable (offline checks only: %d ok, %d warning(s))\n", t.ok, t.warn);
        return t.fail ? 1 : 0;
    }

    // --- listen
    int reach_no = !strcmp(cfg.net_reachable, "no") || !cfg.net_listen[0];
    int listen_ok = 0;
    net_node_t *n = NULL;
    if (reach_no) {
        no.listen[0] = '\0';
        s_line(&t, "skip", "listen: [net] reachable = no (or no [net] listen): this node dials out only");
    } else {
        n = net_node_new(&no, err, sizeof err);
        if (n) {
            listen_ok = 1;
            s_line(&t, "ok", "listen %s (bound %s)", cfg.net_listen, net_node_endpoint(n));
        } else {
            s_line(&t, "FAIL", "listen %s: %s — is another process (a running 'loco run' of this node?) using the "
                   "port? stop it, or change [net] listen (or set [net] reachable = no to dial out only)",
                   cfg.net_listen, err);
            no.listen[0] = '\0'; // go on without a listener: the seeds can still be checked
        }
    }
    if (!n && !(n = net_node_new(&no, err, sizeof err))) {
        s_line(&t, "FAIL", "transport: %s", err);
        printf("verdict: cannot join — %d check(s) failed; fix the FAIL lines above\n", t.fail);
        return 1;
    }

    // What the seeds will be told to dial (as loco run computes it).
    char advertise[256] = "";
    if (listen_ok) {
        const char *bound = net_node_endpoint(n), *any = strstr(bound, "0.0.0.0");
        if (cfg.net_advertise[0]) {
            snprintf(advertise, sizeof advertise, "%s", cfg.net_advertise);
        } else if (any) {
            snprintf(advertise, sizeof advertise, "%.*s127.0.0.1%s", (int)(any - bound), bound, any + 7);
            s_line(&t, "warn", "advertise: [net] advertise is not set, so peers would be told %s (this machine "
                   "only) — set [net] advertise = tcp://PUBLIC_HOST:PORT", advertise);
        } else {
            snprintf(advertise, sizeof advertise, "%s", bound);
        }
    }

    // --- seeds
    static seed_t seeds[CONFIG_LIST_MAX];
    int n_seeds = 0, welcomed = 0, checked = 0; // checked: seeds other than ourselves
    for (int i = 0; i < cfg.seeds.n; i++) {
        seed_t *s = &seeds[n_seeds];
        memset(s, 0, sizeof *s);
        if (net_peer_addr_parse(cfg.seeds.item[i], s->id, s->ep, sizeof s->ep, err, sizeof err) != 0) {
            s_line(&t, "FAIL", "seed %s: %s — write it as ID@tcp://host:port (the id from the seed's KEY.pub)",
                   cfg.seeds.item[i], err);
            checked++;
            continue;
        }
        if (!memcmp(s->id, no.identity.pk, 32)) {
            s_line(&t, "skip", "seed %s: this node's own id", s->ep);
            continue;
        }
        checked++;
        s_check_seed(n, s, timeout_ms, &t);
        welcomed += s->welcomed;
        n_seeds++;
    }
    if (checked == 0)
        s_line(&t, "warn", "seeds: no [bootstrap] seed — fine for the first node of a run; any other node needs "
               "one (seed = ID@tcp://host:port)");

    // --- reachability: the first seed that welcomed us dials our advertised endpoint back.
    const seed_t *asker = NULL;
    for (int i = 0; i < n_seeds && !asker; i++)
        if (seeds[i].welcomed) asker = &seeds[i];
    if (reach_no) {
        s_line(&t, "skip", "reachability: [net] reachable = no");
    } else if (!listen_ok) {
        s_line(&t, "skip", "reachability: [net] listen could not be bound");
    } else if (!asker) {
        s_line(&t, "skip", "reachability: %s", checked ? "no seed welcomed us to ask for a dial-back"
                                                        : "no seed to ask for a dial-back");
    } else {
        char who[16], secs[32];
        s_short(asker->id, who);
        s_secs(timeout_ms, secs, sizeof secs);
        int r = s_dial_back(n, asker, advertise, timeout_ms, err, sizeof err);
        const char *yes = !strcmp(cfg.net_reachable, "yes") ? " ([net] reachable = yes claims otherwise: peers "
                                                              "will try to dial it and fail)" : "";
        if (r == 1) {
            s_line(&t, "ok", "reachable: seed %s dialed back %s", who, advertise);
        } else if (r == 0) {
            s_line(&t, "warn", "reachable: seed %s could not connect to %s%s — the node still joins, outbound-only; "
                   "to accept connections forward the port on your router / open the firewall and set [net] "
                   "advertise = tcp://PUBLIC_HOST:PORT, or set [net] reachable = no", who, advertise, yes);
        } else {
            s_line(&t, "warn", "reachable: seed %s gave no dial-back answer within %s (%s) — a seed answers one "
                   "request per peer per 30 s: if this node just asked (a running 'loco run', another doctor), "
                   "retry in 30 s%s", who, secs, err, yes);
        }
    }
    net_node_destroy(&n);

    int can_join = listen_ok + reach_no > 0 && (checked == 0 || welcomed > 0);
    if (can_join)
        printf("verdict: this node can join (%d ok, %d warning(s)%s)\n", t.ok, t.warn,
               t.fail ? ", some seeds failed: see FAIL lines" : "");
    else
        printf("verdict: cannot join — %d check(s) failed; fix the FAIL lines above\n", t.fail);
    return can_join ? 0 : 1;
}
