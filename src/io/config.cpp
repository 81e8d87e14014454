#include "io/config.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/fs.h"

extern char** environ;

namespace bk {

// The registry. Names are the PoC's where it had one (POC_INTERFACE.md);
// defaults are the PoC's unless the note says why bitkd differs.
static const std::vector<ConfigVar> k_vars = {
    // paths and run
    {"ARTIFACTS_DIR", "", "paths", "Artifact root (data/, checkpoints/, reports/, logs/). Empty: DRIVE_ROOT, else ./artifacts"},
    {"DRIVE_ROOT", "", "paths", "The PoC's artifact root; honoured when ARTIFACTS_DIR is empty"},
    {"AUTO_CREATE_DIRS", "1", "paths", "Create artifact directories on demand (0: fail if missing)", CT_BOOL},
    {"DATA_DIR", "", "paths", "KD shards (default <root>/data)"},
    {"CHECKPOINTS_DIR", "", "paths", "Checkpoints (default <root>/checkpoints)"},
    {"REPORTS_DIR", "", "paths", "Reports (default <root>/reports)"},
    {"LOGS_DIR", "", "paths", "Logs (default <root>/logs)"},
    // storage (src/storage): artifacts pushed to and pulled from an rclone remote
    {"STORAGE_BACKEND", "local", "storage", "local; rclone (STORAGE_REMOTE); s3 or webdav (STORAGE_REMOTE, or the S3_* / WEBDAV_* below); gdrive: STORAGE_REMOTE names a Drive remote, unset: a mounted folder read as local files", CT_CHOICE, 0, 0, "local|gdrive|rclone|s3|webdav"},
    {"STORAGE_REMOTE", "", "storage", "rclone remote and path for the artifacts, <remote>:<path> (remote from rclone's config or RCLONE_CONFIG_<NAME>_* variables)"},
    {"S3_BUCKET", "", "storage", "STORAGE_BACKEND=s3 without STORAGE_REMOTE: the bucket"},
    {"S3_PREFIX", "bitkd", "storage", "Path inside S3_BUCKET for the artifacts"},
    {"S3_ENDPOINT_URL", "", "storage", "S3-compatible endpoint (rclone s3 endpoint; empty: AWS)"},
    {"S3_REGION", "", "storage", "rclone s3 region"},
    {"S3_PROVIDER", "Other", "storage", "rclone s3 provider (AWS, Minio, Ceph, Wasabi, Other, ...)"},
    {"S3_ACCESS_KEY_ID", "", "storage", "rclone s3 access_key_id (empty with the secret: AWS environment or instance credentials)"},
    {"S3_SECRET_ACCESS_KEY", "", "storage", "rclone s3 secret_access_key"},
    {"WEBDAV_URL", "", "storage", "STORAGE_BACKEND=webdav without STORAGE_REMOTE: the server's URL"},
    {"WEBDAV_PATH", "bitkd", "storage", "Path on the WebDAV server for the artifacts"},
    {"WEBDAV_USER", "", "storage", "WebDAV user"},
    {"WEBDAV_PASSWORD", "", "storage", "Refused: rclone wants it obscured; set RCLONE_CONFIG_<NAME>_PASS from `rclone obscure` and STORAGE_REMOTE"},
    {"LOG_LEVEL", "INFO", "run", "DEBUG, INFO, WARNING or ERROR", CT_CHOICE, 0, 0, "DEBUG|INFO|WARNING|WARN|ERROR|debug|info|warning|error"},
    {"SEED", "1234", "run", "Seed for every random choice (init, data order, sampling)", CT_INT, 0},
    {"DETERMINISTIC", "0", "run", "1: single-threaded reductions so reruns are bitwise identical", CT_BOOL},
    {"THREADS", "0", "run", "Worker threads for kernels (0: all cores)", CT_INT, 0},
    // providers (the PoC's names)
    {"PROVIDER", "", "providers", "Default provider when TEACHER_PROVIDER is empty (the PoC's)"},
    {"OPENAI_MODEL", "gpt-4o-mini", "providers", "Model for provider openai"},
    {"OPENAI_BASE_URL", "https://api.openai.com/v1", "providers", "Base URL for provider openai"},
    {"OPENAI_API_KEY", "", "providers", "API key for openai"},
    {"DEEPSEEK_MODEL", "deepseek-chat", "providers", "Model for provider deepseek"},
    {"DEEPSEEK_BASE_URL", "https://api.deepseek.com/v1", "providers", "Base URL for provider deepseek"},
    {"DEEPSEEK_API_KEY", "", "providers", "API key for deepseek"},
    {"OPENROUTER_MODEL", "", "providers", "Model for provider openrouter"},
    {"OPENROUTER_BASE_URL", "https://openrouter.ai/api/v1", "providers", "Base URL for provider openrouter"},
    {"OPENROUTER_API_KEY", "", "providers", "API key for openrouter"},
    {"AIMLAPI_MODEL", "", "providers", "Model for provider aimlapi"},
    {"AIMLAPI_BASE_URL", "https://api.aimlapi.com/v1", "providers", "Base URL for provider aimlapi"},
    {"AIMLAPI_API_KEY", "", "providers", "API key for aimlapi"},
    {"GROQ_MODEL", "", "providers", "Model for provider groq (baseline only: no logprobs)"},
    {"GROQ_BASE_URL", "https://api.groq.com/openai/v1", "providers", "Base URL for provider groq"},
    {"GROQ_API_KEY", "", "providers", "API key for groq"},
    {"ANTHROPIC_MODEL", "", "providers", "Model for provider anthropic (baseline only: no logprobs)"},
    {"ANTHROPIC_BASE_URL", "https://api.anthropic.com/v1", "providers", "Base URL for provider anthropic"},
    {"ANTHROPIC_API_KEY", "", "providers", "API key for anthropic"},
    {"GEMINI_MODEL", "", "providers", "Model for provider gemini (baseline only)"},
    {"GEMINI_BASE_URL", "https://generativelanguage.googleapis.com/v1beta", "providers", "Base URL for provider gemini"},
    {"GEMINI_API_KEY", "", "providers", "API key for gemini"},
    {"VLLM_BASE_URL", "http://127.0.0.1:8000/v1", "providers", "Base URL for provider vllm"},
    {"LLAMACPP_BASE_URL", "http://127.0.0.1:8080/v1", "providers", "Base URL for provider llamacpp"},
    {"BITKD_API_KEY", "", "providers", "Bearer key `bitkd serve` requires (and the bitkd provider sends)"},
    {"VLLM_MODEL", "", "providers", "Model for provider vllm (empty: the first one the server lists)"},
    {"LLAMACPP_MODEL", "", "providers", "Model for provider llamacpp (empty: the first one the server lists)"},
    {"BITKD_BASE_URL", "http://127.0.0.1:8000/v1", "providers", "Base URL of a `bitkd serve` teacher (provider bitkd)"},
    {"BITKD_MODEL", "", "providers", "Model for provider bitkd (empty: the one the server lists)"},
    {"GEMINI_LOGPROBS", "0", "providers", "1: the Gemini model returns logprobs, so it may be a KD teacher", CT_BOOL},
    // teacher
    {"TEACHER_PROVIDER", "", "teacher",
     "openai, deepseek, openrouter, aimlapi, vllm, llamacpp, bitkd, anthropic, gemini, groq; empty: PROVIDER, "
     "else the embedded local teacher"},
    {"TEACHER_MODEL", "", "teacher", "Teacher model name (empty: the provider's *_MODEL)"},
    {"TEACHER_BASE_URL", "", "teacher", "Teacher base URL (empty: the provider's *_BASE_URL)"},
    {"TEACHER_API_KEY", "", "teacher", "Teacher API key (empty: the provider's *_API_KEY)"},
    {"TEACHER_CTX_LEN", "8192", "teacher", "Teacher context length", CT_INT, 1},
    {"TEACHER_TOP_LOGPROBS", "20", "teacher", "top_logprobs requested per step (<= 20)", CT_INT, 1, 20},
    {"TEACHER_BASELINE_TEMPERATURE", "0.0", "teacher", "Baseline sampling temperature (greedy)", CT_NUM, 0},
    {"TEACHER_BASELINE_TOP_P", "1.0", "teacher", "Baseline top_p", CT_NUM, 0, 1},
    {"TEACHER_BASELINE_MAX_TOKENS", "256", "teacher", "Baseline max new tokens per prompt", CT_INT, 1},
    {"TEACHER_BASELINE_PROMPTS_FILE", "", "teacher", "Baseline prompts, one per line (empty: task suite eval split)"},
    {"TEACHER_BASELINE_MAX_PROMPTS", "100", "teacher", "Baseline prompt count", CT_INT, 0},
    {"TEACHER_MEMORY_GB", "", "teacher",
     "Teacher weight memory in GB for QEI, declared, when it cannot be measured (a hosted or remote teacher). Empty "
     "with no TEACHER_CHECKPOINT: QEI is not evaluated (the PoC's built-in 670 is gone on purpose)", CT_NUM, 0},
    {"TEACHER_CHECKPOINT", "", "teacher", "Checkpoint a local `bitkd serve` teacher serves: its weight bytes are measured for QEI"},
    {"TEACHER_CONCURRENCY", "4", "teacher", "Parallel requests to the teacher", CT_INT, 1},
    {"TEACHER_RPM", "0", "teacher", "Requests-per-minute cap (0: none)", CT_INT, 0},
    {"TEACHER_TIMEOUT_S", "120", "teacher", "Per-request timeout", CT_POS},
    {"TEACHER_MAX_RETRIES", "5", "teacher", "Retries on 429, 5xx and timeouts", CT_INT, 0},
    {"TEACHER_BACKOFF_S", "0.5", "teacher", "First retry delay (doubles per retry, with jitter; Retry-After wins when longer)", CT_NUM, 0},
    {"TEACHER_API", "chat", "teacher", "chat (Chat Completions) or completions (legacy Completions) for OpenAI-compatible teachers", CT_CHOICE, 0, 0, "chat|completions|native"},
    // KD collection
    {"KD_TEACHER_TEMPERATURE", "0.8", "collect", "Teacher sampling temperature for KD traces (recorded in shards)", CT_NUM, 0},
    {"KD_TEACHER_TOP_P", "0.95", "collect", "Teacher top_p for KD traces (recorded in shards)", CT_NUM, 0, 1},
    {"KD_MAX_TOKENS_PER_PROMPT", "512", "collect", "Max teacher tokens per prompt", CT_INT, 1},
    {"KD_MAX_PROMPTS", "0", "collect", "Prompts to collect (0: all)", CT_INT, 0},
    {"KD_PROMPTS_FILE", "", "collect", "Collection prompts, one per line or JSONL (empty: task suite train split)"},
    {"KD_SHARD_ROWS", "200000", "collect", "Step rows per shard before rotating", CT_INT, 1},
    {"KD_DATA_PATH", "", "collect", "KD shard directory (default DATA_DIR)"},
    {"KD_FLUSH_PROMPTS", "64", "collect", "Commit shards after this many new prompts (a crash loses at most these)", CT_INT, 1},
    {"KD_FLUSH_SECONDS", "30", "collect", "... or after this many seconds, whichever comes first", CT_NUM, 0},
    {"KD_SOURCE", "teacher_sample", "collect", "What `bitkd collect` records: teacher_sample (the teacher answers), reference (it scores the reference answers), on_policy (it scores a student's answers)", CT_CHOICE, 0, 0, "teacher_sample|reference|on_policy"},
    {"KD_STUDENT_TEMPERATURE", "1.0", "collect", "on_policy: the student's sampling temperature", CT_NUM, 0},
    {"TEMPLATE", "<|user|>\\n{prompt}\\n\\n<|assistant|>\\n", "collect", "Chat template ({prompt} is replaced; \\n escapes)"},
    {"TEACHER_INSTRUCTION", "", "teacher",
     "System message sent before every prompt to a chat-API teacher (baseline and teacher_sample traces), e.g. to ask "
     "for the bare answer; recorded in the baseline and hashed into template_hash (\\n escapes; empty: none)"},
    {"TEACHER_PROMPT_PREFIX", "", "teacher",
     "TEACHER_API=native only: text put before every raw prompt sent to llama.cpp; ' ' (one space) makes llama.cpp "
     "tokenize prompts for a GGUF that bitkd exported exactly as bitkd does (docs/gguf.md); recorded in the baseline and "
     "hashed into template_hash (\\n escapes; empty: none)"},
    {"TOKENIZER_NAME", "", "collect", "Student SentencePiece tokenizer.model (empty: <artifacts>/tokenizer/tokenizer.model, which the pipeline trains)"},
    {"TEACHER_TOKENIZER", "", "collect", "Teacher SentencePiece tokenizer.model for a local teacher"},
    {"TOKENIZER_VOCAB_SIZE", "2048", "collect", "Vocabulary size for `bitkd tokenizer train`", CT_INT, 1},
    {"TOKENIZER_MODEL_TYPE", "bpe", "collect", "bpe (like Llama) or unigram, for `bitkd tokenizer train`", CT_CHOICE, 0, 0, "bpe|unigram"},
    {"TOKENIZER_TRAIN_TASKS", "20000", "collect", "Task-suite items in the default tokenizer training corpus", CT_INT, 0},
    // training
    {"MAX_SEQ_LEN", "256", "train", "Training sequence length", CT_INT, 1},
    {"MAX_TOPK", "20", "train", "Top-K buckets kept per KD step", CT_INT, 1},
    {"TRAIN_BATCH_SIZE", "4", "train", "Sequences per micro-batch", CT_INT, 1},
    {"NUM_WORKERS", "0", "train", "Accepted for compatibility; loading is in-process", CT_INT, 0},
    {"GRAD_ACCUM_STEPS", "1", "train", "Micro-batches per optimizer step", CT_INT, 1},
    {"LR", "6e-4", "train", "Peak learning rate", CT_POS},
    {"ADAM_BETA1", "0.9", "train", "AdamW beta1", CT_NUM, 0, 0.999999},
    {"ADAM_BETA2", "0.95", "train", "AdamW beta2", CT_NUM, 0, 0.999999},
    {"ADAM_EPS", "1e-8", "train", "AdamW epsilon", CT_POS},
    {"WEIGHT_DECAY", "0.1", "train", "Decoupled weight decay (not on norms and embeddings)", CT_NUM, 0},
    {"GRAD_CLIP_NORM", "1.0", "train", "Global gradient-norm clip (0: off)", CT_NUM, 0},
    {"WARMUP_STEPS", "0", "train", "Linear warmup steps", CT_INT, 0},
    {"LR_SCHEDULE", "cosine", "train", "cosine, linear or constant after warmup", CT_CHOICE, 0, 0, "cosine|linear|constant"},
    {"SCHEDULER_TMAX", "1000", "train", "Decay horizon in steps (the PoC's cosine T_max)", CT_INT, 1},
    {"SCHEDULER_ETA_MIN", "6e-5", "train", "Final learning rate", CT_NUM, 0},
    {"TWO_STAGE", "0", "train", "BitNet two-stage schedule: lower peak LR and weight decay 0 in stage 2", CT_BOOL},
    {"STAGE2_LR_SCALE", "0.5", "train", "Two-stage: stage-2 peak LR as a fraction of LR (stage 2 = second half of TOTAL_STEPS)", CT_NUM, 0},
    {"WEIGHT_DECAY_EMBEDDINGS", "0", "train", "1: apply weight decay to the token embedding too", CT_BOOL},
    {"WEIGHT_DECAY_NORMS", "0", "train", "1: apply weight decay to RMSNorm gains too", CT_BOOL},
    {"TOTAL_STEPS", "1000", "train", "Optimizer steps", CT_INT, 1},
    {"LOG_INTERVAL", "50", "train", "Steps between logs/train_metrics.jsonl lines", CT_INT, 1},
    {"CHECKPOINT_INTERVAL", "200", "train", "Steps between checkpoints", CT_INT, 0},
    {"KEEP_CHECKPOINTS", "3", "train", "Checkpoints kept (older ones are deleted)", CT_INT, 0},
    {"BUDGET_TOKENS", "1000000", "train", "Token budget for the A8->A4 flip", CT_NUM, 0},
    {"FLIP_FRACTION", "0.9", "train", "Flip to 4-bit activations at this fraction of BUDGET_TOKENS", CT_NUM, 0, 1},
    {"A4_SCOPE", "hybrid", "train", "hybrid (a4.8: 4-bit on q/k/v, gate/up inputs) or all", CT_CHOICE, 0, 0, "hybrid|all"},
    {"KD_TAU", "1.3", "train", "Distillation temperature", CT_POS},
    {"KD_CE_WEIGHT", "0.25", "train", "Weight of CE on the teacher's sampled token", CT_NUM, 0},
    {"FORMAT_LOSS_WEIGHT", "0.2", "train", "Extra CE weight on structural tokens", CT_NUM, 0},
    {"KD_WEIGHT", "1.0", "train", "Weight of the KD term (0: CE-only baseline)", CT_NUM, 0},
    {"KD_LOSS", "kl", "train", "kl, reverse_kl or jsd over the K+1 buckets", CT_CHOICE, 0, 0, "kl|reverse_kl|jsd"},
    {"KD_TAU2_SCALE", "0", "train", "1: multiply the KD term by tau^2 (Hinton)", CT_BOOL},
    {"KD_PLAIN_CE_WEIGHT", "1.0", "train", "CE weight at response tokens without a KD target (tokenizers disagree)", CT_NUM, 0},
    {"KD_SHUFFLE_BUFFER", "1024", "train", "Examples in the loader's shuffle buffer (<= 1: file order)", CT_INT},
    {"KD_ATTN_RELATION_WEIGHT", "0", "train",
     "Weight of attention-relation distillation (MiniLM-style Q/K/V relations of one layer, teacher vs student; needs "
     "STUDENT_INIT, the teacher); 0: off", CT_NUM, 0},
    {"KD_ATTN_RELATION_LAYER", "-1", "train", "The layer attention-relation distillation compares (-1: the last)", CT_INT, -1},
    {"STUDENT_INIT", "", "train", "Float model (checkpoint or GGUF) the student starts from: its shape and weights, ternarized (needs its tokenizer); empty: random init"},
    {"KD_SOURCES", "", "train", "Trace sources to train on, comma-separated: teacher_sample, reference, on_policy (empty: all in the data)"},
    {"KD_SOURCE_WEIGHTS", "", "train",
     "How often each trace source's examples are used per epoch, e.g. reference=1,on_policy=2 (0.5: about half of "
     "them, drawn per epoch; sources not named: 1)"},
    {"KD_SAMPLE_MIN_SCORE", "-1", "train", "Drop teacher samples the task scorer gives less than this (e.g. 1: only correct ones; below 0: keep all)", CT_NUM},
    {"KD_PACK", "0", "train", "0 only for now: one example per sequence, padded (1, packing several, is refused)", CT_BOOL},
    {"KD_SKIP_BAD_ROWS", "1", "train", "Skip and count bad KD rows and prompts (0: stop at the first)", CT_BOOL},
    {"KD_ALLOW_TOKENIZER_MISMATCH", "0", "train", "1: train on shards projected for another tokenizer", CT_BOOL},
    {"TORCH_DTYPE", "bf16", "train", "Accepted for compatibility; bitkd keeps fp32 master weights"},
    {"USE_AMP", "1", "train", "Accepted for compatibility; no effect on CPU", CT_BOOL},
    // student model
    {"MINI_DIM", "768", "model", "Student hidden size", CT_INT, 1},
    {"MINI_LAYERS", "12", "model", "Student layers", CT_INT, 1},
    {"MINI_HEADS", "12", "model", "Student attention heads", CT_INT, 1},
    {"MINI_HEAD_DIM", "64", "model", "Student head dim (= MINI_DIM / MINI_HEADS)", CT_INT, 1},
    {"MINI_KV_HEADS", "0", "model", "Student KV heads (0: = MINI_HEADS)", CT_INT, 0},
    {"MINI_FFN_DIM", "0", "model", "Student FFN size (0: 8/3 * dim rounded to 64 for swiglu, 4 * dim for relu2)", CT_INT, 0},
    {"MINI_FFN_ACT", "swiglu", "model", "swiglu or relu2", CT_CHOICE, 0, 0, "swiglu|relu2"},
    {"MINI_SUBLN", "1", "model", "SubLN before o_proj and down_proj", CT_BOOL},
    {"MINI_TIE_EMBEDDINGS", "1", "model", "Tie LM head to the embedding", CT_BOOL},
    {"MINI_WEIGHT_QUANT", "ternary", "model", "ternary (BitNet b1.58) or none (float model, e.g. a teacher)", CT_CHOICE, 0, 0, "ternary|none|float"},
    {"MINI_ACT_BITS", "8", "model", "Activation bits at the start: 8, 4 or 0 (off)", CT_CHOICE, 0, 0, "8|4|0"},
    {"MINI_ROPE_THETA", "10000", "model", "RoPE base", CT_POS},
    // eval
    {"EVAL_MAX_NEW_TOKENS", "256", "eval", "Max new tokens per eval prompt", CT_INT, 1},
    {"EVAL_MAX_PROMPTS", "10", "eval", "Eval prompt count", CT_INT, 0},
    {"EVAL_TEMPERATURE", "0.0", "eval", "Eval sampling temperature", CT_NUM, 0},
    {"EVAL_TOP_P", "1.0", "eval", "Eval top_p", CT_NUM, 0, 1},
    {"EVAL_PROMPTS_FILE", "", "eval", "Eval prompts (empty: task suite eval split)"},
    {"SAVE_SAMPLE_GENERATIONS", "1", "eval", "Keep responses in the eval report", CT_BOOL},
    {"EVAL_STUDENT_QUALITY", "", "eval", "Ignored: bitkd measures quality (the PoC's placeholder)"},
    {"EVAL_TEACHER_QUALITY", "", "eval", "Ignored: bitkd measures quality (the PoC's placeholder)"},
    // dry run
    {"DRYRUN_PRESET", "poc", "dryrun", "poc (ffn 4*dim) or llama2-7b (ffn 11008)", CT_CHOICE, 0, 0, "poc|llama2-7b"},
    {"DRYRUN_DIM", "4096", "dryrun", "Dry-run hidden size", CT_INT, 1},
    {"DRYRUN_LAYERS", "32", "dryrun", "Dry-run layers", CT_INT, 1},
    {"DRYRUN_HEADS", "32", "dryrun", "Dry-run heads", CT_INT, 1},
    {"DRYRUN_HEAD_DIM", "128", "dryrun", "Dry-run head dim", CT_INT, 1},
    {"DRYRUN_VOCAB", "0", "dryrun", "Dry-run vocab (0: the tokenizer's, else 32000)", CT_INT, 0},
    {"DRYRUN_SEQ_LEN", "64", "dryrun", "Tokens in the dry-run forward", CT_INT, 1},
    {"DRYRUN_BATCH_SIZE", "1", "dryrun", "Dry-run batch", CT_INT, 1},
    {"DRYRUN_ACT_BITS_START", "8", "dryrun", "First forward's activation bits", CT_CHOICE, 0, 0, "8|4|0"},
    {"DRYRUN_ACT_BITS_AFTER", "4", "dryrun", "Second forward's activation bits", CT_CHOICE, 0, 0, "8|4|0"},
    {"DRYRUN_ALLOW_DOWNGRADE", "1", "dryrun", "Accepted for compatibility", CT_BOOL},
    {"DRYRUN_FORCE_CPU", "0", "dryrun", "Accepted for compatibility (bitkd runs on CPU)", CT_BOOL},
    {"DRYRUN_MAX_ALLOC_FRAC", "0.85", "dryrun", "Accepted for compatibility", CT_NUM},
    // `bitkd pipeline` / `make run` (the embedded default). Empty: the PIPELINE_SCALE preset.
    {"PIPELINE_SCALE", "1", "pipeline",
     "Size of `bitkd pipeline`: 1 (about 15 min on 2 cores), 2, 4, ... multiply teacher and student steps, tasks and "
     "KD prompts (the presets marked x scale); tiny = a 1-2 minute smoke run"},
    {"PIPELINE_VAL_PROMPTS", "", "pipeline", "Validation items carved from the train split for choosing recipes (empty: the pipeline preset)", CT_INT, 1},
    {"PIPELINE_STUDENT_TOKENIZER", "", "pipeline", "Local teacher: teacher (the student uses its tokenizer) or own (empty: the pipeline preset)", CT_CHOICE, 0, 0, "teacher|own"},
    {"PIPELINE_STUDENT_INIT", "", "pipeline", "Local teacher: teacher (the student starts from its weights) or random (empty: the pipeline preset)", CT_CHOICE, 0, 0, "teacher|random"},
    {"PIPELINE_TEACHER_DIM", "", "pipeline", "Local float teacher hidden size (empty: the pipeline preset; heads = dim / 32)", CT_INT, 1},
    {"PIPELINE_TEACHER_LAYERS", "", "pipeline", "Local float teacher layers (empty: the pipeline preset)", CT_INT, 1},
    {"PIPELINE_TEACHER_STEPS", "", "pipeline", "Local teacher pretraining steps (empty: the pipeline preset)", CT_INT, 1},
    {"PIPELINE_TEACHER_LR", "", "pipeline", "Local teacher peak learning rate (empty: the pipeline preset)", CT_POS},
    {"PIPELINE_TEACHER_VOCAB", "", "pipeline", "Local teacher tokenizer vocabulary (empty: the pipeline preset)", CT_INT, 1},
    {"PIPELINE_TEACHER_TOKENIZER_TYPE", "", "pipeline", "Local teacher tokenizer type (empty: the pipeline preset)", CT_CHOICE, 0, 0, "bpe|unigram"},
    {"PIPELINE_STUDENT_VOCAB", "", "pipeline", "Student tokenizer vocabulary when TOKENIZER_NAME is empty (empty: the pipeline preset)", CT_INT, 1},
    {"PIPELINE_STUDENT_TOKENIZER_TYPE", "", "pipeline", "Student tokenizer type (empty: the pipeline preset)", CT_CHOICE, 0, 0, "bpe|unigram"},
};

const std::vector<ConfigVar>& config_vars() { return k_vars; }

const ConfigVar* config_find_var(const std::string& name) {
  for (const ConfigVar& v : k_vars)
    if (name == v.name) return &v;
  return nullptr;
}

bool config_is_secret(const std::string& name) {
  auto ends_with = [&](const char* s) {
    size_t n = strlen(s);
    return name.size() >= n && name.compare(name.size() - n, n, s) == 0;
  };
  return ends_with("_API_KEY") || ends_with("_TOKEN") || name == "API_KEY" ||
         name.find("SECRET") != std::string::npos || name.find("PASSWORD") != std::string::npos;
}

std::string config_redact(const std::string& value) {
  if (value.empty()) return "";
  return "**** (set, " + std::to_string(value.size()) + " chars)";
}

const char* config_source_name(ConfigSource s) {
  switch (s) {
    case SRC_DEFAULT: return "default";
    case SRC_DOTENV: return ".env";
    case SRC_ENV: return "env";
    case SRC_FLAG: return "flag";
  }
  return "?";
}

static std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && (s[a] == ' ' || s[a] == '\t' || s[a] == '\r')) a++;
  while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t' || s[b - 1] == '\r')) b--;
  return s.substr(a, b - a);
}

