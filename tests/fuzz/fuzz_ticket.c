// Fuzz target: admission tickets (net/ticket.h): binary decode, hex text parse, verification
// against a fixed authority, and expiry strings. Nothing may be accepted unless signed by the
// authority key below.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/ticket.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static net_identity_t auth;
    static int init;
    if (!init) {
        uint8_t seed[32];
        memset(seed, 0xa5, sizeof seed);
        net_identity_from_seed(&auth, seed);
        init = 1;
    }
    char err[256];
    net_ticket_t t;
    uint8_t run[32] = {0};
    if (net_ticket_decode(&t, data, size, err, sizeof err) == 0) {
        net_ticket_status_t s = net_ticket_verify(&t, auth.pk, t.run_fp, t.peer, 0, err, sizeof err);
        (void)s;
        uint8_t back[NET_TICKET_BYTES];
        net_ticket_encode(&t, back);
        if (memcmp(back, data, NET_TICKET_BYTES) != 0) abort();
        net_ticket_verify(&t, auth.pk, run, run, 1, err, sizeof err);
    }
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    if (net_ticket_from_text(&t, text, err, sizeof err) == 0)
        net_ticket_verify(&t, auth.pk, t.run_fp, t.peer, 0, err, sizeof err);
    uint64_t e;
    net_ticket_parse_expiry(text, 1700000000, &e);
    free(text);
    return 0;
}
