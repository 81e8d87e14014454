#!/usr/bin/python3
"""Hugging Face model directories and an independent PyTorch forward for them
(tests/unit/test_hf_model.cpp).

    hf_ref.py OUTDIR

Writes random-weight models as HF publishes them (config.json plus
model.safetensors, or shards plus model.safetensors.index.json), with a
small safetensors writer of its own (the format: u64 header length, JSON
header, raw little-endian data), and for each the logits of TOKENS computed
the way transformers' modeling_llama.py / modeling_mistral.py compute them:
RMSNorm (x * rsqrt(mean(x^2) + eps) * w), rotate_half RoPE with rope_theta,
Llama 3.1's rope_scaling (rope_type llama3), GQA by repeating k/v heads, causal softmax attention, SwiGLU MLP, tied or
untied LM head. The forward runs in float64 on the stored (rounded) weights,
so it is the exact value bitkd's fp32 forward approximates.

    OUTDIR/<case>/...            the model directory
    OUTDIR/<case>.logits.bin     float32 [len(TOKENS), vocab]
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch

TOKENS = [1, 17, 5, 93, 42, 42, 7, 0, 64, 3, 88, 21]

CASES = [
    # name, architecture, dtype, tied, shards
    ("llama_f32", "LlamaForCausalLM", torch.float32, False, 1),
    ("llama_bf16_sharded", "LlamaForCausalLM", torch.bfloat16, True, 3),
    ("mistral_f16", "MistralForCausalLM", torch.float16, False, 2),
    ("llama3_scaled", "LlamaForCausalLM", torch.float32, False, 1),
]
# Llama 3.1's rope scaling, with an original context so short that the head's
# 8 frequencies (theta 500000, head 16) fall in all three bands: wavelength
# 6.3 < 64 / 4 kept, 32 interpolated, 167 and longer > 64 / 1 slowed by 8.
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 64}
DIM, LAYERS, HEADS, KV_HEADS, FFN, VOCAB = 64, 2, 4, 2, 160, 96
HEAD = DIM // HEADS

ST_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def st_write(path, tensors):
    header, blobs, pos = {}, [], 0
    for name, t in tensors.items():
        raw = t.contiguous().view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.contiguous().numpy().tobytes()
        header[name] = {"dtype": ST_DTYPE[t.dtype], "shape": list(t.shape), "data_offsets": [pos, pos + len(raw)]}
        blobs.append(raw)
        pos += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def make_weights(gen, dtype, tied):
    def mat(r, c, scale=0.08):
        return (torch.randn(r, c, generator=gen, dtype=torch.float64) * scale).to(dtype)

    def norm(n):
        return (1.0 + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)).to(dtype)

    w = {"model.embed_tokens.weight": mat(VOCAB, DIM, 0.5), "model.norm.weight": norm(DIM)}
    for l in range(LAYERS):
        p = "model.layers.%d." % l
        w[p + "input_layernorm.weight"] = norm(DIM)
        w[p + "post_attention_layernorm.weight"] = norm(DIM)
        w[p + "self_attn.q_proj.weight"] = mat(HEADS * HEAD, DIM)
        w[p + "self_attn.k_proj.weight"] = mat(KV_HEADS * HEAD, DIM)
        w[p + "self_attn.v_proj.weight"] = mat(KV_HEADS * HEAD, DIM)
        w[p + "self_attn.o_proj.weight"] = mat(DIM, HEADS * HEAD)
        w[p + "mlp.gate_proj.weight"] = mat(FFN, DIM)
        w[p + "mlp.up_proj.weight"] = mat(FFN, DIM)
        w[p + "mlp.down_proj.weight"] = mat(DIM, FFN)
    if not tied:
        w["lm_head.weight"] = mat(VOCAB, DIM)
    return w


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(w, cfg, tokens):
    W = {k: v.to(torch.float64) for k, v in w.items()}
    T = len(tokens)
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    inv_freq = 1.0 / (theta ** (torch.arange(0, HEAD, 2, dtype=torch.float64) / HEAD))
    rs = cfg.get("rope_scaling")
    if rs:  # transformers' _compute_llama3_parameters
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old_ctx = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_ctx / lo, inv_freq / factor, inv_freq)
        smooth = (old_ctx / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_ctx / hi) * ~(wavelen > old_ctx / lo)
        inv_freq = torch.where(medium, smoothed, scaled)
    ang = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)
    emb = torch.cat((ang, ang), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    x = W["model.embed_tokens.weight"][torch.tensor(tokens)]
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for l in range(LAYERS):
        p = "model.layers.%d." % l
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps)
        q = (h @ W[p + "self_attn.q_proj.weight"].T).view(T, HEADS, HEAD).transpose(0, 1)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).view(T, KV_HEADS, HEAD).transpose(0, 1)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).view(T, KV_HEADS, HEAD).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(HEADS // KV_HEADS, dim=0)
        v = v.repeat_interleave(HEADS // KV_HEADS, dim=0)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(HEAD) + mask, dim=-1)
        o = (att @ v).transpose(0, 1).reshape(T, HEADS * HEAD)
        x = x + o @ W[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        g = h @ W[p + "mlp.gate_proj.weight"].T
        u = h @ W[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ W[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = W["lm_head.weight"] if "lm_head.weight" in W else W["model.embed_tokens.weight"]
    return x @ head.T


def write_case(out, name, arch, dtype, tied, shards, seed):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    cfg = {"architectures": [arch], "model_type": "llama" if arch.startswith("Llama") else "mistral",
           "hidden_size": DIM, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
           "num_key_value_heads": KV_HEADS, "intermediate_size": FFN, "vocab_size": VOCAB,
           "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 500000.0 if arch.startswith("Llama") else 10000.0,
           "hidden_act": "silu", "tie_word_embeddings": tied, "rope_scaling": None,
           "torch_dtype": ST_DTYPE[dtype].lower(), "attention_bias": False}
    if arch.startswith("Mistral"):
        cfg["sliding_window"] = None
    if name == "llama3_scaled":
        cfg["rope_scaling"] = LLAMA3_SCALING
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    gen = torch.Generator().manual_seed(seed)
    w = make_weights(gen, dtype, tied)
    if shards == 1:
        st_write(os.path.join(d, "model.safetensors"), w)
    else:
        names = list(w)
        weight_map = {}
        for s in range(shards):
            fn = "model-%05d-of-%05d.safetensors" % (s + 1, shards)
            part = {n: w[n] for n in names[s::shards]}
            st_write(os.path.join(d, fn), part)
            weight_map.update({n: fn for n in part})
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=2)
    logits = forward(w, cfg, TOKENS)
    logits.to(torch.float32).numpy().astype("<f4").tofile(os.path.join(out, name + ".logits.bin"))


def main():
    out = sys.argv[1]
    for i, (name, arch, dtype, tied, shards) in enumerate(CASES):
        write_case(out, name, arch, dtype, tied, shards, 100 + i)
    with open(os.path.join(out, "tokens.json"), "w") as f:
        json.dump(TOKENS, f)


if __name__ == "__main__":
    main()
