#pragma once
// Flags shared by the commands that build and train a model from the command
// line (pretrain, bench train, KD training): model shape, optimizer, schedule.
#include <vector>

#include "cli/cli.h"
#include "model/model.h"
#include "train/trainer.h"

namespace bk {

// Model-shape flags backed by MINI_* variables (pretrain, KD training).
std::vector<Flag> model_flags_env();
// The same flags with the benchmark's own defaults and no variables
// (vocab 32000, dim 256, 4 layers, 4 heads, ternary, A8).
std::vector<Flag> model_flags_bench();
// Optimizer/schedule/logging flags backed by the PoC's variables.
std::vector<Flag> train_flags_env();

// Reads the model flags. vocab: --vocab when given, else `default_vocab`
// (the tokenizer's). seq becomes max_seq_len. Errors name the flag and value.
Status model_config_from_args(const Args& a, int default_vocab, int seq, ModelConfig* out);
// FFN width when --ffn is 0: 8/3*dim rounded up to 64 (swiglu), 4*dim (relu2).
int default_ffn_dim(int dim, FfnAct act);
// AdamW, schedule, intervals, accumulation from the train flags / variables.
// total_steps drives the two-stage boundary (its half).
Status trainer_options_from_args(const Args& a, TrainerOptions* o);

}  // namespace bk
