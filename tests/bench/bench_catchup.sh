#!/usr/bin/env bash
# Catch-up throughput vs link capacity (issue 7): a DiLoCo swarm of D donors (D = 1, 2, 4), each in
# its own network namespace (deploy/wan-sim.sh), trains a 4.0M-parameter model (outer state = anchor
# φ ‖ outer momentum = 32 MB of fp32); after two full rounds a joiner starts, finds at its first round
# boundary that its anchor is not the majority's and fetches the state of the next round from the
# donors in parallel (node/catchup.h). The joiner's link is capped at CAP both ways, each donor's at
# SHARE × CAP (volunteers' asymmetric home links: one donor cannot fill the joiner's link, two can),
# and the joiner's [limits] download_rate is CAP in bytes/s (it paces its chunk requests so that the
# sum over all donors stays under it). Compute is paced (LOCO_TEST_STEP_DELAY_MS, tiny batches) so a
# round's compute phase outlasts the transfer: nothing else crosses the links while it runs.
#
# The figure: the joiner's log line "caught up to version ... from K donors in X s: ... N MiB"
# (node/catchup.c), N MiB / X s, against the cap and against the link's ceiling (what raw TCP carries
# from the donors' links into the joiner's: min(raw into the joiner, D x raw from one donor)). X
# runs from the joiner's last request for versions (a donor that has not finished the round yet
# answers NACK and the joiner asks again every 500 ms) to the last verified chunk. Same-run
# baselines on the same namespaced links: a raw TCP copy (python sockets) and a loco transfer over
# CURVE (loco net-test) of 32 MiB into the joiner's capped link from an uncapped sender, and a raw
# TCP copy from one capped donor. The [train] seed is chosen so that the joiner's initial anchor
# hash is large (see "The seed" below), and the joiner starts at a round boundary.
#
#   sudo tests/bench/bench_catchup.sh    (root: namespaces; CAP_KBIT=40000 SHARE=0.5 DONORS="1 2 4"
#                                         H=100 DELAY_MS=100 LAYERS=5 D_MODEL=256 FETCH_RATE=1;
#                                         FETCH_RATE=0 leaves download_rate unset; KEEP=1 keeps logs)
#
# About 2 minutes per arm. Exit 77 when namespaces or tbf are unavailable.
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-$PWD/build/loco}
PY=${PYTHON:-/usr/bin/python3}
CAP_KBIT=${CAP_KBIT:-40000}
SHARE=${SHARE:-0.5}
DONORS=${DONORS:-"1 2 4"}
H=${H:-100}
DELAY_MS=${DELAY_MS:-100}
LAYERS=${LAYERS:-5}
D_MODEL=${D_MODEL:-256}
FETCH_RATE=${FETCH_RATE:-1}
SIM=deploy/wan-sim.sh
NAME=lbc$$
NAME=${NAME:0:8}
"$SIM" check >/dev/null || { echo "bench_catchup: skipped ($("$SIM" check))"; exit 77; }
[ -x "$BIN" ] || { echo "bench_catchup: no $BIN"; exit 1; }
W=$(mktemp -d /tmp/loco_bench_catchup.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    "$SIM" down "$NAME" 2>/dev/null
    [ -n "${KEEP:-}" ] && echo "bench_catchup: logs kept in $W" || rm -rf "$W"
}
trap cleanup EXIT
if ! ls build/data/fortunes/*train*.bin >/dev/null 2>&1; then
    "$BIN" data --input /usr/share/games/fortunes --out build/data/fortunes >/dev/null || exit 1
fi
DONOR_KBIT=$(awk -v c="$CAP_KBIT" -v s="$SHARE" 'BEGIN{printf "%d", c * s}')
CAP_BPS=$((CAP_KBIT * 1000 / 8)) # tc's kbit is 1000 bit/s
mbit() { awk -v k="$1" 'BEGIN{printf "%g", k / 1000}'; }

cat >"$W/base.ini" <<INI
[run]
name = bench-catchup
[model]
layers = $LAYERS
d_model = $D_MODEL
heads = 4
seq_len = 16
[train]
data = $PWD/build/data/fortunes
batch = 1
steps = $((H * 30))
threads = 1
eval_every = 0
checkpoint_every = 0
[outer]
algorithm = diloco
inner_steps = $H
codec = int8
deadline_ms = 60000
[gossip]
period_ms = 500
INI

# --- Baselines: what the capped links themselves carry --------------------------------------------
# Peer 1: a donor's link (SHARE × CAP), peer 2: the joiner's (CAP), peer 3: an uncapped sender.
cat >"$W/sink.py" <<'PY'
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("ready", flush=True)
c, _ = s.accept(); n = 0; t0 = None
while True:
    b = c.recv(1 << 20)
    if not b: break
    if t0 is None: t0 = time.monotonic()
    n += len(b)
print(f"{n} {time.monotonic() - t0:.3f}", flush=True)
PY
cat >"$W/source.py" <<'PY'
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
blk = bytes(1 << 20)
for _ in range(int(sys.argv[3])): c.sendall(blk)
c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
PY
MIB=32
raw_copy() { # FROM TO PORT: MB/s of a raw TCP copy of MIB MiB from peer FROM to peer TO
    local to_a
    to_a=$("$SIM" addr "$NAME" "$2")
    "$SIM" exec "$NAME" "$2" "$PY" "$W/sink.py" "$to_a" "$3" >"$W/sink$3.out" &
    local sp=$!
    for _ in $(seq 50); do grep -q ready "$W/sink$3.out" 2>/dev/null && break; sleep 0.1; done
    "$SIM" exec "$NAME" "$1" "$PY" "$W/source.py" "$to_a" "$3" "$MIB"
    wait "$sp"
    awk 'NR==2 {printf "%.3f", $1 / $2 / 1e6}' "$W/sink$3.out"
}
"$SIM" down "$NAME" 2>/dev/null
"$SIM" up "$NAME" 3 "${DONOR_KBIT}kbit" "${CAP_KBIT}kbit" 1gbit || exit 1
RAW_J=$(raw_copy 3 2 7801)
RAW_D=$(raw_copy 1 2 7802)
"$BIN" keygen --out "$W/nt_srv" >/dev/null && "$BIN" keygen --out "$W/nt_cli" >/dev/null
printf '[node]\nkey = %s\n[net]\nlisten = tcp://%s:7800\n' "$W/nt_srv" "$("$SIM" addr "$NAME" 2)" >"$W/nt_srv.ini"
printf '[node]\nkey = %s\n' "$W/nt_cli" >"$W/nt_cli.ini"
"$SIM" exec "$NAME" 2 "$BIN" net-test serve -c "$W/nt_srv.ini" --expect 1 --timeout 120 >"$W/nt_serve.out" 2>&1 &
sp=$!
for _ in $(seq 100); do grep -q '^listening' "$W/nt_serve.out" 2>/dev/null && break; sleep 0.1; done
NT_LINE=$("$SIM" exec "$NAME" 3 "$BIN" net-test send -c "$W/nt_cli.ini" --peer "$(awk '/^listening/{print $2}' "$W/nt_serve.out")" \
    --mib "$MIB" 2>&1 | grep '^sent')
wait "$sp"
# "sent quantity=1 32.0 MiB as fp32 in 6.987 s (4.6 MiB/s of fp32)"
NET_J=$(sed -E 's/.* in ([0-9.]+) s.*/\1/' <<<"$NT_LINE" | awk -v m="$MIB" '{printf "%.3f", m * 1048576 / $1 / 1e6}')
"$SIM" down "$NAME"
CAP_MBS=$(awk -v b="$CAP_BPS" 'BEGIN{printf "%.3f", b / 1e6}')
echo "links: joiner $(mbit "$CAP_KBIT") Mbit/s = $CAP_MBS MB/s both ways, each donor $(mbit "$DONOR_KBIT") Mbit/s (tc tbf, deploy/wan-sim.sh)"
echo "baseline, $MIB MiB into the joiner's link from an uncapped sender: raw TCP $RAW_J MB/s" \
     "($(awk -v a="$RAW_J" -v c="$CAP_MBS" 'BEGIN{printf "%.3f", a / c}') of the cap)," \
     "loco net-test over CURVE $NET_J MB/s ($(awk -v a="$NET_J" -v c="$CAP_MBS" 'BEGIN{printf "%.3f", a / c}') of the cap);" \
     "from one donor's link: raw TCP $RAW_D MB/s"

