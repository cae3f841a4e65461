#!/usr/bin/env bash
# [train] active (issue 10, volunteer controls): two NoLoCo `loco run` peers; peer 2's daily window
# opens a few seconds after it starts (its clock is shifted by the LOCO_TEST_CLOCK_OFFSET_S test
# hook, so that the window's minute boundary comes soon). Checks:
#  - peer 2 stays in the swarm but does not train outside its window (no step record before the log
#    line that the window opened), and its member record says so: peer 1 never counts it as a
#    partner meanwhile (its outer records say expected 1), instead of waiting for it;
#  - once the window opens peer 2 trains and takes outer steps with peer 1 (contributors 2 on both);
#  - both exit 0; a bad window is a config error naming the key (exit 2);
#  - a peer waiting for its window stops cleanly on SIGTERM (checkpoint, leave, exit 0).
# Asserts on events from logs and metrics only. Every process is killed by pid at the end.
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-$PWD/build/loco}
PY=${PYTHON:-/usr/bin/python3}
[ -x "$BIN" ] || { echo "no loco binary at $BIN"; exit 77; }
W=$(mktemp -d /tmp/loco_it_window.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$W"/*/log*; do echo "--- $f"; grep -v "INFO  train: step" "$f" | tail -n 15; done; exit 1; }

. tests/integration/lib_swarm.sh
corpus_letters 4242 2000 "$W/text.txt"
timeout 30 "$BIN" data --input "$W/text.txt" --out "$W/data" >/dev/null || fail "loco data"
cat >"$W/base.ini" <<INI
[run]
name = window-test
[model]
layers = 1
d_model = 32
heads = 2
seq_len = 32
[train]
data = $W/data
batch = 4
steps = 500
warmup = 5
threads = 1
eval_every = 0
checkpoint_every = 0
[outer]
inner_steps = 20
deadline_ms = 5000
[gossip]
period_ms = 200
sync_interval_ms = 1000
INI

# A bad window stops any command before it starts, with the key named.
"$BIN" train -c "$W/base.ini" --set train.active=7pm-6am >"$W/bad.out" 2>&1
rc=$?
[ $rc -eq 2 ] || fail "a bad [train] active: exit $rc, expected 2"
grep -q "\[train\] active = '7pm-6am'" "$W/bad.out" || fail "the bad window's key is not named: $(cat "$W/bad.out")"
echo "ok: a bad window is a config error naming [train] active (exit 2)"

# Peer 2's window: a whole-minute start M at least 3 minutes from now, for 60 minutes; its clock is
# shifted so that it starts 8 s before M.
IFS=: read -r hh mm ss <<<"$(date +%H:%M:%S)"
now=$((10#$hh * 3600 + 10#$mm * 60 + 10#$ss))
m=$(( (now / 60 + 3) % 1440 )); e=$(( (m + 60) % 1440 ))
offset=$(( ((m * 60 - 8 - now) % 86400 + 86400) % 86400 ))
win=$(printf '%02d:%02d-%02d:%02d' $((m / 60)) $((m % 60)) $((e / 60)) $((e % 60)))
ENVS[1]="LOCO_TEST_STEP_DELAY_MS=25"
ENVS[2]="LOCO_TEST_STEP_DELAY_MS=25 LOCO_TEST_CLOCK_OFFSET_S=$offset"
EXTRA[2]="--set train.active=$win"
swarm w 2
wait_all w 2 150

grep -q "outside the active window $win (local time)" "$W/w/log2" || fail "peer 2 did not wait for its window $win"
grep -q "not training for 0m0[5-9]s, staying in the swarm" "$W/w/log2" || fail "peer 2 did not say how long it waits"
grep -q "member record: training again" "$W/w/log2" || fail "peer 2's record did not go from not training to training"
grep -q "the active window $win has opened: training again" "$W/w/log2" || fail "peer 2's window never opened"
"$PY" - "$W/w" <<'PY' || fail "window checks (above)"
import json, sys
d = sys.argv[1]
def load(i):
    return [json.loads(l) for l in open(f"{d}/m{i}.jsonl")]
m1, m2 = load(1), load(2)
steps2 = [r for r in m2 if r["kind"] == "step"]
assert steps2, "peer 2 never trained"
# Peer 2's first inner step came after its log said the window opened (log times are UTC ISO 8601).
import datetime
opened = [l for l in open(f"{d}/log2") if "has opened: training again" in l]
assert opened, "no window-opened line in peer 2's log"
t_log = datetime.datetime.strptime(opened[0].split()[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()
assert steps2[0]["time"] >= t_log - 0.002, f"peer 2 trained {t_log - steps2[0]['time']:.3f} s before its window opened"
# Peer 1's rounds before peer 2 trained must not have counted it as a partner.
t_open = steps2[0]["time"]
o1 = [r for r in m1 if r["kind"] == "outer"]
before = [r for r in o1 if r["time"] < t_open - 1.0]
after = [r for r in o1 if r["time"] > t_open]
assert before, f"peer 1 took no outer step while peer 2 was outside its window ({len(o1)} rounds in all)"
bad = [r["round"] for r in before if r["expected"] != 1 or r["short"]]
assert not bad, f"peer 1 expected peer 2 as a partner while it did not train (rounds {bad})"
together = [r for r in after if r["contributors"] == 2]
o2 = [r for r in m2 if r["kind"] == "outer" and r["contributors"] == 2]
assert together and o2, f"no outer step of the two peers together after the window opened (peer 1: {len(after)} rounds after)"
last1 = max(r["step"] for r in m1 if r["kind"] == "step")
last2 = max(r["step"] for r in steps2)
print(f"ok: peer 1 took {len(before)} outer steps alone (expected 1, none short) while peer 2 waited for its window; "
      f"then {len(together)} together; final steps {last1} and {last2}")
PY
# SIGTERM while waiting for the window: a clean stop (checkpoint, leave), exit 0.
far=$(printf '%02d:%02d-%02d:%02d' $(( (m + 120) % 1440 / 60 )) $(( (m + 120) % 60 )) $(( (m + 180) % 1440 / 60 )) $(( (m + 180) % 60 )))
"$BIN" keygen --out "$W/solo.key" >/dev/null || fail "keygen"
"$BIN" run -c "$W/base.ini" --set node.key="$W/solo.key" --set net.listen=tcp://127.0.0.1:0 --set train.active="$far" \
    --set train.checkpoint_dir="$W/solo-ck" --set node.peer_cache="$W/solo.cache" >"$W/w/log-solo" 2>&1 &
solo=$!
pids+=("$solo")
wait_for 30 "the solo peer waits for its window" grep -q "outside the active window $far" "$W/w/log-solo"
kill -TERM "$solo"
for _ in $(seq 100); do kill -0 "$solo" 2>/dev/null || break; sleep 0.1; done
kill -0 "$solo" 2>/dev/null && fail "a peer waiting for its window did not stop within 10 s of SIGTERM"
wait "$solo" || fail "a peer stopped while waiting for its window exited with $?"
grep -q "interrupted at step 0; writing a checkpoint" "$W/w/log-solo" || fail "the waiting peer wrote no checkpoint when stopped"
grep -q "run: stopped" "$W/w/log-solo" || fail "the waiting peer did not leave cleanly"
echo "ok: SIGTERM while outside the window: checkpoint, leave, exit 0"
echo "all window checks passed"