// A quoted value: single quotes keep everything; double quotes turn \" into
// a quote and keep every other backslash (TEMPLATE's \n escapes are
// expanded later, by the command that reads it). After the closing quote
// only spaces and a # comment may follow.
static Status unquote(const std::string& val, const std::string& path, int line_no, const std::string& key,
                      std::string* out) {
  const char q = val[0];
  std::string v;
  size_t i = 1;
  for (; i < val.size() && val[i] != q; i++) {
    if (q == '"' && val[i] == '\\' && i + 1 < val.size() && val[i + 1] == '"') i++;
    v += val[i];
  }
  if (i >= val.size()) return errorf("%s:%d: unterminated quote in the value of %s", path.c_str(), line_no, key.c_str());
  const std::string rest = trim(val.substr(i + 1));
  if (!rest.empty() && rest[0] != '#')
    return errorf("%s:%d: text after the closing quote of %s ('%s'): quote the whole value", path.c_str(), line_no,
                  key.c_str(), rest.c_str());
  *out = v;
  return ok_status();
}

Status dotenv_parse(const std::string& text, const std::string& path, std::map<std::string, std::string>* out,
                    std::map<std::string, int>* lines) {
  size_t pos = 0;
  int line_no = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string line = trim(text.substr(pos, nl - pos));
    pos = nl + 1;
    line_no++;
    if (line.empty() || line[0] == '#') continue;
    if (line.compare(0, 7, "export ") == 0) line = trim(line.substr(7));
    size_t eq = line.find('=');
    if (eq == std::string::npos || eq == 0)
      return errorf("%s:%d: expected KEY=VALUE, got a line without '=' (fix or comment it out with #)", path.c_str(),
                    line_no);
    std::string key = trim(line.substr(0, eq));
    for (char ch : key)
      if (!(isalnum((unsigned char)ch) || ch == '_'))
        return errorf("%s:%d: invalid variable name '%s' (letters, digits and _ only)", path.c_str(), line_no,
                      key.c_str());
    std::string val = trim(line.substr(eq + 1));
    if (!val.empty() && (val[0] == '"' || val[0] == '\'')) {
      BK_TRY(unquote(val, path, line_no, key, &val));
    } else {
      size_t hash = val.find(" #");
      if (hash != std::string::npos) val = trim(val.substr(0, hash));
    }
    (*out)[key] = val;
    if (lines) (*lines)[key] = line_no;
  }
  return ok_status();
}

