#!/usr/bin/env bash
# What a user sees when they get something wrong:
#   - config errors (unknown key or section, bad value, out of range, malformed line, missing
#     file, bad --set) exit 2 and print the file, the line, the key, the reason and the line;
#   - usage errors exit 2; --help exits 0;
#   - bad data (truncated shard, wrong magic or version, trailing bytes, a token >= vocab, no
#     shards) exits 1 with the shard's path and the problem.
# Env: LOCO_BIN (the binary), PYTHON.
set -euo pipefail
LOCO=${LOCO_BIN:-build/loco}
PY=${PYTHON:-/usr/bin/python3}
W=$(mktemp -d /tmp/loco_it_cli.XXXXXX)
trap 'rm -rf "$W"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
checks=0

# expect STATUS PATTERN... -- ARGS: runs loco ARGS; the exit status must be STATUS and stderr
# must contain every PATTERN (fixed strings).
expect() {
    local want=$1; shift
    local pats=()
    while [ "$1" != "--" ]; do pats+=("$1"); shift; done
    shift
    local rc=0
    timeout 60 "$LOCO" "$@" >"$W/out" 2>"$W/err" || rc=$?
    [ "$rc" -eq "$want" ] || { cat "$W/err"; fail "loco $*: exit $rc, expected $want"; }
    for p in "${pats[@]}"; do
        grep -qF -- "$p" "$W/err" || { echo "stderr was:"; cat "$W/err"; fail "loco $*: no '$p' in stderr"; }
    done
    checks=$((checks + 1))
}

ini() { printf "%b" "$2" > "$W/$1"; echo "$W/$1"; }

# ---------------------------------------------------------------------------------------------
# Config files: exit 2, FILE:LINE: reason, and the line shown.
f=$(ini unknown_key.ini "[train]\nsteps = 5\nstepz = 5\n")
expect 2 "config error: $f:3: unknown key 'stepz' in [train]" "  > stepz = 5" -- train -c "$f"
f=$(ini unknown_section.ini "# mine\n[trian]\nsteps = 5\n")
expect 2 "$f:2: unknown section [trian]" "  > [trian]" -- train -c "$f"
f=$(ini bad_value.ini "[model]\nlayers = 2\n\n[train]\nlr = fast\n")
expect 2 "$f:5: train.lr: 'fast' is not a finite number" "  > lr = fast" -- train -c "$f"
f=$(ini bad_int.ini "[train]\nsteps = 10k\n")
expect 2 "$f:2: train.steps: '10k' is not an integer" -- train -c "$f"
f=$(ini bad_enum.ini "[train]\ndevice = gpu\n")
expect 2 "$f:2: train.device: 'gpu' is not one of cpu|cuda" -- train -c "$f"
f=$(ini range.ini "[model]\nheads = 0\n")
expect 2 "$f:2: model.heads: 0 is out of range [1, 1024]" "  > heads = 0" -- train -c "$f"
f=$(ini range2.ini "[train]\nbeta1 = 1.5\n")
expect 2 "$f:2: train.beta1: 1.5 is out of range" -- train -c "$f"
f=$(ini malformed.ini "[train]\nsteps 5\n")
expect 2 "$f:2: expected 'key = value'" "  > steps 5" -- train -c "$f"
f=$(ini header.ini "[train\n")
expect 2 "$f:1: malformed section header" -- train -c "$f"
f=$(ini outside.ini "steps = 5\n")
expect 2 "$f:1: key outside any [section]" -- train -c "$f"
expect 2 "$W/absent.ini: cannot open: No such file or directory" -- train -c "$W/absent.ini"
# Other commands load configs the same way.
f=$(ini unknown_key.ini "[train]\nstepz = 5\n")
expect 2 "$f:2: unknown key 'stepz' in [train]" -- eval -c "$f" --checkpoint "$W/x"
# Cross-key checks name the file.
f=$(ini heads.ini "[model]\nd_model = 30\nheads = 4\n")
expect 2 "$f: [model] heads must divide d_model" -- train -c "$f"
f=$(ini lrmin.ini "[train]\nlr = 1e-3\nlr_min = 1e-2\n")
expect 2 "$f: [train] lr_min (0.01) is larger than lr (0.001)" -- train -c "$f"

# --set: exit 2 with the flag, the key and the reason; it overrides the file.
expect 2 "--set train.stepz=5: unknown key 'stepz' in [train]" -- train --set train.stepz=5
expect 2 "--set trian.steps=5: unknown section [trian]" -- train --set trian.steps=5
expect 2 "--set train.batch=0: train.batch: 0 is out of range" -- train --set train.batch=0
expect 2 "--set steps=5: expected section.key=value" -- train --set steps=5
expect 2 "--set needs section.key=value" -- train --set
f=$(ini good.ini "[train]\nsteps = 5\n")
expect 2 "--set train.steps=x: train.steps: 'x' is not an integer" -- train -c "$f" --set train.steps=x
expect 2 "needs a file" -- train -c

