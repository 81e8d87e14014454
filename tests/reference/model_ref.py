#!/usr/bin/python3
"""PyTorch reference for the bitkd training engine (docs/training.md).

An independent implementation of the same decoder, fake-quantizers and
straight-through estimator, differentiated by autograd. Used by
tests/unit/test_reference.cpp:

    model_ref.py DIR

DIR holds (all little-endian):
    case.json     {"config": {...model config...}, "batch": B, "seq": T,
                   "rounding": "half_away" | "half_even",
                   "params": [{"name", "offset", "rows", "cols"}, ...]}
    params.bin    float32, every parameter at its offset (floats)
    tokens.bin    int32 [B*T]
    quant.bin     float32: the engine's activation codes [B*T, c] then steps [B*T]
                  of every quantized projection input, in forward order
    mask.bin      uint8 [B*T]  (1 = real token, 0 = padding)
    targets.bin   int32 [B*T]
    weights.bin   float32 [B*T] (loss weight per position, 0 = ignored)
and receives:
    logits.bin    float32 [B*T, V]
    loss.txt      the weighted mean cross-entropy
    quant_check.txt  "codes mismatches worst_tie worst_step" (see QuantSync)
    grads.bin     float32, same layout as params.bin

Arithmetic follows the engine's documented order so that quantization
rounding agrees: scales reduced in float64 then rounded to float32,
RMSNorm's mean of squares in float64, RoPE tables in float64.
"""
import json
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

EPS_Q = 1e-5  # quantizer epsilon (becomes float32 when combined with float32 tensors)
SQRT7 = float(np.float32(math.sqrt(7.0)))


def make_round(rule):
    if rule == "half_even":
        return torch.round  # torch.round rounds half to even
    if rule == "half_away":
        def round_half_away(x):
            t = torch.trunc(x)
            return torch.where((x - t).abs() >= 0.5, t + torch.sign(x), t)
        return round_half_away
    raise ValueError("unknown rounding rule " + rule)


def ste(x, xq):
    """Forward value xq, gradient passed to x unchanged."""
    return x + (xq - x).detach()


def ternary(w, rnd):
    gamma = w.detach().abs().double().mean().float()
    wq = gamma * torch.clamp(rnd(w.detach() / (gamma + EPS_Q)), -1.0, 1.0)
    return ste(w, wq)


class QuantSync:
    """The engine's activation codes and steps (quant.bin), consumed in the
    order the forward quantizes. At each site the reference quantizes its own
    values, records how its codes compare with the engine's, then continues
    from the engine's (forward value code * step, gradient straight through),
    so a value that two correct implementations round to neighbouring codes
    at a tie cannot make the rest of the comparison diverge."""

    def __init__(self, path, rnd):
        self.flat = np.fromfile(path, dtype="<f4") if path else np.zeros(0, dtype="<f4")
        self.pos = 0
        self.rnd = rnd
        self.codes = 0
        self.mismatches = 0
        self.worst_tie = 0.0  # largest distance from a rounding tie among differing codes
        self.worst_step = 0.0  # largest relative step difference

    def take(self, n):
        out = self.flat[self.pos:self.pos + n]
        if out.size != n:
            raise SystemExit("quant.bin holds fewer values than the model quantizes")
        self.pos += n
        return torch.from_numpy(out.copy())

    def __call__(self, x, bits):
        if bits == 0:
            return x
        xd = x.detach()
        if bits == 8:
            amax = xd.abs().amax(dim=-1, keepdim=True)
            s = 127.0 / torch.clamp(amax, min=EPS_Q)
            v = xd * s
            step = 1.0 / s
            lo, hi = -128.0, 127.0
        else:
            b = xd.abs().double().mean(dim=-1, keepdim=True).float()
            v = xd * SQRT7 / (b + EPS_Q)
            step = b / SQRT7
            lo, hi = -8.0, 7.0
        mine = torch.clamp(self.rnd(v), lo, hi)
        c = x.shape[-1]
        rows = x.numel() // c
        theirs = self.take(rows * c).reshape(x.shape)
        their_step = self.take(rows).reshape(x.shape[:-1] + (1,))
        self.codes += mine.numel()
        diff = mine != theirs
        if diff.any():
            self.mismatches += int(diff.sum())
            far = (mine - theirs).abs() > 1
            tie = ((v.abs() - v.abs().floor()) - 0.5).abs()
            worst = float("inf") if far.any() else float(tie[diff].max())
            self.worst_tie = max(self.worst_tie, worst)
        rel = ((step - their_step).abs() / their_step.abs().clamp(min=1e-30)).max()
        self.worst_step = max(self.worst_step, float(rel))
        return ste(x, theirs * their_step)


