#!/usr/bin/env bash
# make test-long: a peer joins a running 4-peer DiLoCo swarm (issue 7). Its anchor differs from the
# round's majority, so it catches up: it fetches the outer state (anchor ‖ momentum) of the next
# round as a named version, in verified chunks from several donors in parallel (node/catchup.h),
# at a capped download rate so the transfer takes a while; one donor is killed with -9 during the
# transfer; the transfer completes from the others without restarting, and the joiner then takes
# part in full rounds with the same anchor as everyone. Rounds (30 steps) last longer than the
# transfer (6 s against about 3 s), as on a real swarm: catch-up must finish within a round to converge.
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-$PWD/build/loco}
PY=${PYTHON:-/usr/bin/python3}
[ -x "$BIN" ] || { echo "no loco binary at $BIN"; exit 77; }
W=$(mktemp -d /tmp/loco_long_catchup.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$W"/log*; do echo "--- $f"; grep -v "INFO  train: step" "$f" | tail -n 15; done; exit 1; }
. tests/integration/lib_swarm.sh
corpus_letters 5 3000 "$W/text.txt"
timeout 30 "$BIN" data --input "$W/text.txt" --out "$W/data" >/dev/null || fail "loco data"
cat >"$W/base.ini" <<INI
[run]
name = catchup-test
[model]
layers = 2
d_model = 64
heads = 2
seq_len = 64
[train]
data = $W/data
batch = 8
steps = 450
threads = 1
eval_every = 0
checkpoint_every = 0
[outer]
algorithm = diloco
inner_steps = 30
deadline_ms = 20000
[gossip]
period_ms = 300
INI
for i in 1 2 3 4 5; do "$BIN" keygen --out "$W/k$i" >/dev/null; P[$i]=$(port); done
SEED="$(awk '/^id =/ {print $3}' "$W/k1.pub")@tcp://127.0.0.1:${P[1]}"
start() { # i, extra args
    local i=$1; shift
    local s=()
    [ "$i" != 1 ] && s=(--set "bootstrap.seed=$SEED")
    LOCO_TEST_STEP_DELAY_MS=200 "$BIN" run -c "$W/base.ini" --set node.key="$W/k$i" --set net.listen="tcp://127.0.0.1:${P[$i]}" \
        --set train.checkpoint_dir="$W/ck$i" --set node.peer_cache="$W/cache$i" --set train.metrics="$W/m$i.jsonl" \
        "${s[@]}" "$@" >"$W/log$i" 2>&1 &
    PID[$i]=$!
    pids+=("$!")
}
for i in 1 2 3 4; do start $i; done
t0=$SECONDS
until [ "$(cat "$W/m1.jsonl" 2>/dev/null | grep -c '"contributors":4')" -ge 2 ]; do
    [ $((SECONDS - t0)) -ge 90 ] && fail "the 4-peer swarm never took two full rounds"
    sleep 0.2
done
start 5 --set limits.download_rate=300000
t0=$SECONDS
until grep -q "fetching version" "$W/log5" 2>/dev/null; do
    [ $((SECONDS - t0)) -ge 60 ] && fail "the joiner never started catching up"
    sleep 0.02
done
sleep 0.2
# Kill a donor the joiner is fetching from (any of the four holds the version; peer 3 is not the seed).
{ kill -9 "${PID[3]}"; wait "${PID[3]}"; } 2>/dev/null
t0=$SECONDS
until grep -q "caught up to version" "$W/log5" 2>/dev/null; do
    [ $((SECONDS - t0)) -ge 60 ] && fail "the joiner never finished catching up"
    sleep 0.2
done
for i in 1 2 4 5; do
    while kill -0 "${PID[$i]}" 2>/dev/null; do
        [ $((SECONDS - t0)) -ge 240 ] && fail "peer $i still running (hang?)"
        sleep 0.5
    done
    wait "${PID[$i]}" || fail "peer $i exited with $?"
done
line=$(grep -m1 "caught up to version" "$W/log5")
echo "  $line" | sed 's/.*catchup: /  /'
echo "$line" | grep -Eq "from ([2-9]|[1-9][0-9]) donors" || fail "the joiner did not fetch from two or more donors"
echo "$line" | grep -Eq "[1-9][0-9]* reassigned" || fail "no chunk was reassigned after the kill"
"$PY" - "$W" <<'PY' || fail "the joiner never completed a round with the others' anchor"
import json, sys, collections
W = sys.argv[1]
by = collections.defaultdict(dict)
for i in (1, 2, 4, 5):
    for l in open(f"{W}/m{i}.jsonl"):
        r = json.loads(l)
        if r["kind"] == "outer" and r["result"] == "mean" and not r["short"] and r["contributors"] >= 3:
            by[r["round"]][i] = r["anchor"]
joint = [t for t, m in by.items() if 5 in m and len(m) >= 3 and len(set(m.values())) == 1]
print(f"  the joiner then completed {len(joint)} rounds with the same anchor as the others")
sys.exit(0 if joint else 1)
PY
echo "ok: a joiner caught up from several donors despite a donor killed mid-transfer, then trained with the swarm"
