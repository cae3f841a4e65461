#!/usr/bin/env bash
# 1F1B's window over a capped link (issue 9): two nodes, each in its own network namespace
# (deploy/wan-sim.sh), one pipeline of 2 stages (an even split) across a link capped at RATE, so that
# sending one activation takes about as long as a stage's compute. With the default window (S = 2
# micro-batches in flight) a micro-batch's round trip (both stages and the link both ways) is what
# paces stage 0; `window M` keeps M in flight and the pace is the slower of stage and link. For both
# windows: the measured mean step time (stage 0's step records after SKIP), the cost model's
# prediction (`loco plan --eval`, from `--calibrate`'s figures and the link's rate) and the
# simulation's. threads = 1 per node (2 busy processes on 2 cores).
#
#   sudo tests/bench/bench_window.sh     (RATE=100mbit STEPS=30 SKIP=8 LAYERS=8 DMODEL=128 MB=4 M=8)
# Exit 77 when namespaces or tbf are unavailable.
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-$PWD/${LOCO_BUILD:-build}/loco}
SIM=deploy/wan-sim.sh
RATE=${RATE:-100mbit}
STEPS=${STEPS:-30}
SKIP=${SKIP:-8}
LAYERS=${LAYERS:-8}
DMODEL=${DMODEL:-128}
HEADS=${HEADS:-4}
SEQ=${SEQ:-64}
MB=${MB:-4}
M=${M:-8}
NAME=lbw$$
NAME=${NAME:0:8}
"$SIM" check >/dev/null || { echo "bench_window: skipped (namespaces or tbf unavailable)"; exit 77; }
W=$(mktemp -d /tmp/loco_bench_window.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    "$SIM" down "$NAME" 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
. tests/integration/lib_swarm.sh
corpus_letters 99 20000 "$W/text.txt"
"$BIN" data --input "$W/text.txt" --out "$W/data" >/dev/null || exit 1
"$SIM" up "$NAME" 2 "$RATE" >/dev/null || exit 1
A1=$("$SIM" addr "$NAME" 1)
A2=$("$SIM" addr "$NAME" 2)
for i in 1 2; do
    "$BIN" keygen --out "$W/k$i" >/dev/null || exit 1
    ID[$i]=$(awk '/^id =/ {print $3}' "$W/k$i.pub")
done

# Calibration (this machine, one thread): per-block and head figures.
. tests/bench/lib_plan.sh
calibrate
linkbw=$(bw "$RATE")
{
    sed -n '/^\[model\]/,/^\[node/p' "$W/cal.ini" | sed '/^\[node/d'
    printf 'calib_block = 1\ncalib_head = %s\n[outer]\ninner_steps = 1000000\n' "$CALH"
    for i in 1 2; do
        a=$A1; [ $i = 2 ] && a=$A2
        printf '[node n%d]\nisland = A\nid = %s\nflops = %s\nmemory = 4GiB\nnic = veth tcp://%s:7800 %s 50us\n' \
            "$i" "${ID[$i]}" "$FLOPS" "$a" "$linkbw"
    done
} >"$W/cluster.ini"

cat >"$W/base.ini" <<INI
[run]
name = bench-window
[model]
layers = $LAYERS
d_model = $DMODEL
heads = $HEADS
seq_len = $SEQ
[train]
data = $W/data
steps = $STEPS
lr = 3e-3
warmup = 5
threads = 1
eval_every = 0
checkpoint_every = 0
[gossip]
period_ms = 500
[pipeline]
timeout_ms = 30000
INI

# plan WINDOW OUT: 2 stages, an even split; no window line for 0.
plan() {
    {
        printf 'loco-plan 1\nlayers %d\nschedule 1f1b\nmicro_batch %d\nmicro_batches %d\n' "$LAYERS" "$MB" "$M"
        [ "$1" -gt 0 ] && printf 'window %d\n' "$1"
        printf 'stage 0 0 %d\nstage 1 %d %d\n' $((LAYERS / 2)) $((LAYERS / 2)) "$LAYERS"
        printf 'node n1 %s 0 0 tcp://%s:7800\nnode n2 %s 1 0 tcp://%s:7800\n' "${ID[1]}" "$A1" "${ID[2]}" "$A2"
    } >"$2"
}

# run PLAN DIR: both nodes run it; prints stage 0's mean step time after SKIP.
run() {
    local d=$2 rp=()
    mkdir -p "$d"
    for i in 1 2; do
        local a=$A1 s=()
        [ $i = 2 ] && a=$A2 && s=(--set "bootstrap.seed=${ID[1]}@tcp://$A1:7700")
        "$SIM" exec "$NAME" $i "$BIN" run -c "$W/base.ini" --set node.key="$W/k$i" --set net.listen="tcp://$a:7700" \
            --set net.reachable=yes --set pipeline.plan="$1" --set train.checkpoint_dir="$d/ck$i" \
            --set node.peer_cache="$d/cache$i" --set train.metrics="$d/m$i.jsonl" "${s[@]}" >"$d/log$i" 2>&1 &
        rp+=($!)
        pids+=($!)
    done
    for p in "${rp[@]}"; do wait "$p" || echo "bench_window: a node exited with $? (logs in $d)" >&2; done
    python3 - "$d/m1.jsonl" "$SKIP" "$STEPS" <<'PY'
import json, sys
e = [json.loads(l)["elapsed_s"] for l in open(sys.argv[1]) if '"kind":"step"' in l]
k, n = int(sys.argv[2]), int(sys.argv[3])
print("%.6f" % ((e[-1] - e[k - 1]) / (len(e) - k)) if len(e) == n and n > k else "nan")
PY
}

echo "bench_window: 2 stages of $LAYERS blocks (d_model $DMODEL) across a $RATE link, micro-batch $MB x $SEQ, $M per step, $STEPS steps (mean after $SKIP)"
printf '  %-8s %12s %12s %12s %8s\n' window predicted simulated measured error
declare -A meas
for w in 0 "$M"; do
    plan "$w" "$W/w$w.plan"
    out=$("$BIN" plan -c "$W/cluster.ini" --eval "$W/w$w.plan")
    pred=$(echo "$out" | sed -n 's/^predicted: step \([0-9.]* [mu]*s\).*/\1/p' | secs)
    sim=$(echo "$out" | sed -n 's/^simulated: step \([0-9.]* [mu]*s\).*/\1/p' | secs)
    meas[$w]=$(run "$W/w$w.plan" "$W/run$w")
    err=$(awk -v p="$pred" -v m="${meas[$w]}" 'BEGIN { if (m == "nan" || m == 0) print "-"; else printf "%+.1f%%", 100 * (p - m) / m }')
    printf '  %-8s %12.4f %12.4f %12s %8s\n' "$([ "$w" = 0 ] && echo "2 (S)" || echo "$w")" "$pred" "$sim" "${meas[$w]}" "$err"
done
awk -v a="${meas[0]}" -v b="${meas[$M]}" 'BEGIN { if (a != "nan" && b != "nan" && b > 0) printf "window %d vs the default: %.2fx the throughput (measured)\n", '"$M"', a / b }'
