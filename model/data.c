#include "model/data.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/rng.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "token shards are read in place; a big-endian port must byte-swap them"
#endif

static uint32_t s_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int64_t data_header_parse(const uint8_t *buf, size_t len, uint64_t file_size, char *err, size_t errlen) {
    if (len < DATA_HEADER_BYTES || file_size < DATA_HEADER_BYTES) {
        snprintf(err, errlen, "truncated header: %llu bytes, a shard header is %d bytes",
                 (unsigned long long)(file_size < len ? file_size : len), DATA_HEADER_BYTES);
        return -1;
    }
    uint32_t magic = s_le32(buf), version = s_le32(buf + 4), ntok = s_le32(buf + 8);
    if (magic != DATA_MAGIC) {
        snprintf(err, errlen, "bad magic %u (expected %d): not a token shard", magic, DATA_MAGIC);
        return -1;
    }
    if (version != DATA_VERSION) {
        snprintf(err, errlen, "unsupported version %u (expected %d; version 2 shards hold uint32 tokens)",
                 version, DATA_VERSION);
        return -1;
    }
    uint64_t want = DATA_HEADER_BYTES + 2ull * ntok;
    if (file_size != want) {
        snprintf(err, errlen, "size %llu bytes does not match the header's %u tokens (%llu bytes)%s",
                 (unsigned long long)file_size, ntok, (unsigned long long)want,
                 file_size < want ? ": truncated" : ": trailing bytes");
        return -1;
    }
    return (int64_t)ntok;
}

data_shard_t *data_shard_open(const char *path, int vocab, char *err, size_t errlen) {
    char why[256];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    uint8_t hdr[DATA_HEADER_BYTES];
    ssize_t got = 0;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    got = pread(fd, hdr, sizeof hdr, 0);
    if (got < 0) got = 0;
    int64_t ntok = data_header_parse(hdr, (size_t)got, (uint64_t)st.st_size, why, sizeof why);
    if (ntok < 0) {
        snprintf(err, errlen, "%s: %s", path, why);
        close(fd);
        return NULL;
    }
    data_shard_t *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        snprintf(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    snprintf(s->path, sizeof s->path, "%s", path);
    s->ntok = (size_t)ntok;
    s->map_len = (size_t)st.st_size;
    s->map = mmap(NULL, s->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (s->map == MAP_FAILED) {
        snprintf(err, errlen, "%s: cannot map: %s", path, strerror(errno));
        free(s);
        return NULL;
    }
    s->tok = (const uint16_t *)((const uint8_t *)s->map + DATA_HEADER_BYTES);
    for (size_t i = 0; i < s->ntok; i++) {
        if (s->tok[i] >= vocab) {
            snprintf(err, errlen, "%s: token %u at position %zu is not below the model's vocab %d "
                     "(a GPT-2-tokenized shard needs [model] vocab = 50257)", path, s->tok[i], i, vocab);
            data_shard_destroy(&s);
            return NULL;
        }
    }
    return s;
}

void data_shard_destroy(data_shard_t **self_p) {
    if (!self_p || !*self_p) return;
    data_shard_t *s = *self_p;
    if (s->map && s->map != MAP_FAILED) munmap(s->map, s->map_len);
    free(s);
    *self_p = NULL;
}

static int s_fsync_dir(const char *path) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s", path);
    int fd = open(dirname(tmp), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int data_shard_write(const char *path, const uint16_t *tokens, size_t n, char *err, size_t errlen) {
    if (n > UINT32_MAX) {
        snprintf(err, errlen, "%s: %zu tokens do not fit one shard", path, n);
        return -1;
    }
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        return -1;
    }
    uint8_t hdr[DATA_HEADER_BYTES] = {0};
    uint32_t fields[3] = {DATA_MAGIC, DATA_VERSION, (uint32_t)n};
    for (int i = 0; i < 3; i++)
        for (int b = 0; b < 4; b++) hdr[i * 4 + b] = (uint8_t)(fields[i] >> (8 * b));
    int ok = fwrite(hdr, 1, sizeof hdr, f) == sizeof hdr;
    // Tokens are written little-endian two bytes at a time through a buffer.
    uint8_t buf[8192];
    size_t i = 0;
    while (ok && i < n) {
        size_t k = 0;
        for (; k < sizeof buf / 2 && i < n; k++, i++) {
            buf[2 * k] = (uint8_t)(tokens[i] & 0xff);
            buf[2 * k + 1] = (uint8_t)(tokens[i] >> 8);
        }
        ok = fwrite(buf, 2, k, f) == k;
    }
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0) ok = 0;
    if (!ok) {
        snprintf(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: cannot rename into place: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    s_fsync_dir(path);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// loco data

typedef struct {
    uint16_t *tok;
    size_t n, cap;
} s_tokbuf_t;

static int s_push(s_tokbuf_t *b, const unsigned char *p, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 20;
        while (cap < b->n + n) cap *= 2;
        uint16_t *t = realloc(b->tok, cap * sizeof *t);
        if (!t) return -1;
        b->tok = t;
        b->cap = cap;
    }
    for (size_t i = 0; i < n; i++) b->tok[b->n++] = p[i];
    return 0;
}

static int s_take_file(const char *name) {
    const char *dot = strrchr(name, '.');
    return name[0] != '.' && (!dot || strcmp(dot, ".txt") == 0);
}

static int s_cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Adds one text file: its first (1−f) bytes to train, the rest (from a line start) to val.
static int s_add_text(const char *path, double f, s_tokbuf_t *tr, s_tokbuf_t *va, char *err, size_t errlen) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 65536;
            unsigned char *nb = realloc(buf, cap);
            if (!nb) { free(buf); fclose(fp); snprintf(err, errlen, "%s: out of memory", path); return -1; }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, fp);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        snprintf(err, errlen, "%s: read error", path);
        return -1;
    }
    size_t cut = n - (size_t)((double)n * f);
    while (cut > 0 && cut < n && buf[cut - 1] != '\n') cut++;
    int rc = s_push(tr, buf, cut) | s_push(va, buf + cut, n - cut);
    free(buf);
    if (rc) snprintf(err, errlen, "out of memory collecting tokens");
    return rc;
}

