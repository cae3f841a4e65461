"""Reference of the CO2 overlap (ALGORITHMS.md, "CO2") for tests/optim/test_co2_ref.c.

usage: /usr/bin/python3 tests/ref/co2_ref.py DIR

DIR holds one folder per case, written by the C test: meta.txt (key=value) and raw little-endian
float32 inputs (other files there are the C side's own):
  phi0.f32    (P, n)     each peer's anchor when the simulation starts (NoLoCo: differing anchors)
  target.f32  (n)        θ*, the point local training is drawn to
  xi.f32      (K, P, n)  the random part of each peer's local progress in each round
meta: kind (diloco | noloco), n, rounds K, peers P, lr η, mu μ, pen λ, clip c, a.

Synthetic local training stands in for H inner steps: a round that starts at θ ends at
    θ_end = θ + p,  p = a·(θ* − θ) + ξ
(a = 0: pure random progress; a > 0 makes the progress depend on where the round starts, as real
gradients do, so that staleness changes the trajectory and not only when it is observed).

The reference is written from ALGORITHMS.md's text, in float64 (exact next to loco's fp32):
  - Every peer starts with θ = its anchor φ. At the end of round 0 it posts Δ₀ = φ − θ_end(round 0)
    and trains round 1 on from its current θ (no reset).
  - At the end of round t+1 it applies round t's result (staleness exactly one round), computed
    from round t's contributions only, to its anchor, then carries its own progress over:
    L = θ(end of t+1) − θ(start of t+1), θ ← φ_new + L, and posts Δ = −L for round t+1. The start
    of the next round is that θ (after the carry-over: L holds no jump).
  - After the last training round, the last result is applied with nothing left to carry (L = 0).
  - DiLoCo, all peers: Δ̄ = mean_j Δ_j; g = Δ̄/λ; b ← clip(μ b + g, c); φ ← φ − η (g + μ b)
    (λ divides the stale pseudo-gradient in both places of Nesterov's Δ̄ + μb; c bounds b, in
    pseudo-gradient units).
  - NoLoCo, peer i, group G = all P peers (P = 1: the pull is zero):
      m_i ← clip(μ m_i − (η/λ)·mean_{j∈G} Δ_j + η·(mean_{j∈G} φ_j − φ_i), c) ; φ_i ← φ_i + m_i
    (λ on the pseudo-gradient term only; c bounds m, in parameter units per round; φ_j are the
    anchors the contributions were posted against).
  - clip(x, c) = min(max(x, −c), c) element-wise; c = 0: off.
Outer step s (s = 0..K−1) is the one that applies round s's result (at the end of round s+1).

Writes, all float64:
  ref_phi.f64, ref_mom.f64, ref_theta.f64 (K, P, n): φ, b or m, and θ after outer step s and its
      carry-over; ref_delta.f64 (K, P, n): the contribution posted for round s;
  ref_mag.f64 (K, n): the largest magnitude, over peers, of anything outer step s and the rounds
      that feed it touch (θ at the start and end of the round, θ*, p, L, Δ_j, φ and the momentum
      before and after, |g| + μ|b| or the NoLoCo terms) — the C test's tolerance scale;
  wrong_<variant>_phi.f64 (K, P, n): deliberately wrong implementations the C test must find
      outside its tolerance (staleness 0 or 2, dropped or jumping carry-over, a zero first
      contribution, λ in the wrong places, the clip discarded as in the public CO2 code, no pull,
      μ off by 1e-3).
Also checks, for DiLoCo without a clip, that the hand-written Nesterov step is torch.optim.SGD's
(nesterov=True, float64) fed grad = Δ̄/λ, and exits 1 if not.
"""

import os
import sys

import numpy as np
import torch

torch.set_num_threads(1)
F64 = torch.float64


def read_meta(d):
    meta = {}
    with open(os.path.join(d, "meta.txt")) as f:
        for line in f:
            k, v = line.strip().split("=", 1)
            meta[k] = v if k == "kind" else (int(v) if k in ("n", "rounds", "peers") else float(v))
    return meta


def load(d, name, shape):
    a = np.fromfile(os.path.join(d, name), dtype=np.float32)
    want = int(np.prod(shape))
    if a.size != want:
        sys.exit(f"{d}/{name}: {a.size} values, expected {want}")
    return torch.from_numpy(a.reshape(shape).astype(np.float64))


def save(d, name, t):
    np.ascontiguousarray(t.numpy(), dtype=np.float64).tofile(os.path.join(d, name))


