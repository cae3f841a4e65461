// Membership view with SWIM-family failure detection, written "sans-IO": no sockets, no threads, no
// clock reads. The net thread feeds it received gossip messages and the time, calls tick when
// gossip_members_next_wakeup says so, and sends whatever it pops from the outbox; it drains the
// events into the log and the metrics JSONL. Everything here is deterministic given the inputs and
// the rng seed, which is what lets tests/gossip drive 30 instances over a simulated network.
//
// Protocol (SWIM, Das et al. 2002, with memberlist's/Lifeguard's practical choices):
//  - Every probe interval, ping one member chosen by a shuffled round-robin over the members (each
//    member is probed once per round, the order reshuffled every round, joiners inserted at a random
//    place), so a dead member is found within one round by every prober.
//  - No ack within the ack timeout: ask k others (ping-req) to ping it on our behalf, and ping it
//    directly once more (as memberlist's TCP fallback ping), and again one ack timeout later if
//    nothing came back (each retry has its own sequence number, so RTT samples stay unambiguous).
//    No direct or indirect ack by the end of the interval: mark it suspect and disseminate the
//    suspicion. A false suspicion then needs the first ping, both retries and all k indirect paths
//    each to lose a message: at 5% loss about once in 10^5 probes instead of once in 1,600, at 20%
//    about once in 100 instead of once in 14. Each false suspicion costs a dissemination to every
//    peer and a refutation back, so this is what keeps that traffic small at large N.
//  - A member that hears it is suspected (or declared dead) refutes by re-signing its record with
//    a higher incarnation. Every probe interval a peer sends each member it suspects because its
//    own probe failed the suspicion itself (Lifeguard's buddy system; the peers that only heard the
//    suspicion do not, or a suspected member would get a message from nearly every peer each
//    period), and a member that hears a claim about an incarnation it has already refuted sends
//    its current record back to the claimer.
//  - A suspect becomes dead when its suspicion timeout runs out; each peer runs its own timer from
//    when it heard the suspicion, and only that timer buries a member here: a "dead" claim from
//    another peer counts as a suspicion. Such a claim may be stale (from the far side of a healed
//    partition, where half the run was declared dead) or made by a peer that was itself cut off;
//    a live member refutes it before the timer runs out, while a member that is really gone dies
//    one suspicion timeout after each peer first heard of it — about as soon as taking the claim
//    at its word would, since suspicions and deaths spread equally fast.
//  - Timeouts follow the measured round-trip times (RFC 6298 smoothing of direct probe RTTs) and
//    this peer's own health (Lifeguard's local health multiplier, LHM = 1 + health):
//      ack timeout       = clamp(srtt + 4·rttvar, ack_timeout_min_ms, ack_timeout_max_ms) · LHM
//                          (ack_timeout_ms before the first sample)
//      probe interval    = max(period_ms, 3 · unscaled ack timeout) · LHM
//      suspicion timeout = suspicion_mult · max(1, log10 N) · unscaled probe interval · LHM,
//                          measured from when the suspicion was heard, re-evaluated as LHM moves
//    health (0..max_health) rises when one of our probes fails and not every ping-req helper sent a
//    NACK (so it is we who hear nothing), and when we must refute a suspicion of ourselves; it falls
//    with every successful probe. A peer whose inbound traffic stalls (a NAT mapping lost, a
//    starved net thread) thus stops condemning others instead of declaring the whole run dead.
//  - A ping-req helper whose ping goes unanswered sends the requester a NACK after its own ack
//    timeout, which tells the requester that its own links work.
//  - Precedence: the higher incarnation wins; at equal incarnation left > dead > suspect > alive.
//    "alive" and "left" are signed records (only the owner can say them), "suspect" and "dead" are
//    claims anyone may make about the incarnation it knows; a claim about an incarnation we hold no
//    record of is ignored.
//  - Dissemination: each update (a new record, a suspicion, a death) is piggybacked on pings, acks
//    and ping-reqs, least-sent first, within max_piggyback_bytes, and sent retransmit_mult ·
//    ceil(log2(N + 1)) times (λ·log N), then dropped, and so is one still queued 2·λ·log2 N periods
//    after it was enqueued (stuck behind a backlog, such as the N records a seed holds after N peers
//    started at once; the digest exchanges have long repaired what it missed). memberlist uses
//    log10, but an infect-k-times epidemic misses a node with probability about e^-k: at N = 10
//    log10 gives k = 4, log2 with λ = 3 gives k = 12. Piggybacking costs bytes, never a message.
//    (Counting an update heard from someone else as one of our transmissions, Demers et al.'s
//    feedback, drained backlogs faster but cut the tail of refutations short: at N = 16 and 20%
//    loss about one refutation in 40 came too late somewhere.)
//    A fresh update (sent fewer than gossip_fanout times here) also starts a dissemination round:
//    a GOSSIP message with the pending updates to gossip_fanout random members, at most every
//    gossip_interval_ms (memberlist's gossip rounds) — so each peer pushes each update in about one
//    round of its own, a push epidemic that reaches all but about e^-fanout of the peers in
//    log_fanout N short rounds (piggybacking alone moves an update about two hops per period, about
//    as slowly as a suspicion timer runs out). Rounds are budgeted: bursts of up to 3, then one per
//    period on average, so they add at most gossip_fanout messages per peer per period whatever the
//    rate of updates. That rate grows with N under message loss (each peer's probes yield false
//    suspicions at a constant rate, each one a suspicion and a refutation to spread to all N), and
//    rounds run for as long as updates had transmissions left made messages per peer grow with N.
//    No fresh update, no GOSSIP message.
//  - Anti-entropy: every sync_interval_ms a push-pull digest exchange with a random member: SYNC
//    carries (id, incarnation, state) for the whole view; the answer carries what the asker lacks or
//    has older and the ids it should send back. Every reconnect_every-th exchange goes instead to a
//    dead member or a seed that is not in the view, so two halves of a healed partition, or two
//    groups that formed from different seeds, find each other again (hivemind#624). A new member in
//    the view, or a partner that lacked records we hold, brings the next exchange forward to within
//    period_ms: while views differ (a mass start, a merge) the exchanges run as a push-pull epidemic
//    once per period, and fill what dissemination missed; a settled view is back to
//    sync_interval_ms. The digest is 41 bytes per member, so anti-entropy bytes grow with N (41·N /
//    sync_interval per peer: about 4 KB/s at N = 1000) while its messages do not.
//  - Joining: while the view holds no other live member, SYNC every contact (seeds, peer cache)
//    each join_retry_ms. The first answer brings the whole view; what a peer learns while it holds
//    no other live member is news to it alone and is not disseminated (leaves excepted).
//  - Leaving: a record with status "leaving" at a higher incarnation, sent to every live member at
//    once and disseminated; receivers mark the member left and stop probing it.
//  - Dead and left members stay as tombstones for reap_ms, so stale gossip cannot resurrect them;
//    a restarted peer comes back with a higher incarnation (loco starts it at the unix time in ms).
//
// Reachability (peers behind NAT), the rule chosen: AVOID, never relay. A member whose record says
// reachable = no accepts no inbound connection; it keeps an outbound connection to every reachable
// member it knows and is reached only over those. Two unreachable members never exchange anything,
// directly or through a relay: gossip never picks such a pair (probe target, ping-req helper, sync
// partner), NoLoCo never puts two unreachable members in one group (gossip_groups_separate_
// unreachable), and DiLoCo's reduce-scatter gives chunk ownership only to reachable members, so an
// unreachable member only ever talks to reachable ones. Relaying was rejected because it spends a
// volunteer's upload on others' tensors, the scarcest resource of the run.
//
// Message payloads (the net thread puts them in frame 1 of a message of the same type; all LE):
//   PING       seq u32, updates          ACK        seq u32, updates
//   PING_REQ   seq u32, target[32], updates
//   SYNC       count u32, count × (id[32], incarnation u64, state u8), updates
//   SYNC_REPLY count u32, count × id[32] (records wanted back), updates
//   UPDATES    updates (answers to SYNC_REPLY wants; the leave broadcast)
//   GOSSIP     updates (dissemination rounds; a suspicion sent to its subject; a record sent back)
//   NACK       seq u32, updates (a ping-req helper's "no answer from the target")
//   updates  = count u16, then per update: kind u8 = 1 record: length u16, signed record bytes
//                                         kind u8 = 2 suspect | 3 dead: id[32], incarnation u64
#ifndef LOCO_GOSSIP_MEMBERS_H
#define LOCO_GOSSIP_MEMBERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gossip/record.h"

