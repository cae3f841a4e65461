// loco plot: a multi-panel PNG of one or more metrics JSONL files (docs/metrics.md), drawn by
// gnuplot run as a child process on a generated script and data files in a temporary directory.
//
// Panels: training and validation loss against inner step, the same against wall time, compute
// utilisation and bytes sent against wall time (from `outer` records, so `loco run` peers only).
// One line per (file, peer) pair. Wall time is counted from the earliest record of all files, so
// peers that started at different times line up. Training loss is averaged over consecutive steps
// down to at most PLOT_MAX_POINTS points per line. The final anchor evaluation of `loco run`
// ("anchor":true) is left out: it would put a second value at the last step.
//
// Every line of every file is parsed first (node/flatjson.h); a malformed line stops the command
// with the file and line number before anything is drawn. gnuplot writes OUT.part, which is renamed
// to OUT only once gnuplot succeeded and the file is a PNG.
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "node/cli.h"
#include "node/flatjson.h"

#define PLOT_MAX_SERIES 256
#define PLOT_MAX_POINTS 200 // per training-loss line: a mean over consecutive steps beyond that
#define PLOT_KEY_MAX_SERIES 12 // more lines than this: no legend (it would cover the plot)

typedef struct {
    double *v; // n rows of `width` values
    size_t n, cap;
} table_t;

typedef struct {
    int file;
    char peer[FLATJSON_STR_MAX];
    char label[80];
    table_t step;  // step, time, loss
    table_t eval;  // step, time, val_loss
    table_t outer; // time, utilisation, total_bytes_sent
} series_t;

typedef struct {
    series_t *s;
    int n;
    double t0; // earliest record time
    int have_t0;
} plot_t;

static int s_push(table_t *t, int width, const double *row) {
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 256;
        double *v = realloc(t->v, cap * (size_t)width * sizeof *v);
        if (!v) return -1;
        t->v = v;
        t->cap = cap;
    }
    memcpy(t->v + t->n * (size_t)width, row, (size_t)width * sizeof *row);
    t->n++;
    return 0;
}

static void s_plot_free(plot_t *p) {
    for (int i = 0; i < p->n; i++) free(p->s[i].step.v), free(p->s[i].eval.v), free(p->s[i].outer.v);
    free(p->s);
    p->s = NULL;
    p->n = 0;
}

