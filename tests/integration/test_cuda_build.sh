#!/usr/bin/env bash
# The GPU backend compiles and links (make CUDA=1) on a machine with the CUDA toolkit but no GPU,
# and the resulting binary refuses device=cuda with a clear message rather than crashing.
# Exit 77 (reported as skipped by tests/run.sh) when no CUDA toolkit is installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
if [ ! -x "$NVCC" ]; then
    echo "skipped: no CUDA toolkit at $NVCC"
    exit 77
fi
out=build/ci-cuda
# SANITIZE= : under `make check` the sanitizer flags would reach this sub-make through MAKEFLAGS.
make -s BUILD=$out CUDA=1 SANITIZE= $out/loco $out/tests/model/test_gpu
ldd $out/loco >"$out/ldd.txt"; grep -q libcublas "$out/ldd.txt" || { echo "build/ci-cuda/loco does not link cuBLAS"; exit 1; }
# Without a GPU the GPU tests must report themselves skipped, not passed.
log=$($out/tests/model/test_gpu --verbose 2>&1 || true)
echo "$log" | tail -3
if nvidia-smi >/dev/null 2>&1; then
    echo "a GPU is present: run tests/gpu/run.sh for the GPU checks"
else
    grep -q '^\[SKIP\]' <<<"$log" || { echo "GPU tests were not reported as skipped"; exit 1; }
    ! grep -q '^\[PASS\]' <<<"$log" || { echo "GPU tests claimed to pass without a GPU"; exit 1; }
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for i in $(seq 400); do echo "line $i of a small corpus for the cuda build check"; done >"$tmp/text.txt"
$out/loco data --input "$tmp/text.txt" --out "$tmp/data" >/dev/null
set +e
$out/loco train --set train.device=cuda --set train.data="$tmp/data" --set train.steps=1 \
    --set train.checkpoint_dir="$tmp/ck" --set model.seq_len=16 --set train.batch=2 >"$tmp/log" 2>&1
rc=$?
set -e
cat "$tmp/log"
if nvidia-smi >/dev/null 2>&1; then
    [ $rc -eq 0 ] || { echo "device=cuda with a GPU failed: exit $rc"; exit 1; }
else
    [ $rc -eq 1 ] || { echo "device=cuda without a GPU: exit $rc (expected 1)"; exit 1; }
    grep -qi "driver\|GPU" "$tmp/log" || { echo "device=cuda without a GPU gave no clear reason"; exit 1; }
fi
echo "ok"
