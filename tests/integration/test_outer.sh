#!/usr/bin/env bash
# Outer steps across live `loco run` swarms on 127.0.0.1 (issue 5), each scenario with a tiny model:
#  1. NoLoCo, 4 peers: validation loss falls, every peer takes outer steps in groups of 2, identical
#     initial parameters (logged hash), bytes per round as the arithmetic says (2 tensors × 4 B/param).
#  2. DiLoCo, 4 peers, int8 + error feedback: after every round that all members completed, the
#     anchor hash is the same on every peer.
#  3. NoLoCo anchor spread: final anchors of the 4 peers of (1) are much closer than those of 4
#     peers that never communicate (no seeds), same steps.
#  4. Pacing: 2 peers, one 3× slower per step (test hook): both keep taking outer steps together,
#     the fast one always runs H, the slow one ends its rounds early, no round is short.
#  5. Differing views: peer A denies peer C (so A's view lacks C, C cannot reach A), B sees both:
#     every peer still completes its rounds and exits 0.
#  6. kill -9 of one DiLoCo peer mid-run: the others keep taking outer steps and finish; their logs
#     name the rounds that went short.
#  8. Checkpoints written in the background at round boundaries; a peer killed with -9 and restarted
#     resumes from its newest one, outer round included, and goes on with the swarm.
#  7. A hostile peer sending 1000x pseudo-gradients: rejected by norm with its id logged, refused
#     after three strikes, and the others' validation loss still falls.
# Asserts on counters and events from the logs and metrics, never on durations (the timeouts only
# catch hangs). Every process is killed by pid at the end.
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-$PWD/build/loco}
PY=${PYTHON:-/usr/bin/python3}
[ -x "$BIN" ] || { echo "no loco binary at $BIN"; exit 77; }
"$PY" -c 'import numpy' 2>/dev/null || { echo "skipped: $PY has no numpy"; exit 77; }
W=$(mktemp -d /tmp/loco_it_outer.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$W"/*/log*; do echo "--- $f"; grep -v "INFO  train: step" "$f" | tail -n 12; done; exit 1; }

. tests/integration/lib_swarm.sh
awk 'BEGIN {
    n = split("the of and a to in is you that it he was for on are as with his they at be this have from or one had by word but not what all were we when your can said there use", w, " ")
    x = 777
    for (line = 0; line < 3000; line++) {
        x = (x * 16807) % 2147483647; k = 4 + x % 9; s = ""
        for (j = 0; j < k; j++) { x = (x * 16807) % 2147483647; s = s (j ? " " : "") w[1 + x % n] }
        print s "."
    }
}' >"$W/text.txt"
timeout 30 "$BIN" data --input "$W/text.txt" --out "$W/data" >/dev/null || fail "loco data"
cat >"$W/base.ini" <<INI
[run]
name = outer-test
[model]
layers = 2
d_model = 64
heads = 2
seq_len = 64
[train]
data = $W/data
batch = 8
steps = 120
lr = 1e-3
lr_min = 1e-4
warmup = 20
threads = 1
eval_every = 30
eval_batches = 4
checkpoint_every = 0
[outer]
inner_steps = 10
deadline_ms = 8000
[gossip]
period_ms = 300
INI


# --- 1 + 2 run together (8 processes on 2 cores) -----------------------------------------------
swarm noloco 4
swarm diloco 4 --set outer.algorithm=diloco --set outer.codec=int8 --set run.name=outer-test-d
wait_all noloco 4 150
wait_all diloco 4 150

"$PY" - "$W" <<'PY' || fail "outer-step checks (above)"
import json, sys, glob, collections
W = sys.argv[1]
def load(d):
    peers = {}
    for f in sorted(glob.glob(f"{W}/{d}/m*.jsonl")):
        peers[f] = [json.loads(l) for l in open(f)]
    return peers
ok = True
def check(cond, msg):
    global ok
    if not cond:
        print("  not ok:", msg); ok = False

