#!/usr/bin/python3
"""gguf-py reference for bitkd's GGUF dequantization (tests/unit/test_gguf_quants.cpp).

    gguf_quants_ref.py OUTDIR      (llama.cpp's gguf-py on PYTHONPATH: tests/reference/gguf_py.sh)

Writes OUTDIR/llama.gguf with gguf-py's GGUFWriter: a random-weight llama
model whose tensors cycle through the block types bitkd dequantizes plus F16,
BF16 and F32. Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and BF16 are quantized from random
floats with gguf-py's own quantizers; gguf-py has no quantizer for the
K-quants, so their blocks are random bytes (every bit pattern is a valid
block) with the fp16 scale fields set to random finite values.

Then reads the file back with gguf-py's GGUFReader and writes, for every
tensor, OUTDIR/ref/<name>.bin: gguf-py's dequantization as float32 in ggml
order (ne[0] fastest), and OUTDIR/ref.json: [{"name", "type", "numel"}, ...].
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

DIM, LAYERS, HEADS, KV_HEADS, FFN, VOCAB = 256, 2, 4, 2, 512, 320
HEAD = DIM // HEADS

# Block types in the order tensors get them, then F16/BF16.
CYCLE = [T.Q4_K, T.Q6_K, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K, T.Q5_K, T.F16, T.BF16]
# Byte offsets of each K-quant block's fp16 fields (ggml-common.h).
K_FP16_FIELDS = {T.Q2_K: (80, 82), T.Q3_K: (108,), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,)}


def k_quant_bytes(rng, qtype, rows, cols):
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    nb = rows * cols // block
    raw = rng.integers(0, 256, size=(nb, size), dtype=np.uint8)
    for off in K_FP16_FIELDS[qtype]:
        # |scale| in [2^-12, 2^-4): finite, and mins of either sign
        scale = (rng.uniform(1.0, 2.0, nb) * np.exp2(rng.integers(-12, -4, nb))).astype(np.float16)
        scale *= np.where(rng.integers(0, 2, nb) == 1, 1, -1).astype(np.float16)
        raw[:, off:off + 2] = scale.view(np.uint8).reshape(nb, 2)
    return raw.reshape(rows, cols // block * size)


def add(w, rng, name, rows, cols, qtype):
    if qtype in K_FP16_FIELDS:
        w.add_tensor(name, k_quant_bytes(rng, qtype, rows, cols), raw_dtype=qtype)
        return
    x = rng.standard_normal((rows, cols)).astype(np.float32) * np.float32(0.05)
    if qtype == T.F32:
        w.add_tensor(name, x)
    elif qtype == T.F16:
        w.add_tensor(name, x.astype(np.float16))
    else:
        w.add_tensor(name, quantize(x, qtype), raw_dtype=qtype)


def write_model(path):
    rng = np.random.default_rng(24)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("gguf-py quant test")
    w.add_context_length(64)
    w.add_embedding_length(DIM)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HEAD)
    types = iter(CYCLE * 4)
    add(w, rng, "token_embd.weight", VOCAB, DIM, next(types))
    add(w, rng, "output_norm.weight", 1, DIM, T.F32)
    add(w, rng, "output.weight", VOCAB, DIM, next(types))
    for l in range(LAYERS):
        p = "blk.%d." % l
        add(w, rng, p + "attn_norm.weight", 1, DIM, T.F32)
        add(w, rng, p + "ffn_norm.weight", 1, DIM, T.F32)
        for name, rows, cols in [("attn_q", DIM, DIM), ("attn_k", KV_HEADS * HEAD, DIM),
                                 ("attn_v", KV_HEADS * HEAD, DIM), ("attn_output", DIM, DIM),
                                 ("ffn_gate", FFN, DIM), ("ffn_up", FFN, DIM), ("ffn_down", DIM, FFN)]:
            add(w, rng, p + name + ".weight", rows, cols, next(types))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    out = sys.argv[1]
    os.makedirs(os.path.join(out, "ref"), exist_ok=True)
    path = os.path.join(out, "llama.gguf")
    write_model(path)
    manifest = []
    for t in gguf.GGUFReader(path).tensors:
        v = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1)
        v.tofile(os.path.join(out, "ref", t.name + ".bin"))
        manifest.append({"name": t.name, "type": t.tensor_type.name.lower(), "numel": int(v.size)})
    with open(os.path.join(out, "ref.json"), "w") as f:
        json.dump(manifest, f)


if __name__ == "__main__":
    main()
