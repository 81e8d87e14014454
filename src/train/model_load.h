#pragma once
// One entry point for commands that take "a model": a bitkd checkpoint
// (.safetensors, train/checkpoint.h) or a GGUF file (model/gguf_model.h),
// told apart by the file's first bytes, not its name, or a Hugging Face model
// directory (config.json + safetensors, model/hf_model.h).
#include <string>
#include <vector>

#include "core/status.h"
#include "kernels/cpu/rows.h"
#include "model/model.h"

namespace bk {

struct ModelSource {
  std::string format;           // "safetensors", "gguf" or "hf"
  // SentencePiece model bytes carried by the file (bitkd GGUFs embed theirs;
  // foreign llama/SPM GGUFs get one rebuilt from tokenizer.ggml.*); "" for
  // checkpoints, which use TOKENIZER_NAME / --tokenizer.
  std::string tokenizer_model;
  std::string training_json;    // training summary (checkpoint metadata or bitkd.training); "" if none
  long step = -1;               // checkpoint step (-1: unknown / GGUF)
  std::string name;             // GGUF general.name; HF: the architecture
  std::vector<std::string> warnings;
  RowType embed_type = ROWS_F32;  // a GGUF's token_embd type, kept by packed inference
};

// True when the file starts with GGUF's magic bytes.
bool file_is_gguf(const std::string& path);
// Loads path into *m (layout from the file's own config). src may be null.
Status model_load_any(const std::string& path, Model* m, ModelSource* src);

}  // namespace bk