# --- The seed -----------------------------------------------------------------------------------------
# With one donor the round's anchor is decided between two hashes, the donor's and the joiner's
# initial one, the smaller winning the tie (s_diloco_fix); a joiner whose initial anchor hash is
# small would rarely lose, and the donor would catch up from it instead. Take the first [train] seed
# whose initial parameters hash at least 0xc0 (then a round's anchor is below it 3 times in 4).
"$BIN" keygen --out "$W/seedkey" >/dev/null
SEED=
for s in $(seq 1 16); do
    "$BIN" run -c "$W/base.ini" --set train.seed="$s" --set train.steps=1 --set node.key="$W/seedkey" \
        --set net.listen=tcp://127.0.0.1:0 --set train.checkpoint_dir="$W/seedck$s" --set node.peer_cache="$W/seedpc" \
        >"$W/seed$s.log" 2>&1 &
    sp=$!
    for _ in $(seq 300); do grep -q 'initial parameters sha256' "$W/seed$s.log" && break; sleep 0.1; done
    kill -9 "$sp" 2>/dev/null
    wait "$sp" 2>/dev/null
    h=$(grep -m1 -o 'initial parameters sha256 [0-9a-f]*' "$W/seed$s.log" | awk '{print substr($4, 1, 2)}')
    [ -n "$h" ] && [ $((16#$h)) -ge 192 ] && { SEED=$s; break; }
done
sed -i "s/^\[train\]$/[train]\nseed = ${SEED:-1337}/" "$W/base.ini"

# --- Arms -------------------------------------------------------------------------------------------
last_anchor() { # metrics file: the anchor (16 hex digits) and round of its newest outer record
    grep '"kind":"outer"' "$1" 2>/dev/null | tail -1 | sed -E 's/.*"round":([0-9]+).*"anchor":"([0-9a-f]+)".*/\2 \1/'
}
full_rounds() { grep '"kind":"outer"' "$1" 2>/dev/null | grep -c "\"contributors\":$2,"; }

stop_peers() { { for p in "${pids[@]}"; do kill -9 "$p"; wait "$p"; done; } 2>/dev/null; pids=(); }

# arm D: writes to $W/dD/result "K X N PER" (donors used, seconds, MiB, chunks per donor) of the
# joiner's catch-up line, or the reason there is none.
arm() {
    local D=$1 d="$W/d$1" J=$(($1 + 1)) i rates=()
    mkdir -p "$d"
    for i in $(seq "$D"); do rates+=("${DONOR_KBIT}kbit"); done
    "$SIM" down "$NAME" 2>/dev/null
    "$SIM" up "$NAME" "$J" "${rates[@]}" "${CAP_KBIT}kbit" || exit 1
    for i in $(seq "$J"); do "$BIN" keygen --out "$d/k$i" >/dev/null; done
    local seed
    seed="$(awk '/^id =/ {print $3}' "$d/k1.pub")@tcp://$("$SIM" addr "$NAME" 1):7700"
    start() { # i, extra args
        local i=$1 s=()
        shift
        [ "$i" != 1 ] && s=(--set "bootstrap.seed=$seed")
        LOCO_TEST_STEP_DELAY_MS=$DELAY_MS "$SIM" exec "$NAME" "$i" "$BIN" run -c "$W/base.ini" \
            --set node.key="$d/k$i" --set net.listen="tcp://$("$SIM" addr "$NAME" "$i"):7700" --set net.reachable=yes \
            --set train.checkpoint_dir="$d/ck$i" --set node.peer_cache="$d/cache$i" \
            --set train.metrics="$d/m$i.jsonl" "${s[@]}" "$@" >"$d/log$i" 2>&1 &
        pids+=($!)
    }
    for i in $(seq "$D"); do start "$i"; done
    local t0=$SECONDS
    until [ "$(full_rounds "$d/m1.jsonl" "$D")" -ge 2 ]; do
        [ $((SECONDS - t0)) -ge 240 ] && { echo "no two full rounds of $D donors in 240 s" >"$d/result"; stop_peers; return; }
        sleep 0.2
    done
    # Start the joiner at a round boundary, so that it is in by the round's end. With one donor the
    # round's anchor is decided between two hashes, the smaller winning the tie (s_diloco_fix): wait
    # for a round whose anchor is smaller than the joiner's initial one, or the donor would catch up
    # from the joiner instead.
    local init cur r0 a r
    init=$(grep -m1 -o 'initial parameters sha256 [0-9a-f]*' "$d/log1" | awk '{print substr($4, 1, 16)}')
    read -r a r0 < <(last_anchor "$d/m1.jsonl")
    t0=$SECONDS
    while :; do
        read -r a r < <(last_anchor "$d/m1.jsonl")
        if [ "$r" != "$r0" ]; then
            r0=$r
            { [ "$D" -gt 1 ] || [[ "$a" < "$init" ]]; } && break
        fi
        [ $((SECONDS - t0)) -ge 240 ] && { echo "no round with an anchor below the joiner's in 240 s" >"$d/result"; stop_peers; return; }
        sleep 0.05
    done
    local extra=()
    [ "$FETCH_RATE" = 1 ] && extra=(--set "limits.download_rate=$CAP_BPS")
    start "$J" "${extra[@]}"
    t0=$SECONDS
    until grep -q "caught up to version" "$d/log$J" 2>/dev/null; do
        local who=()
        for i in $(seq "$D"); do grep -q "caught up to version" "$d/log$i" && who+=("$i"); done
        if [ ${#who[@]} -gt 0 ]; then
            echo "donor(s) ${who[*]} caught up from the joiner instead (the joiner's anchor won the round)" >"$d/result"
            stop_peers
            return
        fi
        [ $((SECONDS - t0)) -ge 150 ] && { echo "the joiner did not catch up in 150 s" >"$d/result"; stop_peers; return; }
        sleep 0.2
    done
    grep -m1 "caught up to version" "$d/log$J" >"$d/line"
    stop_peers
    sed -E 's/.*from ([0-9]+) donors in ([0-9.]+) s: chunks per donor ([^;]*); ([0-9]+) bad, ([0-9]+) reassigned, ([0-9.]+) MiB.*/\1 \2 \6 \3/' "$d/line" >"$d/result"
}

printf '%-7s %-11s %-12s %-5s %-6s %-6s %-7s %-11s %-12s %s\n' donors "donor Mbit" "joiner Mbit" used MiB s "MB/s" "of the cap" "of ceiling" "chunks per donor"
for D in $DONORS; do
    arm "$D"
    out=$(cat "$W/d$D/result")
    if ! [[ "$out" =~ ^[0-9]+\ [0-9.]+\ [0-9.]+ ]]; then
        printf '%-7s %s\n' "$D" "no figure: $out"
        continue
    fi
    read -r k x mib per <<<"$out"
    mbs=$(awk -v m="$mib" -v x="$x" 'BEGIN{printf "%.3f", m * 1048576 / x / 1e6}')
    ceil=$(awk -v j="$RAW_J" -v r="$RAW_D" -v n="$D" 'BEGIN{c = n * r; printf "%.3f", c < j ? c : j}')
    printf '%-7s %-11s %-12s %-5s %-6s %-6s %-7s %-11s %-12s %s\n' "$D" "$(mbit "$DONOR_KBIT")" "$(mbit "$CAP_KBIT")" "$k" "$mib" "$x" \
        "$mbs" "$(awk -v a="$mbs" -v c="$CAP_MBS" 'BEGIN{printf "%.3f", a / c}')" \
        "$(awk -v a="$mbs" -v c="$ceil" 'BEGIN{printf "%.3f", a / c}')" "$per"
done
echo "model: $LAYERS layers, d_model $D_MODEL ($(grep -ho '[0-9]* parameters' "$W"/d*/log1 2>/dev/null | head -1)); state = anchor + momentum in fp32;" \
     "seed $SEED; joiner download_rate $([ "$FETCH_RATE" = 1 ] && echo "$CAP_BPS B/s" || echo unset); load: $(uptime | sed 's/.*load/load/')"
