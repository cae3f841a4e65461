#!/usr/bin/env bash
# kill -9 during checkpoint writes (issue 7): a `loco run` peer writes a checkpoint at every round
# boundary (checkpoint_every = 2, H = 2) on its background writer thread; it is killed with -9 at
# random moments KILLS times (10 here, 50 in `make test-long` with LOCO_LONG=1), restarting after
# each kill. After every kill the newest complete checkpoint must load and verify (`loco eval`), the
# restarted peer must resume from it (never from scratch), and leftover temp files must not pile up.
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-$PWD/build/loco}
PY=${PYTHON:-/usr/bin/python3}
[ -x "$BIN" ] || { echo "no loco binary at $BIN"; exit 77; }
KILLS=${KILLS:-10}
[ -n "${LOCO_LONG:-}" ] && KILLS=50
W=$(mktemp -d /tmp/loco_it_ckpt_kill.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; tail -n 20 "$W/log" 2>/dev/null; exit 1; }
. tests/integration/lib_swarm.sh
corpus_letters 9 2000 "$W/text.txt"
timeout 30 "$BIN" data --input "$W/text.txt" --out "$W/data" >/dev/null || fail "loco data"
"$BIN" keygen --out "$W/key" >/dev/null || fail keygen
cat >"$W/node.ini" <<INI
[run]
name = ckpt-kill
[node]
key = $W/key
peer_cache = $W/cache
[model]
layers = 2
d_model = 64
heads = 2
seq_len = 64
[train]
data = $W/data
batch = 8
steps = 100000
threads = 1
eval_every = 0
checkpoint_dir = $W/ck
checkpoint_every = 2
checkpoint_keep = 3
[outer]
inner_steps = 2
[net]
listen = tcp://127.0.0.1:0
reachable = yes
INI
last=0
for k in $(seq "$KILLS"); do
    before=$(cat "$W/log" 2>/dev/null | grep -c "written in the background")
    "$BIN" run -c "$W/node.ini" >>"$W/log" 2>&1 &
    pid=$!
    # Let this run write at least one checkpoint of its own, then kill it at a random moment.
    t0=$SECONDS
    until [ "$(grep -c "written in the background" "$W/log")" -gt "$before" ]; do
        [ $((SECONDS - t0)) -ge 60 ] && fail "run $k never wrote a checkpoint"
        kill -0 "$pid" 2>/dev/null || fail "run $k exited"
        sleep 0.02
    done
    sleep "0.$((RANDOM % 40))"
    kill -9 "$pid"
    wait "$pid" 2>/dev/null
    pid=
    out=$("$BIN" eval -c "$W/node.ini" --checkpoint "$W/ck" --batches 2 2>&1) || fail "after kill $k the newest checkpoint does not load: $out"
    tmps=$(find "$W/ck" -name '*.tmp' | wc -l)
    [ "$tmps" -le 2 ] || fail "after kill $k, $tmps temp files are left in the checkpoint directory"
done
resumes=$(grep -c "resumed from" "$W/log")
[ "$resumes" -ge $((KILLS - 1)) ] || fail "only $resumes of $((KILLS - 1)) restarts resumed from a checkpoint"
step=$(grep -o "resumed from .* at step [0-9]*" "$W/log" | tail -1 | grep -o "[0-9]*$")
echo "ok: $KILLS kills with -9 at random moments; every time the newest checkpoint loaded, every restart resumed (last at step $step), $(find "$W/ck" -name '*.tmp' | wc -l) temp files left"
