#!/usr/bin/env bash
# `loco plot` (issue 10): draws the metrics of a real 2-peer `loco swarm` (tiny model) and of a
# `loco train` run as PNGs. Checks: exit 0; the file is a PNG (magic) of the requested pixel size
# (read from its IHDR chunk); the default size; a malformed line stops it with the file and line
# named, exit 1 and no PNG; a missing file; gnuplot missing from PATH gives a clear error; usage
# errors exit 2. Every process started here is killed by pid at the end, pass or fail.
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-$PWD/build/loco}
[ -x "$BIN" ] || { echo "no loco binary at $BIN (make first)"; exit 77; }
W=$(mktemp -d /tmp/loco_it_plot.XXXXXX)
launcher=
cleanup() {
    [ -n "$launcher" ] && kill -9 "$launcher" 2>/dev/null
    for p in $(pgrep -f "$W/" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    for f in "$W"/*.out "$W"/out/peer-*/log; do [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done
    exit 1
}

# png_size FILE: "WIDTHxHEIGHT" from the IHDR chunk (bytes 16..23, big-endian), or "" when the file
# does not start with the PNG signature and an IHDR chunk.
png_size() {
    [ "$(od -An -tx1 -N16 "$1" | tr -d ' \n')" = "89504e470d0a1a0a0000000d49484452" ] || return 0
    local b; read -r -a b <<<"$(od -An -tu1 -j16 -N8 "$1")"
    echo "$(( (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3] ))x$(( (b[4] << 24) | (b[5] << 16) | (b[6] << 8) | b[7] ))"
}

# Usage errors and a missing gnuplot need no data.
"$BIN" plot >"$W/u1.out" 2>&1; [ $? -eq 2 ] || fail "plot without arguments: expected exit 2"
"$BIN" plot "$W/x.jsonl" >"$W/u2.out" 2>&1; [ $? -eq 2 ] || fail "plot without --out: expected exit 2"
grep -q -- "--out" "$W/u2.out" || fail "the missing --out is not named"
"$BIN" plot "$W/x.jsonl" --out "$W/x.png" --size 10x10 >"$W/u3.out" 2>&1; [ $? -eq 2 ] || fail "--size 10x10: expected exit 2"
"$BIN" plot "$W/nope.jsonl" --out "$W/x.png" >"$W/u4.out" 2>&1; [ $? -eq 1 ] || fail "a missing file: expected exit 1"
grep -q "$W/nope.jsonl: cannot open" "$W/u4.out" || fail "the missing file is not named: $(cat "$W/u4.out")"
echo "ok: usage errors exit 2, a missing metrics file exits 1 naming it"

# Deterministic text → byte-level shards; a tiny model.
awk 'BEGIN { x = 777; for (line = 0; line < 1200; line++) { s = ""; for (j = 0; j < 6; j++) {
    x = (x * 16807) % 2147483647; s = s (j ? " " : "") substr("the of and a to in is you that it he was", 1 + (x % 30), 4) }
    print s "." } }' >"$W/text.txt"
timeout 30 "$BIN" data --input "$W/text.txt" --out "$W/data" >/dev/null || fail "loco data"
cat >"$W/base.ini" <<INI
[run]
name = plot-test
[model]
layers = 1
d_model = 32
heads = 2
seq_len = 32
[train]
data = $W/data
batch = 4
steps = 200
warmup = 5
eval_every = 50
eval_batches = 4
checkpoint_every = 0
[outer]
inner_steps = 25
[gossip]
period_ms = 200
sync_interval_ms = 1000
INI

# Missing gnuplot: a PATH without it (checked before a real run, so it needs a metrics line only).
echo '{"kind":"step","time":1.0,"peer":"local","step":1,"loss":5.5}' >"$W/one.jsonl"
PATH=/nonexistent "$BIN" plot "$W/one.jsonl" --out "$W/nognuplot.png" >"$W/nognu.out" 2>&1
rc=$?
[ $rc -eq 1 ] || fail "without gnuplot on PATH: exit $rc, expected 1"
grep -q "gnuplot is not installed" "$W/nognu.out" || fail "no clear error without gnuplot: $(cat "$W/nognu.out")"
[ -e "$W/nognuplot.png" ] || [ -e "$W/nognuplot.png.part" ] && fail "a file was left without gnuplot"
echo "ok: without gnuplot on PATH: exit 1, '$(head -n 1 "$W/nognu.out")'"
command -v gnuplot >/dev/null || { echo "gnuplot is not installed (deploy/setup.sh installs gnuplot-nox)"; exit 77; }

