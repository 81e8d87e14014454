// BPE core of the tokenizer.json models: GPT-2's byte table, merges by rank
// on hand-made vocabularies (expected ids worked out by hand), and the
// errors for components it does not support.
#include <gtest/gtest.h>

#include <set>

#include "tokenizer/bpe.h"

using namespace bk;

namespace {

// A tokenizer.json with no normalizer or pre-tokenizer: the whole text is one word.
std::string tiny_json(const std::string& vocab, const std::string& merges, const std::string& extra = "") {
  return "{\"model\": {\"type\": \"BPE\", \"vocab\": {" + vocab + "}, \"merges\": [" + merges + "]}" + extra + "}";
}

std::vector<int32_t> encode(const std::string& json, const std::string& text) {
  BpeModel m;
  std::string tmpl;
  Status st = bpe_from_hf_json(json, "", "tiny.json", &m, &tmpl);
  EXPECT_TRUE(st.ok()) << st.msg;
  std::vector<int32_t> ids;
  st = bpe_encode(m, text, false, &ids, nullptr);
  EXPECT_TRUE(st.ok()) << st.msg;
  return ids;
}

std::string load_error(const std::string& json) {
  BpeModel m;
  std::string tmpl;
  return bpe_from_hf_json(json, "", "bad/tokenizer.json", &m, &tmpl).msg;
}

TEST(Bpe, ByteTableIsGpt2s) {
  std::string t[256];
  bpe_byte_to_unicode(t);
  std::set<std::string> distinct(t, t + 256);
  EXPECT_EQ(distinct.size(), 256u);
  for (int b = 33; b <= 126; b++) EXPECT_EQ(t[b], std::string(1, (char)b));
  EXPECT_EQ(t[161], "\xc2\xa1");  // U+00A1 itself
  EXPECT_EQ(t[255], "\xc3\xbf");  // U+00FF itself
  // The other 68 bytes count up from U+0100 in byte order: 0..32, 127..160, 173.
  EXPECT_EQ(t[0], "\xc4\x80");    // U+0100
  EXPECT_EQ(t[32], "\xc4\xa0");   // U+0120 "Ġ", the space of GPT-2 vocabularies
  EXPECT_EQ(t[127], "\xc4\xa1");  // U+0121
  EXPECT_EQ(t[173], "\xc5\x83");  // U+0143, the 68th
}

TEST(Bpe, LowerRankMergesFirst) {
  const std::string vocab = "\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"bc\": 4";
  // "b c" ranks before "a b": a|b|c -> a|bc.
  EXPECT_EQ(encode(tiny_json(vocab, "\"b c\", \"a b\""), "abc"), (std::vector<int32_t>{0, 4}));
  // Reversed ranks: a|b|c -> ab|c.
  EXPECT_EQ(encode(tiny_json(vocab, "\"a b\", \"b c\""), "abc"), (std::vector<int32_t>{3, 2}));
  // Merges chain: a|b|c -> ab|c -> abc (merges also given as [left, right]).
  EXPECT_EQ(encode(tiny_json(vocab + ", \"abc\": 5", "[\"a\", \"b\"], [\"ab\", \"c\"]"), "abc"),
            (std::vector<int32_t>{5}));
}

TEST(Bpe, EqualRanksGoLeftmost) {
  // a|a|a: both pairs are "a a"; the left one merges, then no merge is left.
  EXPECT_EQ(encode(tiny_json("\"a\": 0, \"aa\": 1", "\"a a\""), "aaa"), (std::vector<int32_t>{1, 0}));
  // aaaa -> aa|a|a -> aa|aa (the pair at position 2 is still there).
  EXPECT_EQ(encode(tiny_json("\"a\": 0, \"aa\": 1", "\"a a\""), "aaaa"), (std::vector<int32_t>{1, 1}));
}

TEST(Bpe, AddedTokensSplitOutLongestFirst) {
  const std::string j = tiny_json("\"a\": 0, \"<\": 1, \">\": 2, \"x\": 3", "",
                                  ", \"added_tokens\": [{\"id\": 4, \"content\": \"<x>\", \"special\": true}, "
                                  "{\"id\": 5, \"content\": \"<x>>\", \"special\": false}]");
  EXPECT_EQ(encode(j, "a<x>a<x>>"), (std::vector<int32_t>{0, 4, 0, 5}));
  BpeModel m;
  std::string tmpl, text;
  ASSERT_TRUE(bpe_from_hf_json(j, "", "t.json", &m, &tmpl).ok());
  ASSERT_TRUE(bpe_decode(m, {0, 4, 0, 5}, true, &text).ok());
  EXPECT_EQ(text, "aa<x>>");  // the special one is a control token
  ASSERT_TRUE(bpe_decode(m, {0, 4, 0, 5}, false, &text).ok());
  EXPECT_EQ(text, "a<x>a<x>>");
}

TEST(Bpe, UnsupportedComponentsAreNamed) {
  std::string e = load_error("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}");
  EXPECT_NE(e.find("bad/tokenizer.json"), std::string::npos) << e;
  EXPECT_NE(e.find("model.type is 'WordPiece'"), std::string::npos) << e;
  EXPECT_NE(e.find("BPE"), std::string::npos) << e;
  e = load_error(tiny_json("\"a\": 0", "", ", \"pre_tokenizer\": {\"type\": \"Whitespace\"}"));
  EXPECT_NE(e.find("pre_tokenizer.type is 'Whitespace'"), std::string::npos) << e;
  EXPECT_NE(e.find("Split"), std::string::npos) << e;
  e = load_error(tiny_json("\"a\": 0", "", ", \"normalizer\": {\"type\": \"NFKC\"}"));
  EXPECT_NE(e.find("normalizer.type is 'NFKC'"), std::string::npos) << e;
  e = load_error(tiny_json("\"a\": 0", "\"a b\""));
  EXPECT_NE(e.find("model.merges[0]"), std::string::npos) << e;
  e = load_error(tiny_json("\"a\": 0", "", ", \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, "
                                           "\"behavior\": \"Isolated\"}"));
  EXPECT_NE(e.find("does not compile"), std::string::npos) << e;
  EXPECT_NE(load_error("[1, 2]").find("not a tokenizer.json"), std::string::npos);
}

}  // namespace
