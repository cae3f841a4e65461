#!/usr/bin/env bash
# `loco export` → a PyTorch GPT-2 with Hugging Face names and layouts gives the same validation
# loss as `loco eval` on the same checkpoint: train a tiny model a few steps on generated text,
# export it, evaluate both ways over the first K windows of the validation shard. Then several
# checkpoints: their export is the element-wise mean, and checkpoints of different models are refused.
set -euo pipefail
cd "$(dirname "$0")/../.."
LOCO_BIN=${LOCO_BIN:-$PWD/build/loco}
PYTHON=${PYTHON:-/usr/bin/python3}
K=8
HEADS=2

if ! "$PYTHON" -c 'import torch, numpy' 2>/dev/null; then
    echo "*** SKIPPED: $PYTHON cannot import torch and numpy; the exported safetensors are NOT checked ***" >&2
    exit 0
fi

tmp=$(mktemp -d /tmp/loco-export-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# Deterministic text: lines of words drawn with a Park-Miller generator (exact in awk's doubles).
awk 'BEGIN {
    n = split("the of and a to in is you that it he was for on are as with his they at be this have from or one had by word but not what all were we when your can said there use an each which she do how their if will up other about out many then them these so some her would make like him into time has look two more write go see number no way could people my than first water been call who oil its now find long down day did get come made may part", w, " ")
    x = 12345
    for (line = 0; line < 1500; line++) {
        x = (x * 16807) % 2147483647; k = 4 + x % 9; s = ""
        for (j = 0; j < k; j++) { x = (x * 16807) % 2147483647; s = s (j ? " " : "") w[1 + x % n] }
        x = (x * 16807) % 2147483647
        print s (x % 5 == 0 ? "?" : ".")
    }
}' >"$tmp/text.txt"

timeout 30 "$LOCO_BIN" data --input "$tmp/text.txt" --out "$tmp/data"
test -s "$tmp/data/val_000.bin"

cat >"$tmp/loco.ini" <<EOF
[model]
layers = 2
d_model = 32
heads = $HEADS
seq_len = 32
vocab = 256
[train]
data = $tmp/data
batch = 3
checkpoint_dir = $tmp/ck
threads = 1
EOF

# Training settings as --set overrides; eval reads the same data and model keys from the file
# (batch 3 over K = 8 windows: the last batch is partial).
timeout 120 "$LOCO_BIN" train --set model.layers=2 --set model.d_model=32 --set model.heads=$HEADS \
    --set model.seq_len=32 --set model.vocab=256 --set train.data="$tmp/data" --set train.batch=4 \
    --set train.steps=12 --set train.warmup=3 --set train.lr=1e-2 --set train.eval_every=0 \
    --set train.checkpoint_every=0 --set train.threads=1 --set train.checkpoint_dir="$tmp/ck" \
    --set train.seed=7 >"$tmp/train.log" 2>&1 &
pids+=($!)
if ! wait "${pids[-1]}"; then
    echo "loco train failed:"; cat "$tmp/train.log"; exit 1
fi

timeout 30 "$LOCO_BIN" export --checkpoint "$tmp/ck" --out "$tmp/model.safetensors"
out=$(timeout 30 "$LOCO_BIN" eval -c "$tmp/loco.ini" --checkpoint "$tmp/ck" --batches $K)
echo "loco eval: $out"
loco_loss=${out#val_loss=}
[[ "$out" == val_loss=* && -n "$loco_loss" ]] || { echo "unexpected loco eval output: $out"; exit 1; }

# A model that learned nothing would sit at ln(256) = 5.545; make sure training moved it.
awk -v l="$loco_loss" 'BEGIN { exit !(l < 5.4) }' || { echo "val_loss $loco_loss: the model did not train"; exit 1; }

timeout 60 "$PYTHON" tests/ref/eval_safetensors.py "$tmp/model.safetensors" "$tmp/data/val_000.bin" \
    $HEADS $K --expect "$loco_loss" --tol 1e-4

# Several checkpoints → their element-wise mean. A second model trained from another seed, each
# exported alone and both together (one as a positional PATH, one with --checkpoint); the mean file
# must equal (a + b) / 2 tensor by tensor, read with numpy straight from the safetensors bytes.
timeout 120 "$LOCO_BIN" train -c "$tmp/loco.ini" --set train.steps=6 --set train.warmup=2 --set train.lr=1e-2 \
    --set train.eval_every=0 --set train.checkpoint_every=0 --set train.seed=8 \
    --set train.checkpoint_dir="$tmp/ck2" >"$tmp/train2.log" 2>&1 || { echo "second loco train failed:"; cat "$tmp/train2.log"; exit 1; }
timeout 30 "$LOCO_BIN" export --checkpoint "$tmp/ck2" --out "$tmp/b.safetensors"
out=$(timeout 30 "$LOCO_BIN" export "$tmp/ck" --checkpoint "$tmp/ck2" --out "$tmp/mean.safetensors")
echo "$out"
[[ "$out" == *"mean of 2 checkpoints"* ]] || { echo "export of two checkpoints did not say it averaged: $out"; exit 1; }
"$PYTHON" - "$tmp/model.safetensors" "$tmp/b.safetensors" "$tmp/mean.safetensors" <<'PY'
import json, struct, sys
import numpy as np
def load(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    hdr = json.loads(raw[8:8 + n])
    hdr.pop("__metadata__", None)
    return {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], dtype="<f4").reshape(v["shape"])
            for k, v in hdr.items()}
a, b, m = (load(p) for p in sys.argv[1:4])
assert a.keys() == b.keys() == m.keys(), "tensor names differ"
worst = (-np.inf, None)
for k in a:
    want = (a[k].astype(np.float64) + b[k]) / 2
    err = np.abs(m[k] - want) - (1e-7 + 1e-6 * np.abs(want))
    i = int(np.argmax(err))
    if err.flat[i] > worst[0]:
        worst = (float(err.flat[i]), (k, i, float(m[k].flat[i]), float(want.flat[i])))
    assert not np.array_equal(a[k], b[k]) or k.endswith("bias") or "ln" in k, f"{k}: the two models are identical"
if worst[0] > 0:
    sys.exit(f"mean differs beyond 1e-7 + 1e-6|x|: worst {worst[1]}")
print(f"ok: mean of 2 checkpoints is the element-wise mean ({len(a)} tensors; closest to the tolerance: {worst[1]})")
PY

# Checkpoints of different models: refused, naming both files and the field.
timeout 120 "$LOCO_BIN" train -c "$tmp/loco.ini" --set model.heads=4 --set train.steps=1 --set train.warmup=0 \
    --set train.eval_every=0 --set train.checkpoint_dir="$tmp/ck3" >"$tmp/train3.log" 2>&1 || { echo "third loco train failed:"; cat "$tmp/train3.log"; exit 1; }
set +e
err=$(timeout 30 "$LOCO_BIN" export "$tmp/ck" "$tmp/ck3" --out "$tmp/bad.safetensors" 2>&1)
rc=$?
set -e
echo "mismatch: rc=$rc: $err"
[ $rc -eq 1 ] || { echo "export of mismatched checkpoints: exit $rc, expected 1"; exit 1; }
[[ "$err" == *"model.heads is $HEADS in the first, 4 in the second"* && "$err" == *"$tmp/ck/"* && "$err" == *"$tmp/ck3/"* ]] ||
    { echo "the mismatch error does not name both files and model.heads"; exit 1; }
[ ! -e "$tmp/bad.safetensors" ] || { echo "a refused export left a file behind"; exit 1; }
echo "ok: checkpoints of different models refused with both files and model.heads named"
