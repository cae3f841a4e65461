// Identity keys, tickets, the run fingerprint and the frame header: the pure parts of net/.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/fingerprint.h"
#include "net/frame.h"
#include "net/identity.h"
#include "net/ticket.h"
#include "node/config.h"

static void s_seeded(net_identity_t *id, uint8_t b) {
    uint8_t seed[32];
    memset(seed, b, sizeof seed);
    cr_assert_eq(net_identity_from_seed(id, seed), 0);
}

Test(identity, save_load_and_permissions) {
    char dir[] = "/tmp/loco_test_id_XXXXXX", path[128], pub[160];
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/node.key", dir);
    snprintf(pub, sizeof pub, "%s.pub", path);
    net_identity_t a, b;
    char err[512];
    cr_assert_eq(net_identity_generate(&a), 0);
    cr_assert_eq(net_identity_save(&a, path, err, sizeof err), 0, "%s", err);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "secret key mode %o", st.st_mode & 0777);
    cr_assert_eq(net_identity_load(&b, path, err, sizeof err), 0, "%s", err);
    cr_assert_eq(memcmp(&a, &b, sizeof a), 0);
    // No overwrite of an existing key.
    cr_assert_eq(net_identity_save(&a, path, err, sizeof err), -1);
    cr_assert(strstr(err, "refusing to overwrite"), "%s", err);
    // Readable by others: refused, with the fix in the message.
    chmod(path, 0644);
    cr_assert_eq(net_identity_load(&b, path, err, sizeof err), -1);
    cr_assert(strstr(err, "chmod 600") && strstr(err, "0644"), "%s", err);
    chmod(path, 0640);
    cr_assert_eq(net_identity_load(&b, path, err, sizeof err), -1);
    // A tampered id is caught.
    chmod(path, 0600);
    FILE *f = fopen(path, "r+");
    char text[1024];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    char *idl = strstr(text, "id = ");
    idl[5] = idl[5] == 'a' ? 'b' : 'a';
    rewind(f);
    fwrite(text, 1, n, f);
    fclose(f);
    cr_assert_eq(net_identity_load(&b, path, err, sizeof err), -1);
    cr_assert(strstr(err, "does not match"), "%s", err);
    unlink(path), unlink(pub), rmdir(dir);
}

