"""Reference outer updates for tests/optim/test_outer_ref.c (the formulas of ALGORITHMS.md).

usage: /usr/bin/python3 tests/ref/outer_ref.py DIR

DIR holds one folder per case, written by the C test: meta.txt (key=value, with kind=) and raw
little-endian inputs. For each case this script computes the reference result and writes it next to
the inputs, plus deliberately wrong variants (wrong_<name>_phi.f32, wrong_unweighted_out.f64) that
the C test must find outside its tolerance: proof that the comparison would catch
a wrong formula. The C side compares (its tolerances live there, in one place).

Kinds:
  diloco    phi0.f32 (n), deltas.f32 (steps, n): the averaged pseudo-gradients Δ̄ of each round.
            Writes ref_phi.f32 and ref_b.f32 (steps, n): φ and the momentum buffer after each round.
            Without a clip, the reference is torch.optim.SGD(lr=η, momentum=μ, nesterov=True) fed
            grad = Δ̄/λ, and the hand-written formula below must agree with it (checked here). With a
            clip c > 0 (which SGD cannot express), the reference is the hand-written formula:
                g = Δ̄/λ ; b ← clip(μ b + g, c) ; φ ← φ − η (g + μ b)
  noloco    phi0.f32 (peers, n), deltas.f32 (rounds, peers, n), groups.i32 (rounds, peers).
            Every peer i applies, from the anchors every peer held at the start of the round,
                m_i ← clip(μ m_i − (η/λ)·mean_{j∈G} Δ_j + η·(mean_{j∈G} φ_j − φ_i), c) ; φ_i ← φ_i + m_i
            Writes ref_phi.f32 and ref_m.f32 (rounds, peers, n).
  wmean     x.f32 (k, n), w.f64 (k): writes ref_out.f64 (n) = Σ w_j x_j / Σ w_j in float64.

All update arithmetic is float32 torch (as loco's); only the weighted mean's reference is float64.
Exits 1 on a malformed case or when the hand-written DiLoCo formula disagrees with torch's SGD.
"""

import os
import sys

import numpy as np
import torch

torch.set_num_threads(1)


def read_meta(d):
    meta = {}
    with open(os.path.join(d, "meta.txt")) as f:
        for line in f:
            k, v = line.strip().split("=", 1)
            if k == "kind":
                meta[k] = v
            else:
                meta[k] = float(v) if any(c in v for c in ".e") else int(v)
    return meta


def load(d, name, dtype, shape):
    a = np.fromfile(os.path.join(d, name), dtype=dtype)
    want = int(np.prod(shape))
    if a.size != want:
        sys.exit(f"{d}/{name}: {a.size} values, expected {want}")
    return a.reshape(shape)


def save(d, name, a, dtype=np.float32):
    np.ascontiguousarray(np.asarray(a), dtype=dtype).tofile(os.path.join(d, name))


# ---------------------------------------------------------------------------------------------
# DiLoCo


def diloco_torch_sgd(phi0, deltas, lr, mu, pen, nesterov=True):
    """torch.optim.SGD itself, fed grad = Δ̄/λ each round. Returns (phi, b) per round."""
    p = torch.nn.Parameter(torch.from_numpy(phi0.copy()))
    opt = torch.optim.SGD([p], lr=lr, momentum=mu, nesterov=nesterov)
    phis, bs = [], []
    for d in deltas:
        p.grad = torch.from_numpy(d.copy()) / pen
        opt.step()
        phis.append(p.detach().clone().numpy())
        bs.append(opt.state[p]["momentum_buffer"].clone().numpy())
    return np.stack(phis), np.stack(bs)


def diloco_hand(phi0, deltas, lr, mu, pen, clip, pen_in_nesterov_term=True, apply_clip=True):
    """The formula written out in float32 torch. The keyword switches produce wrong variants."""
    phi = torch.from_numpy(phi0.copy())
    b = torch.zeros_like(phi)
    phis, bs = [], []
    for d in deltas:
        raw = torch.from_numpy(d.copy())
        g = raw / pen
        b = mu * b + g
        if clip > 0 and apply_clip:
            b = torch.clamp(b, -clip, clip)
        phi = phi - lr * ((g if pen_in_nesterov_term else raw) + mu * b)
        phis.append(phi.clone().numpy())
        bs.append(b.clone().numpy())
    return np.stack(phis), np.stack(bs)