// Message types, numbered from NET_MSG_USER (= 32) so they can be frame types as they are.
typedef enum {
    GOSSIP_MSG_PING = 32,
    GOSSIP_MSG_ACK = 33,
    GOSSIP_MSG_PING_REQ = 34,
    GOSSIP_MSG_SYNC = 35,
    GOSSIP_MSG_SYNC_REPLY = 36,
    GOSSIP_MSG_UPDATES = 37,
    GOSSIP_MSG_GOSSIP = 38,
    GOSSIP_MSG_NACK = 39,
} gossip_msg_type_t;
#define GOSSIP_MSG_FIRST GOSSIP_MSG_PING
#define GOSSIP_MSG_COUNT 8

typedef enum { GOSSIP_ALIVE = 0, GOSSIP_SUSPECT = 1, GOSSIP_DEAD = 2, GOSSIP_LEFT = 3 } gossip_state_t;

typedef enum {
    GOSSIP_EV_JOINED,  // a member appeared (or came back with a higher incarnation after dead/left)
    GOSSIP_EV_SUSPECT, // a member is suspected
    GOSSIP_EV_ALIVE,   // a suspected member refuted the suspicion
    GOSSIP_EV_DEAD,    // a member was declared dead
    GOSSIP_EV_LEFT,    // a member left gracefully
    GOSSIP_EV_UPDATED, // a live member re-signed its record (capabilities, endpoints)
    GOSSIP_EV_REFUTED, // this peer was suspected or declared dead and re-signed at a higher incarnation
} gossip_event_kind_t;