# 1. NoLoCo
nol = load("noloco")
n_params = None
for f, recs in nol.items():
    outer = [r for r in recs if r["kind"] == "outer"]
    evals = [r["val_loss"] for r in recs if r["kind"] == "eval"]
    check(len(outer) >= 10, f"{f}: {len(outer)} outer steps (want >= 10)")
    check(len(evals) >= 2 and evals[-1] < evals[0] - 0.3, f"{f}: validation loss {evals} does not fall")
    pairs = [r for r in outer if r["contributors"] == 2]
    check(len(pairs) >= len(outer) // 2, f"{f}: only {len(pairs)} of {len(outer)} rounds in a full group of 2")
    print(f"  noloco {f.split('/')[-1]}: {len(outer)} outer steps, {len(pairs)} in pairs, val loss {evals[0]:.3f} -> {evals[-1]:.3f}")
    sent = [r["bytes_sent"] for r in pairs if r["steps"] == 10]
    if sent:
        per = min(sent)
        print(f"    bytes sent per paired round: {per}")
        n_params = per
check(ok, "noloco")

# 2. DiLoCo: identical anchors after every round, among the members that completed it together
# (the same round members R, listed in "group")
dil = load("diloco")
by_round = collections.defaultdict(lambda: collections.defaultdict(dict))
for f, recs in dil.items():
    for r in recs:
        if r["kind"] == "outer" and not r["short"] and r["result"] == "mean":
            by_round[r["round"]][tuple(r["group"])][f] = r["anchor"]
full = 0
for t, groups in sorted(by_round.items()):
    for g, m in groups.items():
        check(len(set(m.values())) == 1, f"diloco round {t}: members of {g} ended with different anchors: {m}")
        if len(g) == 4 and len(m) == 4 and len(set(m.values())) == 1: full += 1
check(full >= 6, f"diloco: only {full} rounds completed by all 4 peers with one anchor")
# The run ends together: the round in which the first member reaches [train] steps is everyone's last,
# so all four end with the same anchor.
finals = {f: [r for r in recs if r["kind"] == "outer"][-1] for f, recs in dil.items()}
check(len({(r["round"], r["anchor"]) for r in finals.values()}) == 1,
      f"diloco: the peers ended with different final anchors: {[(r['round'], r['anchor']) for r in finals.values()]}")
print(f"  diloco: {len(by_round)} rounds, {full} completed by all 4 with byte-identical anchors")
sys.exit(0 if ok else 1)
PY
grep -q "initial parameters sha256" "$W/noloco/log1" || fail "no initial parameter hash logged"
[ "$(grep -ho 'initial parameters sha256 [0-9a-f]*' "$W"/noloco/log* | sort -u | wc -l)" = 1 ] || fail "peers started from different weights"
echo "ok 1-2: NoLoCo and DiLoCo 4-peer swarms"

# --- 3. Anchor spread against a no-communication control -------------------------------------
NOSEED=1 swarm alone 4
wait_all alone 4 150
for d in noloco alone; do
    for i in 1 2 3 4; do
        "$BIN" export --checkpoint "$W/$d/ck$i" --out "$W/$d/a$i.safetensors" >/dev/null 2>&1 || fail "export $d $i"
    done
done
"$PY" - "$W" <<'PY' || fail "anchor spread"
import json, struct, sys, itertools
import numpy as np
W = sys.argv[1]
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); base = 8 + n
    return np.concatenate([np.frombuffer(b[base + v["data_offsets"][0]: base + v["data_offsets"][1]], dtype=np.float32)
                           for k, v in sorted(h.items()) if k != "__metadata__"])
def spread(d):
    a = [load(f"{W}/{d}/a{i}.safetensors") for i in range(1, 5)]
    return np.mean([np.linalg.norm(x - y) for x, y in itertools.combinations(a, 2)])
