// Fuzz target: catch-up manifests (node/catchup.h), the one structure a joiner parses from a donor
// before allocating the state it fetches. A decoded manifest must be internally consistent: its
// chunk count covers n at its chunk size, its digests lie inside the input, and its id is the
// SHA-256 of exactly the bytes decoded.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/fingerprint.h"
#include "node/catchup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    catchup_manifest_t m;
    char err[256];
    if (catchup_manifest_decode(&m, data, size, 1ull << 32, err, sizeof err) != 0) return 0;
    if (m.chunk_values == 0 || m.n > (1ull << 32)) abort();
    uint64_t need = (m.n + m.chunk_values - 1) / m.chunk_values;
    if (m.nchunks != need) abort();
    if (m.digests < data || m.digests + 32ull * m.nchunks > data + size) abort();
    uint8_t id[32];
    net_sha256(data, size, id);
    if (memcmp(id, m.id, 32) != 0) abort();
    return 0;
}
