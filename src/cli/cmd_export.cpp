// bitkd export: a checkpoint (or GGUF) to a GGUF file that llama.cpp runs.
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/fs.h"
#include "core/log.h"
#include "model/gguf_model.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/model_load.h"

namespace bk {

namespace {

std::string default_out(const std::string& model, GgufWeightFormat f) {
  std::string base = model;
  for (const char* ext : {".safetensors", ".gguf"}) {
    size_t n = strlen(ext);
    if (base.size() > n && base.compare(base.size() - n, n, ext) == 0) base.resize(base.size() - n);
  }
  return base + "." + gguf_weight_format_name(f) + ".gguf";
}

// The training summary stored as bitkd.training: where the weights came from.
std::string training_summary(const std::string& model_path, const ModelSource& src) {
  nlohmann::ordered_json j;
  j["source"] = path_basename(model_path);
  j["source_format"] = src.format;
  if (src.step >= 0) j["step"] = src.step;
  if (!src.training_json.empty()) {
    try {
      j["summary"] = nlohmann::json::parse(src.training_json);
    } catch (const std::exception&) {
      j["summary"] = src.training_json;  // keep it as text rather than lose it
    }
  }
  return j.dump();
}

int run_export(Args& a) {
  const std::string format = arg_str(a, "format");
  if (format != "gguf")
    return cli_fail(a, errorf("--format %s is not supported (supported: gguf)", format.c_str()));
  std::string model_path = arg_str(a, "model");
  if (model_path.empty()) {
    model_path = checkpoint_find_latest(artifact_paths(a.cfg).checkpoints);
    if (model_path.empty())
      return cli_fail(a, errorf("no --model given and no checkpoint in %s; pass --model CKPT.safetensors",
                                artifact_paths(a.cfg).checkpoints.c_str()));
    BK_LOG_INFO("exporting the newest checkpoint %s", model_path.c_str());
  }
  GgufExportOptions opt;
  Status st = gguf_weight_format_from_name(arg_str(a, "type"), &opt.weights);
  if (!st.ok()) return cli_fail(a, st);
  const std::string et = arg_str(a, "embed-type");
  if (et != "f16" && et != "f32" && !et.empty())
    return cli_fail(a, errorf("--embed-type %s: expected f16 or f32", et.c_str()));
  opt.embed_f32 = et == "f32";

  Model m;
  ModelSource src;
  st = model_load_any(model_path, &m, &src);
  if (!st.ok()) return cli_fail(a, st);
  for (const std::string& w : src.warnings) BK_LOG_WARN("%s: %s", model_path.c_str(), w.c_str());

  // Tokenizer: flag / TOKENIZER_NAME, else the one a GGUF carries, else the pipeline's default location.
  std::string tok_path = arg_str(a, "tokenizer");
  if (tok_path.empty() && !src.tokenizer_model.empty()) {
    opt.tokenizer_model = src.tokenizer_model;
  } else {
    if (tok_path.empty()) {
      std::string def = path_join(path_join(artifact_paths(a.cfg).root, "tokenizer"), "tokenizer.model");
      if (file_exists(def)) tok_path = def;
    }
    if (tok_path.empty() && !arg_given(a, "no-tokenizer"))
      return cli_fail(a, errorf("no tokenizer: pass --tokenizer PATH/tokenizer.model (or set TOKENIZER_NAME); "
                                "llama.cpp needs the vocabulary in the GGUF (--no-tokenizer skips it)"));
    if (!tok_path.empty()) {
      Tokenizer tok;
      st = tokenizer_load(tok_path, &tok);
      if (!st.ok()) return cli_fail(a, st);
      if (tokenizer_vocab_size(tok) > m.cfg.vocab_size)
        return cli_fail(a, errorf("tokenizer %s has %d pieces but the model's vocab_size is %d: not the tokenizer "
                                  "this model was trained with",
                                  tok_path.c_str(), tokenizer_vocab_size(tok), m.cfg.vocab_size));
      opt.tokenizer_model = tokenizer_model_bytes(tok);
    }
  }
  opt.name = arg_str(a, "name");
  if (opt.name.empty()) {
    opt.name = src.name.empty() ? path_basename(model_path) : src.name;
    for (const char* ext : {".safetensors", ".gguf"}) {
      size_t n = strlen(ext);
      if (opt.name.size() > n && opt.name.compare(opt.name.size() - n, n, ext) == 0) opt.name.resize(opt.name.size() - n);
    }
  }
  opt.training_json = training_summary(model_path, src);

  GgufWeightFormat shown = opt.weights;
  if (shown == GGUF_W_AUTO) shown = m.cfg.weight_quant == WQ_TERNARY ? GGUF_W_TQ2_0 : GGUF_W_F16;
  std::string out = arg_str(a, "out");
  if (out.empty()) out = default_out(model_path, shown);
  const std::string dir = path_dirname(out);
  if (!dir.empty() && dir != ".") {
    st = make_dirs(dir);
    if (!st.ok()) return cli_fail(a, st);
  }
  GgufExportReport rep;
  st = gguf_export_model(m, opt, out, &rep);
  if (!st.ok()) return cli_fail(a, st);
  for (const std::string& w : rep.warnings) BK_LOG_WARN("export: %s", w.c_str());
  printf("wrote %s: llama.cpp architecture '%s', %s weights, %d layers, dim %d, vocab %d, %.2f MiB\n", out.c_str(),
         rep.arch.c_str(), gguf_weight_format_name(shown), m.cfg.n_layers, m.cfg.dim, m.cfg.vocab_size,
         (double)file_size(out) / (1024.0 * 1024.0));
  return 0;
}

}  // namespace

const Command& command_export() {
  static const Command c = {
      "export",
      "Export a checkpoint as GGUF for llama.cpp (ternary students as 'bitnet', float teachers as 'llama')",
      "Writes a GGUF v3 file with llama.cpp's tensor names and hyperparameter keys and the SentencePiece\n"
      "vocabulary, so llama-cli / llama-server run it. SubLN models use the 'bitnet' architecture (ternary\n"
      "weights as TQ2_0/TQ1_0 blocks plus one F32 scale per tensor); others use 'llama' (q/k permuted for its\n"
      "RoPE layout). Where llama.cpp computes something other than the bitkd model (activation quantization,\n"
      "relu2, F16 rounding) a warning says so; docs/gguf.md lists the expected differences.\n"
      "--model also accepts a .gguf (re-export with another --type).",
      {
          {"model", nullptr, "", "Checkpoint .safetensors or .gguf (default: newest checkpoint in the artifacts)"},
          {"out", nullptr, "", "Output .gguf (default: beside the model, <name>.<type>.gguf)"},
          {"format", nullptr, "gguf", "Output format (gguf)"},
          {"type", nullptr, "auto", "Projection weights: auto (tq2_0 ternary, f16 float), tq2_0, tq1_0, f16, f32"},
          {"embed-type", nullptr, "", "token_embd/output type: f16 (default) or f32 (f32 when --type f32)"},
          {"tokenizer", "TOKENIZER_NAME", nullptr, "SentencePiece tokenizer.model to embed"},
          {"no-tokenizer", nullptr, "", "Write no tokenizer metadata (llama.cpp will not load the file)", true},
          {"name", nullptr, "", "general.name (default: the model file name)"},
      },
      run_export,
  };
  return c;
}

}  // namespace bk