def clip(x, c):
    return torch.clamp(x, -c, c) if c > 0 else x


class Case:
    """One case's inputs and hyperparameters."""

    def __init__(self, d):
        meta = read_meta(d)
        self.kind, self.n, self.K, self.P = meta["kind"], meta["n"], meta["rounds"], meta["peers"]
        if self.kind not in ("diloco", "noloco"):
            sys.exit(f"{d}: unknown kind {self.kind}")
        self.lr, self.mu, self.pen, self.c, self.a = meta["lr"], meta["mu"], meta["pen"], meta["clip"], meta["a"]
        self.phi0 = load(d, "phi0.f32", (self.P, self.n))
        self.target = load(d, "target.f32", (self.n,))
        self.xi = load(d, "xi.f32", (self.K, self.P, self.n))

    def train(self, theta, r):
        """Round r's local training from theta (P, n): θ_end = θ + p, p = a·(θ* − θ) + ξ_r."""
        p = self.a * (self.target - theta) + self.xi[r]
        return theta + p, p


def outer_step(cs, phi, mom, deltas, anchors, pen_where="both", apply_clip=True, pull=True, mu_delta=0.0):
    """Every peer's outer step from one round's contributions: deltas and the anchors they were
    posted against, (P, n) each. Returns (φ, momentum, the magnitudes touched). The keywords
    produce wrong variants: λ nowhere ('none'), in b only or on the pull as well; the clamp's result
    discarded; no pull; μ perturbed."""
    lr, mu, pen, c = cs.lr, cs.mu + mu_delta, cs.pen, cs.c
    dbar = deltas.mean(0)  # every peer's group is all P peers
    new_phi, new_mom, seen = phi.clone(), mom.clone(), []
    for i in range(cs.P):
        if cs.kind == "diloco":
            g = dbar / pen if pen_where != "none" else dbar
            b = mu * mom[i] + g
            b = clip(b, c) if apply_clip else b
            nest = g if pen_where != "b_only" else dbar
            new_phi[i] = phi[i] - lr * (nest + mu * b)
            new_mom[i] = b
            seen.append(g.abs() + mu * b.abs())
        else:
            pgrad = (lr / pen) * dbar if pen_where != "none" else lr * dbar
            pl = lr * (anchors.mean(0) - phi[i]) if pull else torch.zeros_like(dbar)
            if pen_where == "pull_too":
                pl = pl / pen
            m = mu * mom[i] - pgrad + pl
            seen += [mu * mom[i], pgrad, pl, m]
            m = clip(m, c) if apply_clip else m
            new_mom[i] = m
            new_phi[i] = phi[i] + m
    return new_phi, new_mom, seen


def reference(cs):
    """ALGORITHMS.md's CO2 overlap, step by step. Returns the trajectories and the magnitudes."""
    K, P, n = cs.K, cs.P, cs.n
    out = {k: torch.zeros(K, P, n, dtype=F64) for k in ("phi", "mom", "theta", "delta")}
    mag = torch.zeros(K, n, dtype=F64)

    def amax(*ts):
        return torch.stack([t.abs().reshape(-1, n).amax(0) for t in ts]).amax(0)

    phi, mom, theta = cs.phi0.clone(), torch.zeros(P, n, dtype=F64), cs.phi0.clone()
    # Round 0: train, post Δ₀ = φ − θ_end(round 0), keep training from the current θ.
    end, p = cs.train(theta, 0)
    posted = [(phi - end, phi.clone())]
    out["delta"][0] = posted[0][0]
    mag[0] = amax(theta, end, p, cs.target, posted[0][0])
    theta = end
    start = theta.clone()  # θ at the start of round 1
    for t in range(K):
        # End of round t+1 (t + 1 = K: training is over, nothing was trained, L = 0).
        touched = [start, phi, mom]
        if t + 1 < K:
            theta, p = cs.train(theta, t + 1)
            touched += [theta, p, cs.target]
        deltas, anchors = posted[t]  # round t's contributions only: one round stale
        phi, mom, seen = outer_step(cs, phi, mom, deltas, anchors)
        L = theta - start
        theta = phi + L  # the new anchor plus the round-(t+1) progress
        touched += [deltas, anchors, phi, mom, L, theta] + seen
        out["phi"][t], out["mom"][t], out["theta"][t] = phi, mom, theta
        mag[t] = torch.maximum(mag[t], amax(*touched))
        if t + 1 < K:
            posted.append((-L, phi.clone()))  # "Δ = φ_new − θ_i = −L"
            out["delta"][t + 1] = -L
            start = theta.clone()  # after the carry-over, so the next L holds no jump
    return out, mag


