#!/usr/bin/env bash
# `loco doctor` (issue 4) against one membership-only `loco run` seed on 127.0.0.1:
#   live seed                      → exit 0: handshake, round trip, bandwidth, dial-back all ok
#   dial-back to a dead endpoint   → a warning with advice, still exit 0 (outbound-only joins)
#   dead seed (nothing listening)  → exit 1, "is the seed running"
#   wrong-key seed (other id)      → exit 1, the CURVE handshake times out: "does not match the seed's key"
#   different run (model.heads)    → exit 1, the field named with both values
#   key file mode 0644             → exit 1, "chmod 600"
#   listen port already taken      → exit 1, advice on [net] listen
# Every process runs under `timeout` and is killed by pid at the end.
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-build/loco}
PY=${PYTHON:-/usr/bin/python3}
W=$(mktemp -d /tmp/loco_doctor.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$W"/*.out "$W"/seed.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 15 "$f"; }; done; exit 1; }

port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
for k in seed node node2 other; do "$BIN" keygen --out "$W/$k.key" >/dev/null || fail "keygen $k"; done
SEED_ID=$(awk '/^id =/ {print $3}' "$W/seed.key.pub")
OTHER_ID=$(awk '/^id =/ {print $3}' "$W/other.key.pub")
SEED_PORT=$(port)
DEAD_PORT=$(port) # free a moment ago; nothing binds it in this test

cat >"$W/seed.ini" <<INI
[run]
name = doctor-test
[train]
steps = 0
checkpoint_dir = $W/seed.ck
[node]
key = $W/seed.key
peer_cache = $W/seed.cache
[net]
listen = tcp://127.0.0.1:$SEED_PORT
INI
timeout 60 "$BIN" run -c "$W/seed.ini" >"$W/seed.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "run: peer " "$W/seed.log" 2>/dev/null && break; sleep 0.1; done
grep -q "run: peer " "$W/seed.log" || fail "the seed did not start"

# node.ini: a node of the same run, listening on an ephemeral port, with the live seed.
node_ini() { # KEY SEED_ADDR
    cat <<INI
[run]
name = doctor-test
[node]
key = $1
peer_cache = $W/node.cache
[net]
listen = tcp://127.0.0.1:0
[bootstrap]
seed = $2
INI
}
node_ini "$W/node.key" "$SEED_ID@tcp://127.0.0.1:$SEED_PORT" >"$W/node.ini"
node_ini "$W/node2.key" "$SEED_ID@tcp://127.0.0.1:$SEED_PORT" >"$W/node2.ini"
# (--set bootstrap.seed would add a seed to the list, not replace it: one file per seed list)
node_ini "$W/node.key" "$SEED_ID@tcp://127.0.0.1:$DEAD_PORT" >"$W/dead.ini"
node_ini "$W/node.key" "$OTHER_ID@tcp://127.0.0.1:$SEED_PORT" >"$W/wrongkey.ini"

# doctor NAME ARGS...: runs it, output in $W/NAME.out, exit code in $rc
doctor() {
    local name=$1; shift
    timeout 30 "$BIN" doctor --timeout-ms 2000 "$@" >"$W/$name.out" 2>&1
    rc=$?
    echo "--- doctor $name: exit $rc"
    cat "$W/$name.out"
}
has() { grep -qF -- "$2" "$W/$1.out" || fail "$1: no line with '$2'"; }

t0=$SECONDS

# --- live seed: every check passes
doctor live -c "$W/node.ini"
[ $rc = 0 ] || fail "live seed: exit $rc, want 0"
has live "ok    config"
has live "ok    key file $W/node.key (mode 0600, id "
has live "ok    listen tcp://127.0.0.1:0 (bound tcp://127.0.0.1:"
has live "CURVE handshake and HELLO in"
grep -Eq "^ok    probe .*round trip [0-9.]+ ms .*bandwidth [0-9.]+ MB/s" "$W/live.out" || fail "live: no probe line"
has live "ok    reachable: seed ${SEED_ID:0:8}… dialed back tcp://127.0.0.1:"
has live "verdict: this node can join"
grep -q "^FAIL\|^warn" "$W/live.out" && fail "live: a FAIL or warn line"

# --- advertised endpoint nobody listens on: a warning with advice, the node still joins
# (node2: the seed answers one dial-back per peer per 30 s, and node just had its turn)
doctor unreachable -c "$W/node2.ini" --set "net.advertise=tcp://127.0.0.1:$DEAD_PORT"
[ $rc = 0 ] || fail "unreachable: exit $rc, want 0 (outbound-only still joins)"
has unreachable "warn  reachable: seed ${SEED_ID:0:8}… could not connect to tcp://127.0.0.1:$DEAD_PORT"
has unreachable "forward the port"
has unreachable "reachable = no"

# --- dead seed: nothing listens there
doctor dead -c "$W/dead.ini"
[ $rc = 1 ] || fail "dead seed: exit $rc, want 1"
grep -Eq "^FAIL  seed ${SEED_ID:0:8}…@tcp://127.0.0.1:$DEAD_PORT: .*is the seed running" "$W/dead.out" \
    || fail "dead seed: no FAIL line with advice"
has dead "check [bootstrap] seed"
has dead "verdict: cannot join"

# --- wrong key: the seed's port with another id; CURVE cannot complete
doctor wrongkey -c "$W/wrongkey.ini"
[ $rc = 1 ] || fail "wrong-key seed: exit $rc, want 1"
has wrongkey "FAIL  seed ${OTHER_ID:0:8}…@tcp://127.0.0.1:$SEED_PORT: the port answers but the CURVE handshake did not complete within 2 s"
has wrongkey "probably does not match the seed's key"
has wrongkey "verdict: cannot join"

# --- a different run: the seed refuses, naming the field
doctor run -c "$W/node.ini" --set model.heads=2
[ $rc = 1 ] || fail "different run: exit $rc, want 1"
has run "refused: a different run: model.heads is 2 in this config, 4 at the seed"
has run "verdict: cannot join"

# --- a key others can read
cp "$W/node.key" "$W/open.key"
chmod 644 "$W/open.key"
doctor mode -c "$W/node.ini" --set "node.key=$W/open.key"
[ $rc = 1 ] || fail "key mode 0644: exit $rc, want 1"
has mode "FAIL  key file $W/open.key (mode 0644)"
has mode "chmod 600 $W/open.key"

# --- listen port taken (by the seed)
doctor busy -c "$W/node.ini" --set "net.listen=tcp://127.0.0.1:$SEED_PORT"
[ $rc = 1 ] || fail "listen taken: exit $rc, want 1"
has busy "FAIL  listen tcp://127.0.0.1:$SEED_PORT:"
has busy "change [net] listen"

kill -0 "${pids[0]}" 2>/dev/null || fail "the seed died during the test"
echo "doctor: all cases as expected in $((SECONDS - t0)) s"