static const char *s_basename(const char *path) {
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

static series_t *s_series(plot_t *p, int file, const char *path, const char *peer, char *err, size_t errlen) {
    for (int i = 0; i < p->n; i++)
        if (p->s[i].file == file && !strcmp(p->s[i].peer, peer)) return &p->s[i];
    if (p->n == PLOT_MAX_SERIES) {
        snprintf(err, errlen, "more than %d peers in these files", PLOT_MAX_SERIES);
        return NULL;
    }
    if (!p->s && !(p->s = calloc(PLOT_MAX_SERIES, sizeof *p->s))) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    series_t *s = &p->s[p->n++];
    memset(s, 0, sizeof *s);
    s->file = file;
    snprintf(s->peer, sizeof s->peer, "%s", peer);
    // `loco train` writes "local": the file tells those runs apart. A peer id: its first 8 digits.
    if (!strcmp(peer, "local")) snprintf(s->label, sizeof s->label, "%.60s", s_basename(path));
    else snprintf(s->label, sizeof s->label, "%.8s", peer);
    return s;
}

// The fields a record of `kind` must have, in rec. -1 with the reason when one is missing.
static int s_need(const flatjson_record_t *rec, const char *kind, const char *const *keys, double *out, char *err,
                  size_t errlen) {
    for (int i = 0; keys[i]; i++)
        if (flatjson_num(rec, keys[i], &out[i]) != 0) {
            snprintf(err, errlen, "%s record without a numeric \"%s\"", kind, keys[i]);
            return -1;
        }
    return 0;
}

// One parsed record into p. 0, or -1 with the reason (the caller adds file and line).
static int s_record(plot_t *p, int file, const char *path, const flatjson_record_t *rec, char *err, size_t errlen) {
    const char *kind = flatjson_str(rec, "kind"), *peer = flatjson_str(rec, "peer");
    double time;
    if (!kind) {
        snprintf(err, errlen, "record without a string \"kind\"");
        return -1;
    }
    if (flatjson_num(rec, "time", &time) != 0 || !isfinite(time)) {
        snprintf(err, errlen, "record without a numeric \"time\"");
        return -1;
    }
    if (!peer) {
        snprintf(err, errlen, "record without a string \"peer\"");
        return -1;
    }
    if (!p->have_t0 || time < p->t0) p->t0 = time, p->have_t0 = 1;
    double v[3], row[3];
    if (!strcmp(kind, "step")) {
        static const char *const k[] = {"step", "loss", NULL};
        if (s_need(rec, kind, k, v, err, errlen) != 0) return -1;
        row[0] = v[0], row[1] = time, row[2] = v[1];
    } else if (!strcmp(kind, "eval")) {
        static const char *const k[] = {"step", "val_loss", NULL};
        if (s_need(rec, kind, k, v, err, errlen) != 0) return -1;
        const flatjson_field_t *a = flatjson_get(rec, "anchor");
        if (a && a->type == FLATJSON_BOOL && a->num) return 0;
        row[0] = v[0], row[1] = time, row[2] = v[1];
    } else if (!strcmp(kind, "outer")) {
        static const char *const k[] = {"utilisation", "total_bytes_sent", NULL};
        if (s_need(rec, kind, k, v, err, errlen) != 0) return -1;
        row[0] = time, row[1] = v[0], row[2] = v[1];
    } else {
        return 0; // member, reject, ...: not drawn
    }
    series_t *s = s_series(p, file, path, peer, err, errlen);
    if (!s) return -1;
    table_t *t = !strcmp(kind, "step") ? &s->step : !strcmp(kind, "eval") ? &s->eval : &s->outer;
    if (s_push(t, 3, row) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

// Reads every line of path into p. 0, or -1 after printing "loco plot: FILE:LINE: reason".
static int s_read_file(plot_t *p, int file, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "loco plot: %s: cannot open: %s\n", path, strerror(errno));
        return -1;
    }
    char *line = NULL, err[300];
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int rc = 0;
    static flatjson_record_t rec; // 64 fields of ~150 bytes: off the stack
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        int has_nl = len > 0 && line[len - 1] == '\n';
        size_t n = (size_t)len - (size_t)has_nl;
        size_t k = 0;
        while (k < n && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r')) k++;
        if (k == n) continue; // blank line
        if (flatjson_parse(line, n, &rec, err, sizeof err) != 0) {
            fprintf(stderr, "loco plot: %s:%ld: malformed metrics record: %s%s\n", path, lineno, err,
                    has_nl ? "" : " (the file's last line has no newline: was its writer stopped mid-line?)");
            rc = -1;
        } else if (s_record(p, file, path, &rec, err, sizeof err) != 0) {
            fprintf(stderr, "loco plot: %s:%ld: %s\n", path, lineno, err);
            rc = -1;
        }
    }
    if (rc == 0 && ferror(f)) {
        fprintf(stderr, "loco plot: %s: read error: %s\n", path, strerror(errno));
        rc = -1;
    }
    free(line);
    fclose(f);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Data files and the gnuplot script

// Writes rows of t to dir/name as text; col 1 of step/eval tables is time, shifted by t0 and
// divided by unit. Training loss (bucket > 1) is averaged over consecutive rows. 0 or -1.
static int s_write_table(const char *dir, const char *name, const table_t *t, int time_col, double t0, double unit,
                         size_t bucket) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    for (size_t i = 0; i < t->n; i += bucket) {
        size_t m = t->n - i < bucket ? t->n - i : bucket;
        double acc[3] = {0, 0, 0};
        for (size_t j = 0; j < m; j++)
            for (int c = 0; c < 3; c++) acc[c] += t->v[(i + j) * 3 + c];
        for (int c = 0; c < 3; c++) acc[c] /= (double)m;
        acc[time_col] = (acc[time_col] - t0) / unit;
        // %.17g keeps values exact; gnuplot reads "nan"/"inf" as undefined points.
        fprintf(f, "%.17g %.17g %.17g\n", acc[0], acc[1], acc[2]);
    }
    int ok = !ferror(f);
    return fclose(f) == 0 && ok ? 0 : -1;
}

// A gnuplot single-quoted string: a quote inside is written twice.
static void s_quoted(FILE *f, const char *s) {
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'') fputc('\'', f);
        if ((unsigned char)*s >= 0x20) fputc(*s, f);
    }
    fputc('\'', f);
}

