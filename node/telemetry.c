#include "node/telemetry.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gossip/members.h"
#include "node/outer_run.h"

static const double s_time_buckets[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900};
#define NTB ((int)(sizeof s_time_buckets / sizeof s_time_buckets[0]))

static const char *const s_states[] = {"alive", "suspect", "dead", "left"};
static const char *const s_types[] = {"outer", "gossip", "catchup", "other"};
static const char *const s_reasons[] = {"not_finite", "size", "steps", "norm", "drift", "other"};
static const char *const s_cu_states[] = {"idle", "running", "done", "failed"};

int telemetry_declare(prom_t *p) {
    static const struct {
        const char *name;
        prom_type_t type;
        const char *help;
    } fams[] = {
        {"loco_info", PROM_GAUGE, "Always 1; the labels name this node (peer id prefix, run, outer algorithm)."},
        {"loco_start_time_seconds", PROM_GAUGE, "Unix time at which this loco run process started."},
        {"loco_inner_step", PROM_GAUGE, "Inner steps completed (the step of the checkpoints)."},
        {"loco_target_steps", PROM_GAUGE, "[train] steps: the inner steps this node trains to."},
        {"loco_loss", PROM_GAUGE, "Training cross-entropy of the last inner step's batch (nats per token)."},
        {"loco_val_loss", PROM_GAUGE, "Validation loss at the last evaluation (nats per token)."},
        {"loco_tokens_per_second", PROM_GAUGE, "Tokens per second of the last inner step."},
        {"loco_compute_utilisation", PROM_GAUGE, "Share of wall time spent in inner steps since training started (0..1)."},
        {"loco_outer_round", PROM_GAUGE, "The outer round completed by the last applied outer step."},
        {"loco_outer_steps_total", PROM_COUNTER, "Outer steps applied by this process."},
        {"loco_outer_short_rounds_total", PROM_COUNTER, "Outer steps in which a partner or chunk was missing."},
        {"loco_group_size", PROM_GAUGE, "Members expected in the last outer step's group (NoLoCo) or round (DiLoCo), this node included."},
        {"loco_group_contributors", PROM_GAUGE, "Contributions averaged in the last outer step, this node's included."},
        {"loco_exchange_seconds", PROM_HISTOGRAM, "Outer exchange time: from handing the contribution to the net thread to the result."},
        {"loco_wait_seconds", PROM_HISTOGRAM, "Time the compute thread waited for an outer exchange's result."},
        {"loco_members", PROM_GAUGE, "Members of this node's view by state (alive includes this node)."},
        {"loco_bytes_sent_total", PROM_COUNTER, "Bytes sent at the socket layer by traffic type (outer exchange, gossip, catch-up, other)."},
        {"loco_bytes_received_total", PROM_COUNTER, "Bytes received at the socket layer by traffic type (outer exchange, gossip, catch-up, other)."},
        {"loco_rejections_total", PROM_COUNTER, "Received contributions rejected, by reason."},
        {"loco_catchup_state", PROM_GAUGE, "1 for the catch-up state this node is in (idle, running, done, failed)."},
        {"loco_catchup_progress", PROM_GAUGE, "Share of the catch-up state's chunks fetched and verified (0..1)."},
        {"loco_catchup_chunks", PROM_GAUGE, "Chunks of the outer state version being fetched."},
        {"loco_catchup_chunks_received", PROM_GAUGE, "Chunks of that version fetched and verified."},
        {"loco_catchup_served_chunks_total", PROM_COUNTER, "Catch-up chunks this node served to joining peers."},
        {"loco_checkpoint_age_seconds", PROM_GAUGE, "Seconds since the newest complete checkpoint was written."},
        {"loco_checkpoint_step", PROM_GAUGE, "Inner step of the newest complete checkpoint."},
        {"loco_checkpoint_timestamp_seconds", PROM_GAUGE, "Unix time at which the newest complete checkpoint was written."},
    };
    for (size_t i = 0; i < sizeof fams / sizeof fams[0]; i++) {
        int hist = fams[i].type == PROM_HISTOGRAM;
        if (prom_declare(p, fams[i].name, fams[i].type, fams[i].help, hist ? s_time_buckets : NULL, hist ? NTB : 0) != 0)
            return -1;
    }
    for (int i = 0; i < 4; i++) prom_set(p, "loco_members", PROM_L("state", s_states[i]), 0);
    for (int i = 0; i < 4; i++) {
        prom_set(p, "loco_bytes_sent_total", PROM_L("type", s_types[i]), 0);
        prom_set(p, "loco_bytes_received_total", PROM_L("type", s_types[i]), 0);
    }
    for (int i = 0; i < 6; i++) prom_set(p, "loco_rejections_total", PROM_L("reason", s_reasons[i]), 0);
    for (int i = 0; i < 4; i++) prom_set(p, "loco_catchup_state", PROM_L("state", s_cu_states[i]), i == 0);
    prom_set(p, "loco_outer_steps_total", NULL, 0);
    prom_set(p, "loco_outer_short_rounds_total", NULL, 0);
    prom_set(p, "loco_catchup_progress", NULL, 0);
    prom_set(p, "loco_catchup_served_chunks_total", NULL, 0);
    return 0;
}

