#include "net/identity.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void net_hex_encode(const uint8_t *in, size_t n, char *out) {
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) out[2 * i] = d[in[i] >> 4], out[2 * i + 1] = d[in[i] & 15];
    out[2 * n] = '\0';
}

static int s_nib(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int net_hex_decode(const char *in, size_t hexlen, uint8_t *out) {
    if (hexlen % 2) return -1;
    for (size_t i = 0; i < hexlen / 2; i++) {
        int hi = s_nib(in[2 * i]), lo = hi < 0 ? -1 : s_nib(in[2 * i + 1]);
        if (lo < 0) return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

void net_id_to_hex(const uint8_t pk[32], char out[NET_ID_HEX]) { net_hex_encode(pk, 32, out); }

int net_id_from_hex(const char *hex, uint8_t pk[32]) {
    if (!hex || strlen(hex) != 64) return -1;
    return net_hex_decode(hex, 64, pk);
}

int net_id_to_curve(const uint8_t pk[32], uint8_t curve_pk[32]) {
    if (sodium_init() < 0) return -1;
    return crypto_sign_ed25519_pk_to_curve25519(curve_pk, pk) == 0 ? 0 : -1;
}

int net_identity_from_seed(net_identity_t *id, const uint8_t seed[32]) {
    if (sodium_init() < 0) return -1;
    crypto_sign_seed_keypair(id->pk, id->sk, seed);
    if (crypto_sign_ed25519_pk_to_curve25519(id->curve_pk, id->pk) != 0) return -1;
    if (crypto_sign_ed25519_sk_to_curve25519(id->curve_sk, id->sk) != 0) return -1;
    return 0;
}

int net_identity_generate(net_identity_t *id) {
    if (sodium_init() < 0) return -1;
    uint8_t seed[32];
    randombytes_buf(seed, sizeof seed);
    int rc = net_identity_from_seed(id, seed);
    sodium_memzero(seed, sizeof seed);
    return rc;
}

void net_identity_wipe(net_identity_t *id) { sodium_memzero(id, sizeof *id); }

static int s_write_all(int fd, const char *s) {
    size_t n = strlen(s);
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        s += w, n -= (size_t)w;
    }
    return 0;
}

int net_identity_save(const net_identity_t *id, const char *path, char *err, size_t errlen) {
    char hex[NET_ID_HEX], seedhex[65], text[512];
    net_id_to_hex(id->pk, hex);
    net_hex_encode(id->sk, 32, seedhex); // libsodium's sk starts with the seed
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create: %s%s", path, strerror(errno),
                 errno == EEXIST ? " (refusing to overwrite a key; remove it first)" : "");
        return -1;
    }
    snprintf(text, sizeof text,
             "# loco identity key (Ed25519). SECRET: anyone holding this file can act as this peer.\n"
             "# Keep it mode 0600. The peer id (public) is also in %s.pub.\n"
             "id = %s\nseed = %s\n", path, hex, seedhex);
    sodium_memzero(seedhex, sizeof seedhex);
    int rc = s_write_all(fd, text);
    sodium_memzero(text, sizeof text);
    if (rc != 0 || fsync(fd) != 0) {
        snprintf(err, errlen, "%s: write failed: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    close(fd);
    char pub[4096];
    snprintf(pub, sizeof pub, "%s.pub", path);
    FILE *f = fopen(pub, "w");
    if (!f || fprintf(f, "# loco peer id (public key)\nid = %s\n", hex) < 0 || fclose(f) != 0) {
        snprintf(err, errlen, "%s: cannot write the public key file", pub);
        return -1;
    }
    return 0;
}

int net_identity_load(net_identity_t *id, const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open key file: %s (create one with 'loco keygen --out %s')", path,
                 strerror(errno), path);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen,
                 "%s: secret key file is accessible by group/others (mode %04o); refusing to use it. "
                 "Fix: chmod 600 %s",
                 path, (unsigned)(st.st_mode & 07777), path);
        close(fd);
        return -1;
    }
    char buf[2048];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0 || n == (ssize_t)sizeof buf - 1) {
        snprintf(err, errlen, "%s: empty, unreadable or too large for a key file", path);
        return -1;
    }
    buf[n] = '\0';
    char idhex[65] = "", seedhex[65] = "";
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#' || line[0] == '\0') continue;
        if (sscanf(line, " id = %64s", idhex) == 1) continue;
        if (sscanf(line, " seed = %64s", seedhex) == 1) continue;
    }
    uint8_t seed[32], pk[32];
    int bad = strlen(seedhex) != 64 || net_hex_decode(seedhex, 64, seed) != 0 || net_id_from_hex(idhex, pk) != 0;
    sodium_memzero(buf, sizeof buf);
    sodium_memzero(seedhex, sizeof seedhex);
    if (bad) {
        snprintf(err, errlen, "%s: not a loco key file (expected 'id = <64 hex>' and 'seed = <64 hex>')", path);
        return -1;
    }
    int rc = net_identity_from_seed(id, seed);
    sodium_memzero(seed, sizeof seed);
    if (rc != 0 || memcmp(id->pk, pk, 32) != 0) {
        snprintf(err, errlen, "%s: the id does not match the secret seed (corrupted key file)", path);
        net_identity_wipe(id);
        return -1;
    }
    return 0;
}

int net_peer_addr_parse(const char *addr, uint8_t pk[32], char *endpoint, size_t len, char *err, size_t errlen) {
    const char *at = addr ? strchr(addr, '@') : NULL;
    if (!at || at - addr != 64) {
        snprintf(err, errlen, "peer address '%s': expected ID@tcp://host:port with a 64-hex-digit id",
                 addr ? addr : "");
        return -1;
    }
    char hex[65];
    memcpy(hex, addr, 64);
    hex[64] = '\0';
    if (net_id_from_hex(hex, pk) != 0) {
        snprintf(err, errlen, "peer address '%s': the id is not 64 hex digits", addr);
        return -1;
    }
    uint8_t curve[32];
    if (net_id_to_curve(pk, curve) != 0) {
        snprintf(err, errlen, "peer address '%s': the id is not a valid Ed25519 public key", addr);
        return -1;
    }
    if (strncmp(at + 1, "tcp://", 6) != 0 || !strchr(at + 7, ':') || strlen(at + 1) >= len) {
        snprintf(err, errlen, "peer address '%s': expected tcp://host:port after '@'", addr);
        return -1;
    }
    snprintf(endpoint, len, "%s", at + 1);
    return 0;
}
