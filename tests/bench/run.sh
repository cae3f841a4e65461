#!/usr/bin/env bash
# make bench: loco vs PyTorch training throughput, in one run on this machine, with ratios.
# Budget: about 5 minutes on 2 cores (each arm well under 10 minutes). Each figure is the median
# step time of STEPS timed steps; the whole comparison is repeated REPEATS times and the median
# ratio reported (the machines are shared and noisy).
set -u
cd "$(dirname "$0")/../.."
BUILD=${LOCO_BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
THREADS=${THREADS:-2}
REPEATS=${REPEATS:-3}
B="$BUILD/tests/bench/bench_train"
field() { sed -E "s/.*\"$2\":([0-9.e+-]+).*/\1/" <<<"$1"; }
echo "== loco vs PyTorch, CPU training (fp32, AdamW, $THREADS threads) =="
peak=$($B sgemm "$THREADS"); peak_gf=$(field "$peak" sgemm_gflops)
echo "cblas_sgemm peak (2048^3, $THREADS threads): $peak_gf GFLOP/s"
for cfg in small:30 medium:8; do
    name=${cfg%%:*}; steps=${cfg##*:}
    ratios=(); lt=(); pt=(); fr=()
    for r in $(seq "$REPEATS"); do
        lo=$($B "$name" "$steps" "$THREADS")
        py=$(OMP_NUM_THREADS=$THREADS $PYTHON tests/bench/torch_train.py "$name" "$steps" "$THREADS")
        l=$(field "$lo" tokens_per_s); p=$(field "$py" tokens_per_s)
        lt+=("$l"); pt+=("$p")
        ratios+=("$(awk -v a="$l" -v b="$p" 'BEGIN{printf "%.3f", a/b}')")
        fr+=("$(awk -v g="$(field "$lo" model_gflops)" -v p="$peak_gf" 'BEGIN{printf "%.3f", g/p}')")
        rss=$(field "$lo" peak_rss_bytes); theo=$(field "$lo" theoretical_bytes)
    done
    med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
    echo "$name: loco $(med "${lt[@]}") tok/s | PyTorch $(med "${pt[@]}") tok/s | ratio $(med "${ratios[@]}")x (runs: ${ratios[*]}) |" \
         "model FLOP/s = $(med "${fr[@]}") of sgemm peak | peak RSS $(awk -v a="$rss" -v b="$theo" 'BEGIN{printf "%.1f MiB = %.2fx theoretical %.1f MiB", a/1048576, a/b, b/1048576}')"
done

echo
echo "== transport: 256 MiB tensor over loopback (CURVE vs plaintext vs raw TCP vs libsodium alone); codecs vs memcpy =="
"$BUILD/tests/bench/bench_net" 256 3

echo
echo "== membership: SWIM over a simulated network, N = 16..1000, loss 0/5/20% (issue 4) =="
BENCH_GOSSIP_N=${BENCH_GOSSIP_N:-16,64,256,1000} "$BUILD/tests/bench/bench_gossip" # N = 1000: about 2 minutes, 1.7 GB

echo
echo "== outer steps: DiLoCo/NoLoCo × fp32/int8/int4 over 4 peers vs one node with 4x batch (issue: outer benchmark) =="
# About 30 minutes on 2 cores (8 arms of 600 inner steps), so opt-in: BENCH_OUTER=1 make bench, or run
# it alone: bash tests/bench/bench_outer.sh (STEPS, H, ARMS overrides).
if [ "${BENCH_OUTER:-0}" = 1 ]; then
    bash tests/bench/bench_outer.sh
    LOCO_BIN="$BUILD/loco" bash tests/bench/bench_overlap_loss.sh # overlap's loss cost vs outer momentum, ~12 min
else
    echo "skipped (about 40 minutes): set BENCH_OUTER=1, or run bash tests/bench/bench_outer.sh and bench_overlap_loss.sh"
fi

echo
echo "== rate caps: [limits] upload_rate and a peer's download_rate, achieved vs configured (issue: overlap) =="
"$BUILD/tests/bench/bench_caps" 3

echo
echo "== capped links in network namespaces (root): round time 2..8 peers; overlap on/off at 0.5x/1x/2x =="
# Both need root and deploy/wan-sim.sh (namespaces + tbf); about 5 and 20 minutes, so opt-in:
# BENCH_WAN=1 make bench, or run tests/bench/bench_rounds.sh / tests/bench/bench_overlap.sh alone.
if [ "${BENCH_WAN:-0}" = 1 ]; then
    LOCO_BIN="$BUILD/loco" bash tests/bench/bench_rounds.sh
    LOCO_BIN="$BUILD/loco" bash tests/bench/bench_overlap.sh
else
    echo "skipped (about 25 minutes, root): set BENCH_WAN=1, or run tests/bench/bench_rounds.sh and bench_overlap.sh"
fi

echo
echo "== joining and checkpoints (issue 7): catch-up throughput from 1/2/4 donors on capped links; checkpoint stall =="
# bench_catchup.sh needs root and deploy/wan-sim.sh (namespaces + tbf), about 8 minutes: BENCH_WAN=1.
# bench_ckpt.sh, about 4 minutes (exact stall timings by uprobes with root and perf, else from the
# step records): BENCH_CKPT=1. Or run either alone.
if [ "${BENCH_WAN:-0}" = 1 ]; then
    LOCO_BIN="$BUILD/loco" bash tests/bench/bench_catchup.sh
else
    echo "catch-up skipped (about 8 minutes, root): set BENCH_WAN=1, or run tests/bench/bench_catchup.sh"
fi
if [ "${BENCH_CKPT:-0}" = 1 ]; then
    LOCO_BIN="$BUILD/loco" bash tests/bench/bench_ckpt.sh
else
    echo "checkpoint stall skipped (about 4 minutes): set BENCH_CKPT=1, or run tests/bench/bench_ckpt.sh"
fi

echo
echo "== placement: predicted vs measured step times of pipeline layouts, 8 nodes in namespaces (issue 9) =="
# Needs root, deploy/wan-sim.sh and as many idle cores as nodes (one thread each): N=8 wants 16, so
# opt-in: BENCH_PLAN=1 make bench (N defaults to 2 here), or run tests/bench/bench_plan.sh alone.
if [ "${BENCH_WAN:-0}" = 1 ]; then # 1F1B's window over a capped link, 2 nodes, about 20 s
    LOCO_BIN="$BUILD/loco" bash tests/bench/bench_window.sh
else
    echo "1F1B window skipped (root): set BENCH_WAN=1, or run tests/bench/bench_window.sh"
fi
if [ "${BENCH_PLAN:-0}" = 1 ]; then
    LOCO_BIN="$BUILD/loco" bash tests/bench/bench_plan.sh
else
    echo "skipped (root, idle cores): set BENCH_PLAN=1, or run N=8 tests/bench/bench_plan.sh on a machine with 16 cores"
fi

echo
echo "== placement: per-stage memory, predicted vs measured peak RSS (issue 9), about 1 minute =="
LOCO_BIN="$BUILD/loco" bash tests/bench/bench_pipe_memory.sh
