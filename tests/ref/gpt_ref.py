"""PyTorch reference for loco's GPT-2, written independently of loco's C code.

Same architecture as model/gpt.c: learned token and position embeddings, pre-LN blocks
(LayerNorm eps 1e-5), causal multi-head attention scaled by 1/sqrt(head size), a 4x MLP with
GELU (tanh approximation), final LayerNorm and an LM head tied to the token embedding.

Parameter names are Hugging Face GPT-2's. The module stores every matrix as torch.nn.Linear does,
(out, in); Hugging Face's Conv1D layout (in, out) appears only in `load_hf_state` and in
`flat_layout(hf=True)`.

Helpers: the flat parameter layout of gpt.h (computed here from the documented order, not read
from loco), raw little-endian dumps, safetensors parsing by hand (json + numpy, no dependency),
token shards, and tolerance checks that print the worst element.
"""

import json
import math
import struct

import numpy as np
import torch
import torch.nn.functional as F


def setup_torch():
    torch.set_default_dtype(torch.float32)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.manual_seed(0)


BLOCK_SPEC = [  # (suffix, rows in units of C, cols in units of C (0 = vector), weight decay)
    ("ln_1.weight", 1, 0, 0), ("ln_1.bias", 1, 0, 0),
    ("attn.c_attn.weight", 3, 1, 1), ("attn.c_attn.bias", 3, 0, 0),
    ("attn.c_proj.weight", 1, 1, 1), ("attn.c_proj.bias", 1, 0, 0),
    ("ln_2.weight", 1, 0, 0), ("ln_2.bias", 1, 0, 0),
    ("mlp.c_fc.weight", 4, 1, 1), ("mlp.c_fc.bias", 4, 0, 0),
    ("mlp.c_proj.weight", 1, 4, 1), ("mlp.c_proj.bias", 1, 0, 0),
]


def flat_layout(L, C, maxT, V):
    """[(name, offset, shape (out, in) or (n,))] in the storage order documented in model/gpt.h."""
    out, off = [], 0

    def add(name, shape):
        nonlocal off
        out.append((name, off, shape))
        off += int(np.prod(shape))

    add("wte.weight", (V, C))
    add("wpe.weight", (maxT, C))
    for l in range(L):
        for suffix, r, c, _ in BLOCK_SPEC:
            add("h.%d.%s" % (l, suffix), (r * C, c * C) if c else (r * C,))
    add("ln_f.weight", (C,))
    add("ln_f.bias", (C,))
    return out, off


def is_conv1d(name):
    return name.endswith(".weight") and (".attn.c_" in name or ".mlp.c_" in name)


class Block(torch.nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.ln_1 = torch.nn.LayerNorm(C, eps=1e-5)
        self.attn = torch.nn.Module()
        self.attn.c_attn = torch.nn.Linear(C, 3 * C)
        self.attn.c_proj = torch.nn.Linear(C, C)
        self.ln_2 = torch.nn.LayerNorm(C, eps=1e-5)
        self.mlp = torch.nn.Module()
        self.mlp.c_fc = torch.nn.Linear(C, 4 * C)
        self.mlp.c_proj = torch.nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        hs = C // self.NH
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(C, dim=2)
        q = q.view(B, T, self.NH, hs).transpose(1, 2)  # (B,NH,T,hs)
        k = k.view(B, T, self.NH, hs).transpose(1, 2)
        v = v.view(B, T, self.NH, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.attn.c_proj(y)
        h = F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh")
        return x + self.mlp.c_proj(h)


class GPT(torch.nn.Module):
    def __init__(self, L, C, NH, maxT, V):
        super().__init__()
        self.L, self.C, self.NH, self.maxT, self.V = L, C, NH, maxT, V
        self.wte = torch.nn.Embedding(V, C)
        self.wpe = torch.nn.Embedding(maxT, C)
        self.h = torch.nn.ModuleList([Block(C, NH) for _ in range(L)])
        self.ln_f = torch.nn.LayerNorm(C, eps=1e-5)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for blk in self.h:
            x = blk(x)
        logits = self.ln_f(x) @ self.wte.weight.t()  # tied head
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, self.V), targets.view(-1))
        return logits, loss

    def load_flat(self, flat):
        """Copies a loco flat buffer (numpy float32) into the parameters, by name."""
        layout, n = flat_layout(self.L, self.C, self.maxT, self.V)
        assert flat.size == n, "flat buffer has %d floats, layout wants %d" % (flat.size, n)
        params = dict(self.named_parameters())
        assert set(params) == {name for name, _, _ in layout}, "parameter names differ from the layout"
        with torch.no_grad():
            for name, off, shape in layout:
                params[name].copy_(torch.from_numpy(flat[off:off + int(np.prod(shape))].reshape(shape)))

    def flat(self, what="param"):
        """The parameters (or their gradients) as one loco-layout float32 numpy buffer."""
        layout, n = flat_layout(self.L, self.C, self.maxT, self.V)
        params = dict(self.named_parameters())
        out = np.zeros(n, dtype=np.float32)
        for name, off, shape in layout:
            t = params[name] if what == "param" else params[name].grad
            out[off:off + int(np.prod(shape))] = t.detach().numpy().reshape(-1)
        return out

    def load_hf_state(self, state):
        """Loads Hugging Face GPT-2 tensors (Conv1D weights stored (in, out))."""
        params = dict(self.named_parameters())
        missing = set(params) - set(state)
        extra = set(state) - set(params)
        assert not missing and not extra, "missing %s, unexpected %s" % (sorted(missing), sorted(extra))
        with torch.no_grad():
            for name, p in params.items():
                t = torch.from_numpy(np.array(state[name], dtype=np.float32))
                if is_conv1d(name):
                    t = t.t()
                assert tuple(t.shape) == tuple(p.shape), "%s: shape %s, want %s" % (name, tuple(t.shape), tuple(p.shape))
                p.copy_(t)


