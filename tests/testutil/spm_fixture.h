#pragma once
// A small SentencePiece model trained inside a test (no binary models in the
// repository). The corpus is generated, so every piece the tests rely on
// ("▁Hello", "ing", "{", ...) is frequent enough to be learned.
#include <string>
#include <vector>

#include "core/rng.h"
#include "tokenizer/tokenizer.h"

namespace bk_test {

inline std::vector<std::string> spm_fixture_corpus(int n_lines = 3000) {
  static const char* words[] = {"Hello", "hello", "world", "running", "singing", "thinking", "walking", "sing",
                                "thing", "ring", "king", "the", "a", "of", "value", "key", "name", "list",
                                "sort", "return", "select", "from", "where", "json", "café", "über", "data",
                                "model", "teacher", "student", "token", "string", "number", "going", "doing"};
  const int n_words = (int)(sizeof words / sizeof words[0]);
  bk::Rng r;
  bk::rng_seed(&r, 77);
  std::vector<std::string> out;
  for (int i = 0; i < n_lines; i++) {
    std::string s;
    switch (i % 4) {
      case 0:
        s = "<|user|>\n";
        for (int j = 0; j < 6; j++) s += std::string(j ? " " : "") + words[bk::rng_below(&r, n_words)];
        s += "\n\n<|assistant|>\nSure, " + std::string(words[bk::rng_below(&r, n_words)]);
        break;
      case 1:
        s = "{\"" + std::string(words[bk::rng_below(&r, n_words)]) + "\": " + std::to_string(bk::rng_below(&r, 1000)) +
            ", \"" + words[bk::rng_below(&r, n_words)] + "\": [1, 2, 3]}";
        break;
      case 2:
        s = "def f(x):\n    return x + " + std::to_string(bk::rng_below(&r, 100));
        break;
      default:
        for (int j = 0; j < 8; j++) s += std::string(j ? " " : "") + words[bk::rng_below(&r, n_words)];
        break;
    }
    out.push_back(s);
  }
  return out;
}

// Trains into dir/<name>.model and returns the path ("" and a gtest failure
// message in *err on error).
inline std::string spm_fixture_train_opts(bk::TokenizerTrainOptions o, const std::string& dir,
                                          const std::string& name, std::string* err) {
  if (o.texts.empty()) o.texts = spm_fixture_corpus();
  o.out_prefix = dir + "/" + name;
  std::string path;
  bk::Status st = bk::tokenizer_train(o, &path);
  if (!st.ok()) {
    if (err) *err = st.msg;
    return "";
  }
  return path;
}

inline std::string spm_fixture_train(const std::string& dir, const std::string& name, const std::string& type,
                                     int vocab, std::string* err) {
  bk::TokenizerTrainOptions o;
  o.texts = spm_fixture_corpus();
  o.vocab_size = vocab;
  o.model_type = type;
  o.out_prefix = dir + "/" + name;
  std::string path;
  bk::Status st = bk::tokenizer_train(o, &path);
  if (!st.ok()) {
    if (err) *err = st.msg;
    return "";
  }
  return path;
}

}  // namespace bk_test