def timeline(cs, staleness=1, carry="co2", first_zero=False, **step_kw):
    """A second, generic coding of the overlap for the wrong variants: results applied `staleness`
    rounds late (0: no overlap, θ ← φ_new at once); carry 'drop' (θ ← φ_new, the progress lost) or
    'jump' (L measured from θ before the previous carry-over); first_zero (Δ₀ = 0). With the
    defaults it is the reference again (checked). Returns φ after each outer step."""
    K, P, n, d = cs.K, cs.P, cs.n, staleness
    phi, mom, theta = cs.phi0.clone(), torch.zeros(P, n, dtype=F64), cs.phi0.clone()
    start = before_carry = theta.clone()
    posted, phis = [], []
    for r in range(K + d):
        if r < K:
            theta = cs.train(theta, r)[0]
        if d == 0:
            posted.append((phi - theta, phi.clone()))
        before = theta.clone()
        if r >= d:
            phi, mom, _ = outer_step(cs, phi, mom, *posted[r - d], **step_kw)
            if d == 0 or carry == "drop":
                theta = phi.clone()
            else:
                theta = phi + (theta - (before_carry if carry == "jump" else start))
            phis.append(phi)
        if d > 0 and r < K:
            delta = torch.zeros_like(phi) if (r == 0 and first_zero) else phi - theta
            posted.append((delta, phi.clone()))
            start, before_carry = theta.clone(), before
    return torch.stack(phis)


def check_sgd(d, dbars, phi0, lr, mu, pen, ref):
    """The hand-written Nesterov step is torch.optim.SGD's (float64), fed grad = Δ̄/λ."""
    p = torch.nn.Parameter(phi0.clone())
    opt = torch.optim.SGD([p], lr=lr, momentum=mu, nesterov=True)
    worst = 0.0
    for s, db in enumerate(dbars):
        p.grad = db / pen
        opt.step()
        worst = max(worst, (p.detach() - ref["phi"][s, 0]).abs().max().item(),
                    (opt.state[p]["momentum_buffer"] - ref["mom"][s, 0]).abs().max().item())
    scale = ref["phi"].abs().max().item()
    print(f"  {os.path.basename(d)}: hand-written Nesterov vs torch.optim.SGD (float64): max |diff| {worst:.3g}")
    return worst <= 1e-12 * scale


def run(d):
    cs = Case(d)
    ref, mag = reference(cs)
    for k in ("phi", "mom", "theta", "delta"):
        save(d, f"ref_{k}.f64", ref[k])
    save(d, "ref_mag.f64", mag)
    name, ok = os.path.basename(d), True
    # The two codings of the overlap agree (float64: to a few ulps of the magnitudes involved).
    again = timeline(cs)
    diff = (again - ref["phi"]).abs().max().item()
    if diff > 1e-13 * mag.max().item():
        print(f"  {name}: FAIL the generic timeline disagrees with the reference by {diff:.3g}")
        ok = False
    if cs.kind == "diloco" and cs.c == 0:
        ok = check_sgd(d, ref["delta"].mean(1), cs.phi0[0], cs.lr, cs.mu, cs.pen, ref) and ok
    variants = {
        "sync": dict(staleness=0),
        "stale_by_two": dict(staleness=2),
        "progress_dropped": dict(carry="drop"),
        "start_before_carry": dict(carry="jump"),
        "first_zero": dict(first_zero=True),
        "mu_perturbed": dict(mu_delta=1e-3),
    }
    if cs.pen != 1:
        variants["no_penalty"] = dict(pen_where="none")
        if cs.kind == "diloco":
            variants["penalty_b_only"] = dict(pen_where="b_only")
        else:
            variants["penalty_on_pull"] = dict(pen_where="pull_too")
    if cs.c > 0:
        variants["clip_discarded"] = dict(apply_clip=False)
    if cs.kind == "noloco" and cs.P > 1:
        variants["no_pull"] = dict(pull=False)
    for v, kw in variants.items():
        save(d, f"wrong_{v}_phi.f64", timeline(cs, **kw))
    return ok


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    ok = True
    for case in sorted(os.listdir(root)):
        d = os.path.join(root, case)
        if os.path.isdir(d):
            ok = run(d) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
