#!/usr/bin/env bash
# Builds what tests/gpu/run.sh needs, here (where the Debian -dev packages and nvcc are), and copies
# the non-system shared libraries those binaries load into build/gpu-libs, for a GPU machine that
# has only the NVIDIA driver, the CUDA runtime + cuBLAS and PyTorch (TESTING.md, GPU section).
#
#   tests/gpu/pack.sh            → build/gpu/{loco,tests/model/test_gpu,tests/bench/bench_gpu}, build/gpu-libs/
#
# Left out on purpose: glibc's own libraries and the dynamic loader (every machine has them, and a
# foreign copy breaks), libstdc++/libgcc_s (the GPU machine's are newer, and its cuBLAS may need
# them), and the CUDA libraries (libcudart, libcublas, libcublasLt: the GPU machine has its own at
# /usr/local/cuda, and libcublasLt alone is over 500 MB). Then carry, in the device tool:
#   build/gpu/loco build/gpu/tests/model/test_gpu build/gpu/tests/bench/bench_gpu build/gpu-libs
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${LOCO_GPU_BUILD:-build/gpu}
LIBS=${LOCO_GPU_LIBS:-build/gpu-libs}
JOBS=${JOBS:-2}
BINS=("$BUILD/loco" "$BUILD/tests/model/test_gpu" "$BUILD/tests/bench/bench_gpu")
# NATIVE=0: the GPU machine's processor is not this one, and -march=native code can die there with
# SIGILL. make does not rebuild on a flag change, so a build made with other flags is started over.
FLAGS="CUDA=1 NATIVE=0"
if [ -d "$BUILD" ] && [ "$(cat "$BUILD/.pack-flags" 2>/dev/null)" != "$FLAGS" ]; then rm -rf "$BUILD"; fi
mkdir -p "$BUILD"
echo "$FLAGS" >"$BUILD/.pack-flags"
make -j"$JOBS" BUILD="$BUILD" $FLAGS "${BINS[@]}"
rm -rf "$LIBS"
mkdir -p "$LIBS"
skip='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libresolv|libutil|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libnvidia)\.so'
for b in "${BINS[@]}"; do
    ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
    if [[ "$name" =~ $skip ]]; then continue; fi
    cp -L "$path" "$LIBS/$name"
done
if ldd "${BINS[@]}" | grep -q "not found"; then
    echo "pack.sh: a library is missing here:" >&2
    ldd "${BINS[@]}" | grep "not found" >&2
    exit 1
fi
du -sh "$LIBS" "${BINS[@]}" | sed 's/^/pack.sh: /'
echo "pack.sh: libraries in $LIBS: $(ls "$LIBS" | tr '\n' ' ')"
