#!/usr/bin/env bash
# Membership across real `loco run` processes on 127.0.0.1 (issue 4): join from one seed, crash
# detection, rejoin at a higher incarnation, graceful leave, the peer cache when the seeds are down,
# two swarms bridged by one peer, an outbound-only (unreachable) peer, and a peer of another run
# refused with the differing field named. Every process is killed by pid at the end.
set -u
BIN=${LOCO_BIN:-build/loco}
PY=${PYTHON:-/usr/bin/python3}
W=$(mktemp -d /tmp/loco_it_members.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$W"/log*; do echo "--- $f"; tail -n 15 "$f"; done; exit 1; }

port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cat >"$W/base.ini" <<INI
[run]
name = membership-test
[train]
steps = 0
[gossip]
period_ms = 500
sync_interval_ms = 1000
INI
N=11
declare -A ID SHORT PORT
for i in $(seq $N); do
    "$BIN" keygen --out "$W/k$i" >/dev/null || fail "keygen"
    ID[$i]=$(awk '/^id =/ {print $3}' "$W/k$i.pub")
    SHORT[$i]=${ID[$i]:0:16}
    PORT[$i]=$(port)
done
addr() { echo "${ID[$1]}@tcp://127.0.0.1:${PORT[$1]}"; }
start() { # i, extra --set arguments...
    local i=$1; shift
    "$BIN" run -c "$W/base.ini" --set node.key="$W/k$i" --set net.listen="tcp://127.0.0.1:${PORT[$i]}" \
        --set node.peer_cache="$W/cache$i" --set train.checkpoint_dir="$W/ck$i" "$@" >>"$W/log$i" 2>&1 &
    PID[$i]=$!
    pids+=("${PID[$i]}")
}
declare -A PID
live_of() { grep -o '; [0-9]* live' "$W/log$1" | tail -n 1 | grep -o '[0-9]*'; }
wait_for() { # seconds, description, command...
    local secs=$1 what=$2; shift 2
    local t0=$SECONDS
    while ! "$@"; do
        [ $((SECONDS - t0)) -ge "$secs" ] && fail "timed out after ${secs}s waiting for: $what"
        sleep 0.1
    done
}
all_live() { # count, peers...
    local want=$1; shift
    for i in "$@"; do [ "$(live_of "$i")" = "$want" ] || return 1; done
}
saw() { grep -q "$2 ${SHORT[$3]}" "$W/log$1"; } # peer, event, subject

# 1. Eight peers, one seed.
start 1
for i in 2 3 4 5 6 7 8; do start $i --set bootstrap.seed="$(addr 1)"; done
t0=$(date +%s.%N)
wait_for 30 "8 peers converge" all_live 8 1 2 3 4 5 6 7 8
t1=$(date +%s.%N)
echo "ok: 8 peers from one seed: every view holds 8 after $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s (period 500 ms)"

# 2. kill -9 two peers: every survivor marks both dead; no live peer is marked dead.
inc7=$(grep "joined ${SHORT[7]}" "$W/log1" | head -n 1 | sed -E 's/.*incarnation ([0-9]+).*/\1/')
kill -9 "${PID[7]}" "${PID[8]}"
dead_both() { for i in 1 2 3 4 5 6; do saw $i dead 7 && saw $i dead 8 || return 1; done; }
wait_for 30 "survivors mark 7 and 8 dead" dead_both
for i in 1 2 3 4 5 6; do for j in 1 2 3 4 5 6; do
    saw $i dead $j && fail "peer $i marked live peer $j dead"
done; done
echo "ok: two crashed peers marked dead by all 6 survivors, no live peer marked dead"

# 3. Restart one with the same key: it rejoins with a higher incarnation.
mv "$W/log7" "$W/log7.before"
start 7 --set bootstrap.seed="$(addr 2)"
rejoined() { grep "joined ${SHORT[7]}" "$W/log1" | tail -n 1 | sed -E 's/.*incarnation ([0-9]+).*/\1/' | awk -v o="$inc7" '{exit !($1 > o)}'; }
wait_for 30 "peer 7 rejoins" rejoined
wait_for 30 "views hold 7 again" all_live 7 1 2 3 4 5 6 7
echo "ok: restarted peer rejoined at a higher incarnation"

# 4. Ctrl-C: a clean leave seen by all, exit 0.
kill -INT "${PID[2]}"
wait "${PID[2]}"; rc=$?
[ $rc -eq 0 ] || fail "SIGINT: exit $rc"
left_all() { for i in 1 3 4 5 6 7; do saw $i left 2 || return 1; done; }
wait_for 10 "everyone sees 2 leave" left_all
echo "ok: SIGINT left cleanly (exit 0), every peer saw it leave"

# 5. Seeds all down: peer 2 comes back through its peer cache.
dead_port=$(port)
mv "$W/log2" "$W/log2.before"
start 2 --set bootstrap.seed="${ID[1]}@tcp://127.0.0.1:$dead_port"
wait_for 30 "peer 2 rejoins from its cache" all_live 7 2
grep -q "peers from the cache" "$W/log2" || fail "peer 2 did not read its cache"
echo "ok: with its seed down, a peer rejoined through its peer cache"

# 6. A second swarm from another seed; one peer bridging both merges them into one view.
start 9
start 10 --set bootstrap.seed="$(addr 9)"
wait_for 20 "the second swarm forms" all_live 2 9 10
mv "$W/log8" "$W/log8.before"
start 8 --set bootstrap.seed="$(addr 10)" --set bootstrap.seed="$(addr 3)"
wait_for 40 "the two swarms merge" all_live 10 1 2 3 4 5 6 7 8 9 10
echo "ok: two swarms with disjoint seeds merged through one shared peer"

# 7. An outbound-only peer (reachable = no: no listener) joins and is seen by all.
start 11 --set net.reachable=no --set bootstrap.seed="$(addr 1)"
wait_for 30 "the unreachable peer is seen by all" all_live 11 1 2 3 4 5 6 7 8 9 10 11
echo "ok: an unreachable peer joined and is in every view"

# 8. Another run: refused, the differing field named on both sides; the peer stops (exit 1).
"$BIN" keygen --out "$W/kx" >/dev/null
timeout 30 "$BIN" run -c "$W/base.ini" --set node.key="$W/kx" --set model.heads=2 --set net.listen="tcp://127.0.0.1:$(port)" \
    --set node.peer_cache= --set train.checkpoint_dir="$W/ckx" --set bootstrap.seed="$(addr 1)" >"$W/logx" 2>&1
rc=$?
[ $rc -eq 1 ] || fail "a peer of another run: exit $rc, expected 1"
grep -q "model.heads: 4 here, 2 there" "$W/logx" || fail "the refused peer does not name the field"
grep -q "model.heads: 4 here, 2 there" "$W/log1" || fail "the seed does not name the field"
xid=$(awk '/^id =/ {print substr($3, 1, 16)}' "$W/kx.pub")
for i in 1 3 4 5 6; do grep -q "joined $xid" "$W/log$i" && fail "the refused peer entered peer $i's view"; done
echo "ok: a peer of another run was refused on both sides with 'model.heads: 4 here, 2 there'"
echo "all membership checks passed"