# ---------------------------------------------------------------------------------------------
# Usage: exit 2; --help: exit 0.
expect 2 "unknown command 'frobnicate'" "usage: loco COMMAND" -- frobnicate
expect 2 "usage: loco COMMAND" --
expect 2 "loco train: unexpected argument '--bogus'" "loco train --help" -- train --bogus
expect 2 "loco eval: --checkpoint PATH is required" -- eval
expect 2 "loco data: --input PATH... and --out DIR are required" -- data --out "$W/d"
expect 2 "not a number" -- data --input "$W/x" --out "$W/d" --val-fraction abc
for cmd in train eval data export sample; do
    expect 0 -- "$cmd" --help
    grep -q "^usage: loco $cmd" "$W/out" || fail "loco $cmd --help prints no usage on stdout"
done
expect 0 -- --help

# ---------------------------------------------------------------------------------------------
# Bad data: exit 1 naming the shard and the problem (before any training starts).
mkshard() { # DIR NAME MAGIC VERSION CLAIMED NTOK EXTRA [TOKEN...]: a raw shard file
    "$PY" - "$@" <<'EOF'
import os, struct, sys
d, name, magic, version, claimed, ntok, extra = sys.argv[1:8]
toks = [int(t) for t in sys.argv[8:]] or [i % 200 for i in range(int(ntok))]
os.makedirs(d, exist_ok=True)
with open(os.path.join(d, name), "wb") as f:
    f.write(struct.pack("<3i", int(magic), int(version), int(claimed)) + b"\0" * (1024 - 12))
    f.write(struct.pack("<%dH" % len(toks), *toks) + b"\xab" * int(extra))
EOF
}
TRAIN=(--set model.layers=1 --set model.d_model=16 --set model.heads=2 --set model.seq_len=16
       --set train.batch=2 --set train.steps=1 --set train.threads=1 --set train.checkpoint_dir="$W/ck")
bad_shard() { # NAME MAGIC VERSION CLAIMED NTOK EXTRA EXPECTED-TEXT [TOKENS...]
    local name=$1 text=$7
    rm -rf "$W/bad"
    mkshard "$W/bad" train_000.bin 20240520 1 500 500 0
    mkshard "$W/bad" "$name" "$2" "$3" "$4" "$5" "$6" "${@:8}"
    expect 1 "loco train: $W/bad/$name: $text" -- train "${TRAIN[@]}" --set train.data="$W/bad"
}
bad_shard train_001.bin 20240520 1 500 400 0 "size 1824 bytes does not match the header's 500 tokens (2024 bytes): truncated"
bad_shard train_001.bin 20240520 1 100 100 3 "size 1227 bytes does not match the header's 100 tokens (1224 bytes): trailing bytes"
bad_shard train_001.bin 12345678 1 100 100 0 "bad magic 12345678 (expected 20240520): not a token shard"
bad_shard train_001.bin 20240520 2 100 100 0 "unsupported version 2"
bad_shard train_001.bin 20240520 1 4 4 0 "token 256 at position 2 is not below the model's vocab 256" 1 2 256 3
bad_shard val_000.bin 20240520 1 4 4 0 "token 300 at position 3" 1 2 3 300
# A header cut short.
rm -rf "$W/bad"; mkshard "$W/bad" train_000.bin 20240520 1 500 500 0
head -c 100 "$W/bad/train_000.bin" > "$W/bad/train_001.bin"
expect 1 "loco train: $W/bad/train_001.bin: truncated header: 100 bytes, a shard header is 1024 bytes" \
    -- train "${TRAIN[@]}" --set train.data="$W/bad"
# Byte-level data with too small a vocab.
rm -rf "$W/bad"; mkshard "$W/bad" train_000.bin 20240520 1 500 500 0
expect 1 "train_000.bin: token 16 at position 16 is not below the model's vocab 16" \
    -- train "${TRAIN[@]}" --set train.data="$W/bad" --set model.vocab=16
# Shards too short for one window of seq_len + 1 tokens.
rm -rf "$W/bad"; mkshard "$W/bad" train_000.bin 20240520 1 16 16 0
expect 1 "loco train: $W/bad: no training shard holds seq_len + 1 = 17 tokens" \
    -- train "${TRAIN[@]}" --set train.data="$W/bad"
# (Validation shards are optional: without any, training runs.)
rm -rf "$W/bad"; mkshard "$W/bad" train_000.bin 20240520 1 17 17 0
expect 0 "done: step 1" -- train "${TRAIN[@]}" --set train.data="$W/bad" --set train.checkpoint_dir="$W/ck_ok"
# No shards at all, and no directory.
mkdir -p "$W/empty"
expect 1 "loco train: $W/empty: no training shards (*train*.bin); prepare them with \`loco data\`" \
    -- train "${TRAIN[@]}" --set train.data="$W/empty"
expect 1 "$W/none: cannot open data directory: No such file or directory" \
    -- train "${TRAIN[@]}" --set train.data="$W/none"
expect 1 "loco data: $W/missing.txt: No such file or directory" -- data --input "$W/missing.txt" --out "$W/d"
[ ! -e "$W/ck" ] || fail "a refused run wrote checkpoints"

echo "ok: $checks checks"
