#include "node/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char s_magic[8] = {'L', 'O', 'C', 'O', 'C', 'K', 'P', 'T'};

void ckpt_put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

uint64_t ckpt_get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void s_put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t s_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int ckpt_add(ckpt_t *c, const char *name, const void *data, size_t len) {
    size_t nl = strlen(name);
    if (c->n >= CKPT_MAX_SECTIONS || nl == 0 || nl >= sizeof c->sec[0].name) return -1;
    ckpt_section_t *s = &c->sec[c->n++];
    memcpy(s->name, name, nl + 1);
    s->data = data;
    s->len = len;
    return 0;
}

// Writes all of buf, hashing it. Returns 0 or -1.
static int s_write(int fd, EVP_MD_CTX *md, const void *buf, size_t len) {
    EVP_DigestUpdate(md, buf, len);
    const uint8_t *p = buf;
    while (len > 0) {
        size_t chunk = len > (1u << 30) ? (1u << 30) : len;
        ssize_t w = write(fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static void s_fsync_parent(const char *path) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

int ckpt_save(const ckpt_t *c, const char *path, char *err, size_t errlen) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        return -1;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    uint8_t hdr[16];
    memcpy(hdr, s_magic, 8);
    s_put_u32(hdr + 8, CKPT_VERSION);
    s_put_u32(hdr + 12, (uint32_t)c->n);
    int rc = s_write(fd, md, hdr, sizeof hdr);
    for (int i = 0; rc == 0 && i < c->n; i++) {
        uint8_t sh[1 + 64 + 8];
        size_t nl = strlen(c->sec[i].name);
        sh[0] = (uint8_t)nl;
        memcpy(sh + 1, c->sec[i].name, nl);
        ckpt_put_u64(sh + 1 + nl, c->sec[i].len);
        rc = s_write(fd, md, sh, 1 + nl + 8);
        if (rc == 0) rc = s_write(fd, md, c->sec[i].data, c->sec[i].len);
    }
    uint8_t digest[32];
    unsigned int dl = 0;
    EVP_DigestFinal_ex(md, digest, &dl);
    EVP_MD_CTX_free(md);
    if (rc == 0) {
        ssize_t w = write(fd, digest, 32);
        rc = w == 32 ? 0 : -1;
    }
    if (rc == 0) rc = fsync(fd);
    int saved_errno = errno;
    if (close(fd) != 0 && rc == 0) {
        rc = -1;
        saved_errno = errno;
    }
    if (rc != 0) {
        snprintf(err, errlen, "%s: write failed: %s", tmp, strerror(saved_errno));
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: cannot rename into place: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    s_fsync_parent(path);
    return 0;
}

int ckpt_parse(ckpt_t *c, const uint8_t *buf, size_t len, char *err, size_t errlen) {
    c->n = 0;
    if (len < 16 + 32) {
        snprintf(err, errlen, "truncated: %zu bytes is shorter than an empty checkpoint", len);
        return -1;
    }
    if (memcmp(buf, s_magic, 8) != 0) {
        snprintf(err, errlen, "not a loco checkpoint (bad magic)");
        return -1;
    }
    uint32_t version = s_get_u32(buf + 8), n = s_get_u32(buf + 12);
    if (version != CKPT_VERSION) {
        snprintf(err, errlen, "checkpoint version %u is not supported (this build reads %d)", version, CKPT_VERSION);
        return -1;
    }
    uint8_t digest[32];
    unsigned int dl = 0;
    EVP_Digest(buf, len - 32, digest, &dl, EVP_sha256(), NULL);
    if (memcmp(digest, buf + len - 32, 32) != 0) {
        snprintf(err, errlen, "SHA-256 mismatch: the file is corrupted or truncated");
        return -1;
    }
    memcpy(c->digest, digest, 32);
    if (n > CKPT_MAX_SECTIONS) {
        snprintf(err, errlen, "%u sections exceed the limit of %d", n, CKPT_MAX_SECTIONS);
        return -1;
    }
    size_t pos = 16, end = len - 32;
    for (uint32_t i = 0; i < n; i++) {
        if (end - pos < 1) goto trunc;
        size_t nl = buf[pos];
        if (nl == 0 || nl >= sizeof c->sec[0].name) {
            snprintf(err, errlen, "section %u: bad name length %zu", i, nl);
            return -1;
        }
        if (end - pos < 1 + nl + 8) goto trunc;
        // Names are C strings to every reader (ckpt_get): "params\0x" must not pass as "params".
        if (memchr(buf + pos + 1, '\0', nl)) {
            snprintf(err, errlen, "section %u: name holds a NUL byte", i);
            return -1;
        }
        ckpt_section_t *s = &c->sec[i];
        memcpy(s->name, buf + pos + 1, nl);
        s->name[nl] = '\0';
        uint64_t sl = ckpt_get_u64(buf + pos + 1 + nl);
        pos += 1 + nl + 8;
        if (sl > end - pos) {
            snprintf(err, errlen, "section '%s': length %llu runs past the end of the file", s->name,
                     (unsigned long long)sl);
            return -1;
        }
        s->data = buf + pos;
        s->len = (size_t)sl;
        pos += (size_t)sl;
        c->n = (int)i + 1;
    }
    if (pos != end) {
        snprintf(err, errlen, "%zu unexpected bytes after the last section", end - pos);
        return -1;
    }
    return 0;
trunc:
    snprintf(err, errlen, "truncated section table");
    return -1;
}

int ckpt_load(ckpt_t *c, const char *path, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    char why[256];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    size_t len = (size_t)st.st_size;
    uint8_t *buf = malloc(len ? len : 1);
    size_t got = 0;
    while (buf && got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (!buf || got != len) {
        snprintf(err, errlen, "%s: %s", path, buf ? "short read" : "out of memory");
        free(buf);
        return -1;
    }
    if (ckpt_parse(c, buf, len, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s: %s", path, why);
        free(buf);
        memset(c, 0, sizeof *c);
        return -1;
    }
    c->file = buf;
    c->file_len = len;
    return 0;
}

void ckpt_free(ckpt_t *c) {
    free(c->file);
    memset(c, 0, sizeof *c);
}

const uint8_t *ckpt_get(const ckpt_t *c, const char *name, size_t *len) {
    for (int i = 0; i < c->n; i++) {
        if (strcmp(c->sec[i].name, name) == 0) {
            if (len) *len = c->sec[i].len;
            return c->sec[i].data;
        }
    }
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// Directories

static int s_is_ckpt_name(const char *name, uint64_t *step) {
    unsigned long long s;
    int used = 0;
    if (sscanf(name, "ckpt_%llu.bin%n", &s, &used) != 1 || name[used] != '\0') return 0;
    *step = s;
    return 1;
}

static int s_cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

// Steps of the checkpoint files in dir, ascending. Caller frees. -1 if the dir cannot be read.
static int s_list(const char *dir, uint64_t **steps) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0, cap = 0;
    *steps = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        uint64_t s;
        if (!s_is_ckpt_name(e->d_name, &s)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            uint64_t *ns = realloc(*steps, (size_t)cap * sizeof **steps);
            if (!ns) break;
            *steps = ns;
        }
        (*steps)[n++] = s;
    }
    closedir(d);
    if (n > 0) qsort(*steps, (size_t)n, sizeof **steps, s_cmp_u64); // qsort(NULL, 0) is UB
    return n;
}

int ckpt_dir_save(const ckpt_t *c, const char *dir, uint64_t step, int keep, char *path_out,
                  size_t path_len, char *err, size_t errlen) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: cannot create checkpoint directory: %s", dir, strerror(errno));
        return -1;
    }
    char path[1100];
    snprintf(path, sizeof path, "%s/ckpt_%012llu.bin", dir, (unsigned long long)step);
    if (ckpt_save(c, path, err, errlen) != 0) return -1;
    if (path_out) snprintf(path_out, path_len, "%s", path);
    // Manifest last: the name of the newest complete checkpoint.
    char man[1100], line[256];
    snprintf(man, sizeof man, "%s/LATEST", dir);
    int n = snprintf(line, sizeof line, "ckpt_%012llu.bin\n", (unsigned long long)step);
    ckpt_t mc = {0};
    (void)mc;
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp", man);
    FILE *f = fopen(tmp, "w");
    int ok = f && fwrite(line, 1, (size_t)n, f) == (size_t)n && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, man) != 0) {
        snprintf(err, errlen, "%s: cannot write manifest: %s", man, strerror(errno));
        unlink(tmp);
        return -1;
    }
    s_fsync_parent(man);
    uint64_t *steps = NULL;
    int cnt = s_list(dir, &steps);
    for (int i = 0; i + keep < cnt; i++) {
        if (steps[i] == step) continue;
        char old[1100];
        snprintf(old, sizeof old, "%s/ckpt_%012llu.bin", dir, (unsigned long long)steps[i]);
        unlink(old);
    }
    free(steps);
    return 0;
}