int data_prepare(const char *const *inputs, int ninputs, const char *outdir, double val_fraction,
                 char *err, size_t errlen) {
    if (val_fraction < 0 || val_fraction >= 1) {
        snprintf(err, errlen, "--val-fraction must be in [0, 1), got %g", val_fraction);
        return -1;
    }
    char parents[1024];
    snprintf(parents, sizeof parents, "%s", outdir);
    for (char *p = parents + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        mkdir(parents, 0755); // errors surface at the final mkdir
        *p = '/';
    }
    if (mkdir(outdir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: cannot create directory: %s", outdir, strerror(errno));
        return -1;
    }
    s_tokbuf_t tr = {0}, va = {0};
    int files = 0, rc = 0;
    for (int i = 0; i < ninputs && rc == 0; i++) {
        struct stat st;
        if (lstat(inputs[i], &st) != 0) {
            snprintf(err, errlen, "%s: %s", inputs[i], strerror(errno));
            rc = -1;
            break;
        }
        if (!S_ISDIR(st.st_mode)) {
            rc = s_add_text(inputs[i], val_fraction, &tr, &va, err, errlen);
            files++;
            continue;
        }
        DIR *d = opendir(inputs[i]);
        if (!d) {
            snprintf(err, errlen, "%s: %s", inputs[i], strerror(errno));
            rc = -1;
            break;
        }
        char **names = NULL;
        int nn = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            char full[2048];
            snprintf(full, sizeof full, "%s/%s", inputs[i], e->d_name);
            struct stat fs;
            // Symlinks are skipped: Debian's fortunes ships a .u8 link beside each file.
            if (!s_take_file(e->d_name) || lstat(full, &fs) != 0 || !S_ISREG(fs.st_mode)) continue;
            char **nn2 = realloc(names, (size_t)(nn + 1) * sizeof *names);
            if (!nn2) break;
            names = nn2;
            names[nn++] = strdup(full);
        }
        closedir(d);
        if (nn > 0) qsort(names, (size_t)nn, sizeof *names, s_cmp_str); // qsort(NULL, 0) is UB
        for (int k = 0; k < nn; k++) {
            if (rc == 0) rc = s_add_text(names[k], val_fraction, &tr, &va, err, errlen);
            files++;
            free(names[k]);
        }
        free(names);
    }
    if (rc == 0 && tr.n == 0) {
        snprintf(err, errlen, "no text found in the inputs");
        rc = -1;
    }
    // Training text goes into shards of at most 100M tokens, as llm.c's scripts write them.
    const size_t per_shard = 100u * 1000 * 1000;
    int nshards = 0;
    for (size_t off = 0; rc == 0 && off < tr.n; off += per_shard, nshards++) {
        char path[1100];
        snprintf(path, sizeof path, "%s/train_%03d.bin", outdir, nshards);
        size_t k = tr.n - off < per_shard ? tr.n - off : per_shard;
        rc = data_shard_write(path, tr.tok + off, k, err, errlen);
    }
    if (rc == 0 && va.n > 0) {
        char path[1100];
        snprintf(path, sizeof path, "%s/val_000.bin", outdir);
        rc = data_shard_write(path, va.tok, va.n, err, errlen);
    }
    if (rc == 0)
        printf("data: %d files -> %s: %zu training tokens in %d shard(s), %zu validation tokens\n",
               files, outdir, tr.n, nshards, va.n);
    free(tr.tok);
    free(va.tok);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Data sets and streams

data_set_t *data_set_open(const char *dir, int val, int vocab, char *err, size_t errlen) {
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "%s: cannot open data directory: %s", dir, strerror(errno));
        return NULL;
    }
    char **names = NULL;
    int nn = 0;
    struct dirent *e;
    const char *pat = val ? "*val*.bin" : "*train*.bin";
    while ((e = readdir(d))) {
        if (fnmatch(pat, e->d_name, 0) != 0) continue;
        char **n2 = realloc(names, (size_t)(nn + 1) * sizeof *names);
        if (!n2) break;
        names = n2;
        names[nn] = malloc(strlen(dir) + strlen(e->d_name) + 2);
        sprintf(names[nn++], "%s/%s", dir, e->d_name);
    }
    closedir(d);
    data_set_t *set = calloc(1, sizeof *set);
    if (!set) {
        snprintf(err, errlen, "out of memory");
    } else if (nn == 0) {
        snprintf(err, errlen, "%s: no %s shards (%s); prepare them with `loco data`", dir,
                 val ? "validation" : "training", pat);
        free(set);
        set = NULL;
    } else {
        qsort(names, (size_t)nn, sizeof *names, s_cmp_str);
        set->shard = calloc((size_t)nn, sizeof *set->shard);
        for (int i = 0; i < nn && set; i++) {
            set->shard[i] = data_shard_open(names[i], vocab, err, errlen);
            if (!set->shard[i]) {
                set->n = i;
                data_set_destroy(&set);
                break;
            }
            set->n = i + 1;
            set->total += set->shard[i]->ntok;
        }
    }
    for (int i = 0; i < nn; i++) free(names[i]);
    free(names);
    return set;
}

