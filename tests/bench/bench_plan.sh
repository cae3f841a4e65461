#!/usr/bin/env bash
# Predicted against measured step times of pipeline layouts (issue 9): N nodes (N ≤ this machine's
# cores, threads = 1 each), islands A (odd nodes) and B (even nodes), each node in its own network
# namespace (deploy/wan-sim.sh) with its link capped at FAST, and every pair across the islands
# capped at SLOW (tc htb under the node's own cap). For each SLOW in RATES:
#   1. `loco plan --calibrate` measures this machine's per-block and head time and a loopback link;
#      the cluster description gets those figures, FAST inside islands and SLOW between;
#   2. `loco plan --replicas 1` chooses the layout (one pipeline: the runtime has no outer steps
#      between replicas yet), and alternatives are written as plan files: the chosen nodes with an
#      even split, the nodes in file order (islands interleaved) with an even split, other stage
#      counts, one node alone;
#   3. every layout runs `loco run` with its plan for STEPS inner steps; the measured step time is the
#      mean over the steps after SKIP (stage 0's step records); the predicted one is
#      `loco plan --eval`'s.
# Prints one row per layout, the mean absolute error, the rank correlation, whether the chosen layout
# is within 5% of the best measured, and the chosen vs naive throughput.
#
#   sudo tests/bench/bench_plan.sh     (root: namespaces; N=2 RATES="20mbit 200mbit" FAST=1gbit
#                                       STEPS=40 SKIP=10 LAYERS=8 DMODEL=128 MB=4 M=8)
#   NETNS=0 tests/bench/bench_plan.sh  (no namespaces: every node on 127.0.0.1, one island, links as
#                                       fast as loopback — the compute side of the model alone)
# Exit 77 when namespaces or tbf are unavailable (and NETNS is not 0).
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-$PWD/build/loco}
SIM=deploy/wan-sim.sh
N=${N:-2}
FAST=${FAST:-1gbit}
RATES=${RATES:-"20mbit 200mbit"}
STEPS=${STEPS:-40}
SKIP=${SKIP:-10}
LAYERS=${LAYERS:-8}
DMODEL=${DMODEL:-128}
HEADS=${HEADS:-4}
SEQ=${SEQ:-64}
MB=${MB:-4}
M=${M:-8}
NAME=lbp$$
NAME=${NAME:0:8}
NETNS=${NETNS:-1}
if [ "$NETNS" != 0 ]; then
    "$SIM" check >/dev/null || { echo "bench_plan: skipped ($("$SIM" check)); NETNS=0 runs on loopback"; exit 77; }
else
    RATES=loopback
