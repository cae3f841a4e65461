#!/usr/bin/env bash
# CO2-style overlap on capped links (issue 6): N peers (default 4; threads = 1 each; on 2 cores 4 peers
# oversubscribe the CPU 2x, N=2 does not),
# each in its own network namespace with its link capped both ways by tc (deploy/wan-sim.sh), the
# cap chosen so that one exchange takes about 0.5x, 1x and 2x the compute time of H inner steps
# (measured first, uncapped, in the same run). For NoLoCo and DiLoCo, overlap off and on: mean
# compute utilisation (share of wall time in inner steps, the peers' last `outer` records; also
# excluding the periodic evaluations, which the benchmark runs every 2H steps for its loss curves), wall
# time, and the validation loss of the final anchors (mean over peers); at the 1x cap also the validation loss
# at equal wall-clock (the first peer's eval records, interpolated at the time the faster arm ended).
#
#   sudo tests/bench/bench_overlap.sh      (root: namespaces; H=20 ROUNDS=12 RATIOS="0.5 1 2"
#                                           ALGOS="noloco diloco" NETOFF=1 OUTER_EXTRA="co2_gap_penalty = 2")
#
# Exit 77 when namespaces or tbf are unavailable.
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-$PWD/build/loco}
H=${H:-20}
ROUNDS=${ROUNDS:-12}
RATIOS=${RATIOS:-"0.5 1 2"}
ALGOS=${ALGOS:-"noloco diloco"}
N=${N:-4} # peers; the machine has 2 cores: N = 2 keeps one compute thread per core
SIM=deploy/wan-sim.sh
NAME=lbo$$
NAME=${NAME:0:8}
"$SIM" check >/dev/null || { echo "bench_overlap: skipped ($("$SIM" check))"; exit 77; }
W=$(mktemp -d /tmp/loco_bench_overlap.XXXXXX)
cleanup() { "$SIM" down "$NAME" 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT
if ! ls build/data/fortunes/*train*.bin >/dev/null 2>&1; then
    "$BIN" data --input /usr/share/games/fortunes --out build/data/fortunes >/dev/null || exit 1
fi
STEPS=$((H * ROUNDS))
cat >"$W/base.ini" <<INI
[run]
name = bench-overlap
[model]
layers = 4
d_model = 128
heads = 4
seq_len = 64
[train]
data = $PWD/build/data/fortunes
batch = 8
steps = $STEPS
lr = 3e-3
lr_min = 3e-4
warmup = 40
threads = 1
eval_every = $((H * 2))
eval_batches = 20
checkpoint_every = 0
[outer]
inner_steps = $H
deadline_ms = 120000
${OUTER_EXTRA:-}
[gossip]
period_ms = 1000
INI

# arm NAME ALGO OVERLAP RATE(or 0 = uncapped): runs N peers, leaves results in $W/NAME
arm() {
    local tag=$1 algo=$2 ov=$3 rate=$4 d="$W/$1"
    mkdir -p "$d"
    "$SIM" down "$NAME" 2>/dev/null
    "$SIM" up "$NAME" "$N" "$([ "$rate" = 0 ] && echo 10gbit || echo "${rate}bit")" || exit 1
    for i in $(seq "$N"); do "$BIN" keygen --out "$d/k$i" >/dev/null; done
    local seed pids=()
    seed="$(awk '/^id =/ {print $3}' "$d/k1.pub")@tcp://$("$SIM" addr "$NAME" 1):7700"
    for i in $(seq "$N"); do
        local a s=()
        a=$("$SIM" addr "$NAME" "$i")
        [ "$i" != 1 ] && [ -z "${NOSEEDS:-}" ] && s=(--set "bootstrap.seed=$seed")
        "$SIM" exec "$NAME" "$i" "$BIN" run -c "$W/base.ini" --set outer.algorithm="$algo" --set outer.overlap="$ov" \
            --set node.key="$d/k$i" --set net.listen="tcp://$a:7700" --set net.reachable=yes \
            --set train.checkpoint_dir="$d/ck$i" --set node.peer_cache="$d/cache$i" \
            --set train.metrics="$d/m$i.jsonl" "${s[@]}" >"$d/log$i" 2>&1 &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || echo "bench_overlap: a peer of $tag exited with an error (see $d)" >&2; done
}

# Summary of an arm: utilisation, wall, bytes per round, compute seconds per round, final val loss.
summ() {
    python3 - "$W/$1" <<'PY'
import glob, json, statistics, sys
d = sys.argv[1]
util, utilx, wall, byts, comp = [], [], [], [], []
for f in sorted(glob.glob(f"{d}/m*.jsonl")):
    recs = [json.loads(l) for l in open(f)]
    outer = [r for r in recs if r["kind"] == "outer"]
    if not outer: continue
    o = outer[-1]
    util.append(o["utilisation"]); wall.append(o["wall_s"])
    utilx.append(o["compute_s"] / max(1e-9, o["wall_s"] - o.get("eval_s", 0)))
    byts += [r["bytes_sent"] for r in outer if r["contributors"] > 1]
    comp.append(outer[-1]["compute_s"] / max(1, len(outer)))
print(f"{statistics.mean(util):.4f} {max(wall):.1f} {int(statistics.median(byts)) if byts else 0} {statistics.mean(comp):.3f} "
      f"{statistics.mean(utilx):.4f}")
PY
}
val_of() { # validation loss of the final anchor, mean over the peers (their last eval records)
    python3 -c "import json,glob,statistics;v=[[json.loads(l) for l in open(f) if '\"anchor\":true' in l] for f in glob.glob('$W/$1/m*.jsonl')];v=[x[-1]['val_loss'] for x in v if x];print('%.4f'%statistics.mean(v) if v else '-')"
}

# What networking costs the compute thread (encryption, codecs, gossip on a shared CPU): median
# inner-step tokens/s of the same 4 peers with no seeds (never communicating) and in a swarm.
if [ "${NETOFF:-1}" = 1 ]; then
    tps() { python3 -c "import json,glob,statistics;t=[json.loads(l)['tokens_per_s'] for f in glob.glob('$W/$1/m*.jsonl') for l in open(f) if '\"kind\":\"step\"' in l];print('%.0f'%statistics.median(t))"; }
    for algo in $ALGOS; do
        arm "$algo-net" "$algo" on 0
        NOSEEDS=1 arm "$algo-off" "$algo" on 0
        a=$(tps "$algo-net"); b=$(tps "$algo-off")
        echo "$algo: inner-step tokens/s per peer, uncapped links, overlap on: $a in the swarm, $b with networking off (ratio $(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.3f", a/b}'))"
    done
fi
printf '%-7s %6s %8s %10s %12s %12s %10s %10s %10s\n' algo ratio overlap "cap Mbit" "utilisation" "excl. eval" "wall s" "exch/comp" "val loss"
for algo in $ALGOS; do
    # Calibration: uncapped, overlap off: compute seconds per round and bytes per round.
    arm "$algo-cal" "$algo" off 0
    read -r u wall bytes comp ux < <(summ "$algo-cal")
    echo "$algo: uncapped calibration: $comp s of compute per round of H = $H, $bytes bytes sent per peer per round, utilisation $u"
    for ratio in $RATIOS; do
        # The link carries a round's bytes in ratio x compute; both directions are capped alike.
        rate=$(awk -v b="$bytes" -v c="$comp" -v r="$ratio" 'BEGIN{printf "%d", b * 8 / (c * r)}')
        for ov in off on; do
            arm "$algo-$ratio-$ov" "$algo" "$ov" "$rate"
            read -r u wall bytes2 comp2 ux < <(summ "$algo-$ratio-$ov")
            ex=$(python3 -c "import json,glob,statistics;r=[json.loads(l) for f in glob.glob('$W/$algo-$ratio-$ov/m*.jsonl') for l in open(f) if '\"outer\"' in l];print('%.2f'%(statistics.median([x['exchange_s'] for x in r if x['contributors']>1] or [0])/$comp))")
            printf '%-7s %6s %8s %10.1f %12.3f %12.3f %10s %10s %10s\n' "$algo" "$ratio" "$ov" "$(awk -v r="$rate" 'BEGIN{print r/1e6}')" \
                "$u" "$ux" "$wall" "$ex" "$(val_of "$algo-$ratio-$ov")"
        done
    done
    # Equal wall-clock at the 1x cap: validation loss of peer 1 at the time the faster arm finished.
    python3 - "$W/$algo-1-off" "$W/$algo-1-on" "$algo" <<'PY'
import json, sys
def evals(d):
    r = [json.loads(l) for l in open(f"{d}/m1.jsonl")]
    t0 = r[0]["time"]
    return [(x["time"] - t0, x["val_loss"]) for x in r if x["kind"] == "eval" and not x.get("anchor")]
off, on = evals(sys.argv[1]), evals(sys.argv[2])
if off and on:
    T = min(off[-1][0], on[-1][0])
    def at(e, T):
        prev = e[0]
        for t, v in e:
            if t >= T:
                return prev[1] + (v - prev[1]) * (T - prev[0]) / max(1e-9, t - prev[0]) if t > prev[0] else v
            prev = (t, v)
        return e[-1][1]
    print(f"{sys.argv[3]} at the 1x cap, equal wall-clock {T:.0f} s: val loss overlap off {at(off, T):.4f}, on {at(on, T):.4f}")
PY
done
