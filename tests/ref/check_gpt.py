"""Checks loco's GPT-2 dumps against PyTorch (driven by tests/model/test_reference.c).

usage: /usr/bin/python3 tests/ref/check_gpt.py DIR

DIR holds one folder per config with loco's raw little-endian dumps: meta.txt, tensors.txt,
params0.f32, inputs.i32 / targets.i32 (steps, B, T), logits.f32 (B, T, V) and the loss of step 0,
grads.f32 (steps, params; before clipping), losses.f32 / norms.f32 / lrs.f32 (steps) and
params_final.f32 after the AdamW steps. For each config this script:

  1. checks loco's tensor table against the layout documented in model/gpt.h;
  2. loads params0 into the PyTorch GPT-2 of gpt_ref.py and compares logits, loss and the gradient
     of every tensor;
  3. runs the same AdamW steps in torch (torch.optim.AdamW, clip_grad_norm_, decay on 2-D tensors
     only, the warmup + cosine schedule) on torch's own gradients and compares the per-step loss,
     grad norm, LR and the final parameters of every tensor;
  4. runs torch's AdamW again on loco's gradients, which isolates the optimizer: tight tolerance.

Prints the worst element of each comparison and exits 1 if any is outside its tolerance.
"""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt_ref  # noqa: E402

# Tolerances: |loco − torch| ≤ ATOL + RTOL·|torch| element-wise, with ATOL relative to the tensor's
# largest magnitude where values cross zero (gradients, logits), so that an element whose exact
# value is ~0 is not judged by its relative error alone. Both sides are float32. Measured on these
# configs (OpenBLAS sgemm vs torch's CPU kernels), the largest err/bound was 0.03 for logits, 0.04
# for gradients, 0.03 for per-step losses and norms and 0.02 for AdamW on the same gradients.
TOL = {
    "logits": (1e-5, 1e-4),       # (atol as a fraction of max|ref|, rtol)
    "loss": (0.0, 1e-5),          # step 0: same parameters on both sides
    "grad": (2e-5, 1e-3),
    "kbias_grad": 1e-6,           # |grad of the key bias| / max|grad of c_attn.bias| (exactly 0 in theory)
    "step_loss": (0.0, 1e-4),     # steps ≥ 1: the trajectories have drifted apart by rounding
    "step_norm": (0.0, 1e-3),
    "lr": (0.0, 1e-6),
    # After the steps on each side's own gradients: atol absolute, rtol; the fraction of elements
    # allowed past that bound; a bound for every element in units of Σ lr (see Checker).
    "params_e2e": (1e-5, 1e-4, 0.005, 0.05),
    "params_opt": (1e-6, 1e-5),   # atol absolute: same grads, only the optimizer arithmetic differs
}


def read_meta(d):
    meta = {}
    with open(os.path.join(d, "meta.txt")) as f:
        for line in f:
            k, v = line.strip().split("=")
            meta[k] = float(v) if any(c in v for c in ".e") else int(v)
    return meta


def load(d, name, dtype, shape):
    a = np.fromfile(os.path.join(d, name), dtype=dtype)
    assert a.size == int(np.prod(shape)), "%s: %d values, expected %s" % (name, a.size, shape)
    return a.reshape(shape)


def check_layout(d, meta, layout, chk):
    rows = []
    with open(os.path.join(d, "tensors.txt")) as f:
        for line in f:
            name, off, numel, ndim, s0, s1, decay, tr = line.split()
            rows.append((name, int(off), int(numel), int(ndim), int(s0), int(s1), int(decay), int(tr)))
    ok = len(rows) == len(layout)
    for (name, off, shape), row in zip(layout, rows):
        want = (name, off, int(np.prod(shape)), len(shape), shape[0], shape[1] if len(shape) == 2 else 0,
                1 if len(shape) == 2 else 0, 1 if gpt_ref.is_conv1d(name) else 0)
        if row != want:
            print("FAIL layout: loco has %s, expected %s" % (row, want))
            ok = False
    print("%s tensor table (%d tensors: names, offsets, shapes, decay mask, Conv1D flags)" % ("ok  " if ok else "FAIL", len(rows)))
    if not ok:
        chk.failures.append(chk.prefix + "layout")


def compare_tensors(chk, what, layout, got, ref, atol_frac, rtol, atol_abs=None):
    for name, off, shape in layout:
        n = int(np.prod(shape))
        g, r = got[off:off + n], ref[off:off + n]
        atol = atol_abs if atol_abs is not None else atol_frac * float(np.max(np.abs(r)))
        chk.check("%s %s" % (what, name), g, r, atol, rtol)


def make_optimizer(model, meta):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": meta["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=meta["lr"], betas=(meta["beta1"], meta["beta2"]), eps=meta["eps"], foreach=False)


