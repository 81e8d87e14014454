// bitkd tokenizer train | encode | decode: SentencePiece models for the student;
// encode and decode take any tokenizer the library loads (tokenizer.h).
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/fs.h"
#include "core/log.h"
#include "data/tasks/tasks.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace bk {

namespace {

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t c = s.find(',', pos);
    if (c == std::string::npos) c = s.size();
    std::string part = s.substr(pos, c - pos);
    if (!part.empty()) out.push_back(part);
    pos = c + 1;
  }
  return out;
}

int run_train(Args& a) {
  TokenizerTrainOptions o;
  long long vocab = 0, n_tasks = 0, seed = 0;
  if (!arg_int_or_report(a, "vocab-size", &vocab) || !arg_int_or_report(a, "SEED", &seed)) return 1;
  o.vocab_size = (int)vocab;
  o.model_type = arg_str(a, "model-type");
  o.seed = (uint64_t)seed;
  bool no_chat = false, byte_fallback = true;
  Status st = arg_bool(a, "no-chat-symbols", &no_chat);
  if (st.ok()) st = arg_bool(a, "byte-fallback", &byte_fallback);
  if (!st.ok()) return cli_fail(a, st);
  o.byte_fallback = byte_fallback;
  bool split_digits = true;
  st = arg_bool(a, "split-digits", &split_digits);
  if (!st.ok()) return cli_fail(a, st);
  o.split_digits = split_digits;
  if (no_chat) o.user_symbols = {"\n"};
  o.input_files = split_commas(arg_str(a, "input"));
  // The task suite is the default corpus; --tasks adds it to --input files.
  if (arg_given(a, "tasks") || o.input_files.empty()) {
    if (!arg_int_or_report(a, "tasks", &n_tasks)) return 1;
    if (n_tasks > 0) {
      TaskGenOptions g;
      g.n = n_tasks;
      g.seed = (uint64_t)seed;
      g.split = TASK_SPLIT_TRAIN;
      std::vector<TaskItem> items;
      st = tasks_generate(g, &items);
      if (!st.ok()) return cli_fail(a, st);
      const std::string tmpl = template_unescape(arg_str(a, "template"));
      std::string rendered;
      for (const TaskItem& it : items) {
        st = template_render(tmpl, it.prompt, &rendered);
        if (!st.ok()) return cli_fail(a, st);
        o.texts.push_back(rendered + it.response);
      }
    }
  }
  std::string out = arg_str(a, "out");
  if (out.empty()) out = path_join(path_join(artifact_paths(a.cfg).root, "tokenizer"), "tokenizer");
  if (out.size() > 6 && out.compare(out.size() - 6, 6, ".model") == 0) out.resize(out.size() - 6);
  o.out_prefix = out;
  BK_LOG_INFO("training a %s tokenizer, vocab %d, on %zu texts and %zu files", o.model_type.c_str(), o.vocab_size,
              o.texts.size(), o.input_files.size());
  std::string path;
  st = tokenizer_train(o, &path);
  if (!st.ok()) return cli_fail(a, st);
  Tokenizer t;
  st = tokenizer_load(path, &t);
  if (!st.ok()) return cli_fail(a, st);
  if (tokenizer_vocab_size(t) < o.vocab_size)
    BK_LOG_WARN("the corpus yielded %d pieces of the %d asked for%s", tokenizer_vocab_size(t), o.vocab_size,
                o.model_type == "unigram" && o.split_digits ? " (unigram with split digits; bpe learns more)" : "");
  printf("{\"model\": \"%s\", \"vocab_size\": %d, \"model_type\": \"%s\", \"sha256\": \"%s\"}\n", path.c_str(),
         tokenizer_vocab_size(t), o.model_type.c_str(), tokenizer_hash(t).c_str());
  return 0;
}

Status load_model_arg(const Args& a, Tokenizer* t) {
  std::string path = arg_str(a, "model");
  if (path.empty()) return errorf("no tokenizer given: pass --model PATH or set TOKENIZER_NAME");
  return tokenizer_load(path, t);
}