// Appends one "file using ..." term of series i to the panel's plot command.
// Line colours, one per series (cycled); training lines are drawn half transparent ("#AARRGGBB")
// so that the validation points over them stay visible.
static const char *const s_colours[] = {"1f77b4", "d62728", "2ca02c", "9467bd", "ff7f0e", "17becf", "8c564b", "e377c2"};

static void s_term(FILE *f, int *terms, const plot_t *p, int i, const char *dir, const char *suffix,
                   const char *using_style, int titled, int faint) {
    char file[1200];
    snprintf(file, sizeof file, "%s/s%d_%s.dat", dir, i, suffix);
    fprintf(f, "%s", (*terms)++ ? ", \\\n     " : "plot ");
    s_quoted(f, file);
    fprintf(f, " %s lc rgb '#%s%s' ", using_style, faint ? "70" : "", s_colours[i % 8]);
    if (!titled || p->n > PLOT_KEY_MAX_SERIES) fprintf(f, "notitle");
    else fprintf(f, "title "), s_quoted(f, p->s[i].label);
}

// The same with "\n" kept as a line break: a double-quoted string, where gnuplot reads escapes.
static void s_quoted_nl(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '\n') fputs("\\n", f);
        else if (*s == '"' || *s == '\\') fputc('\\', f), fputc(*s, f);
        else if ((unsigned char)*s >= 0x20) fputc(*s, f);
    }
    fputc('"', f);
}

// One panel's plot command. what: 0/1 loss against step/time (x_col 1/2), 2 utilisation, 3 MiB
// sent. Training lines first and validation points over them, one colour per series (the key names
// each series once). An empty frame saying why when there is nothing to draw.
static void s_panel(FILE *f, const plot_t *p, const char *dir, int x_col, int what, const char *empty) {
    int terms = 0;
    char style[160];
    for (int i = 0; i < p->n; i++) {
        const series_t *s = &p->s[i];
        if (what <= 1 && s->step.n) {
            snprintf(style, sizeof style, "using %d:3 with lines lw 1.5", x_col);
            s_term(f, &terms, p, i, dir, "step", style, 1, 1);
        } else if (what <= 1 && s->eval.n) { // no training line to carry the title
            snprintf(style, sizeof style, "using %d:3 with linespoints lw 2.5 pt 7 ps 1.1", x_col);
            s_term(f, &terms, p, i, dir, "eval", style, 1, 0);
        }
        if (what == 2 && s->outer.n) s_term(f, &terms, p, i, dir, "outer", "using 1:($2*100) with linespoints lw 1 pt 7 ps 0.4", 1, 0);
        if (what == 3 && s->outer.n) s_term(f, &terms, p, i, dir, "outer", "using 1:($3/1048576) with linespoints lw 1 pt 7 ps 0.4", 1, 0);
    }
    for (int i = 0; what <= 1 && i < p->n; i++) {
        if (!p->s[i].eval.n || !p->s[i].step.n) continue;
        snprintf(style, sizeof style, "using %d:3 with linespoints lw 2.5 pt 7 ps 1.1", x_col);
        s_term(f, &terms, p, i, dir, "eval", style, 0, 0);
    }
    if (terms) {
        fputc('\n', f);
        return;
    }
    fprintf(f, "set label 1 "), s_quoted(f, empty), fprintf(f, " at graph 0.5, graph 0.5 center\n");
    fprintf(f, "set key off\nset xrange [0:1]\nset yrange [0:1]\nplot -1 notitle\n");
    fprintf(f, "unset label 1\nset key on\nset autoscale x\nset autoscale y\n");
}