s_n, s_a = spread("noloco"), spread("alone")
print(f"  final anchors, mean pairwise distance: NoLoCo {s_n:.4f}, never communicating {s_a:.4f} (ratio {s_n / s_a:.3f})")
sys.exit(0 if s_n < 0.3 * s_a else 1)
PY
echo "ok 3: NoLoCo anchor spread well below the no-communication control"

# --- 4. Pacing: one peer 3x slower ----------------------------------------------------------------
ENVS[2]="LOCO_TEST_STEP_DELAY_MS=40"
ENVS[1]="LOCO_TEST_STEP_DELAY_MS=13"
swarm pace 2 --set train.steps=100
ENVS=()
wait_all pace 2 150
"$PY" - "$W" <<'PY' || fail "pacing"
import json, sys
W = sys.argv[1]
fast = [json.loads(l) for l in open(f"{W}/pace/m1.jsonl") if '"outer"' in l]
slow = [json.loads(l) for l in open(f"{W}/pace/m2.jsonl") if '"outer"' in l]
pf = [r for r in fast if r["contributors"] == 2]
ps = [r for r in slow if r["contributors"] == 2]
early = [r for r in ps if r["early"]]
short = [r for r in fast + slow if r["short"]]
print(f"  fast peer: {len(fast)} outer steps ({len(pf)} paired), steps per round {[r['steps'] for r in fast]}")
print(f"  slow peer: {len(slow)} outer steps ({len(ps)} paired), steps per round {[r['steps'] for r in slow]}, {len(early)} ended early")
ok = len(pf) >= 4 and len(ps) >= 4 and len(early) >= len(ps) // 2 and not short
ok = ok and all(r["steps"] == 10 for r in pf if not r["early"]) and len(slow) > 0
# neither waits beyond the pacing rule: the slow peer never ran a full H while paired
ok = ok and sum(r["steps"] for r in ps) < sum(r["steps"] for r in pf)
sys.exit(0 if ok else 1)
PY
echo "ok 4: 1x and 3x peers keep taking outer steps together"

# --- 5. Differing views ---------------------------------------------------------------------------
mkdir -p "$W/views"
for i in 1 2 3; do "$BIN" keygen --out "$W/views/pre$i" >/dev/null; done
C_ID=$(awk '/^id =/ {print $3}' "$W/views/pre3.pub")
EXTRA[1]="--set run.deny=$C_ID"
swarm views 3 --set train.steps=80
EXTRA=()
wait_all views 3 150
for i in 1 2 3; do
    n=$(grep -c '"kind":"outer"' "$W/views/m$i.jsonl")
    [ "$n" -ge 4 ] || fail "views: peer $i took only $n outer steps"
done
echo "ok 5: peers with different views complete their rounds"

# --- 6. kill -9 mid-run ---------------------------------------------------------------------------
ENVS=([1]="LOCO_TEST_STEP_DELAY_MS=20" [2]="LOCO_TEST_STEP_DELAY_MS=20" [3]="LOCO_TEST_STEP_DELAY_MS=20")
swarm kill 3 --set outer.algorithm=diloco --set run.name=outer-test-d --set train.steps=300
ENVS=()
t0=$SECONDS
# Kill once peer 3 has taken two outer steps with all three members.
until [ "$(cat "$W/kill/m3.jsonl" 2>/dev/null | grep -c '"contributors":3')" -ge 2 ]; do
    [ $((SECONDS - t0)) -ge 60 ] && fail "kill: no outer steps"
    sleep 0.2
done
{ kill -9 "${PID[kill3]}"; wait "${PID[kill3]}"; } 2>/dev/null
before=$(grep -c '"kind":"outer"' "$W/kill/m1.jsonl")
t0=$SECONDS
for i in 1 2; do
    while kill -0 "${PID[kill$i]}" 2>/dev/null; do
        [ $((SECONDS - t0)) -ge 150 ] && fail "kill: peer $i hangs after the kill"
        sleep 0.2
    done
    wait "${PID[kill$i]}" || fail "kill: peer $i exited with $?"