void config_set(Config* c, const std::string& name, const std::string& value, ConfigSource src) {
  c->values[name] = value;
  c->sources[name] = src;
  if (src == SRC_DEFAULT) c->origins.erase(name);
  else c->origins[name] = src == SRC_ENV ? "environment" : src == SRC_FLAG ? "flag" : ".env";
}

std::string config_where(const Config& c, const std::string& name) {
  auto it = c.origins.find(name);
  return it == c.origins.end() ? "default" : "from " + it->second;
}


Status config_load(Config* c, const std::string& dotenv_path, const std::map<std::string, std::string>& flag_values) {
  c->values.clear();
  c->sources.clear();
  c->origins.clear();
  c->dotenv_path.clear();
  c->reads.clear();
  for (const ConfigVar& v : k_vars) config_set(c, v.name, v.default_value, SRC_DEFAULT);
  if (!dotenv_path.empty() && file_exists(dotenv_path)) {
    std::string text;
    BK_TRY(read_file(dotenv_path, &text));
    std::map<std::string, std::string> kv;
    std::map<std::string, int> lines;
    BK_TRY(dotenv_parse(text, dotenv_path, &kv, &lines));
    for (auto& it : kv) {
      config_set(c, it.first, it.second, SRC_DOTENV);
      c->origins[it.first] = dotenv_path + ":" + std::to_string(lines[it.first]);
    }
    c->dotenv_path = dotenv_path;
  }
  // The environment: registered names, plus provider keys and anything the .env named.
  for (char** e = environ; e && *e; e++) {
    const char* eq = strchr(*e, '=');
    if (!eq) continue;
    std::string name(*e, eq - *e);
    if (config_find_var(name) || c->values.count(name) || config_is_secret(name))
      config_set(c, name, std::string(eq + 1), SRC_ENV);
  }
  for (auto& it : flag_values) config_set(c, it.first, it.second, SRC_FLAG);
  return ok_status();
}

