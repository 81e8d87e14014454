// bitkd serve: an OpenAI-compatible HTTP server over a checkpoint.
#include <cstdio>
#include <cstdlib>

#include "cli/cli.h"
#include "core/fs.h"
#include "core/log.h"
#include "model/gguf_model.h"
#include "model/hf_model.h"
#include "model/infer.h"
#include "serve/serve.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/model_load.h"

namespace bk {

// The checkpoint to serve: a .safetensors file, or the newest checkpoint in a
// directory (default: CHECKPOINTS_DIR).
static Status resolve_model_path(const Args& a, std::string* path) {
  std::string p = arg_str(a, "model");
  if (p.empty()) {
    std::string dir = artifact_paths(a.cfg).checkpoints;
    *path = checkpoint_find_latest(dir);
    if (path->empty())
      return errorf("no --model given and no checkpoint in %s (train one, or pass --model FILE.safetensors)",
                    dir.c_str());
    return ok_status();
  }
  if (dir_exists(p) && !hf_is_model_dir(p)) {  // a HF model directory is a model itself
    *path = checkpoint_find_latest(p);
    if (path->empty()) return errorf("--model %s is a directory without mini_bitnet_step_N.safetensors checkpoints", p.c_str());
    return ok_status();
  }
  if (!file_exists(p) && !hf_is_model_dir(p)) return errorf("--model %s: no such file", p.c_str());
  *path = p;
  return ok_status();
}

static std::string file_stem(const std::string& path) {
  size_t slash = path.find_last_of('/');
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  size_t dot = base.rfind('.');
  return dot == std::string::npos || dot == 0 ? base : base.substr(0, dot);
}

static int run_serve(Args& a) {
  ServeOptions opt;
  long long port = 0, workers = 0, max_body = 0, threads = 0, max_tokens = 0;
  bool bos = true;
  if (!arg_int_or_report(a, "port", &port) || !arg_int_or_report(a, "workers", &workers) ||
      !arg_int_or_report(a, "max-body-bytes", &max_body) || !arg_int_or_report(a, "THREADS", &threads) ||
      !arg_int_or_report(a, "default-max-tokens", &max_tokens))
    return 2;
  Status st = arg_bool(a, "bos", &bos);
  if (!st.ok()) return cli_fail(a, st);
  if (port < 0 || port > 65535) return cli_fail(a, errorf("--port %lld is outside 0..65535", port));
  if (workers < 1 || workers > 1024) return cli_fail(a, errorf("--workers %lld is outside 1..1024", workers));
  if (max_body < 1024) return cli_fail(a, errorf("--max-body-bytes %lld is below 1024", max_body));
  if (max_tokens < 1) return cli_fail(a, errorf("--default-max-tokens %lld must be >= 1", max_tokens));
  opt.host = arg_str(a, "host");
  opt.port = (int)port;
  opt.workers = (int)workers;
  opt.max_body_bytes = (size_t)max_body;
  opt.threads = (int)threads;
  opt.default_max_tokens = (int)max_tokens;
  opt.add_bos = bos;
  opt.api_key = arg_str(a, "api-key");
  opt.chat_template = template_unescape(arg_str(a, "template"));
  st = template_check(opt.chat_template);
  if (!st.ok()) return cli_fail(a, st);

  std::string backend = arg_str(a, "backend");
  if (backend != "auto" && backend != "float" && backend != "packed")
    return cli_fail(a, errorf("--backend '%s' is not one of auto, float, packed", backend.c_str()));

  std::string model_path;
  st = resolve_model_path(a, &model_path);
  if (!st.ok()) return cli_fail(a, st);

  InferWeights* weights = nullptr;
  Tokenizer tok;
  {
    ModelSource src;
    // A ternary GGUF of TQ2_0 blocks goes straight into the packed engine
    // (no float model: a 7B file needs about its own size); anything else
    // through a latent fp32 model, needed only until the weights exist.
    GgufLoadInfo info;
    if (backend != "float" && file_is_gguf(model_path)) {
      st = gguf_load_packed(model_path, &weights, &info);
      if (st.ok()) {
        src.format = "gguf";
        src.tokenizer_model = std::move(info.tokenizer_model);
        src.warnings = std::move(info.warnings);
        const ModelConfig& c = infer_weights_config(weights);
        BK_LOG_INFO("serve: loaded %s straight into the packed engine (dim %d, %d layers, act_bits %d, %s embedding)",
                    model_path.c_str(), c.dim, c.n_layers, c.act_bits, row_type_name(info.embed_type));
      } else {
        BK_LOG_INFO("serve: %s; loading through the float path", st.msg.c_str());
      }
    }
    if (!weights) {
      Model m;
      st = model_load_any(model_path, &m, &src);
      if (!st.ok()) return cli_fail(a, with_context(st, "loading model " + model_path));
      // auto: ternary students with integer activations run on the packed
      // 2-bit engine; float teachers (and act_bits 0) on fp32.
      InferBackend be = INFER_FLOAT;
      if (backend == "packed" ||
          (backend == "auto" && m.cfg.weight_quant == WQ_TERNARY && (m.cfg.act_bits == 8 || m.cfg.act_bits == 4)))
        be = INFER_PACKED;
      st = infer_weights_create(&m, be, &weights, src.embed_type);
      if (!st.ok()) return cli_fail(a, with_context(st, model_path));
      BK_LOG_INFO("serve: loaded %s (%zu parameters, %s, act_bits %d, %s backend)", model_path.c_str(),
                  model_num_params(m), weight_quant_name(m.cfg.weight_quant), m.cfg.act_bits,
                  be == INFER_PACKED ? "packed" : "float");
    }
    for (const std::string& w : src.warnings) BK_LOG_WARN("serve: %s", w.c_str());

    std::string tok_path = arg_str(a, "tokenizer");
    if (!tok_path.empty()) {
      st = tokenizer_load(tok_path, &tok);
      if (!st.ok()) st = with_context(st, "loading tokenizer " + tok_path);
    } else if (!src.tokenizer_model.empty()) {
      st = tokenizer_load_from_bytes(src.tokenizer_model, &tok);  // the GGUF's own tokenizer
      if (!st.ok()) st = with_context(st, "loading the tokenizer embedded in " + model_path);
    } else {
      st = errorf("no tokenizer: pass --tokenizer PATH/tokenizer.model (or set TOKENIZER_NAME)");
    }
    if (!st.ok()) {
      infer_weights_destroy(weights);
      return cli_fail(a, st);
    }
  }
  opt.model_name = arg_str(a, "model-name");
  if (opt.model_name.empty()) opt.model_name = file_stem(model_path);

  ServeModel sm;
  sm.weights = weights;
  sm.tokenizer = &tok;
  st = serve_run(sm, opt);
  infer_weights_destroy(weights);
  if (!st.ok()) return cli_fail(a, st);
  return 0;
}

const Command& command_serve() {
  static const Command c = {
      "serve",
      "OpenAI-compatible HTTP server (chat/completions, completions, logprobs, streaming) over a checkpoint",
      "Serves POST /v1/chat/completions, POST /v1/completions, GET /v1/models and GET /health.\n"
      "Prints 'listening on http://HOST:PORT' once ready (--port 0 picks a free port). SIGINT/SIGTERM\n"
      "stop it cleanly. Chat messages are rendered with TEMPLATE: system messages first (then a blank\n"
      "line), each user turn as TEMPLATE with {prompt} = its content, each assistant turn as its content\n"
      "followed by a blank line; a final assistant message is continued. /v1/completions uses the prompt\n"
      "as is. With --api-key (or BITKD_API_KEY) every /v1 request needs 'Authorization: Bearer KEY'.\n"
      "--threads is per request (0: the cores divided among --workers).",
      {
          {"model", nullptr, "", "Checkpoint .safetensors, a .gguf (its embedded tokenizer is used when --tokenizer is not given), a HF model directory (config.json + safetensors), or a directory (newest checkpoint); default CHECKPOINTS_DIR"},
          {"tokenizer", "TOKENIZER_NAME", nullptr, "SentencePiece tokenizer.model"},
          {"host", nullptr, "127.0.0.1", "Address to listen on"},
          {"port", nullptr, "8000", "Port (0: any free port)"},
          {"api-key", "BITKD_API_KEY", nullptr, "Require this bearer key (never logged)"},
          {"template", "TEMPLATE", nullptr, "Chat template with {prompt} (\\n escapes)"},
          {"workers", nullptr, "4", "Concurrent requests (HTTP worker threads)"},
          {"backend", nullptr, "auto", "auto (packed for ternary models with 8/4-bit activations, else float), float (fp32 / fake-quant) or packed (2-bit ternary + integer kernels)"},
          {"max-body-bytes", nullptr, "1048576", "Largest request body accepted (larger: 413)"},
          {"model-name", nullptr, "", "Model id reported by the API (default: the checkpoint file name)"},
          {"default-max-tokens", nullptr, "256", "max_tokens when a request gives none (capped by the context)"},
          {"bos", nullptr, "1", "Prepend the tokenizer's BOS token to every prompt (1/0)"},
      },
      run_serve,
  };
  return c;
}

}  // namespace bk
