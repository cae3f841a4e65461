#!/usr/bin/env bash
# The GPU session's one script: runs the GPU tests and the GPU benchmark (loco vs PyTorch eager,
# same run, same card) and writes the results under OUTDIR. Builds nothing: it uses the binaries
# and libraries tests/gpu/pack.sh made on the build machine. Budget: under 6 minutes in all (every
# step has its own timeout); at most 8 result files, so the device tool brings them all back.
#
#   tests/gpu/run.sh [OUTDIR]        (default: $OUT, else ./gpu-results)
#
# Results: run.log (everything), nvidia-smi.txt, test_gpu.log, cli.log, bench.jsonl, summary.txt,
# sanitizer.log, overlap.log.
set -u
cd "$(dirname "$0")/../.."
OUTDIR=${1:-${OUT:-gpu-results}}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
BUILD=${LOCO_GPU_BUILD:-build/gpu}
LIBS=$PWD/${LOCO_GPU_LIBS:-build/gpu-libs}
PY=${PYTHON:-python3}   # the GPU machine's python3 is the one with PyTorch
exec > >(tee "$OUTDIR/run.log") 2>&1
T0=$SECONDS
say() { echo "[$((SECONDS - T0))s] $*"; }

# Our binaries get the packed libraries; PyTorch keeps its own environment.
LIBPATH=$LIBS
for b in "$BUILD/tests/model/test_gpu" "$BUILD/tests/bench/bench_gpu" "$BUILD/loco"; do
    [ -x "$b" ] || { say "missing $b: run tests/gpu/pack.sh on the build machine and carry its outputs"; exit 1; }
done
if LD_LIBRARY_PATH=$LIBPATH ldd "$BUILD/tests/bench/bench_gpu" | grep -q "not found"; then
    # No /usr/local/cuda runtime here? PyTorch's CUDA 13 wheels carry libcudart and libcublas.
    extra=$("$PY" - <<'PYEOF' 2>/dev/null
import glob, os, site, sys
dirs = set()
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    for pat in ("libcublas.so.13", "libcublasLt.so.13", "libcudart.so.13"):
        for f in glob.glob(os.path.join(sp, "nvidia", "**", pat), recursive=True):
            dirs.add(os.path.dirname(f))
print(":".join(sorted(dirs)))
PYEOF
)
    [ -n "$extra" ] && LIBPATH=$LIBPATH:$extra
    say "CUDA libraries not on the default path; added: ${extra:-nothing found}"
fi
lrun() { LD_LIBRARY_PATH=$LIBPATH "$@"; }
if lrun ldd "$BUILD/tests/bench/bench_gpu" | grep "not found"; then say "unresolved libraries (above)"; fi

say "GPU"
{ nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv; } \
    >"$OUTDIR/nvidia-smi.txt" 2>&1
{ lscpu | grep -E "Model name|^CPU\(s\)"; } >>"$OUTDIR/nvidia-smi.txt" 2>&1
cat "$OUTDIR/nvidia-smi.txt" | head -20
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
say "card: ${GPU_NAME:-unknown}"

rc_tests=0
if [ "${ONLY:-}" != overlap ]; then
say "1/3 GPU tests (GPU vs CPU, TF32 off)"
timeout 240 env LD_LIBRARY_PATH="$LIBPATH" "$BUILD/tests/model/test_gpu" --jobs 1 --verbose \
    >"$OUTDIR/test_gpu.log" 2>&1
rc_tests=$?
cat "$OUTDIR/test_gpu.log"
say "GPU tests exit status $rc_tests"