def rmsnorm(x, g, eps):
    ms = x.double().pow(2).mean(dim=-1, keepdim=True)
    rstd = (1.0 / torch.sqrt(ms + float(np.float32(eps)))).float()
    return x * rstd * g


def rope_tables(seq, head_dim, theta):
    half = head_dim // 2
    pos = np.arange(seq, dtype=np.float64)[:, None]
    freq = np.array([float(theta) ** (-2.0 * i / head_dim) for i in range(half)], dtype=np.float64)[None, :]
    ang = pos * freq
    return torch.from_numpy(np.cos(ang).astype(np.float32)), torch.from_numpy(np.sin(ang).astype(np.float32))


def rope(x, cos, sin):
    # x [B, T, heads, d]; rotate_half convention (Hugging Face Llama)
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    return torch.cat([a * c - b * s, b * c + a * s], dim=-1)


def attention(q, k, v, mask, n_heads, n_kv):
    # q [B,T,H,d], k,v [B,T,KV,d], mask [B,T] bool (True = real)
    B, T, H, d = q.shape
    group = n_heads // n_kv
    k = k.repeat_interleave(group, dim=2)
    v = v.repeat_interleave(group, dim=2)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B,H,T,d]
    scale = float(np.float32(1.0) / np.sqrt(np.float32(d)))
    scores = (q @ k.transpose(-1, -2)) * scale  # [B,H,T,T]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    allowed = causal[None, None] & mask[:, None, None, :]
    scores = scores.masked_fill(~allowed, -1e30)
    p = torch.softmax(scores, dim=-1)
    row_valid = allowed.any(dim=-1, keepdim=True)
    p = p * row_valid  # a query with no visible real key gets zeros
    out = p @ v  # [B,H,T,d]
    return out.transpose(1, 2).reshape(B, T, H * d)


def projection_bits(cfg):
    bits = cfg["act_bits"]
    if bits == 0:
        return 0, 0, 0, 0
    if bits == 8:
        return 8, 8, 8, 8
    od = 4 if cfg["a4_scope"] == "all" else 8
    return 4, od, 4, od


