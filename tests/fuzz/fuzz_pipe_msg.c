// Fuzz target: the pipeline stage's message checks (node/pipe.h pipe_msg_check). Input: byte 0 says
// how many frames (1..4) the rest is cut into, bytes 1..2 where (little-endian cut positions scaled
// to the rest); the shape is fixed (B 2, T 4, C 3, V 5). Every check must reject or accept without
// reading out of bounds; an accepted header must re-encode to the same bytes, and an accepted
// message must have exactly the sizes the shape gives its type.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "node/pipe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    int nframes = 1 + data[0] % 4;
    unsigned c1 = data[1], c2 = data[2];
    data += 3, size -= 3;
    size_t cut[5] = {0, 0, 0, 0, size};
    cut[1] = size < PIPE_HDR_SIZE ? size : PIPE_HDR_SIZE;
    cut[2] = cut[1] + (size - cut[1]) * c1 / 255;
    cut[3] = cut[2] + (size - cut[2]) * c2 / 255;
    cut[nframes] = size;
    uint8_t *copies[4] = {0};
    const uint8_t *frames[4];
    size_t lens[4];
    for (int i = 0; i < nframes; i++) {
        size_t lo = cut[i] > size ? size : cut[i], hi = i + 1 == nframes ? size : cut[i + 1];
        if (hi < lo) hi = lo;
        lens[i] = hi - lo;
        copies[i] = malloc(lens[i] ? lens[i] : 1); // exact-size buffers so ASan sees any overread
        memcpy(copies[i], data + lo, lens[i]);
        frames[i] = copies[i];
    }
    pipe_shape_t sh = {.B = 2, .T = 4, .act_n = 2 * 4 * 3, .tok_n = 2 * 4, .wte_n = 5 * 3, .vocab = 5,
                       .run_id = 0x0123456789abcdefULL};
    pipe_hdr_t h;
    pipe_drop_t reason;
    char why[256];
    if (pipe_msg_check(frames, lens, nframes, &sh, &h, &reason, why, sizeof why) == 0) {
        uint8_t back[PIPE_HDR_SIZE];
        pipe_hdr_encode(&h, back);
        if (memcmp(back, frames[0], PIPE_HDR_SIZE) != 0) abort();
        size_t e1 = h.type == PIPE_MSG_ACT || h.type == PIPE_MSG_GRAD         ? sh.act_n * 4
                  : h.type == PIPE_MSG_END || h.type >= PIPE_MSG_AT ? 0
                                                                    : sh.wte_n * 4;
        if (h.n1 != e1 || (nframes > 1 && lens[1] != e1)) abort();
        if (h.type == PIPE_MSG_ACT && (nframes != 3 || lens[2] != sh.tok_n * 4)) abort();
    } else if ((unsigned)reason >= PIPE_DROP_COUNT) {
        abort();
    }
    for (int i = 0; i < nframes; i++) free(copies[i]);
    return 0;
}