void telemetry_start(prom_t *p, const char *peer, const char *run, const char *algorithm, uint64_t steps,
                     const char *checkpoint_dir) {
    if (!p) return;
    prom_set(p, "loco_info", PROM_L("peer", peer, "run", run, "algorithm", algorithm), 1);
    prom_set(p, "loco_start_time_seconds", NULL, floor(metrics_now()));
    prom_set(p, "loco_target_steps", NULL, (double)steps);
    prom_note_set(p, "peer", peer);
    prom_note_set(p, "run", run);
    prom_note_set(p, "algorithm", algorithm);
    prom_note_set(p, "checkpoint_dir", checkpoint_dir);
    char pid[24];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    prom_note_set(p, "pid", pid);
}

void telemetry_step(metrics_t *mx, uint64_t step, double loss, double tokens_per_s, double compute_s, double elapsed_s) {
    prom_t *p = mx ? mx->prom : NULL;
    if (!p) return;
    prom_set(p, "loco_inner_step", NULL, (double)step);
    prom_set(p, "loco_loss", NULL, loss);
    prom_set(p, "loco_tokens_per_second", NULL, tokens_per_s);
    if (elapsed_s > 0) prom_set(p, "loco_compute_utilisation", NULL, compute_s / elapsed_s);
}

void telemetry_eval(metrics_t *mx, double val_loss) {
    if (mx) prom_set(mx->prom, "loco_val_loss", NULL, val_loss);
}

void telemetry_outer(metrics_t *mx, uint64_t round, int contributors, int expected, double exchange_s, double wait_s,
                     int short_round, const char *group_json) {
    prom_t *p = mx ? mx->prom : NULL;
    if (!p) return;
    prom_set(p, "loco_outer_round", NULL, (double)round);
    prom_add(p, "loco_outer_steps_total", NULL, 1);
    if (short_round) prom_add(p, "loco_outer_short_rounds_total", NULL, 1);
    prom_set(p, "loco_group_size", NULL, expected);
    prom_set(p, "loco_group_contributors", NULL, contributors);
    prom_observe(p, "loco_exchange_seconds", NULL, exchange_s);
    prom_observe(p, "loco_wait_seconds", NULL, wait_s);
    prom_note_set(p, "group", group_json && group_json[0] ? group_json : "[]");
}

const char *telemetry_reject_class(const char *reason) {
    if (!reason) return "other";
    if (strstr(reason, "drift")) return strstr(reason, "not finite") ? "not_finite" : "drift";
    if (strstr(reason, "not finite")) return "not_finite";
    if (strstr(reason, "size")) return "size";
    if (strstr(reason, "inner steps than H")) return "steps";
    if (strstr(reason, "RMS")) return "norm";
    return "other";
}

void telemetry_reject(metrics_t *mx, const char *reason) {
    if (mx) prom_add(mx->prom, "loco_rejections_total", PROM_L("reason", telemetry_reject_class(reason)), 1);
}

void telemetry_members(prom_t *p, int alive, int suspect, int dead, int left) {
    int v[4] = {alive, suspect, dead, left};
    for (int i = 0; i < 4; i++) prom_set(p, "loco_members", PROM_L("state", s_states[i]), v[i]);
}

// Counters mirrored from cumulative sources never go down, even when two sources are sampled at
// slightly different moments (the catch-up module counts a chunk when verified, the socket layer
// when sent or received).
static void s_set_mono(prom_t *p, const char *name, const char *type, double v) {
    double old = 0;
    if (prom_get(p, name, PROM_L("type", type), &old, NULL) == 0 && v < old) v = old;
    prom_set(p, name, PROM_L("type", type), v);
}

