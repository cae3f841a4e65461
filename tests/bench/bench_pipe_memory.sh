#!/usr/bin/env bash
# Per-stage memory, predicted against measured (issue 9): the planner's memory need of each stage
# (`loco plan --eval`, node/plan.c) against the peak resident memory (VmHWM) of the `loco run`
# process that runs it, less the peak of the same process on a model too small to matter (the
# process's own libraries, OpenBLAS buffers, ZeroMQ: what the cost model does not count). Two layouts
# of one 8-block model on 127.0.0.1, threads = 1: one pipeline of 2 stages (R = 1), and 2 replicas x
# 2 stages (routing chain, DiLoCo every H inner steps, a checkpoint at the end: the background
# snapshot: checkpoint_every = 10 of STEPS = 12). Prints one row per stage node and the mean
# absolute error.
#
#   tests/bench/bench_pipe_memory.sh      (DMODEL=512 LAYERS=8 HEADS=8 SEQ=64 MB=2 M=4 STEPS=12 H=5)
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-$PWD/${LOCO_BUILD:-build}/loco}
PY=${PYTHON:-/usr/bin/python3}
[ -x "$BIN" ] || { echo "no loco binary at $BIN"; exit 77; }
LAYERS=${LAYERS:-8}
DMODEL=${DMODEL:-512}
HEADS=${HEADS:-8}
SEQ=${SEQ:-64}
MB=${MB:-2}
M=${M:-4}
STEPS=${STEPS:-12}
H=${H:-5}
W=$(mktemp -d /tmp/loco_bench_pmem.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT
fail() { echo "bench_pipe_memory: $*"; exit 1; }
. tests/integration/lib_swarm.sh
corpus_letters 777 6000 "$W/text.txt"
"$BIN" data --input "$W/text.txt" --out "$W/data" >/dev/null || fail "loco data"

declare -A Q
for i in 1 2 3 4; do
    "$BIN" keygen --out "$W/k$i" >/dev/null || fail "keygen"
    ID[$i]=$(awk '/^id =/ {print $3}' "$W/k$i.pub")
done

# plan R OUT: R replicas x 2 stages, an even split; node n(s*R+r+1) is stage s replica r.
plan() {
    local R=$1 out=$2 half=$((LAYERS / 2))
    {
        printf 'loco-plan 1\nlayers %d\nschedule 1f1b\nmicro_batch %d\nmicro_batches %d\n' "$LAYERS" "$MB" "$M"
        [ "$R" -gt 1 ] && printf 'routing chain\n'
        printf 'stage 0 0 %d\nstage 1 %d %d\n' "$half" "$half" "$LAYERS"
        for s in 0 1; do
            for r in $(seq 0 $((R - 1))); do
                local n=$((s * R + r + 1))
                Q[$n]=$(port)
                printf 'node n%d %s %d %d tcp://127.0.0.1:%d\n' "$n" "${ID[$n]}" "$s" "$r" "${Q[$n]}"
            done
        done
    } >"$out"
}

# cluster D OUT: the cluster description of the same nodes and model (d_model D), for --eval.
cluster() {
    {
        printf '[model]\nlayers = %d\nd_model = %d\nheads = %d\nseq_len = %d\nvocab = 256\n' "$LAYERS" "$1" "$HEADS" "$SEQ"
        printf '[train]\nmicro_batch = %d\nmicro_batches = %d\nschedule = 1f1b\n' "$MB" "$M"
        printf '[outer]\nalgorithm = diloco\ninner_steps = %d\ncodec = fp32\noverlap = off\n' "$H"
        for i in 1 2 3 4; do
            printf '[node n%d]\nisland = lo\nid = %s\nflops = 10G\nmemory = 8GiB\nnic = lo tcp://127.0.0.1:%d 1GB/s 50us\n' \
                "$i" "${ID[$i]}" $((20000 + i))
        done
    } >"$2"
}

# run R D DIR: every node of the layout runs `loco run`; prints "node peak_kB" per node.
run() {
    local R=$1 D=$2 d=$3 n=$((2 * $1)) heads=$HEADS
    [ "$D" -lt "$HEADS" ] && heads=1
    mkdir -p "$d"
    plan "$R" "$d/plan"
    cat >"$d/base.ini" <<INI
[run]
name = bench-pmem-$R-$D
[model]
layers = $LAYERS
d_model = $D
heads = $heads
seq_len = $SEQ
[train]
data = $W/data
steps = $STEPS
threads = 1
eval_every = 0
checkpoint_every = 10
[outer]
algorithm = diloco
inner_steps = $H
[gossip]
period_ms = 200
[pipeline]
timeout_ms = 20000
INI
    local run_pids=() gp1
    gp1=$(port)
    for i in $(seq "$n"); do
        local gp=$gp1 seed=()
        [ "$i" != 1 ] && gp=$(port) && seed=(--set "bootstrap.seed=${ID[1]}@tcp://127.0.0.1:$gp1")
        "$BIN" run -c "$d/base.ini" --set node.key="$W/k$i" --set net.listen="tcp://127.0.0.1:$gp" \
            --set pipeline.plan="$d/plan" --set train.checkpoint_dir="$d/ck$i" --set node.peer_cache="$d/cache$i" \
            "${seed[@]}" >"$d/log$i" 2>&1 &
        run_pids+=($!)
        pids+=($!)
    done
    # VmHWM only grows: the last value read before the process exits is its peak.
    local alive=1
    declare -A hwm
    while [ $alive = 1 ]; do
        alive=0
        for i in $(seq "$n"); do
            local v
            v=$(awk '/^VmHWM/ {print $2}' "/proc/${run_pids[$((i - 1))]}/status" 2>/dev/null) && [ -n "$v" ] &&
                { hwm[$i]=$v; alive=1; }
        done
        sleep 0.05
    done
    for i in $(seq "$n"); do
        wait "${run_pids[$((i - 1))]}" || echo "bench_pipe_memory: node $i of $d exited with $? (log $d/log$i)" >&2
        echo "$i ${hwm[$i]:-0}"
    done
}

# predicted R D: "stage MiB" per stage from loco plan --eval.
predicted() {
    local d=$W/pred$1-$2
    mkdir -p "$d"
    plan "$1" "$d/plan"
    cluster "$2" "$d/cluster.ini"
    "$BIN" plan -c "$d/cluster.ini" --eval "$d/plan" | awk '$1 ~ /^[0-9]+$/ && $0 ~ / MiB / {
        for (i = 1; i <= NF; i++) if ($i == "MiB") print $1, $(i - 3) }'
}