// Batch mode: one JSON object per line of `path`, `fn` turns it into the
// output line. Errors name the file and line.
Status each_json_line(const std::string& path, const std::function<Status(const nlohmann::json&, std::string*)>& fn) {
  std::string data, out;
  BK_TRY(read_file(path, &data));
  size_t line = 0;
  for (size_t pos = 0; pos < data.size();) {
    size_t nl = data.find('\n', pos);
    if (nl == std::string::npos) nl = data.size();
    std::string row = data.substr(pos, nl - pos);
    pos = nl + 1;
    line++;
    if (row.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(row, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return errorf("%s:%zu: not a JSON object", path.c_str(), line);
    BK_TRY(with_context(fn(j, &out), path + ":" + std::to_string(line)));
    fwrite(out.data(), 1, out.size(), stdout);
    fputc('\n', stdout);
  }
  return ok_status();
}

Status encode_one(const Tokenizer& t, const std::string& text, bool cont, bool bos, std::vector<int32_t>* ids) {
  BK_TRY(cont ? tokenizer_encode_continuation(t, text, ids) : tokenizer_encode(t, text, bos, ids));
  if (cont && bos && tokenizer_bos_id(t) >= 0) ids->insert(ids->begin(), tokenizer_bos_id(t));
  return ok_status();
}

int run_encode(Args& a) {
  Tokenizer t;
  Status st = load_model_arg(a, &t);
  if (!st.ok()) return cli_fail(a, st);
  bool cont = false, bos = false;
  st = arg_bool(a, "continuation", &cont);
  if (st.ok()) st = arg_bool(a, "bos", &bos);
  if (!st.ok()) return cli_fail(a, st);
  if (arg_given(a, "input")) {
    std::vector<int32_t> ids;
    st = each_json_line(arg_str(a, "input"), [&](const nlohmann::json& j, std::string* out) {
      if (!j.contains("text") || !j["text"].is_string()) return errorf("field \"text\" is missing or not a string");
      BK_TRY(encode_one(t, j["text"].get<std::string>(), cont, bos, &ids));
      *out = nlohmann::json{{"ids", ids}}.dump();
      return ok_status();
    });
    return st.ok() ? 0 : cli_fail(a, st);
  }
  std::string text = arg_str(a, "text");
  if (!arg_given(a, "text")) {
    if (a.positional.empty()) return cli_fail(a, errorf("give the text with --text or as an argument"));
    text = a.positional[0];
  }
  std::vector<int32_t> ids;
  st = encode_one(t, text, cont, bos, &ids);
  if (!st.ok()) return cli_fail(a, st);
  for (size_t i = 0; i < ids.size(); i++) printf("%s%d", i ? " " : "", ids[i]);
  printf("\n");
  for (size_t i = 0; i < ids.size(); i++) printf("%s%s", i ? " | " : "", tokenizer_piece(t, ids[i]).c_str());
  printf("\n");
  return 0;
}

int run_decode(Args& a) {
  Tokenizer t;
  Status st = load_model_arg(a, &t);
  if (!st.ok()) return cli_fail(a, st);
  if (arg_given(a, "input")) {
    std::string text;
    st = each_json_line(arg_str(a, "input"), [&](const nlohmann::json& j, std::string* out) {
      if (!j.contains("ids") || !j["ids"].is_array()) return errorf("field \"ids\" is missing or not an array");
      std::vector<int32_t> ids;
      for (const nlohmann::json& v : j["ids"]) {
        if (!v.is_number_integer()) return errorf("field \"ids\" holds %s, not a token id", v.dump().c_str());
        ids.push_back(v.get<int32_t>());
      }
      BK_TRY(tokenizer_decode_all(t, ids, &text));
      // Bytes that are not UTF-8 (a partial character) become U+FFFD.
      *out = nlohmann::json{{"text", text}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      return ok_status();
    });
    return st.ok() ? 0 : cli_fail(a, st);
  }
  std::string s = arg_str(a, "ids");
  for (const std::string& p : a.positional) s += "," + p;
  std::vector<int32_t> ids;
  for (char& c : s)
    if (c == ' ') c = ',';
  for (const std::string& p : split_commas(s)) {
    char* end = nullptr;
    long v = strtol(p.c_str(), &end, 10);
    if (*end) return cli_fail(a, errorf("'%s' is not a token id", p.c_str()));
    ids.push_back((int32_t)v);
  }
  std::string text;
  st = tokenizer_decode_all(t, ids, &text);
  if (!st.ok()) return cli_fail(a, st);
  printf("%s\n", text.c_str());
  return 0;
}

}  // namespace

const Command& command_tokenizer_train() {
  static const Command c = {
      "tokenizer train",
      "Train a SentencePiece tokenizer (BPE or unigram) on text files or the task suite",
      "Writes <out>.model and <out>.vocab. Byte fallback is on, digits are split, text is\n"
      "not normalised (JSON and code keep their whitespace), and the chat template markers\n"
      "<|user|>, <|assistant|> and the newline are single tokens. Without --input the corpus\n"
      "is the task suite's train split rendered with TEMPLATE. Deterministic for a seed.",
      {
          {"input", nullptr, "", "Comma-separated text files, one sentence per line"},
          {"tasks", "TOKENIZER_TRAIN_TASKS", nullptr, "Task-suite items to train on (default corpus)"},
          {"vocab-size", "TOKENIZER_VOCAB_SIZE", nullptr, "Vocabulary size"},
          {"model-type", "TOKENIZER_MODEL_TYPE", nullptr, "bpe or unigram"},
          {"out", nullptr, "", "Output prefix (default <artifacts>/tokenizer/tokenizer)"},
          {"template", "TEMPLATE", nullptr, "Chat template for task-suite texts"},
          {"byte-fallback", nullptr, "1", "Byte-fallback pieces for unseen characters (1/0)"},
          {"split-digits", nullptr, "1", "One token per digit (1/0)"},
          {"no-chat-symbols", nullptr, "", "Do not reserve <|user|> and <|assistant|> as tokens", true},
      },
      run_train,
  };
  return c;
}

const Command& command_tokenizer_encode() {
  static const Command c = {
      "tokenizer encode",
      "Print the token ids and pieces of a text",
      "--continuation encodes the text as a continuation (no dummy-prefix space), the way\n"
      "teacher candidates are projected onto the student vocabulary. The tokenizer is a\n"
      "SentencePiece tokenizer.model, a Hugging Face tokenizer.json or a folder holding one.\n"
      "--input FILE (JSON lines {\"text\": ...}) prints one {\"ids\": [...]} per line; special\n"
      "tokens are added only with --bos.",
      {
          {"model", "TOKENIZER_NAME", nullptr, "tokenizer.model, tokenizer.json or a folder"},
          {"text", nullptr, "", "Text to encode (or the first argument)"},
          {"input", nullptr, "", "JSON-lines file of {\"text\": ...} to encode, one result per line"},
          {"continuation", nullptr, "", "Encode as a continuation", true},
          {"bos", nullptr, "", "Prepend BOS", true},
      },
      run_encode,
  };
  return c;
}

const Command& command_tokenizer_decode() {
  static const Command c = {
      "tokenizer decode",
      "Print the text of token ids",
      "Ids are given with --ids (comma or space separated) or as arguments, or --input FILE\n"
      "(JSON lines {\"ids\": [...]}) prints one {\"text\": ...} per line. Special tokens split\n"
      "out of a text (\"<|im_start|>\") decode to their text.",
      {
          {"model", "TOKENIZER_NAME", nullptr, "tokenizer.model, tokenizer.json or a folder"},
          {"ids", nullptr, "", "Token ids"},
          {"input", nullptr, "", "JSON-lines file of {\"ids\": [...]} to decode, one result per line"},
      },
      run_decode,
  };
  return c;
}

}  // namespace bk
