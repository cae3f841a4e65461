#!/usr/bin/env bash
# Checkpoint stall of loco run (issue 7): at a round boundary after checkpoint_every inner steps the
# compute thread copies every checkpoint section into one buffer (s_ckpt_async, node/outer_run.c)
# and a writer thread saves it (temp file, fsync, rename, manifest). How long does the compute
# thread stop for it, against a step, and against the same checkpoint written blocking?
#
# One `loco run` peer alone (DiLoCo rounds of H inner steps, outer steps applied alone) with
# checkpoint_every = 2H: every other round boundary takes a checkpoint, so boundaries with and
# without one alternate within the same run (same load, same outer step). From the metrics JSONL
# `step` records (elapsed_s at the end of each step, tokens_per_s giving its compute time) the gap
# before each step is the time the compute thread spent outside trainer_step; the stall of a
# checkpoint = median gap at checkpoint boundaries − median gap at plain round boundaries. Also from
# the same run: the background write time ("written in the background in X s") and the compute time
# of the round that runs while the writer works against a round after a plain boundary (the writer
# thread competes for the cores). Blocking baseline, same model, same checkpoint directory's disk:
# `loco train` with checkpoint_every = TRAIN_EVERY saves synchronously in the step loop; its stall is
# measured the same way (gap after a checkpoint step − gap after the others).
#
#   tests/bench/bench_ckpt.sh     (H=20 ROUNDS=16 LAYERS=5 D_MODEL=256 BATCH=4 SEQ=32 THREADS=1
#                                  TRAIN_STEPS=60 TRAIN_EVERY=5 CKPT_DIR=/var/tmp; KEEP=1 keeps files)
#
# About 3-4 minutes on a loaded 2-core machine. No root needed.
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-$PWD/build/loco}
PY=${PYTHON:-/usr/bin/python3}
H=${H:-20}
ROUNDS=${ROUNDS:-16}
LAYERS=${LAYERS:-5}
D_MODEL=${D_MODEL:-256}
BATCH=${BATCH:-4}
SEQ=${SEQ:-32}
THREADS=${THREADS:-1}
TRAIN_STEPS=${TRAIN_STEPS:-60}
TRAIN_EVERY=${TRAIN_EVERY:-5}
[ -x "$BIN" ] || { echo "bench_ckpt: no $BIN"; exit 1; }
# Checkpoints go to a disk-backed directory (not a tmpfs /tmp), where fsync costs what it costs.
W=$(mktemp -d "${CKPT_DIR:-/var/tmp}/loco_bench_ckpt.XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; [ -n "${KEEP:-}" ] && echo "bench_ckpt: files kept in $W" || rm -rf "$W"; }
trap cleanup EXIT
if ! ls build/data/fortunes/*train*.bin >/dev/null 2>&1; then
    "$BIN" data --input /usr/share/games/fortunes --out build/data/fortunes >/dev/null || exit 1
fi
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" keygen --out "$W/k" >/dev/null || exit 1
common() { # steps, checkpoint_every, dir
    cat <<INI
[run]
name = bench-ckpt
[model]
layers = $LAYERS
d_model = $D_MODEL
heads = 4
seq_len = $SEQ
[train]
data = $PWD/build/data/fortunes
batch = $BATCH
steps = $1
threads = $THREADS
eval_every = 0
checkpoint_every = $2
checkpoint_keep = 2
checkpoint_dir = $3
metrics = $3.jsonl
INI
}
{ common $((H * ROUNDS)) $((2 * H)) "$W/run"
  printf '[node]\nkey = %s\npeer_cache = %s\n[net]\nlisten = tcp://127.0.0.1:%s\n' "$W/k" "$W/cache" "$PORT"
  printf '[outer]\nalgorithm = diloco\ninner_steps = %s\n' "$H"; } >"$W/run.ini"
common "$TRAIN_STEPS" "$TRAIN_EVERY" "$W/train" >"$W/train.ini"

# With root and perf: uprobes time the stall directly on the compute thread (the source line that
# calls s_ckpt_async and the next one, found in the debug info) and every ckpt_dir_save (the write,
# background in loco run, blocking in loco train). Without them, only the gap method above.
PERF=()
G=lbck$$
if [ "${USE_PERF:-1}" = 1 ] && [ "$(id -u)" = 0 ] && command -v perf >/dev/null; then
    L=$(perf probe -x "$BIN" -L outer_run_train 2>/dev/null | awk '/s_ckpt_async\(&writer/ {print $1; exit}')
    if [ -n "$L" ] && perf probe -q -x "$BIN" -a "$G:ck_in=outer_run_train:$L" -a "$G:ck_out=outer_run_train:$((L + 1))" \
        -a "$G:save_in=ckpt_dir_save" -a "$G:save_out=ckpt_dir_save%return" 2>"$W/perf_probe.err"; then
        PERF=(perf record -q -e "$G:*")
    else
        echo "bench_ckpt: perf probes unavailable ($(tail -n 1 "$W/perf_probe.err" 2>/dev/null)); gap method only"
    fi
fi
cleanup_probes() { [ ${#PERF[@]} -gt 0 ] && perf probe -q -d "$G:*" 2>/dev/null; }
trap 'cleanup_probes; cleanup' EXIT

"${PERF[@]}" ${PERF:+-o "$W/perf.run" --} "$BIN" run -c "$W/run.ini" >"$W/run.log" 2>&1 &
pid=$!
wait "$pid" || { echo "bench_ckpt: loco run failed:"; tail -n 20 "$W/run.log"; exit 1; }
pid=
"${PERF[@]}" ${PERF:+-o "$W/perf.train" --} "$BIN" train -c "$W/train.ini" >"$W/train.log" 2>&1 ||
    { echo "bench_ckpt: loco train failed:"; tail -n 20 "$W/train.log"; exit 1; }
for f in run train; do [ -f "$W/perf.$f" ] && perf script -i "$W/perf.$f" -F tid,time,event >"$W/perf.$f.txt" 2>/dev/null; done

"$PY" - "$W" "$H" "$TRAIN_EVERY" "$((BATCH * SEQ))" <<'PY'
import glob, json, os, re, statistics as st, sys
W, H, TE, tok = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
med = st.median

def steps(f):
    r = [json.loads(l) for l in open(f) if '"kind":"step"' in l]
    # end of step k, its compute time, the gap before it (time outside trainer_step since step k-1)
    out = {}
    for a, b in zip(r, r[1:]):
        c = tok / b["tokens_per_s"]
        out[b["step"]] = dict(end=b["elapsed_s"], comp=c, gap=b["elapsed_s"] - c - a["elapsed_s"], dt=b["elapsed_s"] - a["elapsed_s"])
    return out

def spread(x):
    return f"median {med(x) * 1e3:.1f} ms (min {min(x) * 1e3:.1f}, max {max(x) * 1e3:.1f}, n={len(x)})"

# loco run: boundaries are the first steps of rounds m >= 1 (step m*H + 1); a checkpoint is taken
# before step 2H*j + 1. The last boundary is left out (the run ends there).
s = steps(f"{W}/run.jsonl")
last = max(s)
bnd = [m * H + 1 for m in range(1, last // H) if m * H + 1 in s]
ck = [k for k in bnd if (k - 1) % (2 * H) == 0]
pl = [k for k in bnd if (k - 1) % (2 * H) != 0]
inner = [k for k in s if (k - 1) % H != 0]
g_ck = [s[k]["gap"] for k in ck]
g_pl = [s[k]["gap"] for k in pl]
g_in = [s[k]["gap"] for k in inner]
step_t = med([s[k]["dt"] for k in inner])
stall = med(g_ck) - med(g_pl)
# the round that runs while the writer works, against the round after a plain boundary
rc = lambda k: sum(s[j]["comp"] for j in range(k, k + H) if j in s)
r_ck = [rc(k) for k in ck if k + H - 1 in s]
r_pl = [rc(k) for k in pl if k + H - 1 in s]
log = open(f"{W}/run.log").read()
bg = [float(x) for x in re.findall(r"written in the background in ([0-9.]+)s", log)]
ckf = sorted(glob.glob(f"{W}/run/*.bin"))
size = os.path.getsize(ckf[-1]) if ckf else 0
params = re.search(r"(\d+) parameters", log)

t = steps(f"{W}/train.jsonl")
tk = [k for k in t if (k - 1) % TE == 0]   # the gap before step k holds the save after step k - 1
to = [k for k in t if (k - 1) % TE != 0]
blocking = med([t[k]["gap"] for k in tk]) - med([t[k]["gap"] for k in to])
tf = sorted(glob.glob(f"{W}/train/*.bin"))
tsize = os.path.getsize(tf[-1]) if tf else 0
every = 2 * H

def ratio(a, b, fmt="{:.0f}x"):
    return fmt.format(a / b) if b > 0 else "n/a"

# uprobes (root + perf): durations on the thread that ran them
def probes(f):
    try:
        lines = open(f).read().split("\n")
    except OSError:
        return {}
    out, begun = {}, {}
    for l in lines:
        m = re.match(r"\s*(\d+)\s+([0-9.]+):\s+\S+:(ck|save)_(in|out)", l)
        if not m: continue
        tid, tm, kind, edge = m.group(1), float(m.group(2)), m.group(3), m.group(4)
        if edge == "in": begun[(tid, kind)] = tm
        elif (tid, kind) in begun: out.setdefault(kind, []).append(tm - begun.pop((tid, kind)))
    return out
pr, pt = probes(f"{W}/perf.run.txt"), probes(f"{W}/perf.train.txt")

# Same-run memory floor for the snapshot's bytes: a copy into fresh pages (as s_ckpt_async does: a new
# malloc each time, freed by the writer, so every page faults on first touch) and into memory touched
# before (what a snapshot buffer kept from one checkpoint to the next would cost).
fresh, warm = [], []
if size:
    import mmap, time
    src = bytearray(b"\x01") * size
    dst = bytearray(size)
    dst[:] = src
    for _ in range(5):
        m = mmap.mmap(-1, size)   # new pages each time: every first touch faults, as in a fresh malloc
        t0 = time.perf_counter(); m[:] = src; fresh.append(time.perf_counter() - t0); m.close()
        t0 = time.perf_counter(); dst[:] = src; warm.append(time.perf_counter() - t0)

print(f"model: {params.group(1) if params else '?'} parameters; loco run checkpoint {size / 1e6:.1f} MB"
      f" (weights, AdamW m and v, anchor, outer momentum), loco train checkpoint {tsize / 1e6:.1f} MB (no outer state)")
print(f"loco run, H = {H}, checkpoint_every = {every}: step time {step_t * 1e3:.1f} ms (median, inside rounds)")
print(f"  gap before a step inside a round:        {spread(g_in)}")
print(f"  gap at a round boundary, no checkpoint:  {spread(g_pl)}")
print(f"  gap at a round boundary with checkpoint: {spread(g_ck)}")
print(f"  stall per checkpoint, gap method (difference of the medians): {stall * 1e3:.1f} ms")
if pr.get("ck"):
    print(f"  stall per checkpoint, uprobes on s_ckpt_async: {spread(pr['ck'])}")
S = med(pr["ck"]) if pr.get("ck") else stall
print(f"STALL {S * 1e3:.1f} ms ({'uprobes' if pr.get('ck') else 'gap method'}) = {S / step_t:.3f} steps ="
      f" {S / (every * step_t) * 100:.3f}% of checkpoint_every x step time at checkpoint_every = {every},"
      f" {S / (500 * step_t) * 100:.3f}% at the default 500 (target <= 1%: met from checkpoint_every >= {max(1, S / (0.01 * step_t)):.0f})")
if fresh:
    print(f"  floor for the same {size / 1e6:.1f} MB on this machine now: a copy into fresh pages {med(fresh) * 1e3:.1f} ms,"
          f" into pages touched before {med(warm) * 1e3:.1f} ms (medians of 5)")
if r_ck and r_pl:
    d = med(r_ck) - med(r_pl)
    print(f"  compute of the round the writer overlaps: {med(r_ck):.2f} s vs {med(r_pl):.2f} s after a plain boundary"
          f" ({d * 1e3:+.0f} ms; the writer thread shares the cores; noisy on a shared machine)")
bgw = pr.get("save") or bg
if bgw:
    print(f"the same checkpoint written (ckpt_dir_save: serialise, write, fsync, rename) by the background writer:"
          f" median {med(bgw) * 1e3:.0f} ms over {len(bgw)} = {ratio(med(bgw), S)} the stall")
tb = med(pt["save"]) if pt.get("save") else blocking
print(f"loco train's blocking save every {TE} steps ({tsize / 1e6:.1f} MB): {tb * 1e3:.0f} ms per save"
      f" ({f'uprobes on ckpt_dir_save; gap method {blocking * 1e3:.0f} ms' if pt.get('save') else 'gap method'});"
      f" scaled to {size / 1e6:.1f} MB: {tb * size / max(tsize, 1) * 1e3:.0f} ms ="
      f" {ratio(tb * size / max(tsize, 1), S)} the stall (DataStates-LLM: up to 48x faster than blocking saves)")
PY
echo "load: $(uptime | sed 's/.*load/load/')"
