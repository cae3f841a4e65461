#!/usr/bin/env bash
# What overlap costs in loss at equal steps, and which outer momentum keeps that cost small (issue 6).
# With [outer] overlap = on the averaged update lands one round late; a large outer momentum then
# overshoots. 4 peers on 127.0.0.1 (`loco swarm`, uncapped links: the delay is one round whatever the
# link, so loss at equal steps needs no namespaces), H = 20, 12 rounds, the model and data of
# bench_overlap.sh; one row per arm: the mean validation loss of the final anchors and its ratio to the
# no-overlap arm with the paper's momentum, run first. About a minute per arm on 2 free cores.
#
#   tests/bench/bench_overlap_loss.sh        (ALGOS="diloco noloco")
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-$PWD/build/loco}
ALGOS=${ALGOS:-"diloco noloco"}
W=$(mktemp -d /tmp/loco_bench_ovloss.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT
if ! ls build/data/fortunes/*train*.bin >/dev/null 2>&1; then
    "$BIN" data --input /usr/share/games/fortunes --out build/data/fortunes >/dev/null || exit 1
fi
cat >"$W/base.ini" <<INI
[run]
name = bench-overlap-loss
[model]
layers = 4
d_model = 128
heads = 4
seq_len = 64
[train]
data = $PWD/build/data/fortunes
batch = 8
steps = 240
lr = 3e-3
lr_min = 3e-4
warmup = 40
threads = 1
eval_every = 0
eval_batches = 20
checkpoint_every = 0
[outer]
inner_steps = 20
deadline_ms = 120000
[gossip]
period_ms = 1000
INI
loss_of() {
    python3 - "$1" <<'PY'
import json, glob, sys, statistics
v = [[json.loads(l) for l in open(f) if '"anchor":true' in l] for f in glob.glob(sys.argv[1] + "/peer-*/metrics.jsonl")]
v = [x[-1]["val_loss"] for x in v if x]
print(f"{statistics.mean(v):.4f}" if len(v) == 4 else "-")
PY
}
# eval_every = 0 would skip the final anchor evaluation: evaluate only at the end.
printf '%-7s %-8s %-22s %10s %8s\n' algo overlap "outer (eta, mu)" "val loss" ratio
for algo in $ALGOS; do
    if [ "$algo" = diloco ]; then arms="off:0.7:0.9 off:0.7:0.8 on:0.7:0.9 on:0.7:0.8 on:0.5:0.7 on:0.7:0.5 on:0.7:-1"
    else arms="off:0.7:0.5 on:0.7:0.5 on:0.7:0.3 on:0.7:0 on:0.7:-1"; fi
    base=
    for a in $arms; do
        IFS=: read -r ov lr mu <<<"$a"
        d="$W/$algo-$ov-$lr-$mu"
        "$BIN" swarm -c "$W/base.ini" --out "$d" --set outer.algorithm="$algo" --set outer.overlap="$ov" \
            --set outer.lr="$lr" --set outer.momentum="$mu" --set train.eval_every=240 >"$d.log" 2>&1 ||
            echo "bench_overlap_loss: $algo $a failed (see $d.log)" >&2
        l=$(loss_of "$d")
        [ -z "$base" ] && base=$l
        label="$lr, $mu"
        [ "$mu" = -1 ] && label="$lr, default"
        printf '%-7s %-8s %-22s %10s %8s\n' "$algo" "$ov" "$label" "$l" \
            "$(awk -v a="$l" -v b="$base" 'BEGIN{ if (a == "-" || b == "-") print "-"; else printf "%.3f", a / b }')"
    done
done