// Consecutive training steps averaged into one point of a line of n steps.
static size_t s_bucket(size_t n) { return n > PLOT_MAX_POINTS ? (n + PLOT_MAX_POINTS - 1) / PLOT_MAX_POINTS : 1; }

static int s_write_script(const char *dir, const plot_t *p, const char *out, int w, int h, double span_s,
                          const char *unit_name, int nfiles) {
    char path[1200];
    snprintf(path, sizeof path, "%s/plot.gp", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    int peers = 0;
    size_t bucket = 1;
    for (int i = 0; i < p->n; i++) {
        peers += strcmp(p->s[i].peer, "local") != 0;
        if (s_bucket(p->s[i].step.n) > bucket) bucket = s_bucket(p->s[i].step.n);
    }
    char smooth[64] = "";
    if (bucket > 1) snprintf(smooth, sizeof smooth, " (means of up to %zu steps)", bucket);
    fprintf(f, "set terminal pngcairo size %d,%d noenhanced font ',%d'\n", w, h, w >= 1000 ? 10 : 8);
    fprintf(f, "set output "), s_quoted(f, out), fputc('\n', f);
    char title[300];
    snprintf(title, sizeof title, "loco: %d line(s) from %d metrics file(s)%s, %.0f s of wall time\n"
             "loss panels: lines training loss%s, points validation loss", p->n, nfiles,
             peers ? " (loco run peers)" : "", span_s, smooth);
    fprintf(f, "set multiplot layout 2,2 title "), s_quoted_nl(f, title), fputc('\n', f);
    fprintf(f, "set grid\nset key top right box opaque\nset datafile missing 'nan'\n");

    fprintf(f, "set title 'loss against inner step'\n");
    fprintf(f, "set xlabel 'inner step'\nset ylabel 'loss (nats per token)'\n");
    s_panel(f, p, dir, 1, 0, "no step or eval records");

    fprintf(f, "set title 'loss against wall time'\n");
    fprintf(f, "set xlabel 'wall time (%s)'\nset ylabel 'loss (nats per token)'\n", unit_name);
    s_panel(f, p, dir, 2, 1, "no step or eval records");

    fprintf(f, "set title 'compute utilisation (share of wall time in inner steps)'\n");
    fprintf(f, "set xlabel 'wall time (%s)'\nset ylabel 'utilisation (%%)'\nset key bottom right\n", unit_name);
    s_panel(f, p, dir, 1, 2, "no outer records (only loco run writes them)");

    fprintf(f, "set title 'bytes sent in outer exchanges (since each process started)'\n");
    fprintf(f, "set xlabel 'wall time (%s)'\nset ylabel 'sent (MiB)'\nset key top left\n", unit_name);
    s_panel(f, p, dir, 1, 3, "no outer records (only loco run writes them)");
    fprintf(f, "unset multiplot\nset output\n");
    int ok = !ferror(f);
    return fclose(f) == 0 && ok ? 0 : -1;
}

// Runs gnuplot on dir/plot.gp, its output in dir/gnuplot.log. 0, or -1 after printing why.
static int s_run_gnuplot(const char *dir) {
    char script[1200], logp[1200];
    snprintf(script, sizeof script, "%s/plot.gp", dir);
    snprintf(logp, sizeof logp, "%s/gnuplot.log", dir);
    int logfd = open(logp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int pfd[2];
    if (logfd < 0 || pipe2(pfd, O_CLOEXEC) != 0) {
        fprintf(stderr, "loco plot: %s: %s\n", logp, strerror(errno));
        if (logfd >= 0) close(logfd);
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "loco plot: cannot start gnuplot: %s\n", strerror(errno));
        close(logfd), close(pfd[0]), close(pfd[1]);
        return -1;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        execlp("gnuplot", "gnuplot", script, (char *)NULL);
        int e = errno; // exec failed: tell the parent why through the close-on-exec pipe
        if (write(pfd[1], &e, sizeof e) < 0) _exit(126);
        _exit(127);
    }
    close(logfd);
    close(pfd[1]);
    int e = 0;
    ssize_t got = read(pfd[0], &e, sizeof e);
    close(pfd[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (got == (ssize_t)sizeof e) {
        if (e == ENOENT)
            fprintf(stderr, "loco plot: gnuplot is not installed (not found on PATH): install it, e.g. "
                    "'apt-get install gnuplot-nox' on Debian\n");
        else
            fprintf(stderr, "loco plot: cannot run gnuplot: %s\n", strerror(e));
        return -1;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "loco plot: gnuplot failed (%s %d); its output:\n",
                WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        FILE *l = fopen(logp, "r");
        char buf[512];
        int lines = 0;
        while (l && fgets(buf, sizeof buf, l) && lines++ < 40) fprintf(stderr, "  %s", buf);
        if (l) fclose(l);
        return -1;
    }
    return 0;
}

static int s_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int s_help(void) {
    printf("usage: loco plot METRICS.jsonl... --out FILE.png [--size WxH]\n"
           "  Draws loco's metrics JSONL files (docs/metrics.md; [train] metrics of loco train / run, and\n"
           "  DIR/peer-K/metrics.jsonl of loco swarm) as one PNG with four panels: training and validation\n"
           "  loss against inner step and against wall time, compute utilisation and bytes sent (loco run's\n"
           "  outer records) against wall time. One line per peer of each file. Needs gnuplot (Debian:\n"
           "  gnuplot-nox).\n"
           "  --out FILE.png   the picture to write (replaced only when drawing succeeded)\n"
           "  --size WxH       its size in pixels (default 1200x900; 200 to 10000 each)\n"
           "  Exit 0: written; 1: a file cannot be read or has a malformed line (named with its line\n"
           "  number), no data, or gnuplot failed or is missing; 2: usage error.\n");
    return 0;
}

int cmd_plot(int argc, char **argv) {
    const char *out = NULL;
    int w = 1200, h = 900;
    const char **files = calloc((size_t)argc + 1, sizeof *files);
    int nfiles = 0;
    if (!files) return 1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            free(files);
            return s_help();
        } else if (!strcmp(argv[i], "--out") || !strcmp(argv[i], "-o")) {
            if (i + 1 >= argc) {
                free(files);
                return cli_usage_error("plot", "--out needs a file name");
            }
            out = argv[++i];
        } else if (!strcmp(argv[i], "--size")) {
            char tail;
            if (i + 1 >= argc || sscanf(argv[i + 1], "%dx%d%c", &w, &h, &tail) != 2 || w < 200 || h < 200 ||
                w > 10000 || h > 10000) {
                free(files);
                return cli_usage_error("plot", "--size %s: want WxH in pixels, each 200 to 10000 (e.g. 1200x900)",
                                       i + 1 < argc ? argv[i + 1] : "");
            }
            i++;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            free(files);
            return cli_usage_error("plot", "unknown option '%s'", argv[i]);
        } else {
            files[nfiles++] = argv[i];
        }
    }
    if (!nfiles || !out) {
        free(files);
        return cli_usage_error("plot", "%s", !nfiles ? "no metrics file given" : "--out FILE.png is required");
    }

    plot_t p = {0};
    int rc = 1;
    char dir[] = "/tmp/loco-plot.XXXXXX", tmpdir[1100], part[1200];
    const char *tmp = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/loco-plot.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    char *d = NULL;
    snprintf(part, sizeof part, "%s.part", out);
    for (int i = 0; i < nfiles; i++)
        if (s_read_file(&p, i, files[i]) != 0) goto done;
    size_t points = 0;
    for (int i = 0; i < p.n; i++) points += p.s[i].step.n + p.s[i].eval.n + p.s[i].outer.n;
    if (!points) {
        fprintf(stderr, "loco plot: no step, eval or outer records in %s%s: nothing to draw\n", files[0],
                nfiles > 1 ? " and the others" : "");
        goto done;
    }
    double span = 0;
    for (int i = 0; i < p.n; i++) {
        const table_t *t[] = {&p.s[i].step, &p.s[i].eval, &p.s[i].outer};
        const int tc[] = {1, 1, 0};
        for (int k = 0; k < 3; k++)
            for (size_t j = 0; j < t[k]->n; j++)
                if (t[k]->v[j * 3 + tc[k]] - p.t0 > span) span = t[k]->v[j * 3 + tc[k]] - p.t0;
    }
    double unit = span > 3 * 3600 ? 3600 : span > 600 ? 60 : 1;
    const char *unit_name = unit == 3600 ? "hours" : unit == 60 ? "minutes" : "seconds";

    if (!(d = mkdtemp(tmpdir)) && !(d = mkdtemp(dir))) {
        fprintf(stderr, "loco plot: cannot create a temporary directory: %s\n", strerror(errno));
        goto done;
    }
    for (int i = 0; i < p.n; i++) {
        char name[64];
        series_t *s = &p.s[i];
        int bad = 0;
        snprintf(name, sizeof name, "s%d_step.dat", i);
        bad |= s->step.n && s_write_table(d, name, &s->step, 1, p.t0, unit, s_bucket(s->step.n)) != 0;
        snprintf(name, sizeof name, "s%d_eval.dat", i);
        bad |= s->eval.n && s_write_table(d, name, &s->eval, 1, p.t0, unit, 1) != 0;
        snprintf(name, sizeof name, "s%d_outer.dat", i);
        bad |= s->outer.n && s_write_table(d, name, &s->outer, 0, p.t0, unit, 1) != 0;
        if (bad) {
            fprintf(stderr, "loco plot: cannot write data files in %s: %s\n", d, strerror(errno));
            goto done;
        }
    }
    // The output must be writable before gnuplot runs (its own message would be less clear).
    FILE *probe = fopen(part, "w");
    if (!probe) {
        fprintf(stderr, "loco plot: cannot write %s: %s\n", part, strerror(errno));
        goto done;
    }
    fclose(probe);
    if (s_write_script(d, &p, part, w, h, span, unit_name, nfiles) != 0) {
        fprintf(stderr, "loco plot: cannot write the gnuplot script in %s: %s\n", d, strerror(errno));
        goto done;
    }
    if (s_run_gnuplot(d) != 0) goto done;
    unsigned char magic[8] = {0};
    FILE *png = fopen(part, "rb");
    size_t got = png ? fread(magic, 1, 8, png) : 0;
    if (png) fclose(png);
    if (got != 8 || memcmp(magic, "\x89PNG\r\n\x1a\n", 8) != 0) {
        fprintf(stderr, "loco plot: gnuplot wrote no PNG to %s (is its pngcairo terminal available?)\n", part);
        goto done;
    }
    if (rename(part, out) != 0) {
        fprintf(stderr, "loco plot: cannot rename %s to %s: %s\n", part, out, strerror(errno));
        goto done;
    }
    printf("loco plot: wrote %s (%dx%d, %d line(s) from %d file(s))\n", out, w, h, p.n, nfiles);
    rc = 0;
done:
    if (rc != 0) unlink(part);
    if (d && !getenv("LOCO_PLOT_KEEP")) nftw(d, s_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    else if (d) fprintf(stderr, "loco plot: kept the script and data in %s\n", d);
    s_plot_free(&p);
    free(files);
    return rc;
}
