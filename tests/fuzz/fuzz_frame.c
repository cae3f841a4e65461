// Fuzz target: the wire header, HELLO/WELCOME bodies and chunk headers (net/frame.h, net/xfer.h).
// Input: byte 0 picks how the rest is split into frames; every decoder must reject or accept it
// without reading out of bounds, and an accepted header must re-encode to the same bytes.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/frame.h"
#include "net/xfer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t split = data[0] % 128;
    data++, size--;
    net_hdr_t h;
    size_t hl = size < NET_HDR_SIZE ? size : NET_HDR_SIZE;
    if (net_hdr_decode(&h, data, split == 0 ? size : hl) == NET_DROP_NONE) {
        uint8_t back[NET_HDR_SIZE];
        net_hdr_encode(&h, back);
        if (memcmp(back, data, NET_HDR_SIZE) != 0) abort();
        if (net_msg_frames(h.type) < 0) abort();
    }
    // The rest as a HELLO body, then as a chunk header + data frame.
    const uint8_t *rest = data + hl;
    size_t rl = size - hl;
    uint8_t *copy = malloc(rl ? rl : 1); // exact-size buffer so ASan sees any overread
    memcpy(copy, rest, rl);
    net_hello_t hello;
    if (net_hello_decode(&hello, copy, rl) == NET_DROP_NONE) {
        if (hello.desc_len > NET_RUN_DESC_MAX) abort();
        volatile char c = hello.desc_len ? hello.desc[hello.desc_len - 1] : 0;
        if (hello.ticket) c = (char)hello.ticket[183];
        (void)c;
    }
    net_limits_t lim = {.max_message = 1u << 20, .max_tensor = 1u << 24, .max_inflight = 2};
    net_chunk_hdr_t ch;
    size_t cl = rl < NET_CHUNK_HDR_SIZE ? rl : NET_CHUNK_HDR_SIZE;
    net_chunk_hdr_decode(&ch, copy, cl, rl - cl + split * 1000, &lim);
    free(copy);
    return 0;
}
