#!/usr/bin/env python3
# A random-weight BitNet b1.58 GGUF for side-by-side speed runs of bitkd and
# llama.cpp on the same file (docs/benchmarks.md). llama.cpp's own gguf-py
# writes it and its quantizers encode the TQ2_0 projections and the Q8_0
# embedding; the vocabulary (LLaMA SPM, 32000) is copied from llama.cpp's
# models/ggml-vocab-llama-spm.gguf. Needs numpy.
#
#   python3 bench/random_bitnet_gguf.py --llama-cpp ~/llama.cpp mid_q8.gguf --embed q8_0
#   python3 bench/random_bitnet_gguf.py --llama-cpp ~/llama.cpp 7b_q8.gguf --dim 4096 --layers 32 \
#       --heads 32 --ffn 16384 --embed q8_0
import sys, os, argparse
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--llama-cpp", required=True, help="a llama.cpp source tree (for gguf-py and models/)")
ap.add_argument("--dim", type=int, default=1024)
ap.add_argument("--layers", type=int, default=12)
ap.add_argument("--heads", type=int, default=16)
ap.add_argument("--ffn", type=int, default=4096)
ap.add_argument("--embed", default="f16", choices=["f16", "q8_0"])
ap.add_argument("--seed", type=int, default=1)
a = ap.parse_args()
sys.path.insert(0, os.path.join(a.llama_cpp, "gguf-py"))
import gguf
from gguf import GGUFWriter, GGUFReader, GGMLQuantizationType as T
from gguf.quants import quantize

rng = np.random.default_rng(a.seed)
vocab_src = GGUFReader(os.path.join(a.llama_cpp, "models", "ggml-vocab-llama-spm.gguf"))
w = GGUFWriter(a.out, "bitnet")
D, L, H, F = a.dim, a.layers, a.heads, a.ffn
w.add_context_length(2048)
w.add_embedding_length(D)
w.add_block_count(L)
w.add_feed_forward_length(F)
w.add_head_count(H)
w.add_head_count_kv(H)
w.add_rope_dimension_count(D // H)
w.add_layer_norm_rms_eps(1e-5)
w.add_rope_freq_base(10000.0)
w.add_file_type(gguf.LlamaFileType.MOSTLY_TQ2_0)
for name, field in vocab_src.fields.items():
    if not name.startswith("tokenizer."):
        continue
    vt = field.types[0]
    if vt == gguf.GGUFValueType.ARRAY:
        et = field.types[1]
        if et == gguf.GGUFValueType.STRING:
            vals = [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
        else:
            vals = [field.parts[i].tolist()[0] for i in field.data]
        w.add_array(name, vals)
    elif vt == gguf.GGUFValueType.STRING:
        w.add_string(name, bytes(field.parts[field.data[0]]).decode())
    elif vt == gguf.GGUFValueType.UINT32:
        w.add_uint32(name, int(field.parts[field.data[0]][0]))
    elif vt == gguf.GGUFValueType.INT32:
        w.add_int32(name, int(field.parts[field.data[0]][0]))
    elif vt == gguf.GGUFValueType.BOOL:
        w.add_bool(name, bool(field.parts[field.data[0]][0]))
    elif vt == gguf.GGUFValueType.FLOAT32:
        w.add_float32(name, float(field.parts[field.data[0]][0]))
V = 32000

def add(name, arr, qtype):
    if qtype == T.F32:
        w.add_tensor(name, arr.astype(np.float32))
    elif qtype == T.F16:
        w.add_tensor(name, arr.astype(np.float16))
    else:
        q = quantize(arr.astype(np.float32), qtype)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)

emb = rng.standard_normal((V, D), dtype=np.float32)
add("token_embd.weight", emb, T.F16 if a.embed == "f16" else T.Q8_0)
add("output_norm.weight", np.ones(D, np.float32), T.F32)
def ternary(rows, cols):
    u = rng.integers(0, 4, size=(rows, cols), dtype=np.int8)
    return np.where(u == 0, -1, np.where(u == 1, 1, 0)).astype(np.float32)  # P(0) = 1/2
for l in range(L):
    p = f"blk.{l}."
    add(p + "attn_norm.weight", np.ones(D, np.float32), T.F32)
    add(p + "ffn_norm.weight", np.ones(D, np.float32), T.F32)
    add(p + "attn_sub_norm.weight", np.ones(D, np.float32), T.F32)
    add(p + "ffn_sub_norm.weight", np.ones(F, np.float32), T.F32)
    for n, r, c in [("attn_q", D, D), ("attn_k", D, D), ("attn_v", D, D), ("attn_output", D, D),
                    ("ffn_gate", F, D), ("ffn_up", F, D), ("ffn_down", D, F)]:
        add(p + n + ".weight", ternary(r, c), T.TQ2_0)
        add(p + n + ".scale", np.array([1.0 / np.sqrt(0.5 * c)], np.float32), T.F32)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print("wrote", a.out)