typedef struct {
    gossip_event_kind_t kind;
    uint8_t id[GOSSIP_ID_BYTES];
    uint64_t incarnation;
    uint8_t from[GOSSIP_ID_BYTES]; // the peer whose message brought it (this peer's id for own timers)
} gossip_event_t;

// One outbound message. The payload is owned by whoever holds the struct: release it with
// gossip_msg_release.
typedef struct {
    uint8_t to[GOSSIP_ID_BYTES];
    gossip_msg_type_t type;
    uint8_t *payload;
    size_t len;
} gossip_msg_t;

// What gossip_members_live/get show of a member. Pointers point into the view and stay valid until
// the next call that changes it (receive, tick, leave, update_caps).
typedef struct {
    const uint8_t *id;
    gossip_state_t state;
    uint64_t incarnation;
    const gossip_record_t *record;
    const uint8_t *record_bytes; // the signed wire form (what a peer cache persists)
    size_t record_len;
    bool is_self;
} gossip_member_info_t;

// Admission check for a verified record (allowlist, ticket in record->ticket). Return false to keep
// the peer out of the view. NULL admits every correctly signed record of this run.
typedef bool (*gossip_admit_fn)(void *ctx, const gossip_record_t *record);

typedef struct {
    uint32_t period_ms;          // protocol period (default 1000)
    uint32_t ack_timeout_ms;     // before any RTT sample (default 300)
    uint32_t ack_timeout_min_ms; // default 200
    uint32_t ack_timeout_max_ms; // default 2000
    int indirect_k;              // ping-req helpers (default 3)
    double suspicion_mult;       // default 4
    int retransmit_mult;         // λ (default 3)
    uint32_t gossip_interval_ms; // dissemination rounds while updates are pending (default 200)
    int gossip_fanout;           // members per round (default 3)
    uint32_t sync_interval_ms;   // anti-entropy period (default 10000)
    int reconnect_every;         // every n-th sync goes to a dead member or absent seed (default 4)
    uint32_t join_retry_ms;      // while alone, SYNC every contact this often (default 2000)
    uint32_t reap_ms;            // how long dead/left tombstones are kept (default 900000)
    size_t max_piggyback_bytes;  // updates carried on one ping/ack/ping-req (default 8192)
    size_t max_sync_bytes;       // updates carried by one SYNC_REPLY/UPDATES (default 1 MiB)
    uint32_t max_members;        // view size limit, tombstones included (default 4096)
    int max_health;              // cap of the local health counter (default 8: timeouts up to 9×)
    uint64_t seed;               // rng seed (probe order, helper and partner choice)
    gossip_admit_fn admit;
    void *admit_ctx;
} gossip_config_t;

typedef struct {
    uint64_t msgs_in[GOSSIP_MSG_COUNT], msgs_out[GOSSIP_MSG_COUNT], bytes_out;
    uint64_t malformed;                         // messages dropped whole (framing)
    uint64_t rejected[GOSSIP_REC_STATUS_COUNT]; // records refused, by reason
    uint64_t not_admitted;                      // records refused by the admit callback
    uint64_t stale;                             // records/claims older than what we hold (replays)
    uint64_t unknown_claims;                    // claims about members we hold no record of
    uint64_t view_full;                         // records dropped because the view was full
    uint64_t probes, direct_acks, indirect_probes, indirect_acks, probe_failures;
    uint64_t late_acks;                         // acks for no pending probe
    uint64_t nacks;                             // NACKs received for our probes
    uint64_t syncs, refutations;
} gossip_stats_t;

typedef struct gossip_members gossip_members_t;

void gossip_config_default(gossip_config_t *c);

// Creates the view holding this peer alone. self is the template of our record: run_fp, caps,
// endpoints, ticket, incarnation (loco uses the start time in unix ms, so a restart is always above
// the last one) and time_ms (unix ms at now_ms; later records are stamped relative to it). The id
// comes from sk. Returns NULL with the reason in err.
gossip_members_t *gossip_members_new(const gossip_config_t *cfg, const uint8_t sk[GOSSIP_SK_BYTES],
                                     const gossip_record_t *self, uint64_t now_ms, char *err, size_t errlen);
void gossip_members_destroy(gossip_members_t **m_p);

