// bitkd pretrain: train a float or ternary model with cross-entropy on a text
// file (windows of --seq tokens) or on JSONL prompt/response pairs rendered
// with the chat template (loss on the response and EOS only).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/train_flags.h"
#include "core/fs.h"
#include "core/log.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/lm_data.h"
#include "train/setup.h"
#include "train/trainer.h"

namespace bk {

namespace {

std::string summary_json(const std::string& data, const std::string& format, const std::string& tok_path,
                         const Tokenizer& tok, const std::string& tmpl, const LmDataset& ds, const TrainerOptions& opt,
                         bool deterministic) {
  nlohmann::ordered_json s;
  s["command"] = "pretrain";
  s["data"] = data;
  s["format"] = format;
  s["tokenizer"] = tok_path;
  s["tokenizer_hash"] = tokenizer_hash(tok);
  if (format == "jsonl") s["template"] = tmpl;
  s["sequences"] = lm_num_rows(ds);
  s["target_tokens"] = lm_num_targets(ds);
  s["truncated"] = ds.truncated;
  s["batch"] = opt.batch;
  s["seq"] = opt.seq;
  s["grad_accum"] = opt.grad_accum;
  s["total_steps"] = opt.total_steps;
  s["lr"] = opt.sched.lr_peak;
  s["schedule"] = schedule_to_json(opt.sched);
  s["deterministic"] = deterministic;
  return s.dump();
}

Status pretrain_from_args(Args& a) {
  const std::string data = arg_str(a, "data");
  if (data.empty()) return errorf("--data is required (a .txt file or .jsonl prompt/response pairs)");
  if (!file_exists(data)) return errorf("--data %s: no such file", data.c_str());
  const std::string tok_path = arg_str(a, "tokenizer");
  if (tok_path.empty())
    return errorf("--tokenizer (or TOKENIZER_NAME) is required: a SentencePiece tokenizer.model, e.g. from `bitkd "
                  "tokenizer train`");
  TrainerOptions opt;
  BK_TRY(trainer_options_from_args(a, &opt));
  ModelConfig cfg;
  BK_TRY(model_config_from_args(a, 32000, opt.seq, &cfg));  // the flags, before the slower tokenizer and data work
  bool deterministic = false, resume = false, flip = false;
  BK_TRY(arg_bool(a, "resume", &resume));
  BK_TRY(arg_bool(a, "flip", &flip));
  BK_TRY(train_setup_threads(a.cfg, nullptr, &deterministic));

  Tokenizer tok;
  BK_TRY(tokenizer_load(tok_path, &tok));
  BK_TRY(model_config_from_args(a, tokenizer_vocab_size(tok), opt.seq, &cfg));
  BK_TRY(train_check_vocab(cfg, tokenizer_vocab_size(tok)));
  std::string format = arg_str(a, "format");
  LmDataset ds;
  lm_init(&ds, opt.seq, tokenizer_pad_id(tok), opt.seed);
  const std::string tmpl = template_unescape(arg_str(a, "template"));
  BK_TRY(lm_load_file(data, &format, tok, tmpl, &ds));
  if (lm_num_rows(ds) == 0) return errorf("%s yields no training sequence of 2 or more tokens", data.c_str());
  BK_LOG_INFO("pretrain: %s (%s): %zu sequences, %lld target tokens%s", data.c_str(), format.c_str(),
              lm_num_rows(ds), lm_num_targets(ds),
              ds.truncated ? (", " + std::to_string(ds.truncated) + " cut to --seq " + std::to_string(opt.seq)).c_str()
                           : "");
  if (ds.truncated) BK_LOG_WARN("pretrain: %ld examples longer than --seq+1 tokens were truncated", ds.truncated);

  train_default_paths(a.cfg, arg_str(a, "out"), arg_str(a, "metrics"), &opt.checkpoint_dir, &opt.metrics_path);
  opt.label = "pretrain";
  if (flip) {
    double budget = 0, frac = 0;
    BK_TRY(config_double(a.cfg, "BUDGET_TOKENS", &budget));
    BK_TRY(config_double(a.cfg, "FLIP_FRACTION", &frac));
    opt.flip_at_tokens = flip_at_tokens(budget, frac);
  }
  opt.summary_json = summary_json(data, format, tok_path, tok, tmpl, ds, opt, deterministic);

  ResumeRequest rq;
  rq.label = "pretrain";
  rq.resume = resume;
  rq.checkpoint_dir = opt.checkpoint_dir;
  rq.tokenizer_vocab = tokenizer_vocab_size(tok);
  rq.seq = opt.seq;
  BK_TRY(train_resolve_resume(rq, &cfg, &opt.resume_from));
  Model m;
  if (opt.resume_from.empty()) {
    BK_TRY(model_init(&m, cfg, opt.seed));
    BK_LOG_INFO("pretrain: model %s (%zu parameters), checkpoints in %s", model_config_to_json(cfg).c_str(),
                model_num_params(m), opt.checkpoint_dir.c_str());
  }

  TrainerCallbacks cb;
  cb.next_batch = [&ds, &opt](Batch* b, Rng*) { return lm_next_batch(&ds, opt.batch, b); };
  cb.save_position = [&ds]() { return lm_position_json(ds); };
  cb.restore_position = [&ds](const std::string& s) { return lm_restore_position(&ds, s); };
  TrainResult r;
  BK_TRY(trainer_run(&m, opt, cb, &r));
  printf("%s\n", train_report_to_json(train_report_from(r, m.cfg.act_bits, opt.metrics_path)).c_str());
  return ok_status();
}

int run_pretrain(Args& a) {
  const Status st = pretrain_from_args(a);
  return st.ok() ? 0 : cli_fail(a, st);
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
