#!/usr/bin/env bash
# `loco train` end to end on a tiny model and generated text:
#   1. a fixed-seed run learns (loss falls, val_loss beats chance) and is reproducible;
#   2. resume is bit-exact: 20 steps straight give the same checkpoint file, byte for byte, as a
#      fresh process resuming the straight run's step-10 checkpoint (same `steps`, so the same LR
#      schedule) — and as a run stopped by SIGTERM part-way and resumed;
#   3. a checkpoint with one flipped byte is refused with the file and the reason, and a checkpoint
#      directory falls back to its previous valid checkpoint (eval, export and --resume).
# Env: LOCO_BIN (the binary), PYTHON.
set -euo pipefail
LOCO=${LOCO_BIN:-build/loco}
PY=${PYTHON:-/usr/bin/python3}
W=$(mktemp -d /tmp/loco_it_train.XXXXXX)
bg_pid=
cleanup() {
    if [ -n "$bg_pid" ]; then kill "$bg_pid" 2>/dev/null || true; fi
    rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
run() { timeout 120 "$LOCO" "$@"; }

# Learnable text: sentences from a small grammar, fixed seed.
"$PY" - "$W/text.txt" <<'EOF'
import random, sys
r = random.Random(20240520)
subj = ["the cat", "a dog", "my friend", "the old man", "her sister", "a small bird"]
verb = ["sees", "likes", "follows", "paints", "finds", "hears"]
obj = ["the river", "a red house", "the moon", "two apples", "the garden", "a long road"]
with open(sys.argv[1], "w") as f:
    for _ in range(4000):
        f.write(f"{r.choice(subj)} {r.choice(verb)} {r.choice(obj)}.\n")
EOF
run data --input "$W/text.txt" --out "$W/data" >/dev/null

TINY=(--set train.data="$W/data" --set model.layers=2 --set model.d_model=32 --set model.heads=2
      --set model.seq_len=32 --set train.batch=8 --set train.warmup=5 --set train.threads=1
      --set train.eval_every=0 --set train.seed=7)

losses() { grep -o '"loss":[0-9.e+-]*' "$1" | cut -d: -f2; }

# ---------------------------------------------------------------------------------------------
# 1. Loss decreases, and a fixed seed reproduces it.
run train "${TINY[@]}" --set train.steps=50 --set train.checkpoint_dir="$W/ck_learn" \
    --set train.metrics="$W/learn.jsonl" 2>"$W/learn.log" || { cat "$W/learn.log"; fail "training run"; }
[ "$(losses "$W/learn.jsonl" | wc -l)" -eq 50 ] || fail "expected 50 step records in the metrics file"
read -r first last5 < <(losses "$W/learn.jsonl" | awk 'NR==1{f=$1} NR>45{s+=$1; n++} END{printf "%f %f\n", f, s/n}')
awk -v f="$first" -v l="$last5" 'BEGIN{exit !(f > 5.0 && l < 0.7 * f)}' \
    || fail "loss did not fall: first $first, mean of the last 5 $last5"
ok "loss falls from $first to $last5 in 50 steps"
val=$(run eval --set train.data="$W/data" --checkpoint "$W/ck_learn" --batches 16 2>/dev/null | sed -n 's/^val_loss=//p')
awk -v v="$val" 'BEGIN{exit !(v > 0 && v < 4.0)}' || fail "val_loss $val is not below chance (ln 256 = 5.55) by a margin"
ok "val_loss $val after 50 steps"
run train "${TINY[@]}" --set train.steps=50 --set train.checkpoint_dir="$W/ck_learn2" \
    --set train.metrics="$W/learn2.jsonl" 2>/dev/null
cmp -s <(losses "$W/learn.jsonl") <(losses "$W/learn2.jsonl") || fail "the same seed gave different losses"
cmp "$W/ck_learn/ckpt_000000000050.bin" "$W/ck_learn2/ckpt_000000000050.bin" || fail "the same seed gave different weights"
run train "${TINY[@]}" --set train.steps=50 --set train.seed=8 --set train.checkpoint_dir="$W/ck_seed8" 2>/dev/null
if cmp -s "$W/ck_learn/ckpt_000000000050.bin" "$W/ck_seed8/ckpt_000000000050.bin"; then fail "seeds 7 and 8 gave the same weights"; fi
ok "a fixed seed reproduces the run bit for bit; another seed does not"

# ---------------------------------------------------------------------------------------------
# 2a. Resume from the step-10 checkpoint of an uninterrupted 20-step run, in a fresh process and a
# fresh directory. Both runs are told steps = 20, so the LR schedule is the same; the resumed
# process rebuilds the model from the seed and must take everything else from the checkpoint.
STEPS=(--set train.steps=20 --set train.checkpoint_every=10 --set train.checkpoint_keep=10)
run train "${TINY[@]}" "${STEPS[@]}" --set train.checkpoint_dir="$W/ck_a" 2>/dev/null
A10="$W/ck_a/ckpt_000000000010.bin" A20="$W/ck_a/ckpt_000000000020.bin"
[ -f "$A10" ] && [ -f "$A20" ] || fail "expected checkpoints at steps 10 and 20"
if cmp -s "$A10" "$A20"; then fail "steps 11..20 changed nothing"; fi
mkdir "$W/ck_b"
cp "$A10" "$W/ck_b/"
echo "ckpt_000000000010.bin" > "$W/ck_b/LATEST"
run train "${TINY[@]}" "${STEPS[@]}" --set train.checkpoint_dir="$W/ck_b" --resume 2>"$W/b.log" \
    || { cat "$W/b.log"; fail "resumed run"; }
grep -q "resumed from $W/ck_b/ckpt_000000000010.bin at step 10" "$W/b.log" || { cat "$W/b.log"; fail "did not resume at step 10"; }
cmp "$A20" "$W/ck_b/ckpt_000000000020.bin" || fail "10 + 10 resumed steps differ from 20 straight steps"
run export --checkpoint "$A20" --out "$W/a.safetensors" >/dev/null
run export --checkpoint "$W/ck_b" --out "$W/b.safetensors" >/dev/null
cmp "$W/a.safetensors" "$W/b.safetensors" || fail "exports differ"
ok "20 straight steps == 10 steps + resume for 10: checkpoints (params, AdamW, counters) and exports identical"

# 2b. Stop a run with SIGTERM part-way (it saves a checkpoint at the step it reached), resume it,
# and compare with the same run done straight.
N=1500
LONG=(--set train.steps=$N --set train.checkpoint_every=0)
run train "${TINY[@]}" "${LONG[@]}" --set train.checkpoint_dir="$W/ck_straight" 2>/dev/null
"$LOCO" train "${TINY[@]}" "${LONG[@]}" --set train.checkpoint_dir="$W/ck_int" \
    --set train.metrics="$W/int.jsonl" 2>"$W/int.log" &
bg_pid=$!
for _ in $(seq 1 3000); do # wait until training is under way (at most ~60 s)
    [ "$(cat "$W/int.jsonl" 2>/dev/null | wc -l)" -ge 30 ] && break
    kill -0 "$bg_pid" 2>/dev/null || break
    sleep 0.02
done
kill -TERM "$bg_pid" 2>/dev/null || true
rc=0
wait "$bg_pid" || rc=$?
bg_pid=
[ "$rc" -eq 0 ] || { cat "$W/int.log"; fail "SIGTERM: exit status $rc (expected 0 after saving)"; }
k=$(sed -n 's/.*interrupted at step \([0-9]*\);.*/\1/p' "$W/int.log")
[ -n "$k" ] || { tail -5 "$W/int.log"; fail "the run finished before SIGTERM arrived; raise N"; }
[ "$k" -ge 30 ] && [ "$k" -lt $N ] || fail "interrupted at step $k"
[ -f "$W/ck_int/$(printf 'ckpt_%012d.bin' "$k")" ] || fail "no checkpoint written at step $k"
run train "${TINY[@]}" "${LONG[@]}" --set train.checkpoint_dir="$W/ck_int" --resume 2>"$W/int2.log" \
    || { cat "$W/int2.log"; fail "resume after SIGTERM"; }
grep -q "at step $k\$" "$W/int2.log" || fail "did not resume at step $k"
F=$(printf 'ckpt_%012d.bin' $N)
cmp "$W/ck_straight/$F" "$W/ck_int/$F" || fail "stopped at $k + resumed differs from $N straight steps"
ok "SIGTERM at step $k, resume to $N: identical to $N straight steps"

# ---------------------------------------------------------------------------------------------
# 3. A flipped byte. ck_c is a copy of the 20-step run's directory (checkpoints 10 and 20).
cp -r "$W/ck_a" "$W/ck_c"
C20="$W/ck_c/ckpt_000000000020.bin"
"$PY" - "$C20" <<'EOF'
import os, sys
p = sys.argv[1]
with open(p, "r+b") as f:
    off = os.path.getsize(p) // 2    # inside the parameters
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0x04]))
EOF
rc=0
run eval --set train.data="$W/data" --checkpoint "$C20" >/dev/null 2>"$W/eval.err" || rc=$?
[ "$rc" -eq 1 ] || fail "eval of a corrupted checkpoint: exit $rc (expected 1)"
grep -q "$C20: SHA-256 mismatch: the file is corrupted or truncated" "$W/eval.err" || { cat "$W/eval.err"; fail "unclear refusal"; }
ok "corrupted checkpoint refused: $(cat "$W/eval.err")"
run export --checkpoint "$W/ck_c" --out "$W/c.safetensors" >/dev/null
run export --checkpoint "$A10" --out "$W/a10.safetensors" >/dev/null
cmp "$W/c.safetensors" "$W/a10.safetensors" || fail "the directory did not fall back to its step-10 checkpoint"
run train "${TINY[@]}" "${STEPS[@]}" --set train.checkpoint_dir="$W/ck_c" --resume 2>"$W/c.log"
grep -q "resumed from $W/ck_c/ckpt_000000000010.bin at step 10" "$W/c.log" || { cat "$W/c.log"; fail "--resume did not fall back"; }
cmp "$A20" "$C20" || fail "the run resumed from the fallback differs"
ok "the directory falls back to step 10 (export, --resume), and the resumed run redoes step 20 exactly"