void telemetry_net(prom_t *p, const net_stats_t *ns, const catchup_stats_t *cs, int cu_state) {
    if (!p || !ns) return;
    for (int dir = 0; dir < 2; dir++) {
        const uint64_t *b = dir ? ns->rx_bytes : ns->tx_bytes;
        double by[4] = {0};
        for (int t = 0; t < NET_MSG_TYPE_MAX; t++) {
            int k = 3;
            if (t == NET_MSG_CHUNK || (t >= OUTER_MSG_FIRST && t <= OUTER_MSG_LAST)) k = 0;
            else if (t >= GOSSIP_MSG_FIRST && t < GOSSIP_MSG_FIRST + GOSSIP_MSG_COUNT) k = 1;
            else if (t >= CATCHUP_MSG_FIRST && t <= CATCHUP_MSG_LAST) k = 2;
            by[k] += (double)b[t];
        }
        if (cs) {
            double cu = (double)(dir ? cs->bytes : cs->served_bytes);
            if (cu > by[0]) cu = by[0];
            by[0] -= cu;
            by[2] += cu;
        }
        for (int k = 0; k < 4; k++) s_set_mono(p, dir ? "loco_bytes_received_total" : "loco_bytes_sent_total", s_types[k], by[k]);
    }
    if (!cs) return;
    int st = cu_state < 0 ? 3 : cu_state > 0 ? 2 : cs->ndonors > 0 ? 1 : 0;
    for (int i = 0; i < 4; i++) prom_set(p, "loco_catchup_state", PROM_L("state", s_cu_states[i]), i == st);
    prom_set(p, "loco_catchup_chunks", NULL, cs->nchunks);
    prom_set(p, "loco_catchup_chunks_received", NULL, (double)cs->chunks_received);
    double prog = st == 2 ? 1 : cs->nchunks ? (double)cs->chunks_received / cs->nchunks : 0;
    prom_set(p, "loco_catchup_progress", NULL, prog > 1 ? 1 : prog);
    prom_set(p, "loco_catchup_served_chunks_total", NULL, (double)cs->served_chunks);
}

void telemetry_refresh(prom_t *p) {
    char dir[1024], man[1100], name[256] = "", path[1400];
    if (prom_note_get(p, "checkpoint_dir", dir, sizeof dir) != 0 || !dir[0]) return;
    snprintf(man, sizeof man, "%s/LATEST", dir);
    FILE *f = fopen(man, "r");
    struct stat st;
    if (f) {
        if (fgets(name, sizeof name, f)) name[strcspn(name, "\r\n")] = '\0';
        fclose(f);
    }
    unsigned long long step = 0;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    // The manifest is rewritten after its checkpoint is complete: its time is when the newest
    // checkpoint became the one a restart loads.
    if (!name[0] || sscanf(name, "ckpt_%llu.bin", &step) != 1 || stat(man, &st) != 0) {
        prom_clear(p, "loco_checkpoint_age_seconds");
        prom_clear(p, "loco_checkpoint_step");
        prom_clear(p, "loco_checkpoint_timestamp_seconds");
        prom_note_set(p, "checkpoint", "");
        return;
    }
    double t = (double)st.st_mtim.tv_sec + st.st_mtim.tv_nsec * 1e-9, age = metrics_now() - t;
    prom_set(p, "loco_checkpoint_age_seconds", NULL, age < 0 ? 0 : age);
    prom_set(p, "loco_checkpoint_step", NULL, (double)step);
    prom_set(p, "loco_checkpoint_timestamp_seconds", NULL, t);
    prom_note_set(p, "checkpoint", path);
}

// ---------------------------------------------------------------------------------------------
// loco status

// A series' value, or NAN when it does not exist.
static double s_val(prom_t *p, const char *name, const char *const *labels) {
    double v;
    return prom_get(p, name, labels, &v, NULL) == 0 ? v : NAN;
}

static void s_json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') fprintf(f, "\\%c", *c);
        else if (*c < 0x20) fprintf(f, "\\u%04x", *c);
        else fputc(*c, f);
    }
    fputc('"', f);
}

static void s_json_num(FILE *f, double v) {
    if (!isfinite(v)) {
        fputs("null", f);
        return;
    }
    char b[40];
    prom_format_value(v, b, sizeof b);
    fputs(b, f);
}

static void s_bytes(char *out, size_t len, double b) {
    if (!isfinite(b)) snprintf(out, len, "-");
    else if (b < 1e3) snprintf(out, len, "%.0f B", b);
    else if (b < 1e6) snprintf(out, len, "%.1f kB", b / 1e3);
    else if (b < 1e9) snprintf(out, len, "%.2f MB", b / 1e6);
    else snprintf(out, len, "%.2f GB", b / 1e9);
}

