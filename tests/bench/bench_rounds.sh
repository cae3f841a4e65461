#!/usr/bin/env bash
# Round time as the swarm grows, NoLoCo against DiLoCo, on capped links where the network and not the
# two CPUs is the limit (issue 5): N = 2, 4, 8 peers, each in its own network namespace with its link
# capped to RATE both ways (deploy/wan-sim.sh), a model of 0.83M parameters (3.3 MB in fp32) trained
# with tiny batches so that compute is a small part of a round. Reports, per (algorithm, N), the
# median exchange time of an outer step (from handing the contribution to the net thread to the
# result), the median bytes sent per peer per round at the socket layer (and in B/param), and each
# figure's ratio to N = 2 of the same algorithm, plus DiLoCo/NoLoCo at each N.
#
#   sudo tests/bench/bench_rounds.sh          (root: namespaces; RATE=50mbit ROUNDS=8 NS="2 4 8")
#
# Exit 77 when namespaces or tbf are unavailable.
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-$PWD/build/loco}
RATE=${RATE:-50mbit}
ROUNDS=${ROUNDS:-8}
NS=${NS:-"2 4 8"}
H=${H:-5}
SIM=deploy/wan-sim.sh
NAME=lbr$$
NAME=${NAME:0:8}
"$SIM" check >/dev/null || { echo "bench_rounds: skipped ($("$SIM" check))"; exit 77; }
[ -x "$BIN" ] || { echo "bench_rounds: no $BIN"; exit 1; }
W=$(mktemp -d /tmp/loco_bench_rounds.XXXXXX)
cleanup() { "$SIM" down "$NAME" 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT

if ! ls build/data/fortunes/*train*.bin >/dev/null 2>&1; then
    "$BIN" data --input /usr/share/games/fortunes --out build/data/fortunes >/dev/null || exit 1
fi
cat >"$W/base.ini" <<INI
[run]
name = bench-rounds
[model]
layers = 4
d_model = 128
heads = 4
seq_len = 32
[train]
data = $PWD/build/data/fortunes
batch = 1
steps = $((H * (ROUNDS + 3)))
threads = 1
eval_every = 0
checkpoint_every = 0
[outer]
inner_steps = $H
deadline_ms = 60000
[gossip]
period_ms = 500
INI

printf '%-7s %3s %12s %10s %14s %10s %10s\n' algorithm N "exchange s" "vs N=2" "sent/peer/rd" "B/param" "vs N=2"
declare -A EX BY
for algo in noloco diloco; do
    for n in $NS; do
        "$SIM" down "$NAME" 2>/dev/null
        "$SIM" up "$NAME" "$n" "$RATE" || exit 1
        d="$W/$algo-$n"
        mkdir -p "$d"
        for i in $(seq "$n"); do "$BIN" keygen --out "$d/k$i" >/dev/null; done
        seed="$(awk '/^id =/ {print $3}' "$d/k1.pub")@tcp://$("$SIM" addr "$NAME" 1):7700"
        pids=()
        for i in $(seq "$n"); do
            a=$("$SIM" addr "$NAME" "$i")
            s=()
            [ "$i" != 1 ] && s=(--set "bootstrap.seed=$seed")
            "$SIM" exec "$NAME" "$i" "$BIN" run -c "$W/base.ini" --set outer.algorithm="$algo" \
                --set node.key="$d/k$i" --set net.listen="tcp://$a:7700" --set net.reachable=yes \
                --set train.checkpoint_dir="$d/ck$i" --set node.peer_cache="$d/cache$i" \
                --set train.metrics="$d/m$i.jsonl" "${s[@]}" >"$d/log$i" 2>&1 &
            pids+=($!)
        done
        for p in "${pids[@]}"; do
            timeout 600 tail --pid="$p" -f /dev/null
            wait "$p" || echo "bench_rounds: a peer of $algo N=$n exited with $? (see $d)" >&2
        done
        read -r ex by < <(python3 - "$d" "$n" <<'PY'
import glob, json, statistics, sys
d, n = sys.argv[1], int(sys.argv[2])
ex, by = [], []
for f in glob.glob(f"{d}/m*.jsonl"):
    recs = [json.loads(l) for l in open(f) if '"outer"' in l]
    # Full rounds only, after the first two (joining), before the last (peers finishing).
    for r in recs[2:-1]:
        if r["contributors"] == r["expected"] and r["contributors"] > 1:
            ex.append(r["exchange_s"]); by.append(r["bytes_sent"])
print(f"{statistics.median(ex):.3f} {int(statistics.median(by))}" if ex else "nan 0")
PY
)
        EX[$algo$n]=$ex
        BY[$algo$n]=$by
        first=${NS%% *}
        printf '%-7s %3d %12s %10s %14s %10s %10s\n' "$algo" "$n" "$ex" \
            "$(awk -v a="$ex" -v b="${EX[$algo$first]}" 'BEGIN{printf "%.2fx", a/b}')" "$by" \
            "$(awk -v a="$by" -v p="$(grep -o '[0-9]* parameters' "$d/log1" | head -1 | cut -d' ' -f1)" 'BEGIN{printf "%.2f", a/p}')" \
            "$(awk -v a="$by" -v b="${BY[$algo$first]}" 'BEGIN{printf "%.2fx", a/b}')"
    done
done
echo "link cap $RATE each way per peer; H = $H inner steps of 1 x 32 tokens; model of $(grep -o '[0-9]* parameters' "$W"/noloco-*/log1 | head -1 | cut -d: -f2) (fp32)"
for n in $NS; do
    echo "N=$n: DiLoCo/NoLoCo exchange time $(awk -v a="${EX[diloco$n]}" -v b="${EX[noloco$n]}" 'BEGIN{printf "%.2fx", a/b}')," \
         "bytes $(awk -v a="${BY[diloco$n]}" -v b="${BY[noloco$n]}" 'BEGIN{printf "%.2fx", a/b}')"
done
