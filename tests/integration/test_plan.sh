#!/usr/bin/env bash
# loco plan on the Holmes-style cluster (tests/plan/holmes.ini) and on broken descriptions:
#   - at H = 1 the table shows 2 replicas x 4 stages with each stage inside one island (Holmes'
#     layout) and the head back on stage 0's island (tied embedding), Ethernet and RoCE NICs on
#     the links; the plan file has the nodes, stages, endpoints and `routing chain`, is the same
#     on a second run, and --eval of it gives the same prediction;
#   - with --set outer.inner_steps=50 --set outer.overlap=on the stages span both islands and each
#     pipeline link stays on the island's fabric;
#   - --alternatives prints the naive, even-split, Holmes, DP-across and other-count rows;
#   - broken descriptions exit 2 with the file, the line and the reason; an impossible cluster
#     exits 1; --calibrate on the small model prints the fitted figures and the model's error.
# Env: LOCO_BIN (the binary).
set -euo pipefail
LOCO=${LOCO_BIN:-build/loco}
W=$(mktemp -d /tmp/loco_it_plan.XXXXXX)
trap 'rm -rf "$W"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
checks=0
has() { grep -qF -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "no '$2' in $1"; }; checks=$((checks + 1)); }

# --- H = 1: the Holmes layout (stages inside islands, the pipeline crossing; the head back on
# stage 0's island for the tied embedding), table, plan file
timeout 60 "$LOCO" plan -c tests/plan/holmes.ini --out "$W/h1.plan" >"$W/h1.out"
has "$W/h1.out" "plan: 2 replicas x 4 stages (8 of 8 nodes)"
grep -qE "^0 .* a[1-4] a[1-4] \(A\)" "$W/h1.out" || fail "stage 0 is not on island A: $(cat "$W/h1.out")"
grep -qE "^1 .* b[1-4] b[1-4] \(B\)" "$W/h1.out" || fail "stage 1 is not on island B"
grep -qE "^3 .* a[1-4] a[1-4] \(A\)" "$W/h1.out" || fail "the last stage is not on island A"
has "$W/h1.out" "(eth0->eth0)"
has "$W/h1.out" "(roce0->roce0)"
has "$W/h1.out" "predicted: step"
has "$W/h1.out" "tied-embedding sync"
has "$W/h1.out" "wrote $W/h1.plan (plan hash"
has "$W/h1.plan" "loco-plan 1"
has "$W/h1.plan" "layers 24"
has "$W/h1.plan" "routing chain"
[ "$(grep -c '^node ' "$W/h1.plan")" -eq 8 ] || fail "the plan file does not name 8 nodes"
[ "$(grep -c '^stage ' "$W/h1.plan")" -eq 4 ] || fail "the plan file does not have 4 stages"
grep -qE "^node a1 [0-9a-f]{64} 0 [01] tcp://192\.168\.1\.1:7100$" "$W/h1.plan" || fail "a1's line: $(cat "$W/h1.plan")"
grep -qE "^node b[1-4] [0-9a-f]{64} 1 [01] tcp://192\.168\.2\.[1-4]:7100$" "$W/h1.plan" || fail "stage 1 lines"
grep -qE "^node b[1-4] [0-9a-f]{64} 2 [01] tcp://10\.2\.0\.[1-4]:7100$" "$W/h1.plan" || fail "stage 2 on roce0"
# --eval gives the plan's own prediction back.
timeout 60 "$LOCO" plan -c tests/plan/holmes.ini --eval "$W/h1.plan" >"$W/eval.out"
p1=$(sed -n 's/^predicted: step \([0-9.]* s\).*/\1/p' "$W/h1.out")
has "$W/eval.out" "predicted: step $p1"
# Deterministic: the same description gives the same file.
timeout 60 "$LOCO" plan -c tests/plan/holmes.ini --out "$W/h1b.plan" >/dev/null
cmp -s "$W/h1.plan" "$W/h1b.plan" || fail "two runs wrote different plans"
checks=$((checks + 1))

# --- H = 50 with overlap: data-parallel across islands, pipelines inside
timeout 60 "$LOCO" plan -c tests/plan/holmes.ini --set outer.inner_steps=50 --set outer.overlap=on \
    --alternatives --out "$W/h50.plan" >"$W/h50.out"
has "$W/h50.out" "H = 50"
grep -qE "^0 .*\(A\).*\(B\)" "$W/h50.out" || fail "H=50: stage 0 should span both islands: $(cat "$W/h50.out")"
if grep -q "eth0->eth0" "$W/h50.out"; then fail "H=50: a pipeline link uses the Ethernet"; fi
for alt in "naive (file order, even split)" "even split (chosen nodes)" "stages inside islands (Holmes)" \
           "pipelines inside islands (DP across)" "best with another replica x stage count"; do
    has "$W/h50.out" "$alt"
done
grep -qE "^node a1 [0-9a-f]{64} [01] [0-3] tcp://10\.1\.0\.1:7100$" "$W/h50.plan" || fail "H=50: a1 on ib0: $(cat "$W/h50.plan")"
# The row with stages inside islands is slower than the chosen one by more than 1.1x.
ratio=$(awk '/^stages inside islands \(Holmes\)/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9][0-9][0-9]$/) r = $i } END { print r }' "$W/h50.out")
awk -v r="$ratio" 'BEGIN { exit !(r > 1.1) }' || fail "H=50: the Holmes layout is only ${ratio}x slower"
checks=$((checks + 1))

