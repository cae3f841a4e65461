# Shared by the pipelined `loco run` scripts (test_pipeline.sh, test_pipeline_restart.sh): sourced,
# never run. The caller defines W (its temp dir), BIN, PY, fail() and the array pids. Writes the tiny
# corpus and $W/base.ini (2 blocks, 60 steps, 1.5 s pipeline timeout) and defines keys, start,
# losses and falls.
. tests/integration/lib_swarm.sh
corpus_letters 4242 4000 "$W/text.txt"
timeout 30 "$BIN" data --input "$W/text.txt" --out "$W/data" >/dev/null || fail "loco data"
cat >"$W/base.ini" <<INI
[run]
name = pipe-test
[model]
layers = 2
d_model = 32
heads = 2
seq_len = 32
[train]
data = $W/data
steps = 60
lr = 3e-3
lr_min = 3e-4
warmup = 5
threads = 1
eval_every = 0
checkpoint_every = 0
[gossip]
period_ms = 200
[pipeline]
timeout_ms = 1500
INI

# keys DIR N: N identities under $W/DIR; fills ID[DIRi], P[DIRi] (gossip port) and Q[DIRi] (pipeline port).
declare -A Q
keys() {
    mkdir -p "$W/$1"
    for i in $(seq "$2"); do
        "$BIN" keygen --out "$W/$1/k$i" >/dev/null || fail "keygen"
        ID[$1$i]=$(awk '/^id =/ {print $3}' "$W/$1/k$i.pub")
        P[$1$i]=$(port)
        Q[$1$i]=$(port)
    done
}
# start DIR i PLAN [args...]: `loco run` for identity i of DIR with the plan; peer 1 is the seed.
start() {
    local dir=$1 i=$2 plan=$3; shift 3
    local seed=()
    [ "$i" != 1 ] && seed=(--set "bootstrap.seed=${ID[${dir}1]}@tcp://127.0.0.1:${P[${dir}1]}")
    "$BIN" run -c "$W/base.ini" --set node.key="$W/$dir/k$i" --set net.listen="tcp://127.0.0.1:${P[$dir$i]}" \
        --set train.checkpoint_dir="$W/$dir/ck$i" --set node.peer_cache="$W/$dir/cache$i" \
        --set train.metrics="$W/$dir/m$i.jsonl" --set pipeline.plan="$plan" "${seed[@]}" "$@" >"$W/$dir/log$i" 2>&1 &
    PID[$dir$i]=$!
    pids+=("$!")
}
# losses FILE: the step records' losses, one per line.
losses() { grep '"kind":"step"' "$1" | sed 's/.*"loss":\([0-9.e+-]*\).*/\1/'; }
# falls FILE: mean loss of the last 10 steps is below that of the first 10 by 10%.
falls() {
    losses "$1" | awk '{ l[NR] = $1 } END { if (NR < 20) exit 1; a = 0; b = 0;
        for (i = 1; i <= 10; i++) { a += l[i]; b += l[NR - 10 + i] }
        printf "  loss first 10 steps %.4f, last 10 %.4f\n", a / 10, b / 10; exit !(b < 0.9 * a) }'
}