done
after=$(grep -c '"kind":"outer"' "$W/kill/m1.jsonl")
[ "$after" -ge $((before + 3)) ] || fail "kill: only $((after - before)) outer steps after the kill"
grep -q "short round" "$W/kill/log1" "$W/kill/log2" ||
    fail "kill: no log line names a short round"
echo "ok 6: after kill -9 the others keep taking outer steps ($before before, $after after)"
# --- 7. A hostile peer --------------------------------------------------------------------------------
# Peer 3 sends pseudo-gradients scaled 1000x (test hook). The others reject them by norm, name the
# sender, refuse it after three strikes, and keep training (their validation loss still falls).
ENVS[3]="LOCO_TEST_POISON=1000"
swarm hostile 3 --set outer.group_size=3 --set train.steps=150
ENVS=()
wait_all hostile 3 150
H3=$(awk '/^id =/ {print substr($3, 1, 16)}' "$W/hostile/k3.pub")
for i in 1 2; do
    grep -q "rejected the contribution of $H3: RMS per inner step" "$W/hostile/log$i" || fail "hostile: peer $i did not reject peer 3 by norm"
    grep -q "$H3: three rejected contributions within ten rounds" "$W/hostile/log$i" || fail "hostile: peer $i did not refuse peer 3"
done
"$PY" - "$W" <<'PY' || fail "hostile: training suffered"
import json, sys
W = sys.argv[1]
for i in (1, 2):
    recs = [json.loads(l) for l in open(f"{W}/hostile/m{i}.jsonl")]
    ev = [r["val_loss"] for r in recs if r["kind"] == "eval"]
    rej = [r for r in recs if r["kind"] == "reject"]
    print(f"  peer {i}: {len(rej)} rejections recorded, val loss {ev[0]:.3f} -> {ev[-1]:.3f}")
    if not (rej and ev[-1] < ev[0] - 0.3): sys.exit(1)
PY
echo "ok 7: a peer sending 1000x pseudo-gradients is rejected, named, refused; the others train on"
# --- 8. Checkpoints in the background, kill -9, restart: the peer resumes its outer state -------------
ENVS=([1]="LOCO_TEST_STEP_DELAY_MS=10" [2]="LOCO_TEST_STEP_DELAY_MS=10")
swarm resume 2 --set train.steps=240 --set train.checkpoint_every=40
t0=$SECONDS
until grep -q "written in the background" "$W/resume/log2" 2>/dev/null; do
    [ $((SECONDS - t0)) -ge 60 ] && fail "resume: no background checkpoint"
    sleep 0.2
done
{ kill -9 "${PID[resume2]}"; wait "${PID[resume2]}"; } 2>/dev/null
saved=$(grep -o "checkpoint step [0-9]*" "$W/resume/log2" | tail -1 | grep -o "[0-9]*$")
"$BIN" run -c "$W/base.ini" --set node.key="$W/resume/k2" --set net.listen="tcp://127.0.0.1:${P[resume2]}" \
    --set train.checkpoint_dir="$W/resume/ck2" --set node.peer_cache="$W/resume/cache2" \
    --set train.metrics="$W/resume/m2b.jsonl" --set train.steps=240 --set train.checkpoint_every=40 \
    >"$W/resume/log2b" 2>&1 &
PID[resume2]=$!
pids+=("$!")
wait_all resume 2 150
grep -q "resumed from .*ckpt_0*$saved.bin at step $saved" "$W/resume/log2b" || fail "resume: did not resume from step $saved"
grep -q "resuming at round [1-9]" "$W/resume/log2b" || fail "resume: the outer round was not restored"
n2=$(grep -c '"kind":"outer"' "$W/resume/m2b.jsonl")
[ "$n2" -ge 3 ] || fail "resume: only $n2 outer steps after the restart"
echo "ok 8: background checkpoints; after kill -9 the peer resumed at step $saved with its outer round and went on ($n2 outer steps)"
echo "all outer-step scenarios passed"