# --- fixed counts
timeout 60 "$LOCO" plan -c tests/plan/holmes.ini --replicas 2 --stages 4 >"$W/rs.out"
has "$W/rs.out" "plan: 2 replicas x 4 stages"

# --- errors: exit 2 with file:line: reason
expect2() { # file pattern...
    local f=$1; shift
    local rc=0
    timeout 60 "$LOCO" plan -c "$f" >"$W/out" 2>"$W/err" || rc=$?
    [ "$rc" -eq 2 ] || { cat "$W/err"; fail "plan -c $f: exit $rc, expected 2"; }
    for p in "$@"; do has "$W/err" "$p"; done
}
ini() { printf "%b" "$2" > "$W/$1"; echo "$W/$1"; }
NODE="[node x]\nisland = A\nflops = 1T\nmemory = 1GiB\nnic = eth0 tcp://h:1 1Gbit/s 1ms\n"
f=$(ini bad_unit.ini "[node x]\nisland = A\nflops = 1T\nmemory = 12 parsecs\n")
expect2 "$f" "$f:4: '12 parsecs': unknown unit 'parsecs' for a memory size" "  > memory = 12 parsecs"
f=$(ini bad_section.ini "[nodes x]\n")
expect2 "$f" "$f:1: unknown section [nodes]"
f=$(ini bad_key.ini "$NODE""speed = 3\n")
expect2 "$f" "$f:6: unknown key 'speed' in [node]"
f=$(ini bad_nic.ini "[node x]\nisland = A\nnic = eth0 10.0.0.1:7100 1Gbit/s 1ms\n")
expect2 "$f" "$f:3: nic eth0: endpoint '10.0.0.1:7100' is not tcp://host:port"
f=$(ini no_flops.ini "[node x]\nisland = A\nmemory = 1GiB\nnic = eth0 tcp://h:1 1Gbit/s 1ms\n")
expect2 "$f" "$f:1: node x has no 'flops'"
f=$(ini no_link.ini "$NODE""[node y]\nisland = B\nflops = 1T\nmemory = 1GiB\nnic = eth0 tcp://h:2 1Gbit/s 1ms\n")
expect2 "$f" "no [link A B] with a bandwidth"
f=$(ini dup.ini "$NODE$NODE")
expect2 "$f" "$f:6: node x is described twice (first on line 1)"
f=$(ini bad_model.ini "[model]\nlayers = lots\n$NODE")
expect2 "$f" "$f:2: model.layers: 'lots' is not an integer"
f=$(ini bad_heads.ini "[model]\nd_model = 100\nheads = 3\n$NODE")
expect2 "$f" "model:"
f=$(ini empty.ini "# nothing\n")
expect2 "$f" "$f: no [node NAME] section"
f=$(ini noid.ini "$NODE")
rc=0; timeout 60 "$LOCO" plan -c "$f" --out "$W/x.plan" >/dev/null 2>"$W/err" || rc=$?
[ $rc -eq 2 ] || fail "--out without ids: exit $rc"
has "$W/err" "node x has no id"
rc=0; timeout 60 "$LOCO" plan -c "$W/missing.ini" >/dev/null 2>"$W/err" || rc=$?
[ $rc -eq 2 ] || fail "missing file: exit $rc"
has "$W/err" "missing.ini: cannot open"
rc=0; timeout 60 "$LOCO" plan -c tests/plan/holmes.ini --set outer.inner_steps=zero >/dev/null 2>"$W/err" || rc=$?
[ $rc -eq 2 ] || fail "bad --set: exit $rc"
has "$W/err" "--set outer.inner_steps=zero: inner_steps: 'zero' is not an integer"
rc=0; timeout 60 "$LOCO" plan -c tests/plan/holmes.ini --replicas 5 --stages 2 >/dev/null 2>"$W/err" || rc=$?
[ $rc -eq 2 ] || fail "5x2 on 8 nodes: exit $rc"
has "$W/err" "needs 10 nodes, the cluster has 8"
rc=0; timeout 60 "$LOCO" plan >/dev/null 2>"$W/err" || rc=$?
[ $rc -eq 2 ] || fail "no -c: exit $rc"
# Nothing fits: exit 1 with the reason.
f=$(ini tiny.ini "[model]\nlayers = 2\n[node x]\nisland = A\nflops = 1T\nmemory = 1kB\nnic = eth0 tcp://h:1 1Gbit/s 1ms\n")
rc=0; timeout 60 "$LOCO" plan -c "$f" >/dev/null 2>"$W/err" || rc=$?
[ $rc -eq 1 ] || fail "nothing fits: exit $rc"
has "$W/err" "no feasible layout"

# --- --calibrate on the small CPU model
timeout 120 "$LOCO" plan -c tests/plan/small.ini --calibrate >"$W/cal.out"
has "$W/cal.out" "fitted: block fwd+bwd"
has "$W/cal.out" "mean absolute error of the model on single-stage times"
has "$W/cal.out" "loopback link (ZeroMQ PAIR over 127.0.0.1)"
echo "test_plan: $checks checks passed"
