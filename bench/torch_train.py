#!/usr/bin/python3
"""Training throughput of the bitkd student in PyTorch (the comparison for
`bitkd bench train --compare-torch`).

The same math as the C++ engine (docs/architecture.md, "Model"), written the way a
PyTorch user would: Llama-style decoder with SubLN, RoPE (rotate_half),
causal attention, SwiGLU or ReLU^2, BitLinear projections with absmean
ternary weights and per-token 8-bit absmax (or 4-bit absmean) activations,
both fake-quantized with a straight-through estimator; full-precision
embedding, final norm and (tied) LM head; mean cross-entropy; AdamW
(decoupled decay, none on norms and embeddings) with global-norm clipping;
fp32 throughout. Random tokens, as in the C++ benchmark.

Prints one JSON object: tokens_per_s and the forward/backward/optimizer
split in seconds per step.
"""
import argparse
import json
import math
import os
import platform
import time

import torch
import torch.nn.functional as F

EPS_Q = 1e-5
SQRT7 = math.sqrt(7.0)


def round_half_away(x):
    # The engine rounds half away from zero (std::round), as the BitNet reference does.
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def ste(x, xq):
    return x + (xq - x).detach()


def ternary(w):
    wd = w.detach()
    gamma = wd.abs().mean()
    return ste(w, gamma * torch.clamp(round_half_away(wd / (gamma + EPS_Q)), -1.0, 1.0))


def act_quant(x, bits):
    if bits == 0:
        return x
    xd = x.detach()
    if bits == 8:
        s = 127.0 / torch.clamp(xd.abs().amax(dim=-1, keepdim=True), min=EPS_Q)
        xq = torch.clamp(round_half_away(xd * s), -128.0, 127.0) / s
    else:
        b = xd.abs().mean(dim=-1, keepdim=True)
        xq = (b / SQRT7) * torch.clamp(round_half_away(xd * SQRT7 / (b + EPS_Q)), -8.0, 7.0)
    return ste(x, xq)


def rmsnorm(x, g, eps):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * g


