#!/usr/bin/env bash
# Two loco processes on 127.0.0.1 exchange a 64 MiB tensor over CURVE in each codec (fp32, bf16,
# int8, int4); the receiver verifies the SHA-256 digest (transport) and the codec's error bound
# (against the reference data). Then ticket admission through the CLI: keygen, admit, a valid
# ticket is welcomed, an expired one and a missing one are refused, and nothing they send anyway
# is processed. A key file readable by others is refused with the chmod that fixes it.
set -euo pipefail
cd "$(dirname "$0")/../.."
LOCO=${LOCO_BIN:-build/loco}
dir=$(mktemp -d /tmp/loco_net_XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$dir"/*.out "$dir"/*.err; do echo "--- $f"; tail -n 20 "$f"; done; exit 1; }

for k in server client auth stranger; do "$LOCO" keygen --out "$dir/$k.key" > "$dir/$k.id"; done
[ "$(stat -c %a "$dir/server.key")" = 600 ] || fail "key file not 0600"
grep -Eq '^[0-9a-f]{64}$' "$dir/server.id" || fail "keygen did not print a 64-hex-digit id"
AUTH=$(cat "$dir/auth.id")

# wait_listen OUT: the address the server printed
wait_listen() {
    for _ in $(seq 100); do
        a=$(awk '/^listening/{print $2}' "$1" 2>/dev/null || true)
        [ -n "$a" ] && { echo "$a"; return 0; }
        sleep 0.1
    done
    return 1
}

# --- 64 MiB in each codec, open admission ----------------------------------------------------
cat > "$dir/server.ini" <<INI
[node]
key = $dir/server.key
[net]
listen = tcp://127.0.0.1:0
INI
cat > "$dir/client.ini" <<INI
[node]
key = $dir/client.key
INI
timeout 120 "$LOCO" net-test serve -c "$dir/server.ini" --expect 4 --timeout 110 > "$dir/serve.out" 2> "$dir/serve.err" &
pids+=($!)
ADDR=$(wait_listen "$dir/serve.out") || fail "server did not start"
for c in fp32 bf16 int8 int4; do
    timeout 60 "$LOCO" net-test send -c "$dir/client.ini" --peer "$ADDR" --codec "$c" --mib 64 >> "$dir/send.out" 2>> "$dir/send.err" \
        || fail "send $c"
done
wait "${pids[0]}" || fail "server saw a bad tensor"
for c in fp32 bf16 int8 int4; do
    grep -q "n=16777216 codec=$c .* ok=1" "$dir/serve.out" || fail "no verified 64 MiB $c tensor"
done
grep "^tensor" "$dir/serve.out"
grep "^sent" "$dir/send.out"

# --- tickets ---------------------------------------------------------------------------------
cat > "$dir/run.ini" <<INI
[run]
name = nettest
admission = ticket
authority = $AUTH
INI
cat "$dir/run.ini" > "$dir/tserver.ini"
cat >> "$dir/tserver.ini" <<INI
[node]
key = $dir/server.key
[net]
listen = tcp://127.0.0.1:0
INI
"$LOCO" admit -c "$dir/run.ini" --authority-key "$dir/auth.key" --id "$(cat "$dir/client.id")" --expires +1d > "$dir/good.ticket"
"$LOCO" admit -c "$dir/run.ini" --authority-key "$dir/auth.key" --id "$(cat "$dir/stranger.id")" --expires 2020-01-01 > "$dir/old.ticket"
# A ticket for one peer does not admit another.
set +e
"$LOCO" admit -c "$dir/run.ini" --authority-key "$dir/client.key" --id "$(cat "$dir/client.id")" > /dev/null 2> "$dir/admit.err"
rc=$?
set -e
[ $rc = 2 ] && grep -q "not the run authority" "$dir/admit.err" || fail "admit with a non-authority key: rc $rc"

timeout 60 "$LOCO" net-test serve -c "$dir/tserver.ini" --expect 1 --timeout 50 > "$dir/tserve.out" 2> "$dir/tserve.err" &
pids+=($!)
TADDR=$(wait_listen "$dir/tserve.out") || fail "ticket server did not start"
client_ini() { # key ticket
    cat "$dir/run.ini"
    printf '[node]\nkey = %s\n' "$1"
    [ -n "$2" ] && printf 'ticket = %s\n' "$2"
    return 0
}
client_ini "$dir/stranger.key" "$dir/old.ticket" > "$dir/expired.ini"
client_ini "$dir/stranger.key" "" > "$dir/none.ini"
client_ini "$dir/client.key" "$dir/good.ticket" > "$dir/good.ini"
for who in expired none; do
    set +e
    timeout 30 "$LOCO" net-test send -c "$dir/$who.ini" --peer "$TADDR" --mib 1 --force > "$dir/$who.out" 2>&1
    rc=$?
    set -e
    [ $rc = 3 ] || fail "$who: expected refusal (exit 3), got $rc"
done
grep -q "refused: .*ticket expired" "$dir/expired.out" || fail "expired ticket: wrong reason"
grep -q "refused: .*ticket is required" "$dir/none.out" || fail "no ticket: wrong reason"
timeout 30 "$LOCO" net-test send -c "$dir/good.ini" --peer "$TADDR" --mib 1 > "$dir/good.out" 2>&1 || fail "valid ticket refused"
wait "${pids[1]}" || fail "ticket server"
# Exactly one tensor (the admitted peer's) was processed; the refused peers' tries were dropped.
[ "$(grep -c '^tensor' "$dir/tserve.out")" = 1 ] || fail "tensors processed from refused peers"
grep -q "^stats delivered=1 " "$dir/tserve.out" || fail "delivered count"
grep -Eq "drop\[not admitted\]=[1-9]" "$dir/tserve.out" || fail "refused peers' messages not counted as not admitted"
grep -q "drop\[refused\]=2" "$dir/tserve.out" || fail "refusals not counted"
grep "^stats" "$dir/tserve.out"

# --- key file permissions --------------------------------------------------------------------
chmod 644 "$dir/client.key"
set +e
"$LOCO" net-test send -c "$dir/client.ini" --peer "$ADDR" > /dev/null 2> "$dir/perm.err"
rc=$?
set -e
[ $rc = 2 ] && grep -q "chmod 600" "$dir/perm.err" || fail "readable key not refused (rc $rc)"
echo "ok"
