#!/usr/bin/env python3
"""PyTorch eager baseline for tests/bench/bench_gpu.c: the same GPT-2 architecture as loco's model
(pre-LN blocks, tanh GELU, LayerNorm eps 1e-5, learned positions, tied LM head, biases on every
Linear), the same step (zero_grad, forward, cross-entropy, backward, clip_grad_norm_(1.0), AdamW
with weight decay on matrices and embeddings), random tokens, fp32 with TF32 allowed (or not).
Attention is F.scaled_dot_product_attention(is_causal=True), what an eager user writes.

    torch_gpt.py L C NH T V B [steps=20] [warmup=5] [tf32=1] [fused=1]

Prints one JSON line with the same fields as bench_gpu."""
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.nh = NH
        self.ln_1 = nn.LayerNorm(C, eps=1e-5)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.nh, C // self.nh).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L, C, NH, T, V):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.h = nn.ModuleList(Block(C, NH) for _ in range(L))
        self.ln_f = nn.LayerNorm(C, eps=1e-5)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / (2 * L) ** 0.5 if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for b in self.h:
            x = b(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    a = sys.argv[1:]
    if len(a) < 6:
        print(__doc__, file=sys.stderr)
        return 2
    L, C, NH, T, V, B = (int(x) for x in a[:6])
    steps = int(a[6]) if len(a) > 6 else 20
    warmup = int(a[7]) if len(a) > 7 else 5
    tf32 = int(a[8]) if len(a) > 8 else 1
    fused = int(a[9]) if len(a) > 9 else 1
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    dev = torch.device("cuda")
    torch.manual_seed(1337)
    t0 = time.perf_counter()
    model = GPT(L, C, NH, T, V).to(dev)
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8, fused=bool(fused))
    torch.cuda.synchronize()
    setup = time.perf_counter() - t0
    g = torch.Generator(device=dev)
    g.manual_seed(1)
    times, first, loss_v = [], None, None
    for s in range(warmup + steps):
        idx = torch.randint(0, V, (B, T), device=dev, generator=g)
        tgt = torch.randint(0, V, (B, T), device=dev, generator=g)
        torch.cuda.synchronize()
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(idx, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_v = loss.item()  # waits, as loco's bench reads its loss every step
        if s == 0:
            first = loss_v
        if s >= warmup:
            times.append(time.perf_counter() - t)
    times.sort()
    med = times[len(times) // 2]
    n = sum(p.numel() for p in model.parameters())
    flops_tok = 6.0 * n + 12.0 * L * C * T
    tps = B * T / med
    print(json.dumps({
        "impl": "torch", "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0), "L": L, "C": C,
        "NH": NH, "T": T, "V": V, "B": B, "tf32": tf32, "fused_adamw": fused, "params": n, "steps": steps,
        "ms_per_step_median": round(1e3 * med, 3), "ms_per_step_min": round(1e3 * times[0], 3),
        "tokens_per_s": round(tps, 1), "model_tflops": round(tps * flops_tok / 1e12, 2),
        "first_loss": round(first, 4), "last_loss": round(loss_v, 4), "setup_s": round(setup, 2),
        "gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