# 1. A real 2-peer swarm, then its picture at 640x480 and at the default size.
timeout 120 "$BIN" swarm -c "$W/base.ini" --out "$W/out" --peers 2 >"$W/swarm.out" 2>&1 || fail "loco swarm: exit $?"
for k in 0 1; do
    grep -q '"kind":"outer"' "$W/out/peer-$k/metrics.jsonl" || fail "peer $k wrote no outer record"
    grep -q '"kind":"eval"' "$W/out/peer-$k/metrics.jsonl" || fail "peer $k wrote no eval record"
done
timeout 60 "$BIN" plot "$W/out/peer-0/metrics.jsonl" "$W/out/peer-1/metrics.jsonl" --out "$W/swarm.png" --size 640x480 \
    >"$W/plot1.out" 2>&1 || fail "loco plot: exit $?: $(cat "$W/plot1.out")"
size=$(png_size "$W/swarm.png")
[ "$size" = 640x480 ] || fail "swarm.png: expected a 640x480 PNG, read '$size'"
grep -q "2 line(s) from 2 file(s)" "$W/plot1.out" || fail "the plot does not have one line per peer: $(cat "$W/plot1.out")"
[ -e "$W/swarm.png.part" ] && fail "the temporary swarm.png.part was left behind"
timeout 60 "$BIN" plot "$W"/out/peer-*/metrics.jsonl --out "$W/default.png" >"$W/plot2.out" 2>&1 || fail "loco plot (default size): exit $?"
size=$(png_size "$W/default.png")
[ "$size" = 1200x900 ] || fail "default.png: expected the default 1200x900, read '$size'"
echo "ok: a 2-peer swarm's metrics drawn as a 640x480 PNG and at the default 1200x900 ($(stat -c %s "$W/swarm.png") bytes)"

# 2. loco train's metrics (peer "local", no outer records): the outer panels are drawn empty.
timeout 60 "$BIN" train -c "$W/base.ini" --set train.steps=40 --set train.eval_every=20 \
    --set train.checkpoint_dir="$W/ck" --set train.metrics="$W/train.jsonl" >"$W/train.out" 2>&1 || fail "loco train: exit $?"
timeout 60 "$BIN" plot "$W/train.jsonl" --out "$W/train.png" --size 800x600 >"$W/plot3.out" 2>&1 || fail "loco plot of loco train's metrics: exit $?: $(cat "$W/plot3.out")"
[ "$(png_size "$W/train.png")" = 800x600 ] || fail "train.png: expected an 800x600 PNG"
echo "ok: loco train's metrics (no outer records) drawn as an 800x600 PNG"

# 3. A malformed line: the file and the line number are named, exit 1, no PNG written.
head -n 6 "$W/out/peer-0/metrics.jsonl" >"$W/bad.jsonl"
echo '{"kind":"step","time":1795742445.698,"peer":"local","step":7,"loss":4.8,,"lr":0.0003}' >>"$W/bad.jsonl"
tail -n 3 "$W/out/peer-0/metrics.jsonl" >>"$W/bad.jsonl"
"$BIN" plot "$W/out/peer-1/metrics.jsonl" "$W/bad.jsonl" --out "$W/bad.png" >"$W/bad.out" 2>&1
rc=$?
[ $rc -eq 1 ] || fail "a malformed line: exit $rc, expected 1"
grep -q "$W/bad.jsonl:7: malformed metrics record: column 73: expected a key" "$W/bad.out" ||
    fail "the malformed line is not named with its file and line: $(cat "$W/bad.out")"
[ -e "$W/bad.png" ] || [ -e "$W/bad.png.part" ] && fail "a PNG was written despite the malformed line"
# A record that is JSON but lacks a field the plot needs, and a truncated last line (no newline).
printf '%s\n{"kind":"eval","time":2.0,"peer":"local","step":3}\n' "$(head -n 1 "$W/train.jsonl")" >"$W/bad2.jsonl"
"$BIN" plot "$W/bad2.jsonl" --out "$W/bad2.png" >"$W/bad2.out" 2>&1
[ $? -eq 1 ] && grep -q "$W/bad2.jsonl:2: eval record without a numeric \"val_loss\"" "$W/bad2.out" ||
    fail "an eval record without val_loss: $(cat "$W/bad2.out")"
head -c 60 "$W/train.jsonl" >"$W/bad3.jsonl"
"$BIN" plot "$W/bad3.jsonl" --out "$W/bad3.png" >"$W/bad3.out" 2>&1
[ $? -eq 1 ] && grep -q "$W/bad3.jsonl:1: malformed.*no newline" "$W/bad3.out" || fail "a truncated last line: $(cat "$W/bad3.out")"
echo "ok: a malformed line: exit 1, '$(cat "$W/bad.out")', no PNG"
echo "all plot checks passed"