Test(identity, hex_curve_and_addresses) {
    net_identity_t a;
    s_seeded(&a, 7);
    char hex[NET_ID_HEX];
    net_id_to_hex(a.pk, hex);
    cr_assert_eq(strlen(hex), 64);
    for (int i = 0; i < 64; i++) cr_assert(strchr("0123456789abcdef", hex[i]), "not lowercase hex: %s", hex);
    uint8_t back[32], curve[32];
    cr_assert_eq(net_id_from_hex(hex, back), 0);
    cr_assert_eq(memcmp(back, a.pk, 32), 0);
    cr_assert_eq(net_id_from_hex("abc", back), -1);
    // The CURVE key others derive from the id is the one the node derives from its secret.
    cr_assert_eq(net_id_to_curve(a.pk, curve), 0);
    cr_assert_eq(memcmp(curve, a.curve_pk, 32), 0);
    char addr[200], ep[128], err[256];
    snprintf(addr, sizeof addr, "%s@tcp://10.0.0.1:7700", hex);
    cr_assert_eq(net_peer_addr_parse(addr, back, ep, sizeof ep, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(ep, "tcp://10.0.0.1:7700");
    cr_assert_eq(net_peer_addr_parse("tcp://10.0.0.1:7700", back, ep, sizeof ep, err, sizeof err), -1);
    snprintf(addr, sizeof addr, "%s@udp://x", hex);
    cr_assert_eq(net_peer_addr_parse(addr, back, ep, sizeof ep, err, sizeof err), -1);
}

static void s_fp(const char *run, uint8_t fp[32]) {
    loco_config_t c;
    config_defaults(&c);
    snprintf(c.run_name, sizeof c.run_name, "%s", run);
    net_run_fingerprint(&c, fp);
}

Test(ticket, verify_each_failure) {
    net_identity_t auth, other, peer;
    s_seeded(&auth, 1), s_seeded(&other, 2), s_seeded(&peer, 3);
    uint8_t fp[32], fp2[32];
    s_fp("run-a", fp), s_fp("run-b", fp2);
    cr_assert_neq(memcmp(fp, fp2, 32), 0);
    net_ticket_t t = {.issued = 1000, .expires = 2000};
    memcpy(t.run_fp, fp, 32);
    memcpy(t.peer, peer.pk, 32);
    net_ticket_sign(&t, &auth);
    char err[256];
    cr_assert_eq(net_ticket_verify(&t, auth.pk, fp, peer.pk, 1500, err, sizeof err), NET_TICKET_OK, "%s", err);
    cr_assert_eq(net_ticket_verify(&t, auth.pk, fp, peer.pk, 2000, err, sizeof err), NET_TICKET_EXPIRED);
    cr_assert_eq(net_ticket_verify(&t, auth.pk, fp2, peer.pk, 1500, err, sizeof err), NET_TICKET_WRONG_RUN);
    cr_assert_eq(net_ticket_verify(&t, auth.pk, fp, other.pk, 1500, err, sizeof err), NET_TICKET_WRONG_PEER);
    cr_assert_eq(net_ticket_verify(&t, other.pk, fp, peer.pk, 1500, err, sizeof err), NET_TICKET_WRONG_AUTHORITY);
    // Forged: extend the expiry without re-signing; or sign with another key but claim the authority.
    net_ticket_t f = t;
    f.expires = 0;
    cr_assert_eq(net_ticket_verify(&f, auth.pk, fp, peer.pk, 1500, err, sizeof err), NET_TICKET_FORGED);
    f = t;
    net_ticket_sign(&f, &other);
    memcpy(f.authority, auth.pk, 32);
    cr_assert_eq(net_ticket_verify(&f, auth.pk, fp, peer.pk, 1500, err, sizeof err), NET_TICKET_FORGED);
    // Text round trip.
    char text[NET_TICKET_TEXT];
    net_ticket_to_text(&t, text);
    cr_assert_eq(strlen(text), 368);
    net_ticket_t u;
    char padded[400];
    snprintf(padded, sizeof padded, "  %s\n", text);
    cr_assert_eq(net_ticket_from_text(&u, padded, err, sizeof err), 0, "%s", err);
    cr_assert_eq(net_ticket_verify(&u, auth.pk, fp, peer.pk, 1500, err, sizeof err), NET_TICKET_OK);
    text[0] = '0';
    cr_assert_eq(net_ticket_from_text(&u, text, err, sizeof err), -1); // magic broken
    cr_assert_eq(net_ticket_from_text(&u, "zz", err, sizeof err), -1);
}

Test(ticket, expiry_parsing) {
    uint64_t t;
    cr_assert_eq(net_ticket_parse_expiry("never", 100, &t), 0);
    cr_assert_eq(t, 0);
    cr_assert_eq(net_ticket_parse_expiry("+2d", 100, &t), 0);
    cr_assert_eq(t, 100 + 2 * 86400);
    cr_assert_eq(net_ticket_parse_expiry("1970-01-02", 0, &t), 0);
    cr_assert_eq(t, 2 * 86400, "a date is valid through its last second: %llu", (unsigned long long)t);
    cr_assert_eq(net_ticket_parse_expiry("2030-06-01T12:30:00Z", 0, &t), 0);
    cr_assert_eq(t, 1906547400ull);
    cr_assert_eq(net_ticket_parse_expiry("2030-13-01", 0, &t), -1);
    cr_assert_eq(net_ticket_parse_expiry("+5x", 0, &t), -1);
    cr_assert_eq(net_ticket_parse_expiry("tomorrow", 0, &t), -1);
}

Test(fingerprint, names_the_differing_field) {
    loco_config_t a, b;
    config_defaults(&a);
    config_defaults(&b);
    b.model.layers = 6;
    char da[NET_RUN_DESC_MAX], db[NET_RUN_DESC_MAX], diff[200];
    size_t la = net_run_describe(&a, da, sizeof da), lb = net_run_describe(&b, db, sizeof db);
    cr_assert(la > 0 && lb > 0);
    cr_assert_eq(net_run_diff(da, la, da, la, diff, sizeof diff), 0);
    cr_assert_eq(net_run_diff(da, la, db, lb, diff, sizeof diff), 1);
    cr_assert_str_eq(diff, "model.layers: 4 here, 6 there");
    cr_assert_eq(net_run_diff(db, lb, da, la, diff, sizeof diff), 1);
    cr_assert_str_eq(diff, "model.layers: 6 here, 4 there"); // the other side names the same field
    uint8_t fa[32], fb[32];
    net_run_fingerprint(&a, fa), net_run_fingerprint(&b, fb);
    cr_assert_neq(memcmp(fa, fb, 32), 0);
    // Every field the fingerprint covers changes it.
    b = a, b.seed++, net_run_fingerprint(&b, fb);
    cr_assert_neq(memcmp(fa, fb, 32), 0);
    b = a, b.model.vocab++, net_run_fingerprint(&b, fb);
    cr_assert_neq(memcmp(fa, fb, 32), 0);
    b = a, b.inner_steps++, net_run_fingerprint(&b, fb);
    cr_assert_neq(memcmp(fa, fb, 32), 0);
    b = a, snprintf(b.outer_codec, sizeof b.outer_codec, "int4"), net_run_fingerprint(&b, fb);
    cr_assert_neq(memcmp(fa, fb, 32), 0);
    b = a, snprintf(b.outer_algorithm, sizeof b.outer_algorithm, "diloco"), net_run_fingerprint(&b, fb);
    cr_assert_neq(memcmp(fa, fb, 32), 0);
    // A field missing on one side is named too: drop the last line.
    size_t cut = la - 1;
    while (cut > 0 && da[cut - 1] != '\n') cut--;
    cr_assert_eq(net_run_diff(da, la, da, cut, diff, sizeof diff), 1);
    cr_assert(strstr(diff, "outer.codec"), "%s", diff);
}

Test(frame, header_round_trip_and_checks) {
    net_hdr_t h = {.version = NET_PROTOCOL_VERSION, .type = NET_MSG_CHUNK, .run_id = 0x1122334455667788ull,
                   .incarnation = 42, .round = 7, .seq = 9, .payload_len = 1ull << 40};
    uint8_t b[NET_HDR_SIZE], c[NET_HDR_SIZE];
    net_hdr_encode(&h, b);
    cr_assert_eq(memcmp(b, "LOCO", 4), 0);
    cr_assert_eq(b[16], 0x88, "run id little-endian");
    cr_assert_eq(b[40], 9);
    net_hdr_t g;
    cr_assert_eq(net_hdr_decode(&g, b, sizeof b), NET_DROP_NONE);
    cr_assert(g.run_id == h.run_id && g.seq == 9 && g.payload_len == h.payload_len && g.type == NET_MSG_CHUNK);
    cr_assert_eq(net_hdr_decode(&g, b, sizeof b - 1), NET_DROP_HDR_SIZE);
    memcpy(c, b, sizeof b), c[0] = 'X';
    cr_assert_eq(net_hdr_decode(&g, c, sizeof c), NET_DROP_MAGIC);
    memcpy(c, b, sizeof b), c[4] = 9;
    cr_assert_eq(net_hdr_decode(&g, c, sizeof c), NET_DROP_VERSION);
    memcpy(c, b, sizeof b), c[6] = 0;
    cr_assert_eq(net_hdr_decode(&g, c, sizeof c), NET_DROP_TYPE);
    memcpy(c, b, sizeof b), c[13] = 1;
    cr_assert_eq(net_hdr_decode(&g, c, sizeof c), NET_DROP_FLAGS);
}
