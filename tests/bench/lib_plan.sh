# Shared by the placement benchmarks (bench_plan.sh, bench_window.sh): sourced, never run. The
# caller defines BIN, W and the model and micro-batch settings LAYERS DMODEL HEADS SEQ MB M.

# tc rate → the cluster description's unit.
bw() { echo "$1" | sed -E 's/^([0-9.]+)kbit$/\1kbit\/s/; s/^([0-9.]+)mbit$/\1Mbit\/s/; s/^([0-9.]+)gbit$/\1Gbit\/s/'; }
# "12.34 ms" / "1.2 s" / "800.0 us" → seconds
secs() { awk '{ v = $1; u = $2; if (u == "ms") v /= 1e3; else if (u == "us") v /= 1e6; printf "%.6f\n", v }'; }

# calibrate: `loco plan --calibrate` on this machine, one thread, for the model above: writes
# $W/cal.ini (its [model] and [train] sections start every cluster description) and $W/cal.out, and
# sets FLOPS and CALH (the head's factor, at least 0.01: the fit clips a noisy head at 0).
calibrate() {
    cat >"$W/cal.ini" <<INI
[model]
layers = $LAYERS
d_model = $DMODEL
heads = $HEADS
seq_len = $SEQ
vocab = 256
[train]
micro_batch = $MB
micro_batches = $M
[node x]
island = A
flops = 1T
memory = 1GiB
nic = lo tcp://127.0.0.1:1 1GB/s 1us
INI
    "$BIN" plan -c "$W/cal.ini" --calibrate --threads 1 >"$W/cal.out" || { cat "$W/cal.out"; exit 1; }
    FLOPS=$(sed -n 's/.*declare for this machine: flops = \([0-9.e+]*\).*/\1/p' "$W/cal.out")
    CALH=$(sed -n 's/.*calib_head = \([0-9.]*\)$/\1/p' "$W/cal.out" | tail -1)
    CALH=$(awk -v c="${CALH:-0}" 'BEGIN { print (c > 0.01 ? c : 0.01) }')
}
