#include "net/frame.h"

#include <string.h>

#include "net/ticket.h"

static const char *s_drop_names[NET_DROP_COUNT] = {
    "none",           "frame count",     "header size",  "magic",         "version",
    "unknown type",   "reserved bits",   "wrong run",    "length mismatch", "over limit",
    "not admitted",   "refused",         "bad hello",    "stale incarnation", "replay",
    "stale round",    "bad chunk header", "chunk out of range", "duplicate chunk", "too many in flight",
    "digest mismatch", "NaN/Inf",        "transfer timeout", "bad payload",
};

const char *net_drop_name(net_drop_t d) { return d >= 0 && d < NET_DROP_COUNT ? s_drop_names[d] : "?"; }

void net_put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
void net_put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
void net_put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
uint16_t net_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
uint32_t net_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
uint64_t net_get_u64(const uint8_t *p) { return (uint64_t)net_get_u32(p) | (uint64_t)net_get_u32(p + 4) << 32; }

uint64_t net_run_id(const uint8_t fp[32]) { return net_get_u64(fp); }

void net_hdr_encode(const net_hdr_t *h, uint8_t out[NET_HDR_SIZE]) {
    memcpy(out, "LOCO", 4);
    net_put_u16(out + 4, h->version);
    net_put_u16(out + 6, h->type);
    net_put_u32(out + 8, h->flags);
    net_put_u32(out + 12, 0);
    net_put_u64(out + 16, h->run_id);
    net_put_u64(out + 24, h->incarnation);
    net_put_u64(out + 32, h->round);
    net_put_u64(out + 40, h->seq);
    net_put_u64(out + 48, h->payload_len);
}

int net_msg_frames(uint16_t type) {
    switch (type) {
    case NET_MSG_HELLO:
    case NET_MSG_WELCOME:
    case NET_MSG_REFUSE:
    case NET_MSG_PING:
    case NET_MSG_PONG:
    case NET_MSG_PROBE:
    case NET_MSG_PROBE_ACK: return 1;
    case NET_MSG_CHUNK: return 2;
    default: return type >= NET_MSG_USER && type < NET_MSG_TYPE_MAX ? 1 : -1;
    }
}

net_drop_t net_hdr_decode(net_hdr_t *h, const uint8_t *buf, size_t len) {
    if (len != NET_HDR_SIZE) return NET_DROP_HDR_SIZE;
    if (memcmp(buf, "LOCO", 4) != 0) return NET_DROP_MAGIC;
    h->version = net_get_u16(buf + 4);
    h->type = net_get_u16(buf + 6);
    h->flags = net_get_u32(buf + 8);
    h->run_id = net_get_u64(buf + 16);
    h->incarnation = net_get_u64(buf + 24);
    h->round = net_get_u64(buf + 32);
    h->seq = net_get_u64(buf + 40);
    h->payload_len = net_get_u64(buf + 48);
    if (h->version != NET_PROTOCOL_VERSION) return NET_DROP_VERSION;
    if (net_msg_frames(h->type) < 0) return NET_DROP_TYPE;
    if (h->flags != 0 || net_get_u32(buf + 12) != 0) return NET_DROP_FLAGS;
    return NET_DROP_NONE;
}

size_t net_hello_encode(const uint8_t id[32], const char *desc, size_t desc_len, const uint8_t *ticket,
                        uint8_t *out, size_t len) {
    size_t need = 32 + 2 + desc_len + 2 + (ticket ? NET_TICKET_BYTES : 0);
    if (desc_len > NET_RUN_DESC_MAX || need > len) return 0;
    memcpy(out, id, 32);
    net_put_u16(out + 32, (uint16_t)desc_len);
    memcpy(out + 34, desc, desc_len);
    net_put_u16(out + 34 + desc_len, ticket ? NET_TICKET_BYTES : 0);
    if (ticket) memcpy(out + 36 + desc_len, ticket, NET_TICKET_BYTES);
    return need;
}

net_drop_t net_hello_decode(net_hello_t *h, const uint8_t *buf, size_t len) {
    if (len < 36) return NET_DROP_BAD_HELLO;
    memcpy(h->id, buf, 32);
    size_t dl = net_get_u16(buf + 32);
    if (dl > NET_RUN_DESC_MAX || dl > len - 36) return NET_DROP_BAD_HELLO;
    h->desc = (const char *)buf + 34;
    h->desc_len = dl;
    size_t tl = net_get_u16(buf + 34 + dl);
    if ((tl != 0 && tl != NET_TICKET_BYTES) || 36 + dl + tl != len) return NET_DROP_BAD_HELLO;
    h->ticket = tl ? buf + 36 + dl : NULL;
    return NET_DROP_NONE;
}