def load_safetensors(path):
    """Parses a safetensors file by hand: u64 LE header length, JSON header, raw LE data."""
    with open(path, "rb") as f:
        blob = f.read()
    (hlen,) = struct.unpack("<Q", blob[:8])
    assert 8 + hlen <= len(blob), "header length %d exceeds the file" % hlen
    header = json.loads(blob[8:8 + hlen].decode("utf-8"))
    data = blob[8 + hlen:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", "%s: dtype %s" % (name, info["dtype"])
        b, e = info["data_offsets"]
        shape = tuple(info["shape"])
        assert e - b == 4 * int(np.prod(shape)) and e <= len(data), "%s: bad data_offsets" % name
        out[name] = np.frombuffer(data[b:e], dtype="<f4").reshape(shape)
    return out


def read_shard(path):
    """llm.c token shard: 256 int32 LE header (magic 20240520, version 1, count), uint16 tokens."""
    with open(path, "rb") as f:
        blob = f.read()
    header = np.frombuffer(blob[:1024], dtype="<i4")
    assert header[0] == 20240520 and header[1] == 1, "not a version-1 token shard: %s" % path
    ntok = int(header[2])
    tokens = np.frombuffer(blob[1024:], dtype="<u2")
    assert tokens.size == ntok, "%s: header says %d tokens, file holds %d" % (path, ntok, tokens.size)
    return tokens


def lr_schedule(step, warmup, total, lr, lr_min):
    """ALGORITHMS.md: linear warmup from lr/warmup to lr, then cosine to lr_min at `total`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if step >= total:
        return lr_min
    progress = (step - warmup) / (total - warmup)
    return lr_min + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - lr_min)


class Checker:
    """Compares arrays with |got − ref| ≤ atol + rtol·|ref| and prints the worst element.

    With max_frac > 0, up to that fraction of the elements may exceed the bound as long as every
    element stays within hard_atol (used after several Adam steps, where elements whose gradient
    is at the rounding-noise level get lr-sized steps of either sign on both sides)."""

    def __init__(self, prefix=""):
        self.prefix = prefix
        self.failures = []
        self.worst = {}  # label -> (max abs err, rel err there, max err/bound)

    def check(self, label, got, ref, atol, rtol, max_frac=0.0, hard_atol=None):
        got = np.asarray(got, dtype=np.float64).reshape(-1)
        ref = np.asarray(ref, dtype=np.float64).reshape(-1)
        label = self.prefix + label
        if got.shape != ref.shape:
            self.failures.append(label)
            print("FAIL %-34s shape %s vs %s" % (label, got.shape, ref.shape))
            return False
        if not np.all(np.isfinite(got)):
            self.failures.append(label)
            print("FAIL %-34s non-finite values in loco's output" % label)
            return False
        err = np.abs(got - ref)
        rel = err / np.maximum(np.abs(ref), 1e-30)
        bound = atol + rtol * np.abs(ref)
        ratio = err / np.maximum(bound, 1e-38)
        i = int(np.argmax(ratio))        # the element closest to (or furthest past) its bound
        ia = int(np.argmax(err))
        over = int(np.sum(err > bound))
        ok = over <= max_frac * got.size
        if hard_atol is not None:
            ok = ok and bool(err[ia] <= hard_atol)
        self.worst[label] = (float(err[ia]), float(rel[ia]), float(ratio[i]))
        extra = ""
        if max_frac > 0:
            extra = "  %d over (allowed %d), hard bound %.2e" % (over, int(max_frac * got.size), hard_atol)
        print("%s %-38s n=%-6d max|ref|=%.3e  max_abs=%.3e (rel %.2e at %d: loco %.9g ref %.9g)  "
              "err/bound max %.3f at %d%s" %
              ("ok  " if ok else "FAIL", label, got.size, float(np.max(np.abs(ref))) if ref.size else 0.0,
               err[ia], rel[ia], ia, got[ia], ref[ia], ratio[i], i, extra))
        if not ok:
            self.failures.append(label)
        return ok