say "2/3 loco train with device = cuda, resumed on the CPU"
{
    set -x
    W=$(mktemp -d)
    # A small byte-level corpus made from the repo's own text.
    cat docs/*.md README.md model/*.c model/*.h node/*.c 2>/dev/null | head -c 400000 >"$W/corpus.txt"
    lrun "$BUILD/loco" data --input "$W/corpus.txt" --out "$W/data" &&
    timeout 120 env LD_LIBRARY_PATH="$LIBPATH" "$BUILD/loco" train --set train.data="$W/data" \
        --set train.device=cuda --set train.steps=60 --set train.batch=8 --set model.seq_len=128 \
        --set train.checkpoint_dir="$W/ck" --set train.checkpoint_every=30 --set train.eval_every=30 \
        --set train.metrics="$W/gpu.jsonl" &&
    timeout 120 env LD_LIBRARY_PATH="$LIBPATH" "$BUILD/loco" eval --set train.data="$W/data" \
        --set train.device=cpu --set model.seq_len=128 --checkpoint "$W/ck" --batches 8 &&
    timeout 120 env LD_LIBRARY_PATH="$LIBPATH" "$BUILD/loco" eval --set train.data="$W/data" \
        --set train.device=cuda --set model.seq_len=128 --checkpoint "$W/ck" --batches 8
    tail -n 3 "$W/gpu.jsonl"
    set +x
    rm -rf "$W"
} >"$OUTDIR/cli.log" 2>&1
cat "$OUTDIR/cli.log"

say "3/3 benchmark: loco vs PyTorch eager"
: >"$OUTDIR/bench.jsonl"
bench() { # L C NH T V B steps warmup tf32
    say "  loco  $*"
    timeout 150 env LD_LIBRARY_PATH="$LIBPATH" "$BUILD/tests/bench/bench_gpu" "$@" | tee -a "$OUTDIR/bench.jsonl"
    say "  torch $*"
    timeout 150 "$PY" tests/gpu/torch_gpt.py "$@" | tee -a "$OUTDIR/bench.jsonl"
}
bench 12 768 12 1024 50257 8 20 5 1    # GPT-2 small, TF32 allowed (the target: >= 1.2x PyTorch)
bench 6 512 8 512 50257 16 20 5 1      # a smaller shape, TF32 allowed
bench 12 768 12 1024 50257 8 10 3 0    # GPT-2 small, strict fp32 (for orientation)

"$PY" - "$OUTDIR/bench.jsonl" "$GPU_NAME" <<'PYEOF' | tee "$OUTDIR/summary.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
name = sys.argv[2] or (rows[0]["gpu"] if rows else "?")
# Dense (non-sparse) TF32 / fp32 tensor peaks from NVIDIA's data sheets, in TFLOP/s.
peaks = [("H100 PCIe", 378.0, 51.2), ("H100 NVL", 417.0, 60.0), ("H100", 494.7, 66.9), ("H200", 494.7, 66.9),
         ("GH200", 494.7, 66.9), ("A100", 156.0, 19.5), ("L40S", 183.0, 91.6), ("B200", 1100.0, 80.0)]
peak = next(((p, f) for k, p, f in peaks if k in name), (None, None))
print(f"card: {name}; peaks used: TF32 dense {peak[0]} TFLOP/s, fp32 (no tensor cores) {peak[1]} TFLOP/s "
      "(data-sheet figures, dense; SXM H100 assumed for any H100 not named PCIe/NVL)")
print("model FLOPs per token = 6N + 12·L·C·T (N = all parameters)")
key = lambda r: (r["L"], r["C"], r["NH"], r["T"], r["V"], r["B"], r["tf32"])
by = {}
for r in rows:
    by.setdefault(key(r), {})[r["impl"]] = r
for k, d in by.items():
    L, C, NH, T, V, B, tf32 = k
    pk = peak[0] if tf32 else peak[1]
    line = f"L={L} C={C} NH={NH} T={T} V={V} B={B} tf32={tf32}:"
    for impl in ("loco", "torch"):
        r = d.get(impl)
        if r:
            frac = f"{100 * r['model_tflops'] / pk:.1f}% of peak" if pk else "peak unknown"
            line += f"  {impl} {r['tokens_per_s']:.0f} tok/s ({r['ms_per_step_median']:.1f} ms/step, {r['model_tflops']:.1f} TFLOP/s, {frac})"
        else:
            line += f"  {impl} FAILED"
    if "loco" in d and "torch" in d:
        line += f"  ratio loco/torch = {d['loco']['tokens_per_s'] / d['torch']['tokens_per_s']:.3f}"
    print(line)
PYEOF
say "4/4 compute-sanitizer memcheck over the forward/backward and layer-range tests (out-of-bounds, misaligned)"
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
timeout 90 env LD_LIBRARY_PATH="$LIBPATH" "$CS" --tool memcheck --target-processes all --error-exitcode 3 \
    "$BUILD/tests/model/test_gpu" --jobs 1 --filter 'gpu/@(forward_backward_match_cpu|layer_ranges_match_whole_model)' \
    >"$OUTDIR/sanitizer.log" 2>&1
say "compute-sanitizer exit status $? (0: clean; 124: timed out)"
grep -E "ERROR SUMMARY|Synthesis|Invalid|========= [A-Z]" "$OUTDIR/sanitizer.log" | head -20
fi

# ONLY=overlap runs just this step (a session with little device time left).
say "5/5 overlapped swarm on the GPU: tests/integration/test_overlap.sh with every peer on device = cuda"
timeout 150 env LD_LIBRARY_PATH="$LIBPATH" LOCO_BIN="$PWD/$BUILD/loco" LOCO_TEST_DEVICE=cuda PYTHON="$(command -v python3)" \
    bash tests/integration/test_overlap.sh >"$OUTDIR/overlap.log" 2>&1
rc_overlap=$?
tail -n 30 "$OUTDIR/overlap.log"
say "overlap on the GPU exit status $rc_overlap"

say "done in $((SECONDS - T0))s; GPU tests exit status $rc_tests, overlap $rc_overlap; results in $OUTDIR"
[ "$rc_overlap" = 0 ] || exit 1
exit $rc_tests
