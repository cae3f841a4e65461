# Shared by the swarm scripts (test_outer.sh, test_overlap.sh, long_catchup.sh, test_ckpt_kill.sh):
# sourced, never run. The caller defines W (its temp dir), BIN, PY, fail() and the array pids.

port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_for() { # seconds, description, command...
    local secs=$1 what=$2; shift 2
    local t0=$SECONDS
    while ! "$@"; do
        [ $((SECONDS - t0)) -ge "$secs" ] && fail "timed out after ${secs}s waiting for: $what"
        sleep 0.1
    done
}

# corpus_letters SEED LINES FILE: deterministic text of repeated random words, for tiny models.
corpus_letters() {
    awk -v x="$1" -v lines="$2" 'BEGIN { for (line = 0; line < lines; line++) { x = (x * 16807) % 2147483647; s = "";
        for (j = 0; j < 4 + x % 7; j++) { x = (x * 16807) % 2147483647; s = s sprintf("%c", 97 + x % 26) }
        print s " " s "." } }' >"$3"
}

# swarm DIR N extra-args...: N `loco run` peers with $W/base.ini under $W/DIR (keys, checkpoints,
# metrics, logs), peer 1 the seed of the others unless NOSEED is set; ENVS[i] is peer i's
# environment, EXTRA[i] its extra arguments. Fills ID, P, PID (keyed DIR + i) and pids.
declare -A ID P PID EXTRA ENVS
swarm() {
    local dir=$1 n=$2; shift 2
    mkdir -p "$W/$dir"
    for i in $(seq "$n"); do
        "$BIN" keygen --out "$W/$dir/k$i" >/dev/null || fail "keygen"
        ID[$dir$i]=$(awk '/^id =/ {print $3}' "$W/$dir/k$i.pub")
        P[$dir$i]=$(port)
    done
    for i in $(seq "$n"); do
        local seed=()
        [ "$i" != 1 ] && [ -z "${NOSEED:-}" ] && seed=(--set "bootstrap.seed=${ID[${dir}1]}@tcp://127.0.0.1:${P[${dir}1]}")
        local extra=()
        [ -n "${EXTRA[$i]:-}" ] && read -r -a extra <<<"${EXTRA[$i]}"
        env ${ENVS[$i]:-} "$BIN" run -c "$W/base.ini" --set node.key="$W/$dir/k$i" \
            --set net.listen="tcp://127.0.0.1:${P[$dir$i]}" --set train.checkpoint_dir="$W/$dir/ck$i" \
            --set node.peer_cache="$W/$dir/cache$i" --set train.metrics="$W/$dir/m$i.jsonl" \
            "${seed[@]}" "${extra[@]}" "$@" >"$W/$dir/log$i" 2>&1 &
        PID[$dir$i]=$!
        pids+=("$!")
    done
}

# wait_all DIR N SECONDS: every peer of DIR exits 0 within the time limit.
# wait_peers DIR SECS I...: waits for peers I... of DIR to exit, each with status 0, within SECS in all.
wait_peers() {
    local dir=$1 secs=$2 t0=$SECONDS i
    shift 2
    for i in "$@"; do
        while kill -0 "${PID[$dir$i]}" 2>/dev/null; do
            [ $((SECONDS - t0)) -ge "$secs" ] && fail "$dir: peer $i still running after ${secs}s (hang?)"
            sleep 0.2
        done
        wait "${PID[$dir$i]}" || fail "$dir: peer $i exited with $?"
    done
}

wait_all() { wait_peers "$1" "$3" $(seq "$2"); }
