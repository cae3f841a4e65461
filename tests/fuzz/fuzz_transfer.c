// Fuzz target: transfer reassembly (net/xfer.h). The input is a sequence of chunk messages, each
// [u16 LE length][chunk header (112 bytes) + data]; they are checked and fed to one reassembler per
// transfer id (at most 2 in flight), as the node does: each chunk is hashed and decoded on arrival,
// completed transfers are verified (chunk digests, digest of digests) before anything is delivered.
// Limits are small so hostile sizes are refused before allocation.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/xfer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    net_limits_t lim = {.max_message = 1u << 16, .max_tensor = 1u << 18, .max_inflight = 2};
    net_xfer_rx_t *rx[2] = {NULL, NULL};
    size_t off = 0;
    while (off + 2 <= size) {
        size_t len = (size_t)data[off] | (size_t)data[off + 1] << 8;
        off += 2;
        if (len > size - off) len = size - off;
        uint8_t *msg = malloc(len ? len : 1);
        memcpy(msg, data + off, len);
        off += len;
        net_chunk_hdr_t h;
        size_t hl = len < NET_CHUNK_HDR_SIZE ? len : NET_CHUNK_HDR_SIZE;
        if (net_chunk_hdr_decode(&h, msg, hl, len - hl, &lim) == NET_DROP_NONE) {
            int slot = -1;
            for (int i = 0; i < 2; i++)
                if (rx[i] && rx[i]->h.xfer_id == h.xfer_id) slot = i;
            if (slot < 0)
                for (int i = 0; i < 2 && slot < 0; i++)
                    if (!rx[i] && (rx[i] = net_xfer_rx_new(&h, NULL))) slot = i;
            if (slot >= 0 && net_xfer_rx_add(rx[slot], &h, msg + hl, len - hl) == NET_DROP_NONE &&
                net_xfer_rx_complete(rx[slot])) {
                float *out = NULL;
                char err[256];
                if (net_xfer_rx_finish(rx[slot], &out, err, sizeof err) == NET_DROP_NONE) {
                    for (uint64_t i = 0; i < rx[slot]->h.total; i++)
                        if (out[i] != out[i]) abort(); // a delivered tensor never holds NaN
                    free(out);
                }
                net_xfer_rx_destroy(&rx[slot]);
            }
        }
        free(msg);
    }
    net_xfer_rx_destroy(&rx[0]);
    net_xfer_rx_destroy(&rx[1]);
    return 0;
}
