#!/usr/bin/env bash
# Churn (issue 7): a swarm of `loco run` peers on 127.0.0.1 where peers are killed with -9 every few
# rounds, some restarted (same key and checkpoint directory: they resume and catch up), and new ones
# join mid-run (they catch up and take the swarm's schedule position). Checks:
#  - the run completes: every peer still running exits 0 within the limit (no hang);
#  - the final anchors' validation loss (mean over the survivors) is within 5% of a run without churn
#    with the same seed and data;
#  - the survivors agree on membership at the end: each one's last view (the "view" record written as
#    it leaves) holds exactly the survivors — the killed peers that stayed dead are gone, the restarted
#    and new ones are in — except survivors that had already announced their leave.
# ALGO (diloco | noloco, default diloco), N (initial peers, default 6) and ROUNDS (default 30) select the
# scenario; long_churn.sh runs NoLoCo with 8 peers and more kills. Assertions are on events and
# records; the timeouts only catch hangs.
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-$PWD/build/loco}
PY=${PYTHON:-/usr/bin/python3}
ALGO=${ALGO:-diloco}
N=${N:-6}
ROUNDS=${ROUNDS:-30}
H=10
[ -x "$BIN" ] || { echo "no loco binary at $BIN"; exit 77; }
W=$(mktemp -d /tmp/loco_it_churn.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$W"/churn/log*; do echo "--- $f"; grep -v "INFO  train: step" "$f" | tail -n 15; done; exit 1; }

. tests/integration/lib_swarm.sh
corpus_letters 4242 4000 "$W/text.txt"
timeout 30 "$BIN" data --input "$W/text.txt" --out "$W/data" >/dev/null || fail "loco data"
cat >"$W/base.ini" <<INI
[run]
name = churn-test
[model]
layers = 2
d_model = 64
heads = 2
seq_len = 64
[train]
data = $W/data
batch = 8
steps = $((ROUNDS * H))
lr = 1e-3
lr_min = 1e-4
warmup = 20
threads = 1
eval_every = $((ROUNDS * H / 2))
eval_batches = 8
checkpoint_every = 20
[outer]
algorithm = $ALGO
inner_steps = $H
deadline_ms = 8000
[gossip]
period_ms = 300
INI
DELAY=40 # ms per inner step (test hook): rounds long enough to kill peers in the middle of them

rounds_of() { cat "$W/churn/m$1.jsonl" 2>/dev/null | grep -c '"kind":"outer"'; }
# start_peer I [KEY]: peer I of the churn swarm (new key unless it has one), seeded by peer 1.
start_peer() {
    local i=$1
    if [ ! -f "$W/churn/k$i" ]; then
        "$BIN" keygen --out "$W/churn/k$i" >/dev/null || fail "keygen"
        ID[churn$i]=$(awk '/^id =/ {print $3}' "$W/churn/k$i.pub")
        P[churn$i]=$(port)
    fi
    env LOCO_TEST_STEP_DELAY_MS=$DELAY "$BIN" run -c "$W/base.ini" --set node.key="$W/churn/k$i" \
        --set net.listen="tcp://127.0.0.1:${P[churn$i]}" --set train.checkpoint_dir="$W/churn/ck$i" \
        --set node.peer_cache="$W/churn/cache$i" --set train.metrics="$W/churn/m$i.jsonl" \
        --set "bootstrap.seed=${ID[churn1]}@tcp://127.0.0.1:${P[churn1]}" >>"$W/churn/log$i" 2>&1 &
    PID[churn$i]=$!
    pids+=("$!")
}
kill_peer() { { kill -9 "${PID[churn$1]}"; wait "${PID[churn$1]}"; } 2>/dev/null; echo "  round $(rounds_of 1): killed peer $1"; }
at_round() { # wait until peer 1 completed R rounds
    local t0=$SECONDS
    until [ "$(rounds_of 1)" -ge "$1" ]; do
        [ $((SECONDS - t0)) -ge 120 ] && fail "the swarm stalled before round $1 ($(rounds_of 1) done)"
        sleep 0.1
    done
}

# --- the run without churn (same seed, data, peers) --------------------------------------------------
ENVS=()
for i in $(seq "$N"); do ENVS[$i]="LOCO_TEST_STEP_DELAY_MS=$DELAY"; done
swarm calm "$N"
ENVS=()
wait_all calm "$N" 300

# --- the same run with churn --------------------------------------------------------------------------
mkdir -p "$W/churn"
for i in $(seq "$N"); do
    "$BIN" keygen --out "$W/churn/k$i" >/dev/null || fail "keygen"
    ID[churn$i]=$(awk '/^id =/ {print $3}' "$W/churn/k$i.pub")
    P[churn$i]=$(port)
done
for i in $(seq "$N"); do start_peer "$i"; done
dead=() # killed and never restarted
# A schedule over the run's rounds (peer 1, the seed, stays): kill, restart, add, kill.
step=$((ROUNDS / 8))
at_round $((step * 1)); kill_peer 3
at_round $((step * 2)); start_peer 3; echo "  round $(rounds_of 1): restarted peer 3"
at_round $((step * 3)); kill_peer 5; dead+=(5)
at_round $((step * 4)); start_peer $((N + 1)); echo "  round $(rounds_of 1): added peer $((N + 1))"
at_round $((step * 5)); kill_peer 4
at_round $((step * 5 + 1)); kill_peer 2
at_round $((step * 6)); start_peer 4; echo "  round $(rounds_of 1): restarted peer 4"
if [ "$N" -ge 8 ]; then
    at_round $((step * 6 + 1)); kill_peer 7; dead+=(7)
    at_round $((step * 6 + 2)); start_peer $((N + 2)); echo "  round $(rounds_of 1): added peer $((N + 2))"
fi
dead+=(2)
alive=()
for i in $(seq $((N + 2))); do
    [ -f "$W/churn/k$i" ] || continue
    skip=0
    for d in "${dead[@]}"; do [ "$d" = "$i" ] && skip=1; done
    [ $skip = 0 ] && alive+=("$i")
done
wait_peers churn 300 "${alive[@]}" # 300 s after the last churn event
echo "  survivors: ${alive[*]}; killed for good: ${dead[*]}"

"$PY" - "$W" "$N" "${alive[*]}" "${dead[*]}" <<'PY' || fail "churn checks (above)"
import json, sys, glob, re, datetime
W, N = sys.argv[1], int(sys.argv[2])
alive, dead = [int(x) for x in sys.argv[3].split()], [int(x) for x in sys.argv[4].split()]
def recs(path):
    return [json.loads(l) for l in open(path)]
def final_anchor_loss(path):
    ev = [r["val_loss"] for r in recs(path) if r["kind"] == "eval" and r.get("anchor")]
    return ev[-1] if ev else None
calm = [final_anchor_loss(f) for f in sorted(glob.glob(f"{W}/calm/m*.jsonl"))]
churn = [final_anchor_loss(f"{W}/churn/m{i}.jsonl") for i in alive]
ok = True
if None in calm or None in churn:
    print("  not ok: a peer wrote no final anchor evaluation", calm, churn); sys.exit(1)
mc, mh = sum(calm) / len(calm), sum(churn) / len(churn)
print(f"  final anchor val loss: no churn {mc:.4f} (over {len(calm)} peers), churn {mh:.4f} (over {len(churn)} survivors), "
      f"ratio {mh / mc:.3f}")
if mh > 1.05 * mc:
    print("  not ok: more than 5% worse than without churn"); ok = False
# Membership at the end.
short = {}
for i in range(1, N + 3):
    try: short[i] = open(f"{W}/churn/k{i}.pub").read().split("id = ")[1][:16]
    except OSError: pass
def ts(line):
    return datetime.datetime.fromisoformat(line[:23]).timestamp()
left_at = {}
for i in alive:
    for l in open(f"{W}/churn/log{i}"):
        if "run: leaving the swarm" in l: left_at[i] = ts(l)
for i in alive:
    views = [r for r in recs(f"{W}/churn/m{i}.jsonl") if r["kind"] == "view"]
    if not views:
        print(f"  not ok: peer {i} wrote no view record"); ok = False; continue
    v = views[-1]
    vt = v["time"]
    seen = set(v["members"])
    want = {short[j] for j in alive if j == i or left_at.get(j, 1e18) > vt} # not yet left when i looked
    extra = seen - {short[j] for j in alive}
    missing = want - seen
    if extra or missing:
        names = {s: j for j, s in short.items()}
        print(f"  not ok: peer {i}'s view at the end has extra {[names.get(x, x) for x in extra]} "
              f"and lacks {[names.get(x, x) for x in missing]}"); ok = False
    for d in dead:
        if short[d] in seen: print(f"  not ok: peer {i} still sees dead peer {d}"); ok = False
print(f"  views at the end: {len(alive)} survivors agree (dead peers {dead} gone)" if ok else "  views disagree")
# The restarted and added peers took part in rounds with the others after they came (back).
for j in alive:
    outer = [r for r in recs(f"{W}/churn/m{j}.jsonl") if r["kind"] == "outer"]
    joint = [r for r in outer if r["contributors"] >= 2]
    if len(joint) < 2:
        print(f"  not ok: peer {j} took only {len(joint)} outer steps with others"); ok = False
sys.exit(0 if ok else 1)
PY
for j in $((N + 1)); do
    grep -q "taking the swarm's schedule position" "$W/churn/log$j" || fail "the added peer $j did not take the swarm's schedule position"
done
echo "ok: $ALGO, $N peers with kills, restarts and a joiner: the run completed, loss within 5% of no churn, views agree"