def main():
    d = sys.argv[1]
    case = json.load(open(d + "/case.json"))
    cfg = case["config"]
    B, T = case["batch"], case["seq"]
    rnd = make_round(case["rounding"])
    act_quant = QuantSync(d + "/quant.bin" if cfg["act_bits"] else None, rnd)
    flat = np.fromfile(d + "/params.bin", dtype="<f4")
    params = {}
    for p in case["params"]:
        n = p["rows"] * p["cols"]
        arr = flat[p["offset"]:p["offset"] + n].copy()
        shape = (p["rows"],) if p["cols"] == 1 else (p["rows"], p["cols"])
        params[p["name"]] = torch.tensor(arr.reshape(shape), requires_grad=True)

    tokens = torch.from_numpy(np.fromfile(d + "/tokens.bin", dtype="<i4").astype(np.int64)).reshape(B, T)
    mask = torch.from_numpy(np.fromfile(d + "/mask.bin", dtype=np.uint8)).reshape(B, T) != 0
    targets = torch.from_numpy(np.fromfile(d + "/targets.bin", dtype="<i4").astype(np.int64))
    weights = torch.from_numpy(np.fromfile(d + "/weights.bin", dtype="<f4"))

    D, H, KV, hd = cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"]
    eps = cfg["norm_eps"]
    ternary_w = cfg["weight_quant"] == "ternary"
    b_qkv, b_o, b_gu, b_down = projection_bits(cfg)
    cos, sin = rope_tables(T, hd, cfg["rope_theta"])

    def W(name):
        w = params[name]
        return ternary(w, rnd) if ternary_w else w

    def bitlinear(x, name, bits):
        return act_quant(x, bits) @ W(name).t()

    x = params["model.embed_tokens.weight"][tokens]  # [B,T,D]
    for l in range(cfg["n_layers"]):
        p = "model.layers.%d." % l
        xn = rmsnorm(x, params[p + "input_layernorm.weight"], eps)
        xq = act_quant(xn, b_qkv)
        q = (xq @ W(p + "self_attn.q_proj.weight").t()).reshape(B, T, H, hd)
        k = (xq @ W(p + "self_attn.k_proj.weight").t()).reshape(B, T, KV, hd)
        v = (xq @ W(p + "self_attn.v_proj.weight").t()).reshape(B, T, KV, hd)
        a = attention(rope(q, cos, sin), rope(k, cos, sin), v, mask, H, KV)
        if cfg["subln"]:
            a = rmsnorm(a, params[p + "self_attn.inner_norm.weight"], eps)
        h = x + bitlinear(a, p + "self_attn.o_proj.weight", b_o)
        hn = act_quant(rmsnorm(h, params[p + "post_attention_layernorm.weight"], eps), b_gu)
        up = hn @ W(p + "mlp.up_proj.weight").t()
        if cfg["ffn_act"] == "swiglu":
            gate = hn @ W(p + "mlp.gate_proj.weight").t()
            m = F.silu(gate) * up
        else:
            m = torch.relu(up) ** 2
        if cfg["subln"]:
            m = rmsnorm(m, params[p + "mlp.ffn_layernorm.weight"], eps)
        x = h + bitlinear(m, p + "mlp.down_proj.weight", b_down)
    x = rmsnorm(x, params["model.norm.weight"], eps)
    head = params["model.embed_tokens.weight"] if cfg["tie_embeddings"] else params["lm_head.weight"]
    logits = (x @ head.t()).reshape(B * T, -1)

    V = logits.shape[1]
    counted = (weights != 0) & (targets >= 0) & (targets < V)
    w = torch.where(counted, weights, torch.zeros_like(weights))
    safe_t = torch.where(counted, targets, torch.zeros_like(targets))
    ce = torch.logsumexp(logits, dim=-1) - logits.gather(1, safe_t[:, None])[:, 0]
    wsum = w.double().sum()
    loss = (w * ce).sum() / wsum.float() if wsum > 0 else (w * ce).sum() * 0.0
    loss.backward()

    logits.detach().numpy().astype("<f4").tofile(d + "/logits.bin")
    with open(d + "/loss.txt", "w") as f:
        f.write("%.9g\n" % loss.item())
    if act_quant.pos != act_quant.flat.size:
        raise SystemExit("quant.bin holds more values than the model quantizes")
    with open(d + "/quant_check.txt", "w") as f:
        f.write("%d %d %.9g %.9g\n" % (act_quant.codes, act_quant.mismatches, act_quant.worst_tie,
                                        act_quant.worst_step))
    grads = np.zeros_like(flat)
    for p in case["params"]:
        g = params[p["name"]].grad
        n = p["rows"] * p["cols"]
        if g is not None:
            grads[p["offset"]:p["offset"] + n] = g.numpy().reshape(-1)
    grads.astype("<f4").tofile(d + "/grads.bin")


if __name__ == "__main__":
    main()
