#pragma once
// Hugging Face model directories as bitkd float models:
//
//   DIR/config.json                   architectures, sizes, rope_theta, ...
//   DIR/model.safetensors             the weights, or
//   DIR/model.safetensors.index.json  {"weight_map": {tensor: shard file}} and the shards
//
// Loaded: LlamaForCausalLM and MistralForCausalLM (GQA, rope_theta, Llama
// 3.1's rope_scaling (rope_type llama3), tied or untied embeddings,
// F32/F16/BF16 tensors, single or sharded files). The
// tensor names are bitkd's own (model/model.h uses HF names), and HF's
// rotate_half RoPE is bitkd's, so q/k need no permutation. Refused with the
// field named: other architectures (Qwen2/Qwen3 need q/k/v biases and q/k
// norms bitkd's model does not have yet), other rope_scaling types,
// attention/MLP biases, an activation other than silu, a head_dim other than
// hidden_size / num_attention_heads.
//
// Memory: each shard is mapped and every tensor converted straight into the
// fp32 model and its pages dropped, so the peak is the fp32 model plus about
// one tensor.
#include <string>
#include <vector>

#include "core/status.h"
#include "model/model.h"

namespace bk {

struct HfLoadInfo {
  std::string arch;                   // architectures[0]
  std::vector<std::string> files;     // the safetensors files read
  std::vector<std::string> warnings;  // e.g. a sliding window bitkd does not apply
};

// True for a directory holding config.json.
bool hf_is_model_dir(const std::string& path);
// config.json (path of the file) -> a float bitkd config (no SubLN, no quantization).
Status hf_config_from_file(const std::string& config_path, ModelConfig* c, HfLoadInfo* info);
Status hf_load_model(const std::string& dir, Model* m, HfLoadInfo* info);

}  // namespace bk
