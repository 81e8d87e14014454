#pragma once
// Training checkpoints (docs/training.md, "Checkpoints and resume"):
//
//   <dir>/mini_bitnet_step_N.safetensors        model parameters, F32, Hugging Face names
//                                               and shapes; __metadata__ carries the config
//                                               and the training state (below)
//   <dir>/mini_bitnet_step_N.optim.safetensors  AdamW moments (exp_avg.<name>, exp_avg_sq.<name>),
//                                               optimizer step, scheduler config
//   <dir>/mini_bitnet_step_N_health.json        the PoC's health record (+ caller extras)
//
// A model file alone is enough to rebuild the model (eval, serve, export).
// Everything round-trips bitwise, so a resumed run continues exactly.
#include <cstdint>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/status.h"
#include "model/model.h"
#include "train/optimizer.h"

namespace bk {

// The A8 -> A4 activation flip (docs/training.md), persisted so a resumed run
// neither flips twice nor forgets that it flipped.
struct FlipState {
  bool flip_done = false;
  int current_bits = 8;
  long flip_step = -1;          // optimizer step at which it flipped (-1: not yet)
  long long flip_tokens = -1;   // seen tokens at the flip (-1: not yet)
};

struct TrainState {
  long step = 0;                 // optimizer steps completed
  long long seen_tokens = 0;     // real (non-pad) target tokens trained on
  FlipState flip;
  std::string data_position;     // opaque to the checkpoint (the batch source's own JSON)
  Rng rng{};                     // the trainer's generator
  double last_loss = 0;
  std::string summary_json;      // free-form JSON object with run details ("" = none)
  std::string timestamp;         // filled by checkpoint_save, read back by load
};

// File names. `model_path` is the .safetensors of the model.
extern const char* const k_checkpoint_prefix;  // "mini_bitnet_step_"
std::string checkpoint_path_for_step(const std::string& dir, long step);
std::string checkpoint_optim_path(const std::string& model_path);
std::string checkpoint_health_path(const std::string& model_path);

// Writes the optimizer file (when opt is non-null), the health file and the
// model file, in that order (the model file appears last, so its presence
// marks a complete checkpoint); then deletes all but the newest keep_last
// checkpoints in dir (keep_last <= 0: keep all). health_extra_json is a JSON
// object whose fields are added to the health record ("" = none).
Status checkpoint_save(const std::string& dir, const Model& m, const Optimizer* opt, const ScheduleConfig* sched,
                       const TrainState& st, const std::string& health_extra_json, int keep_last,
                       std::string* out_path);

// Checkpoints in dir as (step, model path), ascending by step.
std::vector<std::pair<long, std::string>> checkpoint_list(const std::string& dir);
// The newest checkpoint's model path, or "" when dir has none.
std::string checkpoint_find_latest(const std::string& dir);

// Reads the model config stored in a checkpoint's metadata.
Status checkpoint_read_config(const std::string& model_path, ModelConfig* cfg);
// Rebuilds *m from a model file alone (layout from the stored config) and,
// when st is non-null, restores the training state. Errors name the file and
// the tensor: a foreign file, a missing tensor, a shape mismatch.
Status checkpoint_load(const std::string& model_path, Model* m, TrainState* st);
// Loads parameters by name into an existing layout (any float dtype; extra
// tensors in the file are ignored, missing ones are an error).
Status checkpoint_load_weights(const std::string& path, Model* m);
// Restores the optimizer (initialised for m with the given config first) and
// the stored scheduler config (sched may be null). The optimizer file must
// belong to the same step as the model file.
Status checkpoint_load_optimizer(const std::string& model_path, const Model& m, const AdamWConfig& cfg,
                                 Optimizer* opt, ScheduleConfig* sched);

}  // namespace bk
