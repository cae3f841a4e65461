#!/usr/bin/env bash
# Pipelined `loco run` on 127.0.0.1 (issue 9), tiny model, threads = 1:
#  1. 2 stages, one node each, 1F1B: both finish [train] steps, the loss both stages log is the
#     same every step and falls; the stages' logs name their block ranges.
#  2. A node the plan does not name refuses to start, naming the plan; a node holding another plan
#     is refused by the seed with the field that differs (pipeline.plan).
#  3. Stage 1 with two replicas, DiLoCo every 10 inner steps: micro-batches are routed to both, the
#     two replicas take outer steps together over stage 1's parameters (both contribute, identical
#     anchors), stage 0 (one node) takes none; then one replica is frozen (SIGSTOP): stage 0 takes
#     it for dead (over an unanswered micro-batch, which is rerouted, or its missing wte gradient)
#     and sends its share to the other replica; it is then killed with -9, and training goes on to
#     the end on the remaining replica (loss still falls).
# Asserts on counters and events from the logs and metrics, never on durations (the timeouts only
# catch hangs). Every process is killed by pid at the end.
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-$PWD/${LOCO_BUILD:-build}/loco}
PY=${PYTHON:-/usr/bin/python3}
[ -x "$BIN" ] || { echo "no loco binary at $BIN"; exit 77; }
W=$(mktemp -d /tmp/loco_it_pipe.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$W"/*/log*; do echo "--- $f"; grep -v "INFO  train: step" "$f" | tail -n 15; done; exit 1; }

. tests/integration/lib_pipe.sh

# --- 1. two stages ----------------------------------------------------------------------------
keys a 3
cat >"$W/plan2" <<PLAN
loco-plan 1
layers 2
schedule 1f1b
micro_batch 4
micro_batches 4
stage 0 0 1
stage 1 1 2
node s0 ${ID[a1]} 0 0 tcp://127.0.0.1:${Q[a1]}
node s1 ${ID[a2]} 1 0 tcp://127.0.0.1:${Q[a2]}
PLAN
start a 1 "$W/plan2"
start a 2 "$W/plan2"
wait_all a 2 120
grep -q "stage 0 of 2 (blocks 0..0)" "$W/a/log1" || fail "stage 0 does not say its blocks"
grep -q "stage 1 of 2 (blocks 1..1)" "$W/a/log2" || fail "stage 1 does not say its blocks"
grep -q "pipeline stage 0 replica 0: 60 steps, 240 forward / 240 backward" "$W/a/log1" || fail "stage 0 summary"
grep -q "pipeline stage 1 replica 0: 60 steps, 240 forward / 240 backward" "$W/a/log2" || fail "stage 1 summary"
[ "$(losses "$W/a/m1.jsonl" | wc -l)" = 60 ] || fail "stage 0 wrote $(losses "$W/a/m1.jsonl" | wc -l) step records"
# Stage 0 learns each micro-batch's loss from its gradient message: the same figures as the last stage.
diff <(losses "$W/a/m1.jsonl") <(losses "$W/a/m2.jsonl") >/dev/null || fail "stage 0 and stage 1 log different losses"
echo "two stages:"
falls "$W/a/m2.jsonl" || fail "the loss does not fall"
echo "ok: 2-stage pipeline trains (60 steps, same loss on both stages)"
# Each stage holds only its part of the model (parameters, gradients, AdamW state), and its final
# checkpoint holds that part: started again with more steps, both resume from it.
grep -q "holds .* MB of the model's .* MB .* (1 part(s))" "$W/a/log1" || fail "stage 0 does not say it holds one part"
grep -q "holds .* MB of the model's .* MB .* (2 part(s))" "$W/a/log2" || fail "stage 1 does not hold wte + its range"
mv "$W/a/log1" "$W/a/log1.first"; mv "$W/a/log2" "$W/a/log2.first"
start a 1 "$W/plan2" --set train.steps=80
start a 2 "$W/plan2" --set train.steps=80
wait_all a 2 120
for i in 1 2; do
    grep -q "resumed from .* at step 60" "$W/a/log$i" || fail "stage $i did not resume from its checkpoint at step 60"
done
grep -q "pipeline stage 1 replica 0: 20 steps, 80 forward / 80 backward" "$W/a/log2" || fail "stage 1 after resuming"
[ "$(losses "$W/a/m2.jsonl" | wc -l)" = 80 ] || fail "stage 1 wrote $(losses "$W/a/m2.jsonl" | wc -l) step records after resuming"
diff <(losses "$W/a/m1.jsonl") <(losses "$W/a/m2.jsonl") >/dev/null || fail "after resuming, stage 0 and stage 1 log different losses"
echo "ok: each stage holds and checkpoints its part only; both resume from their checkpoints (60 -> 80 steps)"

# --- 2. refusals --------------------------------------------------------------------------------
timeout 30 "$BIN" run -c "$W/base.ini" --set node.key="$W/a/k3" --set net.listen="tcp://127.0.0.1:$(port)" \
    --set pipeline.plan="$W/plan2" --set node.peer_cache="$W/a/cache3" --set train.checkpoint_dir="$W/a/ck3" >"$W/a/log3" 2>&1
rc=$?
[ "$rc" != 0 ] || fail "a node the plan does not name started"
grep -q "does not name this peer (${ID[a3]})" "$W/a/log3" || fail "no clear refusal for a node outside the plan"
sed 's/micro_batches 4/micro_batches 2/' "$W/plan2" >"$W/plan2b"
start a 1 "$W/plan2" --set train.steps=100000
wait_for 20 "the seed listens" grep -q "peer .*, run 'pipe-test'" "$W/a/log1"
timeout 30 "$BIN" run -c "$W/base.ini" --set node.key="$W/a/k2" --set net.listen="tcp://127.0.0.1:${P[a2]}" \
    --set pipeline.plan="$W/plan2b" --set node.peer_cache="$W/a/cache2b" --set train.checkpoint_dir="$W/a/ck2b" \
    --set "bootstrap.seed=${ID[a1]}@tcp://127.0.0.1:${P[a1]}" >"$W/a/log2b" 2>&1
grep -q "pipeline.plan" "$W/a/log2b" || fail "a node with another plan was not refused naming pipeline.plan"
kill -9 "${PID[a1]}" 2>/dev/null
wait "${PID[a1]}" 2>/dev/null
echo "ok: a node outside the plan and a node with another plan are refused"

# --- 3. replicas, a frozen then killed replica ---------------------------------------------------
keys b 3
cat >"$W/plan3" <<PLAN
loco-plan 1
layers 2
schedule 1f1b
micro_batch 4
micro_batches 4
stage 0 0 1
stage 1 1 2
node s0 ${ID[b1]} 0 0 tcp://127.0.0.1:${Q[b1]}
node r0 ${ID[b2]} 1 0 tcp://127.0.0.1:${Q[b2]}
node r1 ${ID[b3]} 1 1 tcp://127.0.0.1:${Q[b3]}
PLAN
for i in 1 2 3; do
    start b $i "$W/plan3" --set train.steps=1500 --set outer.algorithm=diloco --set outer.inner_steps=10 \
        --set outer.deadline_ms=3000
done
# Both replicas have taken micro-batches and completed outer rounds together before one is frozen.
busy() { [ "$(cat "$W/b/m$1.jsonl" 2>/dev/null | grep -c '"micro_batches":[1-9]')" -ge 3 ]; }
wait_for 90 "both replicas at work" eval "busy 2 && busy 3"
# anchor_of LOG N: the anchor hash after round N, when both replicas contributed to it.
anchor_of() { grep -o "round $2 mean: 2 of 2 .* anchor [0-9a-f]*" "$1" | awk '{print $NF}'; }
common_round() { # a round both replicas completed together: "N hash2 hash3"
    for n in $(grep -o 'round [0-9]* mean: 2 of 2' "$W/b/log2" 2>/dev/null | awk '{print $2}'); do
        local h3; h3=$(anchor_of "$W/b/log3" "$n")
        [ -n "$h3" ] && { echo "$n $(anchor_of "$W/b/log2" "$n") $h3"; return 0; }
    done
    return 1
}
wait_for 90 "an outer step of both stage-1 replicas together" eval "common_round >/dev/null"
read -r n a2 a3 <<<"$(common_round)"
[ "$a2" = "$a3" ] || fail "stage 1 replicas end round $n with different anchors ($a2, $a3)"
echo "  stage 1 replicas: round $n, both contributed, anchor $a2 on both"
grep -q "outer: round" "$W/b/log1" && fail "stage 0 (one replica) takes outer steps"
kill -STOP "${PID[b3]}"
# Stage 0 takes r1 for dead either when a micro-batch it sent r1 goes unanswered (that one is then
# rerouted to r0) or, when none was out at r1, when r1's wte gradient does not come; after that
# every micro-batch goes to r0 (r1 gets one again only after a probation of 4 timeouts).
wait_for 60 "stage 0 takes the frozen replica for dead" grep -q "(r1) taken for dead" "$W/b/log1"
kill -9 "${PID[b3]}"
wait "${PID[b3]}" 2>/dev/null
wait_peers b 300 1 2
sum=$(grep -o "pipeline stage 0 replica 0: .*" "$W/b/log1")
echo "  $sum"
echo "$sum" | grep -q "1500 steps, 6000 forward / 6000 backward" || fail "stage 0 did not finish its micro-batches"
rr=$(echo "$sum" | sed 's/.* \([0-9]*\) rerouted.*/\1/')
if grep -q "(r1) taken for dead: micro-batch" "$W/b/log1"; then
    [ "$rr" -ge 1 ] || fail "r1 was taken for dead over an unanswered micro-batch, but nothing was rerouted"
fi
grep -q "pipeline stage 1 replica 0: 1500 steps" "$W/b/log2" || fail "the remaining replica did not finish"
# Every micro-batch stage 0 sent after r1 froze was answered (6000 backward above): by r0, which
# ran more of them than its even share.
f2=$(grep -o "pipeline stage 1 replica 0: 1500 steps, [0-9]* forward" "$W/b/log2" | awk '{print $8}')
[ "$f2" -gt 3000 ] || fail "r0 ran $f2 of 6000 micro-batches: the frozen replica's share did not move to it"
echo "  r0 ran $f2 of the 6000 micro-batches, $rr rerouted after a timeout"
echo "replicas:"
falls "$W/b/m1.jsonl" || fail "the loss does not fall with a killed replica"
echo "ok: replicas share the micro-batches and average stage 1 (DiLoCo); a frozen replica is taken for dead and its share goes to the other ($rr rerouted after a timeout), after kill -9 training goes on"