def run_diloco(d, meta):
    n, steps = meta["n"], meta["steps"]
    lr, mu, pen, clip = meta["lr"], meta["mu"], meta["pen"], meta["clip"]
    phi0 = load(d, "phi0.f32", np.float32, (n,))
    deltas = load(d, "deltas.f32", np.float32, (steps, n))
    hand_phi, hand_b = diloco_hand(phi0, deltas, lr, mu, pen, clip)
    variants = {}
    if clip == 0:
        ref_phi, ref_b = diloco_torch_sgd(phi0, deltas, lr, mu, pen)
        # The hand-written formula is what the clipped case relies on: it must agree with torch's SGD
        # (fp32, a few roundings apart: torch fuses some multiply-adds).
        scale = np.maximum(np.abs(ref_phi), np.abs(ref_b)).max()
        worst = max(np.abs(hand_phi - ref_phi).max(), np.abs(hand_b - ref_b).max())
        print(f"  {os.path.basename(d)}: hand-written formula vs torch SGD: max |diff| {worst:.3g} "
              f"(max magnitude {scale:.3g})")
        if worst > 1e-5 * scale:
            print(f"  {os.path.basename(d)}: FAIL the hand-written Nesterov step disagrees with torch.optim.SGD")
            return False
        variants["heavy_ball"] = diloco_torch_sgd(phi0, deltas, lr, mu, pen, nesterov=False)[0]
        if pen != 1:
            variants["no_penalty"] = diloco_torch_sgd(phi0, deltas, lr, mu, 1.0)[0]
            variants["penalty_in_b_only"] = diloco_hand(phi0, deltas, lr, mu, pen, 0.0, pen_in_nesterov_term=False)[0]
    else:
        ref_phi, ref_b = hand_phi, hand_b
        # The public CO2 code discards the clamp's result: that is plain SGD again.
        variants["clip_discarded"] = diloco_torch_sgd(phi0, deltas, lr, mu, pen)[0]
    variants["mu_perturbed"] = diloco_hand(phi0, deltas, lr, mu + 1e-3, pen, clip)[0]
    save(d, "ref_phi.f32", ref_phi)
    save(d, "ref_b.f32", ref_b)
    for name, v in variants.items():
        save(d, f"wrong_{name}_phi.f32", v)
    return True


# ---------------------------------------------------------------------------------------------
# NoLoCo


def noloco(phi0, deltas, groups, lr, mu, pen, clip, mu_delta=0.0, pull=True, pen_on_pull=False, apply_clip=True):
    peers = phi0.shape[0]
    phi = torch.from_numpy(phi0.copy())
    m = torch.zeros_like(phi)
    out_phi, out_m = [], []
    for r in range(deltas.shape[0]):
        start = phi.clone()  # every peer reads the anchors of the start of the round
        dr = torch.from_numpy(deltas[r].copy())
        new_phi, new_m = phi.clone(), m.clone()
        for i in range(peers):
            members = [j for j in range(peers) if groups[r, j] == groups[r, i]]
            dmean = dr[members].mean(0)
            pmean = start[members].mean(0)
            pull_term = lr * (pmean - start[i])
            if pen_on_pull:
                pull_term = pull_term / pen
            mi = (mu + mu_delta) * m[i] - (lr / pen) * dmean + (pull_term if pull else 0.0)
            if clip > 0 and apply_clip:
                mi = torch.clamp(mi, -clip, clip)
            new_m[i] = mi
            new_phi[i] = start[i] + mi
        phi, m = new_phi, new_m
        out_phi.append(phi.clone().numpy())
        out_m.append(m.clone().numpy())
    return np.stack(out_phi), np.stack(out_m)


def run_noloco(d, meta):
    n, rounds, peers = meta["n"], meta["rounds"], meta["peers"]
    lr, mu, pen, clip = meta["lr"], meta["mu"], meta["pen"], meta["clip"]
    phi0 = load(d, "phi0.f32", np.float32, (peers, n))
    deltas = load(d, "deltas.f32", np.float32, (rounds, peers, n))
    groups = load(d, "groups.i32", np.int32, (rounds, peers))
    args = (phi0, deltas, groups, lr, mu, pen, clip)
    ref_phi, ref_m = noloco(*args)
    variants = {"mu_perturbed": noloco(*args, mu_delta=1e-3)[0], "no_pull": noloco(*args, pull=False)[0]}
    if pen != 1:
        variants["penalty_on_pull"] = noloco(*args, pen_on_pull=True)[0]
    if clip > 0:
        variants["clip_discarded"] = noloco(*args, apply_clip=False)[0]
    save(d, "ref_phi.f32", ref_phi)
    save(d, "ref_m.f32", ref_m)
    for name, v in variants.items():
        save(d, f"wrong_{name}_phi.f32", v)
    return True


# ---------------------------------------------------------------------------------------------
# Weighted mean


def run_wmean(d, meta):
    n, k = meta["n"], meta["k"]
    x = load(d, "x.f32", np.float32, (k, n)).astype(np.float64)
    w = load(d, "w.f64", np.float64, (k,))
    save(d, "ref_out.f64", (w[:, None] * x).sum(0) / w.sum(), np.float64)
    save(d, "wrong_unweighted_out.f64", x.mean(0), np.float64)
    return True


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    ok = True
    for case in sorted(os.listdir(root)):
        d = os.path.join(root, case)
        if not os.path.isdir(d):
            continue
        meta = read_meta(d)
        run = {"diloco": run_diloco, "noloco": run_noloco, "wmean": run_wmean}.get(meta["kind"])
        if run is None:
            sys.exit(f"{d}: unknown kind {meta['kind']}")
        ok = run(d, meta) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