ConfigSource config_source(const Config& c, const std::string& name) {
  c.reads.insert(name);
  auto it = c.sources.find(name);
  return it == c.sources.end() ? SRC_DEFAULT : it->second;
}

bool config_user_set(const Config& c, const std::string& name) {
  return config_source(c, name) != SRC_DEFAULT && config_has(c, name);
}

bool config_has(const Config& c, const std::string& name) {
  c.reads.insert(name);
  auto it = c.values.find(name);
  return it != c.values.end() && !it->second.empty();
}

std::string config_str(const Config& c, const std::string& name, const std::string& fallback) {
  c.reads.insert(name);
  auto it = c.values.find(name);
  if (it == c.values.end() || it->second.empty()) return fallback;
  return it->second;
}


Status config_int(const Config& c, const std::string& name, long long* out) {
  std::string v = config_str(c, name);
  if (v.empty()) return errorf("%s is not set (an integer is required)", name.c_str());
  char* end = nullptr;
  errno = 0;
  long long x = strtoll(v.c_str(), &end, 10);
  if (errno || end == v.c_str() || *end != 0)
    return errorf("%s=%s (%s) is not an integer", name.c_str(), v.c_str(), config_where(c, name).c_str());
  *out = x;
  return ok_status();
}

Status config_double(const Config& c, const std::string& name, double* out) {
  std::string v = config_str(c, name);
  if (v.empty()) return errorf("%s is not set (a number is required)", name.c_str());
  char* end = nullptr;
  errno = 0;
  double x = strtod(v.c_str(), &end);
  if (errno || end == v.c_str() || *end != 0)
    return errorf("%s=%s (%s) is not a number", name.c_str(), v.c_str(), config_where(c, name).c_str());
  *out = x;
  return ok_status();
}

