#!/usr/bin/env bash
# `loco swarm` (issue 5): a 3-peer swarm of real `loco run` processes on 127.0.0.1 with a tiny model.
# Checks: exit 0; every peer's key (0600), config, log, metrics and checkpoint; the peers found each
# other; --set reached every peer; the summary's per-peer and averaged validation losses; a rerun
# without --resume starts fresh (new keys, new checkpoints) and one with --resume continues; a peer
# that fails is reported with its log's end (exit 1); Ctrl-C (SIGINT to the launcher) stops every
# peer cleanly (exit 130, a checkpoint each, no `loco run` left); usage errors exit 2; and, where
# Debian's fortunes are installed, the built-in config prepares its default corpus.
# Every process started here is killed by pid at the end, pass or fail.
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-$PWD/build/loco}
[ -x "$BIN" ] || { echo "no loco binary at $BIN (make first)"; exit 77; }
W=$(mktemp -d /tmp/loco_it_swarm.XXXXXX)
launcher=
# The launcher, then any peer of ours still alive (found by its config path, unique to this test).
cleanup() {
    [ -n "$launcher" ] && kill -9 "$launcher" 2>/dev/null
    for p in $(pgrep -f "$W/" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    for f in "$W"/*.out "$W"/out*/peer-*/log; do [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done
    exit 1
}
wait_for() { # seconds, description, command...
    local secs=$1 what=$2; shift 2
    local t0=$SECONDS
    while ! "$@"; do
        [ $((SECONDS - t0)) -ge "$secs" ] && fail "timed out after ${secs}s waiting for: $what"
        sleep 0.1
    done
}
orphans() { pgrep -f "run -c $W/" >/dev/null; }
num='[0-9]+\.[0-9]+'

# Deterministic text (as test_export.sh) → byte-level shards.
awk 'BEGIN {
    n = split("the of and a to in is you that it he was for on are as with his they at be this have from or one had by word but not what all were we when your can said there use", w, " ")
    x = 4242
    for (line = 0; line < 1500; line++) {
        x = (x * 16807) % 2147483647; k = 4 + x % 9; s = ""
        for (j = 0; j < k; j++) { x = (x * 16807) % 2147483647; s = s (j ? " " : "") w[1 + x % n] }
        print s "."
    }
}' >"$W/text.txt"
timeout 30 "$BIN" data --input "$W/text.txt" --out "$W/data" >/dev/null || fail "loco data"

cat >"$W/base.ini" <<INI
[run]
name = swarm-test
[model]
layers = 1
d_model = 32
heads = 2
seq_len = 32
[train]
data = $W/data
batch = 4
steps = 100
warmup = 5
eval_every = 0
eval_batches = 8
checkpoint_every = 0
[gossip]
period_ms = 200
sync_interval_ms = 1000
INI

swarm() { # output file, arguments...
    local out=$1; shift
    timeout 90 "$BIN" swarm -c "$W/base.ini" --out "$W/out" "$@" >"$W/$out" 2>&1
}

# 1. Three peers, 2000 steps each (a second or two: long enough for every peer to meet the others);
# --set reaches every peer.
swarm run1.out --peers 3 --steps 2000 --set train.eval_every=500
rc=$?
[ $rc -eq 0 ] || fail "swarm: exit $rc, expected 0"
orphans && fail "a loco run process outlived the swarm"
for k in 0 1 2; do
    d="$W/out/peer-$k"
    for f in node.ini key key.pub log metrics.jsonl checkpoints/LATEST; do [ -s "$d/$f" ] || fail "peer $k has no $f"; done
    [ "$(stat -c %a "$d/key")" = 600 ] || fail "peer $k's key is not mode 0600"
    grep -q "^listen = tcp://127.0.0.1:[0-9]*$" "$d/node.ini" || fail "peer $k does not listen on 127.0.0.1"
    grep -q '"kind":"step".*"step":2000,' "$d/metrics.jsonl" || fail "peer $k did not reach step 2000"
    # --set train.eval_every=500 applied (the base file says 0): an eval record at step 500.
    grep -q '"kind":"eval".*"step":500,' "$d/metrics.jsonl" || fail "peer $k: --set train.eval_every=500 not applied"
    # Peers 1 and 2 name peer 0 as a seed; everyone joined at least one other peer.
    [ $k -eq 0 ] || grep -q "^seed = $(awk '/^id =/ {print $3}' "$W/out/peer-0/key.pub")@tcp://127.0.0.1:" "$d/node.ini" ||
        fail "peer $k does not have peer 0 as its seed"
    grep -q '"kind":"member".*"event":"joined"' "$d/metrics.jsonl" || fail "peer $k never saw another peer join"
done
for k in 0 1 2; do
    grep -Eq "^$k +[0-9a-f]{16} +2000 +$num +$num .* done$" "$W/run1.out" || fail "summary: no val_loss row for peer $k"
done
grep -Eq "^averaged model \(mean of 3 checkpoints\): val_loss $num$" "$W/run1.out" || fail "summary: no averaged val_loss"
mean=$(sed -nE 's/^averaged model .*val_loss ([0-9.]+)$/\1/p' "$W/run1.out")
awk -v l="$mean" 'BEGIN { exit !(l < 5.4) }' || fail "averaged val_loss $mean: the models did not train"
echo "ok: 3-peer swarm: exit 0, files of every peer, per-peer and averaged val_loss ($mean) in the summary"

# 2. A rerun without --resume starts fresh: new identities, only the new run's checkpoint.
id0=$(awk '/^id =/ {print $3}' "$W/out/peer-0/key.pub")
swarm run2.out --peers 3 --steps 20
rc=$?
[ $rc -eq 0 ] || fail "second swarm: exit $rc"
[ "$(awk '/^id =/ {print $3}' "$W/out/peer-0/key.pub")" != "$id0" ] || fail "a rerun without --resume kept peer 0's key"
for k in 0 1 2; do
    ls "$W/out/peer-$k/checkpoints" | grep -q 2000 && fail "a rerun without --resume kept peer $k's old checkpoint"
    grep -q '"step":2000' "$W/out/peer-$k/metrics.jsonl" && fail "a rerun without --resume kept peer $k's old metrics"
    grep -q "resumed" "$W/out/peer-$k/log" && fail "peer $k resumed in a fresh swarm"
    grep -Eq "^$k +[0-9a-f]{16} +20 +$num" "$W/run2.out" || fail "fresh swarm: peer $k did not run 20 steps"
done
echo "ok: a rerun without --resume started a fresh swarm (new keys, new checkpoints)"

# 3. --resume continues every peer from its checkpoint, with the same identity.
id0=$(awk '/^id =/ {print $3}' "$W/out/peer-0/key.pub")
swarm run3.out --peers 3 --steps 40 --resume
rc=$?
[ $rc -eq 0 ] || fail "resumed swarm: exit $rc"
[ "$(awk '/^id =/ {print $3}' "$W/out/peer-0/key.pub")" = "$id0" ] || fail "--resume changed peer 0's key"
for k in 0 1 2; do
    grep -q "resumed from .*ckpt_0*20.bin at step 20" "$W/out/peer-$k/log" || fail "peer $k did not resume from step 20"
    grep -Eq "^$k +[0-9a-f]{16} +40 +$num" "$W/run3.out" || fail "resumed swarm: peer $k did not end at step 40"
done
echo "ok: --resume continued every peer from its checkpoint"

# 4. A failing peer is reported with the end of its log: resuming under another model shape fails.
swarm run4.out --peers 3 --steps 60 --resume --set model.d_model=64
rc=$?
[ $rc -eq 1 ] || fail "swarm of failing peers: exit $rc, expected 1"
grep -q "peer 1 (.*) stopped with exit 1; the end of $W/out/peer-1/log:" "$W/run4.out" || fail "the failed peer is not reported"
grep -q "^    .*cannot resume" "$W/run4.out" || fail "the failed peer's log tail is not shown"
orphans && fail "a loco run process outlived a failed swarm"
echo "ok: a failed peer is reported with its log's end, exit 1"

# 5. Ctrl-C: SIGINT to the launcher stops every peer cleanly (checkpoint, leave), exit 130.
"$BIN" swarm -c "$W/base.ini" --out "$W/out5" --peers 3 --steps 100000000 >"$W/run5.out" 2>&1 &
launcher=$!
training() { for k in 0 1 2; do grep -q '"kind":"step"' "$W/out5/peer-$k/metrics.jsonl" 2>/dev/null || return 1; done; }
wait_for 30 "every peer trains" training
pgrep -f "run -c $W/out5/peer-" >"$W/peer_pids" || fail "no peer processes while training"
kill -INT "$launcher"
for _ in $(seq 300); do kill -0 "$launcher" 2>/dev/null || break; sleep 0.1; done
kill -0 "$launcher" 2>/dev/null && fail "the launcher did not stop within 30 s of SIGINT"
wait "$launcher"
rc=$?
launcher=
[ $rc -eq 130 ] || fail "swarm after SIGINT: exit $rc, expected 130"
for p in $(cat "$W/peer_pids"); do kill -0 "$p" 2>/dev/null && fail "peer process $p is still running after Ctrl-C"; done
orphans && fail "a loco run process outlived the swarm after Ctrl-C"
for k in 0 1 2; do
    grep -q "interrupted at step" "$W/out5/peer-$k/log" || fail "peer $k did not stop cleanly"
    [ -s "$W/out5/peer-$k/checkpoints/LATEST" ] || fail "peer $k wrote no checkpoint when stopped"
    grep -q "run: stopped" "$W/out5/peer-$k/log" || fail "peer $k did not leave cleanly"
    grep -Eq "^$k +[0-9a-f]{16} +[0-9]+ +$num .* done$" "$W/run5.out" || fail "no summary row for peer $k after Ctrl-C"
done
grep -q "stopped before the end" "$W/run5.out" || fail "the summary does not say the swarm was stopped"
echo "ok: SIGINT stopped all $(wc -l <"$W/peer_pids") peers cleanly (exit 130, a checkpoint each, none left running)"

# 6. Usage and config errors: exit 2 before anything starts.
"$BIN" swarm --peers 0 >"$W/err1.out" 2>&1; rc=$?
[ $rc -eq 2 ] || fail "--peers 0: exit $rc, expected 2"
"$BIN" swarm -c "$W/base.ini" --out "$W/out2" --set model.heads=3 >"$W/err2.out" 2>&1; rc=$?
[ $rc -eq 2 ] || fail "--set model.heads=3: exit $rc, expected 2"
grep -q "heads" "$W/err2.out" || fail "the config error does not name the key"
[ -e "$W/out2/peer-0" ] && fail "a config error still wrote peer directories"
echo "ok: usage and config errors exit 2 before starting anything"

# 7. The built-in config (no -c) prepares the default corpus from Debian's fortunes, in ./build.
if [ -d /usr/share/games/fortunes ]; then
    mkdir "$W/cwd"
    (cd "$W/cwd" && timeout 90 "$BIN" swarm --peers 2 --steps 10 --set model.layers=1 --set model.d_model=32 \
        --set model.seq_len=32 --set train.eval_batches=4 >"$W/run7.out" 2>&1)
    rc=$?
    [ $rc -eq 0 ] || fail "swarm with the built-in config: exit $rc"
    grep -q "preparing the default corpus" "$W/run7.out" || fail "the default corpus was not prepared"
    [ -s "$W/cwd/build/data/fortunes/train_000.bin" ] || fail "no default corpus in build/data/fortunes"
    grep -q "^algorithm = noloco" "$W/cwd/build/swarm/peer-1/node.ini" || fail "the built-in config is not NoLoCo"
    grep -Eq "^averaged model \(mean of 2 checkpoints\): val_loss $num$" "$W/run7.out" || fail "built-in config: no averaged val_loss"
    echo "ok: the built-in config prepared build/data/fortunes and ran a NoLoCo swarm in build/swarm"
else
    echo "note: /usr/share/games/fortunes is missing; the built-in config's corpus preparation is not checked"
fi
echo "all swarm checks passed"
