#!/usr/bin/env bash
# `loco status` against a running `loco run` (issue 10), 2 peers training a tiny model on 127.0.0.1:
#  1. the human summary names the peer, the run, the round, the members, the bytes and the newest
#     checkpoint; --json carries the same facts with plausible values (checked field by field);
#  2. with no node running for a config: a clear error naming the config and the socket, exit 1;
#  3. the control socket refuses another user (run as root only: the client runs as `nobody`):
#     first by the 0700 directory, then — with the modes loosened on purpose — by the node's
#     SO_PEERCRED check, which the node logs.
# Every process is killed by pid at the end.
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-$PWD/build/loco}
PY=${PYTHON:-/usr/bin/python3}
[ -x "$BIN" ] || { echo "no loco binary at $BIN"; exit 77; }
W=$(mktemp -d /tmp/loco_it_status.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$W"/*/log*; do echo "--- $f"; grep -v "INFO  train: step" "$f" | tail -n 12; done; exit 1; }
. tests/integration/lib_swarm.sh
corpus_letters 7 2000 "$W/text.txt"
timeout 30 "$BIN" data --input "$W/text.txt" --out "$W/data" >/dev/null || fail "loco data"
cat >"$W/base.ini" <<INI
[run]
name = status-test
[model]
layers = 1
d_model = 32
heads = 2
seq_len = 32
[train]
data = $W/data
batch = 4
steps = 100000
threads = 1
eval_every = 20
eval_batches = 2
checkpoint_every = 20
[outer]
inner_steps = 5
deadline_ms = 8000
[gossip]
period_ms = 300
INI

# Slowed down (test hook) so the peers run until the end of the test without taking the CPU.
ENVS[1]="LOCO_TEST_STEP_DELAY_MS=20"
ENVS[2]="LOCO_TEST_STEP_DELAY_MS=20"
swarm st 2
ENVS=()
CFG=(-c "$W/base.ini" --set train.checkpoint_dir="$W/st/ck1")
SOCK="$W/st/ck1/control/loco.sock"
ready() { [ "$(cat "$W/st/m1.jsonl" 2>/dev/null | grep -c '"kind":"outer"')" -ge 2 ] && [ -s "$W/st/ck1/LATEST" ] &&
          timeout 20 "$BIN" status "${CFG[@]}" 2>/dev/null | grep -q "members 2 alive"; }
wait_for 90 "two outer steps, a checkpoint, and peer 1 seeing both members" ready

# --- 1. human and JSON --------------------------------------------------------------------------
out=$(timeout 20 "$BIN" status "${CFG[@]}") || fail "loco status exited $? against a running node: $out"
echo "$out" | sed 's/^/  | /'
for want in "peer ${ID[st1]:0:16}" "run 'status-test' (noloco)" "pid ${PID[st1]}" "outer round " "members 2 alive" \
            "sent " "checkpoint step " "catch-up idle"; do
    grep -qF "$want" <<<"$out" || fail "the summary lacks '$want'"
done
timeout 20 "$BIN" status "${CFG[@]}" --json >"$W/status.json" || fail "loco status --json exited $?"
"$PY" - "$W/status.json" "${ID[st1]:0:16}" "${ID[st2]:0:16}" "${PID[st1]}" "$W/st/ck1" <<'PY' || fail "status --json checks (above)"
import json, math, sys
path, me, other, pid, ck = sys.argv[1:]
s = json.load(open(path))
checks = {
    "peer is this node's id prefix": s["peer"] == me,
    "run and algorithm": s["run"] == "status-test" and s["algorithm"] == "noloco",
    "pid": s["pid"] == int(pid),
    "step > 0 and below steps": 0 < s["step"] < s["steps"] == 100000,
    "loss finite, in (0, 10)": isinstance(s["loss"], float) and math.isfinite(s["loss"]) and 0 < s["loss"] < 10,
    "tokens/s > 0": s["tokens_per_s"] > 0,
    "utilisation in (0, 1]": 0 < s["utilisation"] <= 1,
    "round >= 1 after two outer steps": s["round"] >= 1 and s["outer_steps"] >= 2,
    "group is the other peer": s["group"] == [other] and s["group_size"] == 2,
    "members: 2 alive": s["members"] == {"alive": 2, "suspect": 0, "dead": 0, "left": 0},
    "outer bytes sent and received": s["bytes_sent"]["outer"] > 0 and s["bytes_received"]["outer"] > 0,
    "gossip bytes": s["bytes_sent"]["gossip"] > 0,
    "checkpoint in its directory, recent": s["checkpoint"]["path"].startswith(ck + "/ckpt_")
        and s["checkpoint"]["step"] > 0 and 0 <= s["checkpoint"]["age_s"] < 120,
    "catch-up idle": s["catchup"]["state"] == "idle",
    "no metrics endpoint": s["metrics_url"] is None,
}
for k, v in checks.items():
    if not v: print("  not ok:", k)
print(f"  json: step {s['step']}, loss {s['loss']:.3f}, round {s['round']}, sent {s['bytes_sent']}")
sys.exit(0 if all(checks.values()) else 1)
PY
echo "ok 1: loco status (summary and --json) describes the running node"

# --- 2. no node -------------------------------------------------------------------------------------
timeout 20 "$BIN" status -c "$W/base.ini" --set train.checkpoint_dir="$W/nothing" >"$W/none.out" 2>&1
rc=$?
[ $rc -eq 1 ] || fail "status with no node: exit $rc (want 1): $(cat "$W/none.out")"
grep -qF "no loco node is running for $W/base.ini: $W/nothing/control/loco.sock does not exist" "$W/none.out" \
    || fail "unclear error with no node: $(cat "$W/none.out")"
[ ! -e "$W/nothing" ] || fail "loco status created the checkpoint directory"
echo "ok 2: no node running: '$(cat "$W/none.out")'"

# --- 3. another user ------------------------------------------------------------------------------
if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null; then
    echo "ok 3: skipped (needs root and setpriv to run the client as nobody)"
    exit 0
fi
chmod 755 "$W" "$W/st"
chmod 644 "$W/base.ini"
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups timeout 20 "$BIN" status "${CFG[@]}" "$@"; }
as_nobody >"$W/nobody.out" 2>&1
rc=$?
[ $rc -eq 1 ] || fail "nobody: exit $rc (want 1): $(cat "$W/nobody.out")"
grep -q "permission denied" "$W/nobody.out" || fail "nobody was not kept out by the modes: $(cat "$W/nobody.out")"
echo "  nobody, modes as made: $(cat "$W/nobody.out")"
# Loosen the modes by hand: the node's own uid check still refuses.
chmod 755 "$W/st/ck1/control"
chmod 666 "$SOCK"
as_nobody --json >"$W/nobody2.out" 2>&1
rc=$?
chmod 700 "$W/st/ck1/control"
chmod 600 "$SOCK"
[ $rc -eq 1 ] || fail "nobody with loosened modes: exit $rc (want 1): $(cat "$W/nobody2.out")"
grep -q "refused: this node runs as uid 0" "$W/nobody2.out" || fail "no refusal from the node: $(cat "$W/nobody2.out")"
grep -q '"peer"' "$W/nobody2.out" && fail "the node answered another user"
grep -q "refused a request from uid 65534" "$W/st/log1" || fail "the node did not log the refused request"
echo "  nobody, modes loosened: $(cat "$W/nobody2.out")"
timeout 20 "$BIN" status "${CFG[@]}" >/dev/null || fail "the owner is no longer answered"
echo "ok 3: the control socket refuses another user (directory mode, then the node's SO_PEERCRED check)"