Status config_bool(const Config& c, const std::string& name, bool* out) {
  std::string v = config_str(c, name);
  for (char& ch : v) ch = (char)tolower((unsigned char)ch);
  if (v == "1" || v == "true" || v == "yes" || v == "on") *out = true;
  else if (v == "0" || v == "false" || v == "no" || v == "off" || v.empty()) *out = false;
  else
    return errorf("%s=%s (%s) is not a boolean (use 1/0, true/false)", name.c_str(), v.c_str(),
                  config_where(c, name).c_str());
  return ok_status();
}

// ---- checking values against the registry ----------------------------------------

static std::string num_text(double v) {
  char b[32];
  snprintf(b, sizeof b, "%.10g", v);
  return b;
}

static std::string check_choice(const ConfigVar& v, const std::string& value) {
  const std::string all = v.choices ? v.choices : "";
  std::string list;
  for (size_t at = 0; at <= all.size();) {
    size_t bar = all.find('|', at);
    if (bar == std::string::npos) bar = all.size();
    const std::string one = all.substr(at, bar - at);
    if (one == value) return "";
    list += (list.empty() ? "" : ", ") + one;
    at = bar + 1;
  }
  return "must be one of: " + list;
}

std::string config_check_value(const ConfigVar& v, const std::string& value) {
  if (value.empty()) return v.type == CT_STR || !v.default_value[0] ? "" : "is empty (unset it for the default)";
  char* end = nullptr;
  errno = 0;
  switch (v.type) {
    case CT_STR: return "";
    case CT_INT: {
      const long long x = strtoll(value.c_str(), &end, 10);
      if (errno || end == value.c_str() || *end != 0) return "is not an integer";
      if ((double)x < v.min) return "must be >= " + num_text(v.min);
      if ((double)x > v.max) return "must be <= " + num_text(v.max);
      return "";
    }
    case CT_NUM:
    case CT_POS: {
      const double x = strtod(value.c_str(), &end);
      if (errno || end == value.c_str() || *end != 0 || !std::isfinite(x)) return "is not a number";
      if (v.type == CT_POS && !(x > 0)) return "must be > 0";
      if (x < v.min) return "must be >= " + num_text(v.min);
      if (x > v.max) return "must be <= " + num_text(v.max);
      return "";
    }
    case CT_BOOL: {
      std::string l = value;
      for (char& ch : l) ch = (char)tolower((unsigned char)ch);
      for (const char* ok : {"1", "0", "true", "false", "yes", "no", "on", "off"})
        if (l == ok) return "";
      return "is not a boolean (use 1/0, true/false)";
    }
    case CT_CHOICE: return check_choice(v, value);
  }
  return "";
}

