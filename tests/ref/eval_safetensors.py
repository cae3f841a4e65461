"""Evaluates a `loco export` safetensors file in PyTorch, as `loco eval` defines the loss.

usage: /usr/bin/python3 tests/ref/eval_safetensors.py FILE.safetensors VAL_SHARD HEADS K [--expect LOSS --tol TOL]

Loads the tensors (Hugging Face GPT-2 names; Conv1D weights (in, out)) into the PyTorch GPT-2 of
gpt_ref.py, then computes the mean next-token cross-entropy over the first K windows of the shard:
window i has inputs tokens[i·T … i·T+T−1] and targets shifted by one, T = the number of learned
positions. Prints val_loss=<float>; with --expect, exits 1 unless |val_loss − LOSS| ≤ TOL.
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt_ref  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("shard")
    ap.add_argument("heads", type=int)
    ap.add_argument("k", type=int)
    ap.add_argument("--expect", type=float)
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    gpt_ref.setup_torch()

    state = gpt_ref.load_safetensors(a.file)
    V, C = state["wte.weight"].shape
    maxT = state["wpe.weight"].shape[0]
    L = len({k.split(".")[1] for k in state if k.startswith("h.")})
    for name, t in state.items():  # Conv1D layout: (in, out)
        if name.endswith("attn.c_attn.weight"):
            assert t.shape == (C, 3 * C), "%s has shape %s, expected (in, out) = (%d, %d)" % (name, t.shape, C, 3 * C)
        if name.endswith("mlp.c_proj.weight"):
            assert t.shape == (4 * C, C), "%s has shape %s, expected (in, out) = (%d, %d)" % (name, t.shape, 4 * C, C)
    model = gpt_ref.GPT(L, C, a.heads, maxT, V)
    model.load_hf_state(state)
    print("loaded %s: %d tensors, L=%d C=%d heads=%d seq_len=%d V=%d" % (a.file, len(state), L, C, a.heads, maxT, V))

    tok = gpt_ref.read_shard(a.shard).astype(np.int64)
    T = maxT
    avail = (tok.size - 1) // T
    assert a.k <= avail, "the shard holds %d windows of %d tokens, asked for %d" % (avail, T, a.k)
    x = torch.from_numpy(np.stack([tok[i * T:i * T + T] for i in range(a.k)]))
    y = torch.from_numpy(np.stack([tok[i * T + 1:i * T + T + 1] for i in range(a.k)]))
    with torch.no_grad():
        _, loss = model(x, y)
    val = loss.item()
    print("val_loss=%.6f" % val)
    if a.expect is not None:
        err = abs(val - a.expect)
        ok = err <= a.tol
        print("%s: PyTorch %.6f, loco eval %.6f, |diff| %.2e (tolerance %.0e)" %
              ("ok" if ok else "MISMATCH", val, a.expect, err, a.tol))
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