static void s_duration(char *out, size_t len, double s) {
    if (!isfinite(s)) snprintf(out, len, "-");
    else if (s < 60) snprintf(out, len, "%.0fs", s);
    else if (s < 3600) snprintf(out, len, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else if (s < 86400) snprintf(out, len, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else snprintf(out, len, "%dd%02dh", (int)(s / 86400), (int)(s / 3600) % 24);
}

// "-" for a missing value, else the number with fmt.
static const char *s_num(char *out, size_t len, const char *fmt, double v) {
    if (!isfinite(v)) snprintf(out, len, "-");
    else snprintf(out, len, fmt, v);
    return out;
}

char *telemetry_status(prom_t *p, int json) {
    telemetry_refresh(p);
    char peer[64] = "", run[256] = "", algo[32] = "", pid[24] = "", group[1024] = "", ckpt[1024] = "", url[300] = "";
    prom_note_get(p, "peer", peer, sizeof peer);
    prom_note_get(p, "run", run, sizeof run);
    prom_note_get(p, "algorithm", algo, sizeof algo);
    prom_note_get(p, "pid", pid, sizeof pid);
    prom_note_get(p, "group", group, sizeof group);
    prom_note_get(p, "checkpoint", ckpt, sizeof ckpt);
    prom_note_get(p, "metrics_url", url, sizeof url);
    double now = metrics_now();
    double uptime = now - s_val(p, "loco_start_time_seconds", NULL);
    double step = s_val(p, "loco_inner_step", NULL), steps = s_val(p, "loco_target_steps", NULL);
    double loss = s_val(p, "loco_loss", NULL), vloss = s_val(p, "loco_val_loss", NULL);
    double tps = s_val(p, "loco_tokens_per_second", NULL), util = s_val(p, "loco_compute_utilisation", NULL);
    double round = s_val(p, "loco_outer_round", NULL), outer_steps = s_val(p, "loco_outer_steps_total", NULL);
    double gsize = s_val(p, "loco_group_size", NULL), gcontrib = s_val(p, "loco_group_contributors", NULL);
    double ex_sum = 0, ex_n = 0;
    if (prom_get(p, "loco_exchange_seconds", NULL, &ex_n, &ex_sum) != 0) ex_n = 0;
    double mem[4], sent[4], recv[4], rej = 0;
    for (int i = 0; i < 4; i++) {
        mem[i] = s_val(p, "loco_members", PROM_L("state", s_states[i]));
        sent[i] = s_val(p, "loco_bytes_sent_total", PROM_L("type", s_types[i]));
        recv[i] = s_val(p, "loco_bytes_received_total", PROM_L("type", s_types[i]));
    }
    for (int i = 0; i < 6; i++) {
        double v = s_val(p, "loco_rejections_total", PROM_L("reason", s_reasons[i]));
        if (isfinite(v)) rej += v;
    }
    double ck_age = s_val(p, "loco_checkpoint_age_seconds", NULL), ck_step = s_val(p, "loco_checkpoint_step", NULL);
    const char *cu_state = "idle";
    for (int i = 0; i < 4; i++)
        if (s_val(p, "loco_catchup_state", PROM_L("state", s_cu_states[i])) == 1) cu_state = s_cu_states[i];
    double cu_prog = s_val(p, "loco_catchup_progress", NULL), cu_chunks = s_val(p, "loco_catchup_chunks", NULL);
    double cu_recv = s_val(p, "loco_catchup_chunks_received", NULL);

    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return NULL;
    if (json) {
        fputs("{\"peer\":", f);
        s_json_str(f, peer);
        fputs(",\"run\":", f);
        s_json_str(f, run);
        fputs(",\"algorithm\":", f);
        s_json_str(f, algo);
        fprintf(f, ",\"pid\":%s,\"uptime_s\":", pid[0] ? pid : "null");
        s_json_num(f, uptime);
        fputs(",\"step\":", f);
        s_json_num(f, step);
        fputs(",\"steps\":", f);
        s_json_num(f, steps);
        fputs(",\"loss\":", f);
        s_json_num(f, loss);
        fputs(",\"val_loss\":", f);
        s_json_num(f, vloss);
        fputs(",\"tokens_per_s\":", f);
        s_json_num(f, tps);
        fputs(",\"utilisation\":", f);
        s_json_num(f, util);
        fputs(",\"round\":", f);
        s_json_num(f, round);
        fputs(",\"outer_steps\":", f);
        s_json_num(f, outer_steps);
        fprintf(f, ",\"group\":%s,\"group_size\":", group[0] == '[' ? group : "[]");
        s_json_num(f, gsize);
        fputs(",\"contributors\":", f);
        s_json_num(f, gcontrib);
        fputs(",\"exchange_mean_s\":", f);
        s_json_num(f, ex_n > 0 ? ex_sum / ex_n : NAN);
        fputs(",\"members\":{", f);
        for (int i = 0; i < 4; i++) {
            fprintf(f, "%s\"%s\":", i ? "," : "", s_states[i]);
            s_json_num(f, mem[i]);
        }
        fputs("},\"bytes_sent\":{", f);
        for (int i = 0; i < 4; i++) {
            fprintf(f, "%s\"%s\":", i ? "," : "", s_types[i]);
            s_json_num(f, sent[i]);
        }
        fputs("},\"bytes_received\":{", f);
        for (int i = 0; i < 4; i++) {
            fprintf(f, "%s\"%s\":", i ? "," : "", s_types[i]);
            s_json_num(f, recv[i]);
        }
        fprintf(f, "},\"rejections\":%.0f,\"checkpoint\":", rej);
        if (ckpt[0]) {
            fputs("{\"path\":", f);
            s_json_str(f, ckpt);
            fputs(",\"step\":", f);
            s_json_num(f, ck_step);
            fputs(",\"age_s\":", f);
            s_json_num(f, ck_age);
            fputs("}", f);
        } else {
            fputs("null", f);
        }
        fprintf(f, ",\"catchup\":{\"state\":\"%s\",\"progress\":", cu_state);
        s_json_num(f, cu_prog);
        fputs(",\"chunks\":", f);
        s_json_num(f, cu_chunks);
        fputs(",\"received\":", f);
        s_json_num(f, cu_recv);
        fputs("},\"metrics_url\":", f);
        if (url[0]) s_json_str(f, url);
        else fputs("null", f);
        fputs("}\n", f);
    } else {
        char a[64], b[64], c[64], d[64];
        s_duration(a, sizeof a, uptime);
        fprintf(f, "peer %s  run '%s' (%s)  pid %s  up %s\n", peer, run, algo, pid, a);
        if (steps == 0) {
            fprintf(f, "not training ([train] steps = 0): membership only\n");
        } else {
            fprintf(f, "step %s/%s  loss %s", s_num(a, sizeof a, "%.0f", step), s_num(b, sizeof b, "%.0f", steps),
                    s_num(c, sizeof c, "%.4f", loss));
            if (isfinite(vloss)) fprintf(f, "  val_loss %.4f", vloss);
            fprintf(f, "  tokens/s %s  utilisation %s\n", s_num(a, sizeof a, "%.0f", tps),
                    s_num(b, sizeof b, "%.1f%%", util * 100));
            if (isfinite(round))
                fprintf(f, "outer round %.0f (%.0f outer steps here)  group %.0f of %.0f: %s  exchange %s s on average\n",
                        round, outer_steps, gcontrib, gsize, group,
                        s_num(a, sizeof a, "%.2f", ex_n > 0 ? ex_sum / ex_n : NAN));
            else
                fprintf(f, "outer round - (no outer step yet)\n");
        }
        fprintf(f, "members %.0f alive, %.0f suspect, %.0f dead, %.0f left\n", mem[0], mem[1], mem[2], mem[3]);
        for (int dir = 0; dir < 2; dir++) {
            const double *v = dir ? recv : sent;
            char t[64];
            s_bytes(t, sizeof t, v[0] + v[1] + v[2] + v[3]);
            s_bytes(a, sizeof a, v[0]);
            s_bytes(b, sizeof b, v[1]);
            s_bytes(c, sizeof c, v[2]);
            s_bytes(d, sizeof d, v[3]);
            fprintf(f, "%s %s (outer %s, gossip %s, catch-up %s, other %s)\n", dir ? "received" : "sent    ", t, a, b,
                    c, d);
        }
        if (rej > 0) fprintf(f, "rejected contributions %.0f\n", rej);
        if (ckpt[0]) {
            s_duration(a, sizeof a, ck_age);
            fprintf(f, "checkpoint step %.0f, %s ago: %s\n", ck_step, a, ckpt);
        } else {
            fprintf(f, "checkpoint none yet\n");
        }
        if (!strcmp(cu_state, "running"))
            fprintf(f, "catch-up running: %.0f of %.0f chunks (%.0f%%)\n", cu_recv, cu_chunks, 100 * cu_prog);
        else
            fprintf(f, "catch-up %s\n", cu_state);
        if (url[0]) fprintf(f, "metrics %s\n", url);
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}