std::vector<std::string> config_validate(const Config& c) {
  std::vector<std::string> bad;
  for (const ConfigVar& v : k_vars) {
    auto it = c.values.find(v.name);
    const std::string value = it == c.values.end() ? "" : it->second;
    const std::string why = config_check_value(v, value);
    if (!why.empty()) bad.push_back(std::string(v.name) + "=" + value + " (" + config_where(c, v.name) + "): " + why);
  }
  return bad;
}

Status config_validate_status(const Config& c) {
  const std::vector<std::string> bad = config_validate(c);
  if (bad.empty()) return ok_status();
  std::string msg = std::to_string(bad.size()) +
                    (bad.size() == 1 ? " bad configuration value" : " bad configuration values") +
                    " (fix each where it was set: flag, environment or .env line):";
  for (const std::string& b : bad) msg += "\n  " + b;
  return errorf("%s", msg.c_str());
}

ArtifactPaths artifact_paths(const Config& c) {
  ArtifactPaths p;
  p.root = config_str(c, "ARTIFACTS_DIR", config_str(c, "DRIVE_ROOT", "artifacts"));
  p.data = config_str(c, "DATA_DIR", path_join(p.root, "data"));
  p.checkpoints = config_str(c, "CHECKPOINTS_DIR", path_join(p.root, "checkpoints"));
  p.reports = config_str(c, "REPORTS_DIR", path_join(p.root, "reports"));
  p.logs = config_str(c, "LOGS_DIR", path_join(p.root, "logs"));
  return p;
}

Status ensure_artifact_dirs(const Config& c, const ArtifactPaths& p) {
  bool create = true;
  BK_TRY(config_bool(c, "AUTO_CREATE_DIRS", &create));
  for (const std::string* d : {&p.root, &p.data, &p.checkpoints, &p.reports, &p.logs}) {
    if (dir_exists(*d)) continue;
    if (!create) return errorf("artifact directory %s does not exist and AUTO_CREATE_DIRS=0", d->c_str());
    BK_TRY(make_dirs(*d));
  }
  return ok_status();
}

}  // namespace bk
