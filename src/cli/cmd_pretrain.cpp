// bitkd pretrain: train a float or ternary model with cross-entropy on a text
// file (windows of --seq tokens) or on JSONL prompt/response pairs rendered
// with the chat template (loss on the response and EOS only).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/train_flags.h"
#include "core/fs.h"
#include "core/log.h"
#include "kernels/cpu/kernels.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/lm_data.h"
#include "train/trainer.h"

namespace bk {

namespace {

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

// Plain text: one token stream (BOS, the text, EOS). Encoded in pieces cut at
// line ends so huge files do not go through SentencePiece in one call; pieces
// after the first are continuations (no dummy-prefix space is inserted).
Status load_text(const std::string& path, const Tokenizer& tok, LmDataset* d) {
  std::string text;
  BK_TRY(read_file(path, &text));
  if (text.empty()) return errorf("%s is empty", path.c_str());
  std::vector<int32_t> all, ids;
  const size_t piece = 1 << 16;
  size_t pos = 0;
  bool first = true;
  while (pos < text.size()) {
    size_t end = std::min(text.size(), pos + piece);
    if (end < text.size()) {
      size_t nl = text.find('\n', end);
      end = nl == std::string::npos ? text.size() : nl + 1;
    }
    std::string chunk = text.substr(pos, end - pos);
    if (first) BK_TRY(with_context(tokenizer_encode(tok, chunk, true, &ids), path));
    else BK_TRY(with_context(tokenizer_encode_continuation(tok, chunk, &ids), path));
    all.insert(all.end(), ids.begin(), ids.end());
    first = false;
    pos = end;
  }
  if (tokenizer_eos_id(tok) >= 0) all.push_back(tokenizer_eos_id(tok));
  lm_add_stream(d, all);
  return ok_status();
}

// JSONL: {"prompt": ..., "response": ...} per line (or {"text": ...} for a
// plain document, all tokens learned). Errors name the file and line.
Status load_jsonl(const std::string& path, const Tokenizer& tok, const std::string& tmpl, LmDataset* d) {
  std::string text;
  BK_TRY(read_file(path, &text));
  size_t pos = 0;
  int line_no = 0, examples = 0;
  const int32_t eos = tokenizer_eos_id(tok);
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    line_no++;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      return errorf("%s:%d: not valid JSON (%s)", path.c_str(), line_no, e.what());
    }
    if (!j.is_object()) return errorf("%s:%d: expected a JSON object", path.c_str(), line_no);
    std::vector<int32_t> ids, resp;
    std::vector<uint8_t> target;
    if (j.contains("prompt") || j.contains("response")) {
      if (!j.contains("prompt") || !j["prompt"].is_string() || !j.contains("response") || !j["response"].is_string())
        return errorf("%s:%d: \"prompt\" and \"response\" must both be strings", path.c_str(), line_no);
      std::string rendered;
      BK_TRY(template_render(tmpl, j["prompt"].get<std::string>(), &rendered));
      BK_TRY(with_context(tokenizer_encode(tok, rendered, true, &ids), path + ":" + std::to_string(line_no)));
      BK_TRY(with_context(tokenizer_encode_continuation(tok, j["response"].get<std::string>(), &resp),
                          path + ":" + std::to_string(line_no)));
      target.assign(ids.size(), 0);
      ids.insert(ids.end(), resp.begin(), resp.end());
      if (eos >= 0) ids.push_back(eos);
      target.resize(ids.size(), 1);
    } else if (j.contains("text") && j["text"].is_string()) {
      BK_TRY(with_context(tokenizer_encode(tok, j["text"].get<std::string>(), true, &ids),
                          path + ":" + std::to_string(line_no)));
      if (eos >= 0) ids.push_back(eos);
      target.assign(ids.size(), 1);
      target[0] = 0;
    } else {
      return errorf("%s:%d: expected {\"prompt\": ..., \"response\": ...} or {\"text\": ...}", path.c_str(),
                    line_no);
    }
    lm_add_example(d, ids, target);
    examples++;
  }
  if (examples == 0) return errorf("%s has no examples", path.c_str());
  return ok_status();
}