fi
# addr N: node N's address; in_ns N CMD...: CMD in node N's namespace (or here on loopback).
addr() { if [ "$NETNS" = 0 ]; then echo 127.0.0.1; else "$SIM" addr "$NAME" "$1"; fi; }
in_ns() { local n=$1; shift; if [ "$NETNS" = 0 ]; then "$@"; else "$SIM" exec "$NAME" "$n" "$@"; fi; }
gport() { if [ "$NETNS" = 0 ]; then echo $((17700 + $1)); else echo 7700; fi; }
pport() { if [ "$NETNS" = 0 ]; then echo $((17800 + $1)); else echo 7800; fi; }
cores=$(nproc)
[ "$N" -le "$cores" ] || echo "bench_plan: warning: $N nodes on $cores cores: busy processes will share cores"
W=$(mktemp -d /tmp/loco_bench_plan.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    [ "$NETNS" != 0 ] && "$SIM" down "$NAME" 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
if ! ls build/data/fortunes/*train*.bin >/dev/null 2>&1; then
    "$BIN" data --input /usr/share/games/fortunes --out build/data/fortunes >/dev/null || exit 1
fi

. tests/bench/lib_plan.sh

# --- calibration (this machine, one thread) -----------------------------------------------------
calibrate
LAT=$(sed -n 's/^loopback link.*fitted latency \([0-9.]* [mu]*s\),.*/\1/p' "$W/cal.out" | secs)
LOOPBW=$(sed -n 's/^loopback link.*bandwidth \([0-9.]*\) \([kMG]*\)B\/s.*/\1\2B\/s/p' "$W/cal.out" | sed 's/kB/kB/')
echo "calibration: flops $FLOPS per node, calib_head $CALH, loopback latency $LAT s ($(grep 'mean absolute error' "$W/cal.out" | sed 's/^ *//'))"

cat >"$W/base.ini" <<INI
[run]
name = bench-plan
[model]
layers = $LAYERS
d_model = $DMODEL
heads = $HEADS
seq_len = $SEQ
[train]
data = $PWD/build/data/fortunes
steps = $STEPS
lr = 3e-3
lr_min = 3e-4
warmup = 5
threads = 1
eval_every = 0
checkpoint_every = 0
[gossip]
period_ms = 500
[pipeline]
timeout_ms = 20000
INI

# plan_file OUT S "nodes in stage order" "cuts" : a one-pipeline plan by hand.
plan_file() {
    local out=$1 S=$2 nodes=($3) cuts=($4)
    {
        printf 'loco-plan 1\nlayers %d\nschedule 1f1b\nmicro_batch %d\nmicro_batches %d\n' "$LAYERS" "$MB" "$M"
        for s in $(seq 0 $((S - 1))); do printf 'stage %d %d %d\n' "$s" "${cuts[$s]}" "${cuts[$((s + 1))]}"; done
        for s in $(seq 0 $((S - 1))); do
            local n=${nodes[$s]}
            printf 'node n%d %s %d 0 tcp://%s:%d\n' "$n" "${ID[$n]}" "$s" "$(addr "$n")" "$(pport "$n")"
        done
    } >"$out"
}
even_cuts() { awk -v L="$LAYERS" -v S="$1" 'BEGIN { b = int(L / S); x = L % S; at = 0; for (s = 0; s < S; s++) { printf "%d ", at; at += b + (s < x) } print L }'; }

# run_plan PLAN DIR: every node of the plan runs `loco run`; prints the mean step time (s).
run_plan() {
    local plan=$1 d=$2 nodes seed=""
    mkdir -p "$d"
    nodes=$(awk '/^node / { sub(/^n/, "", $2); print $2 }' "$plan")
    local first=${nodes%%$'\n'*} run_pids=()
    for n in $nodes; do
        local a s=()
        a=$(addr "$n")
        [ "$n" != "$first" ] && s=(--set "bootstrap.seed=${ID[$first]}@tcp://$(addr "$first"):$(gport "$first")")
        in_ns "$n" "$BIN" run -c "$W/base.ini" --set node.key="$W/k$n" --set net.listen="tcp://$a:$(gport "$n")" \
            --set net.reachable=yes --set pipeline.plan="$plan" --set train.checkpoint_dir="$d/ck$n" \
            --set node.peer_cache="$d/cache$n" --set train.metrics="$d/m$n.jsonl" "${s[@]}" >"$d/log$n" 2>&1 &
        run_pids+=($!)
        pids+=($!)
    done
    local rc
    for p in "${run_pids[@]}"; do
        wait "$p"
        rc=$?
        # A node that trained every step but failed on the way out still gave its step times.
        [ $rc = 0 ] || echo "bench_plan: a node of $(basename "$plan") exited with $rc (logs in $d)" >&2
    done
    python3 - "$d/m$first.jsonl" "$SKIP" "$STEPS" <<'PY'
import json, sys
try:
    e = [json.loads(l)["elapsed_s"] for l in open(sys.argv[1]) if '"kind":"step"' in l]
except OSError:
    e = []
k, n = int(sys.argv[2]), int(sys.argv[3])
print("%.6f" % ((e[-1] - e[k - 1]) / (len(e) - k)) if len(e) == n and n > k else "nan")
PY
}

# write_cluster F: the cluster description, block and head times scaled by F (in-run calibration).
write_cluster() {
    {
        sed -n '/^\[model\]/,/^\[node/p' "$W/cal.ini" | sed '/^\[node/d'
        awk -v c="$CALH" -v f="$1" 'BEGIN { printf "calib_block = %.4f\ncalib_head = %.4f\n[outer]\ninner_steps = 1000000\n", f, c * f }'
        if [ "$NETNS" != 0 ]; then
            printf '[island A]\n[island B]\n[link A B]\nbandwidth = %s\nlatency = %s\n' "$(bw "$SLOW")" "$LAT"
        fi
        for n in $(seq "$N"); do
            isl=$([ $((n % 2)) = 1 ] && echo A || echo B)
            nicbw=$(bw "$FAST")
            [ "$NETNS" = 0 ] && isl=lo && nicbw=$LOOPBW
            printf '[node n%d]\nisland = %s\nid = %s\nflops = %s\nmemory = 4GiB\nnic = veth tcp://%s:%d %s %s\n' \
                "$n" "$isl" "${ID[$n]}" "$FLOPS" "$(addr "$n")" "$(pport "$n")" "$nicbw" "$LAT"
        done
    } >"$W/cluster.ini"
}

declare -A ID
for n in $(seq "$N"); do
    "$BIN" keygen --out "$W/k$n" >/dev/null || exit 1
    ID[$n]=$(awk '/^id =/ {print $3}' "$W/k$n.pub")
done

[ "$NETNS" = 0 ] && where="127.0.0.1, one island" || where="islands: A odd, B even"
echo "N = $N nodes ($where), $LAYERS blocks, d_model $DMODEL, micro-batch $MB x $SEQ tokens, $M per step, $STEPS steps (mean after $SKIP)"
all_pred=() all_meas=()
for SLOW in $RATES; do
    if [ "$NETNS" != 0 ]; then
        "$SIM" down "$NAME" 2>/dev/null
        "$SIM" up "$NAME" "$N" "$FAST" >/dev/null || exit 1
        for i in $(seq "$N"); do
            for j in $(seq "$N"); do
                [ $((i % 2)) != $((j % 2)) ] && { "$SIM" limit "$NAME" "$i" "$j" "$SLOW" >/dev/null 2>&1 || exit 1; }
            done
        done
    fi
    write_cluster 1
    D="$W/$SLOW"
    mkdir -p "$D"
    # In-run calibration: node 1 alone (one stage, no links) runs first; its measured step time over
    # the prediction from --calibrate's figures scales the block and head times for every other layout
    # (CALRUN=0: off). That layout is then left out of the error figures.
    plan_file "$D/alone.plan" 1 "1" "$(even_cuts 1)"
    CALF=1
    if [ "${CALRUN:-1}" = 1 ]; then
        p0=$("$BIN" plan -c "$W/cluster.ini" --eval "$D/alone.plan" | sed -n 's/^predicted: step \([0-9.]* [mu]*s\).*/\1/p' | secs)
        m0=$(run_plan "$D/alone.plan" "$D/run-calibration")
        if [ "$m0" != nan ]; then
            CALF=$(awk -v m="$m0" -v p="$p0" 'BEGIN { printf "%.4f", m / p }')
            echo "in-run calibration: node 1 alone measured $m0 s a step, predicted $p0 s from --calibrate's figures: calib_block = calib_head factor $CALF"
            write_cluster "$CALF"
        fi
    fi
    "$BIN" plan -c "$W/cluster.ini" --replicas 1 --out "$D/chosen.plan" >"$D/plan.out" || { cat "$D/plan.out"; exit 1; }
    S=$(grep -c '^stage ' "$D/chosen.plan")
    chosen_nodes=$(awk '/^node / { sub(/^n/, "", $2); print $2 }' "$D/chosen.plan" | tr '\n' ' ')
    # Alternatives: the chosen nodes with an even split; file order (islands interleaved) with an even
    # split at the chosen count and at every other count; node 1 alone.
    [ "$S" -gt 1 ] && plan_file "$D/even.plan" "$S" "$chosen_nodes" "$(even_cuts "$S")"
    # The chosen layout at 1F1B's default window, when the planner raised it (a 'window' line).
    grep -q '^window ' "$D/chosen.plan" && grep -v '^window ' "$D/chosen.plan" >"$D/chosen-w0.plan"
    for s in $(seq 1 "$N"); do
        [ "$s" = "$S" ] && name=naive || name="order-S$s"
        [ "$s" = 1 ] && name=alone
        plan_file "$D/$name.plan" "$s" "$(seq -s ' ' 1 "$s")" "$(even_cuts "$s")"
    done
    echo
    [ "$NETNS" = 0 ] && echo "loopback links; chosen: $S stage(s) on nodes $chosen_nodes" ||
        echo "links between islands $SLOW, inside $FAST; chosen: $S stage(s) on nodes $chosen_nodes"
    printf '  %-10s %-28s %12s %12s %8s\n' layout "stages (blocks)" "predicted s" "measured s" error
    best_meas=1e9 chosen_meas=0 naive_meas=0
    seen=""
    for f in "$D"/chosen.plan $(ls "$D"/*.plan | grep -v /chosen.plan); do
        tag=$(basename "$f" .plan)
        # The same stages on the same nodes as a layout already run: skip it.
        key=$(grep -E '^(stage|node) ' "$f" | awk '{ print $1, $2, $3, $4 }' | md5sum | cut -c1-12)
        case " $seen " in *" $key "*) continue;; esac
        seen="$seen $key"
        pred=$("$BIN" plan -c "$W/cluster.ini" --eval "$f" | sed -n 's/^predicted: step \([0-9.]* [mu]*s\).*/\1/p' | secs)
        if [ "$tag" = alone ] && [ "$CALF" != 1 ]; then
            printf '  %-10s %-28s %12.4f %12s %8s\n' "$tag" "0-$((LAYERS - 1))" "$pred" "$m0" "(calibration, not counted)"
            continue
        fi
        meas=$(run_plan "$f" "$D/run-$tag")
        desc=$(awk '/^stage / { printf "%s%d-%d", (n++ ? " | " : ""), $3, $4 - 1 }' "$f")
        err=$(awk -v p="$pred" -v m="$meas" 'BEGIN { if (m == "nan" || m == 0) print "-"; else printf "%+.1f%%", 100 * (p - m) / m }')
        printf '  %-10s %-28s %12.4f %12s %8s\n' "$tag" "$desc" "$pred" "$meas" "$err"
        [ "$meas" = nan ] && continue
        all_pred+=("$pred")
        all_meas+=("$meas")
        awk -v a="$meas" -v b="$best_meas" 'BEGIN { exit !(a < b) }' && best_meas=$meas
        [ "$tag" = chosen ] && chosen_meas=$meas
        [ "$tag" = naive ] && naive_meas=$meas
    done
    [ "$chosen_meas" != 0 ] && awk -v c="$chosen_meas" -v b="$best_meas" -v n="$naive_meas" 'BEGIN {
        printf "  chosen %.4f s vs best measured %.4f s (%+.1f%%; target within 5%%)", c, b, 100 * (c - b) / b
        if (n > 0) printf "; chosen vs naive throughput %.2fx (target 1.5x)", n / c
        printf "\n" }'
done
echo
python3 - "${all_pred[*]}" "${all_meas[*]}" <<'PY'
import sys
p = [float(x) for x in sys.argv[1].split()]
m = [float(x) for x in sys.argv[2].split()]
if len(p) < 2:
    print("too few layouts measured"); sys.exit(0)
mae = sum(abs(a - b) / b for a, b in zip(p, m)) / len(p)
def ranks(v):
    o = sorted(range(len(v)), key=lambda i: v[i]); r = [0] * len(v)
    for k, i in enumerate(o): r[i] = k
    return r
rp, rm = ranks(p), ranks(m)
n = len(p)
rho = 1 - 6 * sum((a - b) ** 2 for a, b in zip(rp, rm)) / (n * (n * n - 1))
print(f"all layouts: {n}; mean absolute error of predicted step times {100 * mae:.1f}% (target 15%); "
      f"Spearman rank correlation {rho:.3f} (1 = ranking preserved)")
PY