void data_set_destroy(data_set_t **self_p) {
    if (!self_p || !*self_p) return;
    data_set_t *s = *self_p;
    for (int i = 0; i < s->n; i++) data_shard_destroy(&s->shard[i]);
    free(s->shard);
    free(s);
    *self_p = NULL;
}

void data_stream_init(data_stream_t *s, const data_set_t *set, uint64_t seed, uint64_t stream) {
    s->set = set;
    s->seed = seed;
    s->stream = stream;
    s->draws = 0;
}

int data_stream_next(data_stream_t *s, int32_t *inputs, int32_t *targets, int B, int T) {
    const data_set_t *set = s->set;
    size_t usable = 0;
    for (int i = 0; i < set->n; i++)
        if (set->shard[i]->ntok > (size_t)T) usable += set->shard[i]->ntok - (size_t)T;
    if (usable == 0) return -1;
    for (int b = 0; b < B; b++) {
        // Each window is a pure function of (seed, stream, draw index): resuming needs one counter.
        rng_t r;
        rng_seed(&r, s->seed ^ (s->stream * 0xd1b54a32d192ed03ULL) ^ (s->draws * 0x9e3779b97f4a7c15ULL));
        rng_next(&r);
        uint64_t pos = rng_below(&r, usable);
        s->draws++;
        const data_shard_t *sh = NULL;
        for (int i = 0; i < set->n; i++) {
            size_t u = set->shard[i]->ntok > (size_t)T ? set->shard[i]->ntok - (size_t)T : 0;
            if (pos < u) { sh = set->shard[i]; break; }
            pos -= u;
        }
        for (int t = 0; t < T; t++) {
            inputs[b * T + t] = sh->tok[pos + t];
            targets[b * T + t] = sh->tok[pos + t + 1];
        }
    }
    return 0;
}

size_t data_eval_windows(const data_set_t *set, int T) {
    size_t n = set->shard[0]->ntok;
    return n > 0 ? (n - 1) / (size_t)T : 0;
}

void data_eval_window(const data_set_t *set, size_t i, int32_t *inputs, int32_t *targets, int T) {
    const uint16_t *tok = set->shard[0]->tok + i * (size_t)T;
    for (int t = 0; t < T; t++) {
        inputs[t] = tok[t];
        targets[t] = tok[t + 1];
    }
}
