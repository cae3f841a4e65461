#!/usr/bin/env bash
# `loco plan --probe` against three membership-only `loco run` nodes a, b, c on 127.0.0.1, with a
# cluster description that also names d (a dead port) and e (no peer endpoint), every link declared
# at 50 ms and 1 Gbit/s:
#   - from a (found by its [node] key): b and c are measured over loco's transport, their latency
#     well under the declared 50 ms, their bandwidth positive; d keeps its declared figures with
#     "connection refused", e with "no 'peer = ...'"; the plan follows with the measured figures;
#     the probe's id is derived from a's key (not a's id, the same on every probe from a);
#   - --probe-out writes [pair] sections that `loco plan -c` accepts appended to the description;
#     the same from b (--from b), and both files appended: every measured pair once;
#   - a run config of another run: every node refuses, "different run", declared figures kept;
#   - b named with another id: its port answers, the handshake does not complete, the row says so;
#   - usage errors (exit 2): --probe without --run-config, --probe-out without --probe, an unknown
#     --from, --probe-key with the node's own key.
# Every process runs under `timeout` and is killed by pid at the end.
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-${LOCO_BUILD:+$LOCO_BUILD/loco}}
BIN=${BIN:-build/loco}
PY=${PYTHON:-/usr/bin/python3}
W=$(mktemp -d /tmp/loco_plan_probe.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    for f in "$W"/*.out "$W"/*.err "$W"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done
    exit 1
}
has() { grep -qF -- "$2" "$1" || fail "$1: no '$2'"; }
. tests/integration/lib_swarm.sh

for k in a b c d e x; do "$BIN" keygen --out "$W/$k.key" >/dev/null || fail "keygen $k"; done
idof() { awk '/^id =/ {print $3}' "$W/$1.key.pub"; }
PA=$(port); PB=$(port); PC=$(port); DEAD=$(port) # DEAD: free a moment ago, nothing binds it here

run_ini() { # NAME PORT [heads]
    cat <<INI
[run]
name = plan-probe-test
[model]
heads = ${3:-4}
[train]
steps = 0
checkpoint_dir = $W/$1.ck
[node]
key = $W/$1.key
peer_cache = $W/$1.cache
[net]
listen = tcp://127.0.0.1:$2
INI
}
run_ini a "$PA" >"$W/a.ini"
run_ini b "$PB" >"$W/b.ini"
run_ini c "$PC" >"$W/c.ini"
run_ini a 0 2 >"$W/other.ini" # another run: [model] heads differs
for k in a b c; do
    timeout 60 "$BIN" run -c "$W/$k.ini" >"$W/$k.log" 2>&1 &
    pids+=($!)
done

node() { # NAME EXTRA-LINES
    printf '[node %s]\nisland = lo\nflops = 1T\nmemory = 8 GiB\nnic = eth0 tcp://127.0.0.1:%s 1Gbit/s 25ms\n%b\n' \
        "$1" "$((20000 + ${#1} * 7 + $(printf '%d' "'$1")))" "$2"
}
{
    printf '[model]\nlayers = 4\nd_model = 64\nheads = 4\nseq_len = 32\nvocab = 256\n'
    printf '[train]\nmicro_batch = 2\nmicro_batches = 4\n[outer]\ninner_steps = 10\n[island lo]\n\n'
    node a "key = a.key.pub\npeer = tcp://127.0.0.1:$PA"
    node b "peer = $(idof b)@tcp://127.0.0.1:$PB"
    node c "id = $(idof c)\npeer = tcp://127.0.0.1:$PC"
    node d "id = $(idof d)\npeer = tcp://127.0.0.1:$DEAD"
    node e "id = $(idof e)"
} >"$W/cluster.ini"

t0=$SECONDS
for k in a b c; do wait_for 20 "node $k up" grep -q "run: peer " "$W/$k.log"; done

# --- from a: b and c measured, d and e keep their declared figures
rc=0
timeout 60 "$BIN" plan -c "$W/cluster.ini" --probe --run-config "$W/a.ini" --probe-out "$W/a.probe" \
    --probe-timeout-ms 3000 --probe-bytes 1048576 >"$W/a.out" 2>"$W/a.err" || rc=$?
cat "$W/a.out"
[ $rc = 0 ] || fail "plan --probe from a: exit $rc"
has "$W/a.out" "probe from a over loco's transport ("
grep -Eq '^a-b +50\.00 ms +125 MB/s +[0-9.]+ (us|ms) +[0-9.]+ [kMG]?B/s +measured \(round trip median' "$W/a.out" \
    || fail "no measured row for a-b"
grep -Eq '^a-c .* measured \(round trip median' "$W/a.out" || fail "no measured row for a-c"
grep -Eq "^a-d +50\.00 ms +125 MB/s +- +- +declared figures kept: not reached: tcp://127\.0\.0\.1:$DEAD: connection refused" \
    "$W/a.out" || fail "a-d: no 'declared figures kept: ... connection refused'"
has "$W/a.out" "is its loco run up"
grep -Eq "^a-e .*declared figures kept: no 'peer = tcp://host:port'" "$W/a.out" || fail "a-e: no 'no peer' row"
has "$W/a.out" "planning with the measured figures for 2 links from a"
has "$W/a.out" "wrote $W/a.probe"
has "$W/a.out" "node pairs with their own link figures ([pair], measured or declared): 2:"
has "$W/a.out" "predicted: step"
# The measured figures, as written for the description: loopback is far under the declared 50 ms.
for o in b c; do
    lat=$(awk -v s="[pair a $o]" '$0 == s { f = 1; next } f && /^latency =/ { print $3; exit }' "$W/a.probe")
    bw=$(awk -v s="[pair a $o]" '$0 == s { f = 1; next } f && /^bandwidth =/ { print $3; exit }' "$W/a.probe")
    echo "a-$o: latency $lat us, bandwidth $bw MB/s"
    [ -n "$lat" ] && [ -n "$bw" ] || fail "a.probe: no [pair a $o] with latency and bandwidth"
    awk -v l="$lat" -v b="$bw" 'BEGIN { exit !(l > 0 && l < 25000 && b > 0) }' \
        || fail "a-$o: latency $lat us (want < 25 ms, declared 50 ms) or bandwidth $bw MB/s (want > 0)"
done
has "$W/a.probe" "# a-d: not measured: not reached: tcp://127.0.0.1:$DEAD: connection refused"
has "$W/a.probe" "# a-e: not measured: no 'peer = tcp://host:port'"

# --- the file goes back into the description; with b's (--from b) both ends of a-b are measured
timeout 60 "$BIN" plan -c "$W/cluster.ini" --probe --run-config "$W/b.ini" --from b --probe-out "$W/b.probe" \
    --probe-timeout-ms 3000 --probe-bytes 1048576 >"$W/b.out" 2>"$W/b.err" || fail "plan --probe from b: exit $?"
has "$W/b.out" "probe from b over"
grep -Eq '^b-a .* measured \(round trip median' "$W/b.out" || fail "no measured row for b-a"
cat "$W/cluster.ini" "$W/a.probe" >"$W/merged_a.ini"
timeout 60 "$BIN" plan -c "$W/merged_a.ini" >"$W/merged_a.out" 2>&1 || fail "plan -c with a.probe appended: exit $?"
has "$W/merged_a.out" "node pairs with their own link figures ([pair], measured or declared): 2: a-b "
cat "$W/cluster.ini" "$W/a.probe" "$W/b.probe" >"$W/merged.ini"
timeout 60 "$BIN" plan -c "$W/merged.ini" >"$W/merged.out" 2>&1 || fail "plan -c with both files appended: exit $?"
has "$W/merged.out" "node pairs with their own link figures ([pair], measured or declared): 3: a-b "
has "$W/merged.out" "b-c "

# --- another run: refused with the reason, declared figures kept, still plans
timeout 60 "$BIN" plan -c "$W/cluster.ini" --probe --run-config "$W/other.ini" --from a --probe-timeout-ms 3000 \
    >"$W/other.out" 2>"$W/other.err" || fail "plan --probe with another run's config: exit $?"
grep -Eq '^a-b .*declared figures kept: refused: .*different run.*--run-config must be this run' "$W/other.out" \
    || fail "another run: no 'refused: different run' row for a-b"
has "$W/other.out" "no node measured: planning with the declared figures"
# The probe's id: derived from a's key, the same on both probes from a, never a's own id.
pid1=$(sed -n 's/.*probe id \([0-9a-f]*\)….*/\1/p' "$W/a.out")
pid2=$(sed -n 's/.*probe id \([0-9a-f]*\)….*/\1/p' "$W/other.out")
[ -n "$pid1" ] && [ "$pid1" = "$pid2" ] || fail "probe ids from a differ or are missing: '$pid1' '$pid2'"
[ "$pid1" != "$(idof a | cut -c1-16)" ] || fail "the probe dialled with a's own id"

# --- b named with another id (x's): its port answers, the CURVE handshake cannot complete
sed "s/^peer = $(idof b)@/peer = $(idof x)@/" "$W/cluster.ini" >"$W/wrongid.ini"
timeout 60 "$BIN" plan -c "$W/wrongid.ini" --probe --run-config "$W/a.ini" --probe-timeout-ms 1500 \
    >"$W/wrongid.out" 2>"$W/wrongid.err" || fail "plan --probe with a wrong id for b: exit $?"
grep -Eq "^a-b .*declared figures kept: tcp://127\.0\.0\.1:$PB answers, but the CURVE handshake did not complete within 1500 ms — the node's id in the description is not its key's" \
    "$W/wrongid.out" || fail "wrong id: no handshake row for a-b"
grep -Eq '^a-c .* measured \(round trip median' "$W/wrongid.out" || fail "wrong id for b: a-c not measured"

# --- usage errors
rc=0; timeout 30 "$BIN" plan -c "$W/cluster.ini" --probe >"$W/u1.out" 2>&1 || rc=$?
[ $rc = 2 ] || fail "--probe without --run-config: exit $rc, want 2"
has "$W/u1.out" "--probe needs --run-config"
rc=0; timeout 30 "$BIN" plan -c "$W/cluster.ini" --probe-out "$W/x.probe" >"$W/u2.out" 2>&1 || rc=$?
[ $rc = 2 ] || fail "--probe-out without --probe: exit $rc, want 2"
rc=0; timeout 30 "$BIN" plan -c "$W/cluster.ini" --probe --run-config "$W/a.ini" --from zz >"$W/u3.out" 2>&1 || rc=$?
[ $rc = 2 ] || fail "--from an unknown node: exit $rc, want 2"
has "$W/u3.out" "--from zz: no [node zz]"
rc=0; timeout 30 "$BIN" plan -c "$W/cluster.ini" --probe --run-config "$W/a.ini" --probe-key "$W/a.key" >"$W/u4.out" 2>&1 || rc=$?
[ $rc = 2 ] || fail "--probe-key with the node's own key: exit $rc, want 2"
has "$W/u4.out" "is this node's own key"

# The nodes probed are still running (the probe dials with its own key, never theirs).
for i in 0 1 2; do kill -0 "${pids[$i]}" 2>/dev/null || fail "node $i (a b c) exited during the probes"; done
echo "test_plan_probe: ok ($((SECONDS - t0)) s)"
