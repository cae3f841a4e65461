#!/usr/bin/env bash
# The GPU session's swarm check (issue 5 on a GPU): outer steps with the CUDA backend. Builds
# nothing: uses build/gpu/loco and build/gpu-libs from tests/gpu/pack.sh. On 127.0.0.1:
#   1. NoLoCo, two GPU peers and one CPU peer in one swarm (a GPU peer's θ comes back to the host
#      for every exchange and the new anchor goes back to the device): every peer takes outer steps
#      in groups with the others, validation loss falls on all three.
#   2. DiLoCo, two GPU peers with overlap on: anchors identical after every round both completed.
# Results (logs, metrics, summary.txt) under OUTDIR. Budget: about 2 minutes.
#
#   tests/gpu/swarm.sh [OUTDIR]        (default: $OUT, else ./gpu-swarm)
set -u
cd "$(dirname "$0")/../.."
OUTDIR=${1:-${OUT:-gpu-swarm}}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
BUILD=${LOCO_GPU_BUILD:-build/gpu}
LIBS=$PWD/${LOCO_GPU_LIBS:-build/gpu-libs}
PY=${PYTHON:-python3}
exec > >(tee "$OUTDIR/swarm.log") 2>&1
T0=$SECONDS
say() { echo "[$((SECONDS - T0))s] $*"; }
LIBPATH=$LIBS
extra=$("$PY" - <<'PYEOF' 2>/dev/null
import glob, os, site
dirs = set()
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    for pat in ("libcublas.so.13", "libcublasLt.so.13", "libcudart.so.13"):
        for f in glob.glob(os.path.join(sp, "nvidia", "**", pat), recursive=True):
            dirs.add(os.path.dirname(f))
print(":".join(sorted(dirs)))
PYEOF
)
if LD_LIBRARY_PATH=$LIBPATH ldd "$BUILD/loco" | grep -q "not found"; then LIBPATH=$LIBPATH:$extra; fi
L() { LD_LIBRARY_PATH="$LIBPATH" "$BUILD/loco" "$@"; }
W=$(mktemp -d)
cat docs/*.md README.md model/*.c model/*.h node/*.c net/*.c gossip/*.c 2>/dev/null | head -c 600000 >"$W/corpus.txt"
L data --input "$W/corpus.txt" --out "$W/data" >/dev/null || { say "loco data failed"; exit 1; }
cat >"$W/base.ini" <<INI
[run]
name = gpu-swarm
[model]
layers = 4
d_model = 128
heads = 4
seq_len = 128
[train]
data = $W/data
batch = 8
steps = 300
lr = 2e-3
lr_min = 2e-4
warmup = 30
threads = 4
eval_every = 100
eval_batches = 20
checkpoint_every = 0
[outer]
inner_steps = 25
deadline_ms = 20000
[gossip]
period_ms = 500
INI
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
run_swarm() { # DIR "device ..." extra args
    local tag=$1 d=$W/$1 devs=($2) pids=()
    shift 2
    mkdir -p "$d"
    local n=${#devs[@]}
    for i in $(seq "$n"); do L keygen --out "$d/k$i" >/dev/null; P[$i]=$(port); done
    local seed="$(awk '/^id =/ {print $3}' "$d/k1.pub")@tcp://127.0.0.1:${P[1]}"
    for i in $(seq "$n"); do
        local s=()
        [ "$i" != 1 ] && s=(--set "bootstrap.seed=$seed")
        timeout 150 env LD_LIBRARY_PATH="$LIBPATH" "$BUILD/loco" run -c "$W/base.ini" --set train.device="${devs[$((i - 1))]}" \
            --set node.key="$d/k$i" --set net.listen="tcp://127.0.0.1:${P[$i]}" --set train.checkpoint_dir="$d/ck$i" \
            --set node.peer_cache="$d/cache$i" --set train.metrics="$d/m$i.jsonl" "${s[@]}" "$@" >"$d/log$i" 2>&1 &
        pids+=($!)
    done
    local rc=0
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    cp "$d"/log* "$d"/m*.jsonl "$OUTDIR/" 2>/dev/null
    for f in "$d"/log* "$d"/m*.jsonl; do mv "$OUTDIR/$(basename "$f")" "$OUTDIR/$tag-$(basename "$f")" 2>/dev/null; done
    return $rc
}
declare -A P
say "1/2 NoLoCo: GPU, GPU and CPU peers in one swarm"
run_swarm mixed "${MIXED_DEVS:-cuda cuda cpu}" --set outer.group_size=2
say "exit status $?"
say "2/2 DiLoCo with overlap: two GPU peers"
run_swarm dil "${DIL_DEVS:-cuda cuda}" --set outer.algorithm=diloco --set outer.overlap=on --set run.name=gpu-swarm-d
say "exit status $?"
"$PY" - "$OUTDIR" <<'PYEOF' | tee "$OUTDIR/summary.txt"
import collections, glob, json, os, sys
out = sys.argv[1]
for arm in ("mixed", "dil"):
    by = collections.defaultdict(dict)
    for f in sorted(glob.glob(f"{out}/{arm}-m*.jsonl")):
        recs = [json.loads(l) for l in open(f)]
        outer = [r for r in recs if r["kind"] == "outer"]
        ev = [round(r["val_loss"], 4) for r in recs if r["kind"] == "eval"]
        st = [r for r in recs if r["kind"] == "step"]
        tps = sorted(r["tokens_per_s"] for r in st)[len(st) // 2] if st else 0
        grouped = sum(1 for r in outer if r["contributors"] > 1)
        print(f"{arm} {os.path.basename(f)}: {len(outer)} outer steps ({grouped} with others), val loss {ev}, "
              f"median {tps:.0f} tok/s, utilisation {outer[-1]['utilisation'] if outer else '-'}")
        for r in outer:
            if not r["short"] and r["result"] == "mean": by[(r["round"], tuple(r["group"]))][f] = r["anchor"]
    if arm == "dil":
        full = [k for k, m in by.items() if len(m) == 2]
        bad = [k for k in full if len(set(by[k].values())) > 1]
        print(f"dil: {len(full)} rounds completed by both, {len(bad)} with different anchors")
PYEOF
say "done in $((SECONDS - T0))s"
rm -rf "$W"