// A peer to contact while alone: a seed ([bootstrap] seed = ID@endpoint) or a peer-cache entry.
// Returns 0, or -1 for a bad endpoint or a full contact list.
int gossip_members_add_contact(gossip_members_t *m, const uint8_t id[GOSSIP_ID_BYTES], const char *endpoint);

// Runs the timers: probes, ping-reqs, suspicion expiry, anti-entropy, join retries, reaping.
void gossip_members_tick(gossip_members_t *m, uint64_t now_ms);
// The earliest now_ms at which tick has something to do (a poll timeout for the net thread).
uint64_t gossip_members_next_wakeup(const gossip_members_t *m);

// Handles one received message from peer `from` (authenticated by the transport). Returns 0, or -1
// when the message was malformed and dropped whole (counted, logged with the peer id). Individual
// records that fail verification or admission are dropped and counted without failing the message.
int gossip_members_receive(gossip_members_t *m, uint64_t now_ms, const uint8_t from[GOSSIP_ID_BYTES], int type,
                           const uint8_t *payload, size_t len);

// Pops the oldest outbound message into *out (the caller then owns out->payload). Returns false when
// the outbox is empty.
bool gossip_members_pop(gossip_members_t *m, gossip_msg_t *out);
void gossip_msg_release(gossip_msg_t *msg);
// Pops the oldest event. Returns false when there is none.
bool gossip_members_pop_event(gossip_members_t *m, gossip_event_t *out);

// Graceful leave: re-signs our record as leaving, sends it to every live member and stops probing.
// The caller keeps sending the outbox (and answering) for about one period, then stops.
int gossip_members_leave(gossip_members_t *m, uint64_t now_ms);
// Re-signs our record with new capabilities (e.g. reachability learned by `auto`, a measured step
// rate) at a higher incarnation and disseminates it. Returns 0, or -1 with the reason.
int gossip_members_update_caps(gossip_members_t *m, const gossip_caps_t *caps, uint64_t now_ms, char *err,
                               size_t errlen);

// Live members (alive or suspect; suspicion is a local, transient opinion, so counting suspects keeps
// views more alike), this peer included unless it left, sorted by id — the list NoLoCo's
// outer_groups and DiLoCo's round membership take. Writes up to cap entries; returns the count.
size_t gossip_members_live(const gossip_members_t *m, gossip_member_info_t *out, size_t cap);
// Every entry of the view, tombstones included, sorted by id. Returns the count.
size_t gossip_members_all(const gossip_members_t *m, gossip_member_info_t *out, size_t cap);
// A member by id, in any state. Returns 0, or -1 when unknown.
int gossip_members_get(const gossip_members_t *m, const uint8_t id[GOSSIP_ID_BYTES], gossip_member_info_t *out);
// The endpoint to dial for id: its record's first endpoint, else its contact endpoint; NULL when it
// has none (unreachable: only its own outbound connection reaches it).
const char *gossip_members_endpoint(const gossip_members_t *m, const uint8_t id[GOSSIP_ID_BYTES]);
// Smoothed RTT to id in ms from direct probes; -1 without a sample.
double gossip_members_rtt_ms(const gossip_members_t *m, const uint8_t id[GOSSIP_ID_BYTES]);
// This peer's local health counter (0 = healthy; timeouts scale by 1 + health).
int gossip_members_health(const gossip_members_t *m);
// Updates still being disseminated (retransmissions left).
size_t gossip_members_pending_updates(const gossip_members_t *m);
const gossip_stats_t *gossip_members_stats(const gossip_members_t *m);
const uint8_t *gossip_members_self_id(const gossip_members_t *m);
// Our current signed record (wire form); *len receives its length.
const uint8_t *gossip_members_self_record(const gossip_members_t *m, size_t *len);

const char *gossip_state_name(gossip_state_t s);
const char *gossip_event_name(gossip_event_kind_t k);
const char *gossip_msg_name(int type);

// The reachability rule: two members can exchange iff at least one of them accepts inbound
// connections (the other dials it, or answers over the connection it made).
static inline bool gossip_can_talk(const gossip_record_t *a, const gossip_record_t *b) {
    return a->caps.reachable || b->caps.reachable;
}

// Applies the rule to NoLoCo's groups: given group_of (N members in sorted-id order, g groups, as
// outer_groups returns them) and each member's reachability, moves members so that no group holds
// two unreachable members: an extra unreachable member swaps places with a reachable member of the
// lowest-numbered group that has no unreachable member; when no such group is left it sits this
// round out in a group of its own (numbered g, g+1, …). Deterministic: every peer with the same
// view computes the same groups. A run where every member is reachable is left unchanged. Returns
// the new number of groups.
int gossip_groups_separate_unreachable(const bool *reachable, int N, int g, int *group_of);

#endif