def check_case(d, name):
    meta = read_meta(d)
    L, C, NH, maxT, V = meta["layers"], meta["d_model"], meta["heads"], meta["seq_len"], meta["vocab"]
    B, T, S = meta["B"], meta["T"], meta["steps"]
    print("== %s: L=%d C=%d NH=%d seq_len=%d V=%d, B=%d T=%d, %d AdamW steps (loco threads=%d)" %
          (name, L, C, NH, maxT, V, B, T, S, meta["threads"]))
    chk = gpt_ref.Checker(name + ": ")
    layout, n = gpt_ref.flat_layout(L, C, maxT, V)
    assert n == meta["num_params"], "parameter count: loco %d, layout %d" % (meta["num_params"], n)
    check_layout(d, meta, layout, chk)

    params0 = load(d, "params0.f32", "<f4", (n,))
    inputs = torch.from_numpy(load(d, "inputs.i32", "<i4", (S, B, T)).astype(np.int64))
    targets = torch.from_numpy(load(d, "targets.i32", "<i4", (S, B, T)).astype(np.int64))
    grads = load(d, "grads.f32", "<f4", (S, n))
    losses = load(d, "losses.f32", "<f4", (S,))
    norms = load(d, "norms.f32", "<f4", (S,))
    lrs = load(d, "lrs.f32", "<f4", (S,))

    # Forward and backward of step 0.
    model = gpt_ref.GPT(L, C, NH, maxT, V)
    model.load_flat(params0)
    logits, loss = model(inputs[0], targets[0])
    loss.backward()
    ref_logits = logits.detach().numpy()
    tol = TOL["logits"]
    chk.check("logits", load(d, "logits.f32", "<f4", (B, T, V)), ref_logits,
              tol[0] * float(np.max(np.abs(ref_logits))), tol[1])
    chk.check("loss", losses[0], loss.item(), TOL["loss"][0], TOL["loss"][1])
    compare_tensors(chk, "grad", layout, grads[0], model.flat("grad"), TOL["grad"][0], TOL["grad"][1])

    # The key bias shifts every score of a softmax row by the same q·b_k, so its gradient is zero
    # in exact arithmetic. loco's must be at the rounding level too.
    for l in range(L):
        name = "h.%d.attn.c_attn.bias" % l
        off = [o for nm, o, _ in layout if nm == name][0]
        g = grads[0, off:off + 3 * C]
        ratio = float(np.max(np.abs(g[C:2 * C])) / np.max(np.abs(g)))
        ok = ratio <= TOL["kbias_grad"]
        print("%s %s%s key part: max|grad| / max|grad of the tensor| = %.2e (bound %.0e)" %
              ("ok  " if ok else "FAIL", chk.prefix, name, ratio, TOL["kbias_grad"]))
        if not ok:
            chk.failures.append(chk.prefix + "grad %s key part" % name)

    # AdamW end to end on torch's own gradients.
    model = gpt_ref.GPT(L, C, NH, maxT, V)
    model.load_flat(params0)
    opt = make_optimizer(model, meta)
    lr_sum = 0.0
    for s in range(S):
        opt.zero_grad(set_to_none=True)
        _, loss = model(inputs[s], targets[s])
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), meta["clip"])
        lr = gpt_ref.lr_schedule(s, meta["warmup"], meta["total"], meta["lr"], meta["lr_min"])
        lr_sum += lr
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        tl, tn = (TOL["loss"], TOL["loss"]) if s == 0 else (TOL["step_loss"], TOL["step_norm"])
        chk.check("step %d loss" % s, losses[s], loss.item(), tl[0], tl[1])
        chk.check("step %d grad norm" % s, norms[s], norm.item(), tn[0], tn[1])
        chk.check("step %d lr" % s, lrs[s], lr, TOL["lr"][0], TOL["lr"][1])
    final = load(d, "params_final.f32", "<f4", (n,))
    ref = model.flat("param")
    atol, rtol, frac, hard = TOL["params_e2e"]
    for name, off, shape in layout:
        k = int(np.prod(shape))
        g, r = final[off:off + k], ref[off:off + k]
        if name.endswith("attn.c_attn.bias"):
            # The key bias follows noise on both sides (see above): compare only q and v parts.
            g, r = np.concatenate([g[:C], g[2 * C:]]), np.concatenate([r[:C], r[2 * C:]])
            name += " (q,v)"
        chk.check("adamw e2e %s" % name, g, r, atol, rtol, max_frac=frac, hard_atol=hard * lr_sum)

    # AdamW on loco's gradients: the optimizer alone.
    model = gpt_ref.GPT(L, C, NH, maxT, V)
    model.load_flat(params0)
    opt = make_optimizer(model, meta)
    params = dict(model.named_parameters())
    for s in range(S):
        with torch.no_grad():
            for pname, off, shape in layout:
                params[pname].grad = torch.from_numpy(grads[s, off:off + int(np.prod(shape))].reshape(shape).copy())
        torch.nn.utils.clip_grad_norm_(model.parameters(), meta["clip"])
        for g in opt.param_groups:
            g["lr"] = gpt_ref.lr_schedule(s, meta["warmup"], meta["total"], meta["lr"], meta["lr_min"])
        opt.step()
    compare_tensors(chk, "adamw opt", layout, final, model.flat("param"), None, TOL["params_opt"][1],
                    atol_abs=TOL["params_opt"][0])
    return chk


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    gpt_ref.setup_torch()
    root = sys.argv[1]
    cases = sorted(e for e in os.listdir(root) if os.path.isdir(os.path.join(root, e)))
    if not cases:
        print("no cases in %s" % root)
        return 1
    failures, summary = [], []
    for c in cases:
        chk = check_case(os.path.join(root, c), c)
        failures += chk.failures
        summary.append((c, chk.worst))
    print("\nSummary per comparison kind: max abs error / rel error there / max err÷bound (≤ 1 passes;"
          " e2e may exceed 1 on a few elements):")
    for c, worst in summary:
        kinds = {}
        for label, (a, r, q) in worst.items():
            k = label.split(": ", 1)[1]
            k = "grad" if k.startswith("grad ") else "adamw e2e" if k.startswith("adamw e2e") else \
                "adamw opt" if k.startswith("adamw opt") else "per-step" if k.startswith("step ") else k
            pa, pr, pq = kinds.get(k, (0.0, 0.0, 0.0))
            kinds[k] = (max(pa, a), max(pr, r), max(pq, q))
        print("  %-16s " % c + "  ".join("%s %.1e/%.1e/%.2f" % (k, a, r, q) for k, (a, r, q) in kinds.items()))
    if failures:
        print("\n%d comparison(s) FAILED:\n  %s" % (len(failures), "\n  ".join(failures)))
        return 1
    print("\nall comparisons within tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