class Student(torch.nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = a
        D, F_, Q, K = a.dim, a.ffn, a.heads * a.head_dim, a.kv_heads * a.head_dim
        P = torch.nn.Parameter

        def mat(rows, cols, std=0.02):
            return P(torch.randn(rows, cols) * std)

        self.embed = mat(a.vocab, D)
        self.lm_head = None if a.tie else mat(a.vocab, D)
        out_std = 0.02 / math.sqrt(2 * a.layers)
        self.layers = torch.nn.ModuleList()
        for _ in range(a.layers):
            L = torch.nn.Module()
            L.attn_norm = P(torch.ones(D))
            L.wq, L.wk, L.wv = mat(Q, D), mat(K, D), mat(K, D)
            L.attn_sub = P(torch.ones(Q)) if a.subln else None
            L.wo = mat(D, Q, out_std)
            L.ffn_norm = P(torch.ones(D))
            L.w_gate = mat(F_, D) if a.ffn_act == "swiglu" else None
            L.w_up = mat(F_, D)
            L.ffn_sub = P(torch.ones(F_)) if a.subln else None
            L.w_down = mat(D, F_, out_std)
            self.layers.append(L)
        self.final_norm = P(torch.ones(D))
        half = a.head_dim // 2
        freq = torch.tensor([a.rope_theta ** (-2.0 * i / a.head_dim) for i in range(half)], dtype=torch.float64)
        ang = torch.arange(a.seq, dtype=torch.float64)[:, None] * freq[None, :]
        self.register_buffer("cos", torch.cos(ang).float()[None, :, None, :])
        self.register_buffer("sin", torch.sin(ang).float()[None, :, None, :])
        self.register_buffer("causal", torch.ones(a.seq, a.seq, dtype=torch.bool).tril())
        bits = a.act_bits
        o_bits = 4 if a.a4_scope == "all" else 8
        self.bits = (0, 0, 0, 0) if bits == 0 else (8, 8, 8, 8) if bits == 8 else (4, o_bits, 4, o_bits)

    def W(self, w):
        return ternary(w) if self.a.weight_quant == "ternary" else w

    def rope(self, x):
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * self.cos - x2 * self.sin, x2 * self.cos + x1 * self.sin], dim=-1)

    def forward(self, tokens):
        a = self.a
        B, T = tokens.shape
        eps = a.norm_eps
        b_qkv, b_o, b_gu, b_down = self.bits
        x = F.embedding(tokens, self.embed)
        group = a.heads // a.kv_heads
        for L in self.layers:
            xq = act_quant(rmsnorm(x, L.attn_norm, eps), b_qkv)
            q = F.linear(xq, self.W(L.wq)).view(B, T, a.heads, a.head_dim)
            k = F.linear(xq, self.W(L.wk)).view(B, T, a.kv_heads, a.head_dim)
            v = F.linear(xq, self.W(L.wv)).view(B, T, a.kv_heads, a.head_dim)
            q, k = self.rope(q), self.rope(k)
            if group > 1:
                k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(a.head_dim))
            att = torch.softmax(att.masked_fill(~self.causal[:T, :T], float("-inf")), dim=-1)
            o = (att @ v).transpose(1, 2).reshape(B, T, a.heads * a.head_dim)
            if L.attn_sub is not None:
                o = rmsnorm(o, L.attn_sub, eps)
            h = x + F.linear(act_quant(o, b_o), self.W(L.wo))
            hq = act_quant(rmsnorm(h, L.ffn_norm, eps), b_gu)
            up = F.linear(hq, self.W(L.w_up))
            m = F.silu(F.linear(hq, self.W(L.w_gate))) * up if L.w_gate is not None else torch.relu(up).square()
            if L.ffn_sub is not None:
                m = rmsnorm(m, L.ffn_sub, eps)
            x = h + F.linear(act_quant(m, b_down), self.W(L.w_down))
        x = rmsnorm(x, self.final_norm, eps)
        return F.linear(x, self.embed if self.lm_head is None else self.lm_head)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=0)
    p.add_argument("--ffn", type=int, default=0)
    p.add_argument("--ffn-act", default="swiglu", choices=["swiglu", "relu2"])
    p.add_argument("--weight-quant", default="ternary", choices=["ternary", "none"])
    p.add_argument("--act-bits", type=int, default=8, choices=[0, 4, 8])
    p.add_argument("--a4-scope", default="hybrid", choices=["hybrid", "all"])
    p.add_argument("--subln", type=int, default=1)
    p.add_argument("--tie", type=int, default=1)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--norm-eps", type=float, default=1e-5)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--seed", type=int, default=1234)
    a = p.parse_args()
    if a.kv_heads == 0:
        a.kv_heads = a.heads
    a.head_dim = a.dim // a.heads
    if a.ffn == 0:  # the engine's default width
        a.ffn = 4 * a.dim if a.ffn_act == "relu2" else ((8 * a.dim + 2) // 3 + 63) // 64 * 64
    threads = a.threads if a.threads > 0 else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    torch.manual_seed(a.seed)

    model = Student(a)
    decay, no_decay = [], []
    for name, prm in model.named_parameters():
        (no_decay if prm.dim() == 1 or name in ("embed",) else decay).append(prm)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(a.seed)
    tokens = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g)
    targets = torch.randint(0, a.vocab, (a.batch * a.seq,), generator=g)

    t_fwd = t_bwd = t_opt = 0.0
    losses = []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        logits = model(tokens)
        loss = F.cross_entropy(logits.view(-1, a.vocab), targets)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        losses.append(loss.item())
        if step >= a.warmup:
            t_fwd += t1 - t0
            t_bwd += t2 - t1
            t_opt += t3 - t2
    n = max(1, a.steps)
    step_s = (t_fwd + t_bwd + t_opt) / n
    print(json.dumps({
        "impl": "pytorch",
        "torch_version": torch.__version__,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "threads": torch.get_num_threads(),
        "config": {"vocab_size": a.vocab, "dim": a.dim, "n_layers": a.layers, "n_heads": a.heads,
                   "n_kv_heads": a.kv_heads, "head_dim": a.head_dim, "ffn_dim": a.ffn, "ffn_act": a.ffn_act,
                   "weight_quant": a.weight_quant, "act_bits": a.act_bits, "subln": bool(a.subln),
                   "tie_embeddings": bool(a.tie)},
        "batch": a.batch, "seq": a.seq, "steps": a.steps, "warmup_steps": a.warmup,
        "params": sum(p.numel() for p in model.parameters()),
        "tokens_per_s": a.batch * a.seq / step_s,
        "step_s": step_s,
        "time_split_s": {"forward_and_loss": t_fwd / n, "backward": t_bwd / n, "optimizer": t_opt / n},
        "loss_first": losses[0], "loss_last": losses[-1],
    }))


if __name__ == "__main__":
    main()