echo "bench_pipe_memory: $LAYERS blocks, d_model $DMODEL, micro-batch $MB x $SEQ, $M per step, $STEPS steps; baseline d_model 32"
printf '%-8s %-6s %-5s %12s %12s %12s %8s\n' layout node stage "predicted" "measured" "(peak)" "error"
errs=()
for R in 1 2; do
    declare -A pred=()
    while read -r s mib; do pred[$s]=$mib; done < <(predicted "$R" "$DMODEL")
    declare -A base=()
    while read -r i kb; do base[$i]=$kb; done < <(run "$R" 32 "$W/r$R-base")
    while read -r i kb; do
        s=$(((i - 1) / R))
        meas=$(awk -v a="$kb" -v b="${base[$i]}" 'BEGIN { printf "%.0f", (a - b) / 1024 }')
        err=$(awk -v p="${pred[$s]:-0}" -v m="$meas" 'BEGIN { printf "%+.1f", (m > 0 ? 100 * (p - m) / m : 0) }')
        errs+=("$err")
        printf '%-8s %-6s %-5s %9s MiB %9s MiB %9s MiB %7s%%\n' "${R}x2" "n$i" "$s" "${pred[$s]:-?}" "$meas" \
            "$(awk -v a="$kb" 'BEGIN { printf "%.0f", a / 1024 }')" "$err"
    done < <(run "$R" "$DMODEL" "$W/r$R")
done
printf '%s\n' "${errs[@]}" | awk '{ s += ($1 < 0 ? -$1 : $1); n++ } END { printf "mean absolute error of the per-stage memory model: %.1f%% (%d stage nodes)\n", s / n, n }'
