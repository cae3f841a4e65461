#!/usr/bin/env bash
# Runs every test of `make test` and prints one closing line "N passed, N failed".
# Criterion binaries (build/tests/*/test_*), fuzz corpus replays, integration scripts
# (tests/integration/*.sh) and the PyTorch reference checks (tests/ref/test_*.py).
# LOCO_LONG=1 runs the slow scenarios too (tests/integration/long_*.sh).
set -u
cd "$(dirname "$0")/.."
BUILD=${LOCO_BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
export LOCO_BIN="$PWD/$BUILD/loco" LOCO_BUILD="$BUILD" PYTHON
pass=0; fail=0; skip=0; failed=()
run() { # name, command...
    local name=$1; shift
    local log; log=$(mktemp)
    local t0=$SECONDS
    timeout 1200 "$@" >"$log" 2>&1
    local rc=$?
    if [ $rc -eq 0 ]; then
        pass=$((pass + 1)); echo "PASS  $name ($((SECONDS - t0))s)"
    elif [ $rc -eq 77 ]; then
        skip=$((skip + 1)); echo "SKIP  $name: $(tail -n 1 "$log")"
    else
        fail=$((fail + 1)); failed+=("$name"); echo "FAIL  $name ($((SECONDS - t0))s)"
        tail -n 60 "$log" | sed 's/^/      /'
    fi
    rm -f "$log"
}
for t in "$BUILD"/tests/*/test_*; do
    [ -x "$t" ] || continue
    case "$t" in *.o|*.d) continue;; esac
    run "${t#$BUILD/tests/}" "$t" --jobs 1
done
for r in "$BUILD"/tests/fuzz/replay_*; do
    [ -x "$r" ] || continue
    name=${r##*/replay_}
    run "fuzz-replay/$name" "$r" tests/fuzz/corpus/"$name"
done
for s in tests/integration/test_*.sh; do
    [ -f "$s" ] && run "${s#tests/}" bash "$s"
done
for p in tests/ref/test_*.py; do
    [ -f "$p" ] && run "${p#tests/}" "$PYTHON" "$p"
done
if [ "${LOCO_LONG:-0}" = 1 ]; then
    for s in tests/integration/long_*.sh; do
        [ -f "$s" ] && run "${s#tests/}" bash "$s"
    done
fi
[ ${#failed[@]} -gt 0 ] && echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