static int s_verifies(const char *path) {
    ckpt_t c;
    char e[256];
    if (ckpt_load(&c, path, e, sizeof e) != 0) return 0;
    ckpt_free(&c);
    return 1;
}

int ckpt_resolve(const char *path, char *out, size_t outlen, char *err, size_t errlen) {
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(out, outlen, "%s", path);
        return 0;
    }
    char man[1100], name[256] = "";
    snprintf(man, sizeof man, "%s/LATEST", path);
    FILE *f = fopen(man, "r");
    if (f) {
        if (fgets(name, sizeof name, f)) name[strcspn(name, "\r\n")] = '\0';
        fclose(f);
        uint64_t s;
        if (s_is_ckpt_name(name, &s)) {
            snprintf(out, outlen, "%s/%s", path, name);
            if (s_verifies(out)) return 0;
        }
    }
    uint64_t *steps = NULL;
    int n = s_list(path, &steps);
    for (int i = n - 1; i >= 0; i--) {
        snprintf(out, outlen, "%s/ckpt_%012llu.bin", path, (unsigned long long)steps[i]);
        if (s_verifies(out)) {
            free(steps);
            return 0;
        }
    }
    free(steps);
    snprintf(err, errlen, "%s: no complete checkpoint in this directory", path);
    return -1;
}