int run_pretrain(Args& a) {
  const std::string data = arg_str(a, "data");
  if (data.empty()) return cli_fail(a, errorf("--data is required (a .txt file or .jsonl prompt/response pairs)"));
  if (!file_exists(data)) return cli_fail(a, errorf("--data %s: no such file", data.c_str()));
  const std::string tok_path = arg_str(a, "tokenizer");
  if (tok_path.empty())
    return cli_fail(a, errorf("--tokenizer (or TOKENIZER_NAME) is required: a SentencePiece tokenizer.model, e.g. "
                              "from `bitkd tokenizer train`"));

  TrainerOptions opt;
  Status st = trainer_options_from_args(a, &opt);
  if (!st.ok()) return cli_fail(a, st);
  // Check the model flags before the (slower) tokenizer and data work.
  ModelConfig cfg;
  st = model_config_from_args(a, 32000, opt.seq, &cfg);
  if (!st.ok()) return cli_fail(a, st);

  bool deterministic = false;
  st = config_bool(a.cfg, "DETERMINISTIC", &deterministic);
  if (!st.ok()) return cli_fail(a, st);
  long long threads = 0;
  st = config_int(a.cfg, "THREADS", &threads);
  if (!st.ok()) return cli_fail(a, st);
  kernels_set_threads(deterministic ? 1 : (int)threads);

  Tokenizer tok;
  st = tokenizer_load(tok_path, &tok);
  if (!st.ok()) return cli_fail(a, st);
  st = model_config_from_args(a, tokenizer_vocab_size(tok), opt.seq, &cfg);
  if (!st.ok()) return cli_fail(a, st);
  if (cfg.vocab_size < tokenizer_vocab_size(tok))
    return cli_fail(a, errorf("--vocab %d is smaller than the tokenizer's vocabulary (%d)", cfg.vocab_size,
                              tokenizer_vocab_size(tok)));

  std::string format = arg_str(a, "format");
  if (format == "auto") format = (ends_with(data, ".jsonl") || ends_with(data, ".json")) ? "jsonl" : "text";
  LmDataset ds;
  lm_init(&ds, opt.seq, tokenizer_pad_id(tok), opt.seed);
  const std::string tmpl = template_unescape(arg_str(a, "template"));
  if (format == "jsonl") {
    st = load_jsonl(data, tok, tmpl, &ds);
  } else if (format == "text") {
    st = load_text(data, tok, &ds);
  } else {
    st = errorf("--format '%s' is unknown: use auto, text or jsonl", format.c_str());
  }
  if (!st.ok()) return cli_fail(a, st);
  if (lm_num_rows(ds) == 0) return cli_fail(a, errorf("%s yields no training sequence of 2 or more tokens", data.c_str()));
  const long long targets = lm_num_targets(ds);
  BK_LOG_INFO("pretrain: %s (%s): %zu sequences, %lld target tokens%s", data.c_str(), format.c_str(),
              lm_num_rows(ds), targets,
              ds.truncated ? (", " + std::to_string(ds.truncated) + " cut to --seq " + std::to_string(opt.seq)).c_str()
                           : "");
  if (ds.truncated) BK_LOG_WARN("pretrain: %ld examples longer than --seq+1 tokens were truncated", ds.truncated);

  ArtifactPaths paths = artifact_paths(a.cfg);
  opt.checkpoint_dir = arg_str(a, "out").empty() ? paths.checkpoints : arg_str(a, "out");
  opt.metrics_path = arg_str(a, "metrics").empty() ? path_join(paths.logs, "train_metrics.jsonl") : arg_str(a, "metrics");
  opt.label = "pretrain";
  bool flip = false;
  st = arg_bool(a, "flip", &flip);
  if (!st.ok()) return cli_fail(a, st);
  if (flip) {
    double budget = 0, frac = 0;
    st = config_double(a.cfg, "BUDGET_TOKENS", &budget);
    if (st.ok()) st = config_double(a.cfg, "FLIP_FRACTION", &frac);
    if (!st.ok()) return cli_fail(a, st);
    opt.flip_at_tokens = (long long)(budget * frac);
    if (opt.flip_at_tokens <= 0) opt.flip_at_tokens = 1;
  }
  {
    nlohmann::ordered_json s;
    s["command"] = "pretrain";
    s["data"] = data;
    s["format"] = format;
    s["tokenizer"] = tok_path;
    s["tokenizer_hash"] = tokenizer_hash(tok);
    if (format == "jsonl") s["template"] = tmpl;
    s["sequences"] = lm_num_rows(ds);
    s["target_tokens"] = targets;
    s["truncated"] = ds.truncated;
    s["batch"] = opt.batch;
    s["seq"] = opt.seq;
    s["grad_accum"] = opt.grad_accum;
    s["total_steps"] = opt.total_steps;
    s["lr"] = opt.sched.lr_peak;
    s["schedule"] = schedule_to_json(opt.sched);
    s["deterministic"] = deterministic;
    opt.summary_json = s.dump();
  }

  bool resume = false;
  st = arg_bool(a, "resume", &resume);
  if (!st.ok()) return cli_fail(a, st);
  Model m;
  if (resume) {
    opt.resume_from = checkpoint_find_latest(opt.checkpoint_dir);
    if (opt.resume_from.empty()) BK_LOG_WARN("pretrain: --resume: no checkpoint in %s, starting fresh", opt.checkpoint_dir.c_str());
  }
  if (!opt.resume_from.empty()) {
    ModelConfig ck;
    st = checkpoint_read_config(opt.resume_from, &ck);
    if (!st.ok()) return cli_fail(a, st);
    if (ck.vocab_size < tokenizer_vocab_size(tok))
      return cli_fail(a, errorf("%s has vocab %d but the tokenizer has %d tokens: not the same tokenizer",
                                opt.resume_from.c_str(), ck.vocab_size, tokenizer_vocab_size(tok)));
    // The checkpoint's architecture wins; say so when the flags asked for another.
    ModelConfig a1 = ck, a2 = cfg;
    a1.act_bits = a2.act_bits = 0;  // may differ legitimately after the flip
    a1.max_seq_len = a2.max_seq_len = 0;
    if (model_config_to_json(a1) != model_config_to_json(a2))
      BK_LOG_WARN("pretrain: --resume uses the checkpoint's model %s, not the one the flags describe (%s)",
                  model_config_to_json(ck).c_str(), model_config_to_json(cfg).c_str());
    if (ck.max_seq_len < opt.seq)
      return cli_fail(a, errorf("%s was trained with max_seq_len %d; --seq %d is longer", opt.resume_from.c_str(),
                                ck.max_seq_len, opt.seq));
  } else {
    st = model_init(&m, cfg, opt.seed);
    if (!st.ok()) return cli_fail(a, st);
    BK_LOG_INFO("pretrain: model %s (%zu parameters), checkpoints in %s", model_config_to_json(cfg).c_str(),
                model_num_params(m), opt.checkpoint_dir.c_str());
  }

  TrainerCallbacks cb;
  cb.next_batch = [&ds, &opt](Batch* b, Rng*) { return lm_next_batch(&ds, opt.batch, b); };
  cb.save_position = [&ds]() { return lm_position_json(ds); };
  cb.restore_position = [&ds](const std::string& s) { return lm_restore_position(&ds, s); };
  TrainResult r;
  st = trainer_run(&m, opt, cb, &r);
  if (!st.ok()) return cli_fail(a, st);

  nlohmann::ordered_json out;
  out["checkpoint"] = r.last_checkpoint;
  out["steps"] = r.steps_done;
  out["steps_this_run"] = r.steps_this_run;
  out["first_loss"] = r.first_loss;
  out["last_loss"] = r.last_loss;
  out["skipped_steps"] = r.skipped;
  out["seen_tokens"] = r.seen_tokens;
  out["act_bits"] = m.cfg.act_bits;
  out["tokens_per_s"] = r.tokens_per_s;
  if (r.ranks > 1) {
    out["ranks"] = r.ranks;
    out["allreduce_s"] = r.allreduce_s;
    out["allreduce_share"] = r.wall_s > 0 ? r.allreduce_s / r.wall_s : 0.0;
  }
  out["metrics"] = opt.metrics_path;
  printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace

const Command& command_pretrain() {
  static const Command c = [] {
    Command cmd{
        "pretrain",
        "Train a float or ternary model with cross-entropy on text or prompt/response JSONL",
        "--data FILE.txt: the text is tokenized (BOS ... EOS) and cut into windows of --seq tokens.\n"
        "--data FILE.jsonl: one {\"prompt\": ..., \"response\": ...} per line, rendered with TEMPLATE; the loss\n"
        "covers the response and EOS only ({\"text\": ...} lines train on every token). Checkpoints go to --out\n"
        "(mini_bitnet_step_N.safetensors + .optim.safetensors + _health.json), metrics to\n"
        "logs/train_metrics.jsonl. --resume continues from the newest checkpoint in --out exactly where it\n"
        "stopped (same data order and RNG). Prints a JSON summary on stdout.",
        {
            {"data", nullptr, "", "Training data: .txt (plain text) or .jsonl (prompt/response pairs)"},
            {"format", nullptr, "auto", "auto (by extension), text or jsonl"},
            {"tokenizer", "TOKENIZER_NAME", nullptr, "SentencePiece tokenizer.model"},
            {"template", "TEMPLATE", nullptr, "Chat template for JSONL prompts ({prompt}; \\n escapes)"},
            {"out", nullptr, "", "Checkpoint directory (default: CHECKPOINTS_DIR)"},
            {"metrics", nullptr, "", "Metrics JSONL (default: LOGS_DIR/train_metrics.jsonl)"},
            {"resume", nullptr, "", "Continue from the newest checkpoint in --out", true},
            {"flip", nullptr, "", "Flip activations 8 -> 4 bit at FLIP_FRACTION * BUDGET_TOKENS seen tokens", true},
        },
        run_pretrain,
    };
    for (const Flag& f : model_flags_env()) cmd.flags.push_back(f);
    for (const Flag& f : train_flags_env()) cmd.flags.push_back(f);
    return cmd;
  }();
  return c;
}

}  // namespace bk
