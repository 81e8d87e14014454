// SentencePiece wrapper: loading, encoding (plain, continuation, spans),
// special ids, hashing and deterministic training, on models trained here;
// the chat template's rendering rule.
#include <gtest/gtest.h>

#include <algorithm>

#include "core/fs.h"
#include "testutil/spm_fixture.h"
#include "testutil/testutil.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

using namespace bk;

namespace {

const char* k_ws = "\xe2\x96\x81";  // "▁"

struct Models {
  std::string dir, unigram, bpe;
};

// Trained once per test binary.
const Models& models() {
  static Models m = [] {
    Models r;
    r.dir = bk_test::scratch_dir("tokenizer");
    std::string err;
    r.unigram = bk_test::spm_fixture_train(r.dir, "uni", "unigram", 600, &err);
    if (r.unigram.empty()) fprintf(stderr, "unigram training failed: %s\n", err.c_str());
    r.bpe = bk_test::spm_fixture_train(r.dir, "bpe", "bpe", 600, &err);
    if (r.bpe.empty()) fprintf(stderr, "bpe training failed: %s\n", err.c_str());
    return r;
  }();
  return m;
}

std::vector<std::string> pieces(const Tokenizer& t, const std::vector<int32_t>& ids) {
  std::vector<std::string> out;
  for (int32_t id : ids) out.push_back(tokenizer_piece(t, id));
  return out;
}

std::string join_bytes(const Tokenizer& t, const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += tokenizer_token_bytes(t, id);
  return s;
}

}  // namespace

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // 55 and 56 bytes straddle the one-block/two-block padding boundary.
  EXPECT_EQ(sha256_hex(std::string(55, 'a')), "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
  EXPECT_EQ(sha256_hex(std::string(56, 'a')), "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Tokenizer, LoadsTrainedModelWithSpecialIds) {
  ASSERT_FALSE(models().unigram.empty());
  Tokenizer t;
  ASSERT_TRUE(tokenizer_load(models().unigram, &t).ok());
  EXPECT_TRUE(tokenizer_loaded(t));
  EXPECT_GT(tokenizer_vocab_size(t), 300);
  EXPECT_LE(tokenizer_vocab_size(t), 600);
  EXPECT_EQ(tokenizer_unk_id(t), 0);
  EXPECT_EQ(tokenizer_bos_id(t), 1);
  EXPECT_EQ(tokenizer_eos_id(t), 2);
  EXPECT_TRUE(tokenizer_has_own_pad(t));
  EXPECT_EQ(tokenizer_pad_id(t), 3);
  EXPECT_TRUE(tokenizer_adds_dummy_prefix(t));
  EXPECT_TRUE(tokenizer_has_byte_fallback(t));
  EXPECT_TRUE(tokenizer_is_control(t, 1));
  EXPECT_TRUE(tokenizer_is_unknown(t, 0));
  EXPECT_EQ(tokenizer_path(t), models().unigram);
  std::string bytes;
  ASSERT_TRUE(read_file(models().unigram, &bytes).ok());
  EXPECT_EQ(tokenizer_hash(t), sha256_hex(bytes));
  EXPECT_EQ(tokenizer_hash(t).size(), 64u);
  EXPECT_EQ(tokenizer_model_bytes(t), bytes);
  // The chat markers and newline are single pieces.
  EXPECT_GE(tokenizer_piece_to_id(t, "<|user|>"), 0);
  EXPECT_GE(tokenizer_piece_to_id(t, "<|assistant|>"), 0);
  EXPECT_GE(tokenizer_piece_to_id(t, "\n"), 0);
  EXPECT_EQ(tokenizer_piece_to_id(t, "no such piece at all"), -1);
  EXPECT_EQ(tokenizer_piece(t, -1), "");
  EXPECT_EQ(tokenizer_piece(t, tokenizer_vocab_size(t)), "");
  // .vocab written beside the model, one line per piece.
  std::string vocab;
  ASSERT_TRUE(read_file(models().dir + "/uni.vocab", &vocab).ok());
  EXPECT_EQ((int)std::count(vocab.begin(), vocab.end(), '\n'), tokenizer_vocab_size(t));
}

TEST(Tokenizer, EncodeDecodeRoundTrip) {
  Tokenizer t;
  ASSERT_TRUE(tokenizer_load(models().unigram, &t).ok());
  std::vector<std::string> texts = bk_test::spm_fixture_corpus(50);
  texts.push_back("Unicode: \xe2\x98\x83 snowman, caf\xc3\xa9, \xf0\x9f\x98\x80 emoji");
  texts.push_back("  two leading spaces\tand a tab\n\nblank line  ");
  texts.push_back("");
  for (const std::string& s : texts) {
    std::vector<int32_t> ids;
    ASSERT_TRUE(tokenizer_encode(t, s, true, &ids).ok());
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids[0], tokenizer_bos_id(t));
    std::string back;
    ASSERT_TRUE(tokenizer_decode(t, ids, &back).ok());
    EXPECT_EQ(back, s);
    for (int32_t id : ids) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, tokenizer_vocab_size(t));
    }
  }
  std::vector<int32_t> ids;
  ASSERT_TRUE(tokenizer_encode(t, "Hello", false, &ids).ok());
  EXPECT_NE(ids[0], tokenizer_bos_id(t));
  std::string out;
  EXPECT_FALSE(tokenizer_decode(t, {100000}, &out).ok());
}

TEST(Tokenizer, ContinuationAddsNoDummyPrefix) {
  for (const std::string& path : {models().unigram, models().bpe}) {
    SCOPED_TRACE(path);
    Tokenizer t;
    ASSERT_TRUE(tokenizer_load(path, &t).ok());
    ASSERT_GE(tokenizer_piece_to_id(t, std::string(k_ws) + "Hello"), 0);
    ASSERT_GE(tokenizer_piece_to_id(t, "ing"), 0);
    std::vector<int32_t> ids;
    // Plain encoding prepends "▁".
    ASSERT_TRUE(tokenizer_encode(t, "Hello", false, &ids).ok());
    EXPECT_EQ(pieces(t, ids)[0], std::string(k_ws) + "Hello");
    // Continuation: " Hello" is the piece "▁Hello", not "▁" + "▁Hello".
    ASSERT_TRUE(tokenizer_encode_continuation(t, " Hello", &ids).ok());
    EXPECT_EQ(pieces(t, ids), std::vector<std::string>{std::string(k_ws) + "Hello"});
    // "ing" stays "ing" (plain encoding would start with "▁").
    ASSERT_TRUE(tokenizer_encode_continuation(t, "ing", &ids).ok());
    EXPECT_EQ(pieces(t, ids), std::vector<std::string>{"ing"});
    ASSERT_TRUE(tokenizer_encode(t, "ing", false, &ids).ok());
    EXPECT_EQ(pieces(t, ids)[0].compare(0, 3, k_ws), 0);
    // Whitespace is kept byte for byte.
    for (const char* s : {"  x", "ing and\n  more", "\n", " ", "}, {\"k\": 1"}) {
      ASSERT_TRUE(tokenizer_encode_continuation(t, s, &ids).ok());
      EXPECT_EQ(join_bytes(t, ids), s);
    }
  }
}

TEST(Tokenizer, SpansCoverTheText) {
  Tokenizer t;
  ASSERT_TRUE(tokenizer_load(models().unigram, &t).ok());
  for (const std::string& s : {std::string("<|user|>\nsort 3, 1\n\n<|assistant|>\n1, 3"),
                               std::string("a \xe2\x98\x83\xe2\x98\x83 b caf\xc3\xa9"), std::string(" Hello  ing")}) {
    std::vector<int32_t> ids;
    std::vector<TokenSpan> spans;
    ASSERT_TRUE(tokenizer_encode_with_spans(t, s, &ids, &spans).ok());
    ASSERT_EQ(ids.size(), spans.size());
    std::string joined;
    int32_t prev_end = 0;
    for (size_t i = 0; i < ids.size(); i++) {
      EXPECT_EQ(spans[i].begin, prev_end) << "token " << i;
      EXPECT_LE(spans[i].begin, spans[i].end);
      joined += s.substr(spans[i].begin, spans[i].end - spans[i].begin);
      prev_end = spans[i].end;
    }
    EXPECT_EQ(joined, s);
    std::vector<int32_t> plain;
    ASSERT_TRUE(tokenizer_encode(t, s, false, &plain).ok());
    EXPECT_EQ(plain, ids);
  }
  // "☃" is not in the vocabulary: three byte pieces, one byte each.
  std::vector<int32_t> ids;
  std::vector<TokenSpan> spans;
  ASSERT_TRUE(tokenizer_encode_with_spans(t, "a \xe2\x98\x83", &ids, &spans).ok());
  ASSERT_GE(ids.size(), 3u);
  size_t n = ids.size();
  EXPECT_EQ(ids[n - 3], tokenizer_byte_id(t, 0xE2));
  EXPECT_EQ(ids[n - 2], tokenizer_byte_id(t, 0x98));
  EXPECT_EQ(ids[n - 1], tokenizer_byte_id(t, 0x83));
  EXPECT_EQ(spans[n - 3].begin, 2);
  EXPECT_EQ(spans[n - 2].begin, 3);
  EXPECT_EQ(spans[n - 1].begin, 4);
  EXPECT_EQ(tokenizer_token_bytes(t, ids[n - 3]), "\xe2");
  EXPECT_TRUE(tokenizer_is_byte(t, ids[n - 3]));
}

TEST(Tokenizer, TokenBytes) {
  Tokenizer t;
  ASSERT_TRUE(tokenizer_load(models().unigram, &t).ok());
  EXPECT_EQ(tokenizer_token_bytes(t, tokenizer_piece_to_id(t, std::string(k_ws) + "Hello")), " Hello");
  EXPECT_EQ(tokenizer_token_bytes(t, tokenizer_bos_id(t)), "");
  EXPECT_EQ(tokenizer_token_bytes(t, tokenizer_unk_id(t)), "");
  EXPECT_EQ(tokenizer_token_bytes(t, tokenizer_byte_id(t, 0x0A)), "\n");
  for (int b = 0; b < 256; b++) EXPECT_GE(tokenizer_byte_id(t, (uint8_t)b), 0);
}

TEST(Tokenizer, TrainingIsDeterministic) {
  std::string dir = bk_test::scratch_dir("tokenizer_det");
  std::string err;
  std::string a = bk_test::spm_fixture_train(dir, "a", "unigram", 500, &err);
  ASSERT_FALSE(a.empty()) << err;
  std::string b = bk_test::spm_fixture_train(dir, "b", "unigram", 500, &err);
  ASSERT_FALSE(b.empty()) << err;
  std::string x, y;
  ASSERT_TRUE(read_file(a, &x).ok());
  ASSERT_TRUE(read_file(b, &y).ok());
  EXPECT_EQ(sha256_hex(x), sha256_hex(y));
}

TEST(Tokenizer, LlamaStyleModelWithoutPad) {
  std::string dir = bk_test::scratch_dir("tokenizer_nopad");
  TokenizerTrainOptions o;
  o.vocab_size = 500;
  o.pad_piece = false;
  o.user_symbols.clear();
  std::string err;
  std::string path = bk_test::spm_fixture_train_opts(o, dir, "nopad", &err);
  ASSERT_FALSE(path.empty()) << err;
  Tokenizer t;
  ASSERT_TRUE(tokenizer_load(path, &t).ok());
  EXPECT_FALSE(tokenizer_has_own_pad(t));
  EXPECT_EQ(tokenizer_pad_id(t), tokenizer_eos_id(t));
  EXPECT_EQ(tokenizer_piece_to_id(t, "<|user|>"), -1);
}

TEST(Tokenizer, ContinuationWithWhitespaceCollapsingNormalizer) {
  // nmt_nfkc + remove_extra_whitespaces (SentencePiece's defaults): plain
  // encoding trims leading spaces, the continuation encoder must not.
  std::string dir = bk_test::scratch_dir("tokenizer_nfkc");
  TokenizerTrainOptions o;
  o.vocab_size = 500;
  o.normalization = "nmt_nfkc";
  o.remove_extra_whitespaces = true;
  std::string err;
  std::string path = bk_test::spm_fixture_train_opts(o, dir, "nfkc", &err);
  ASSERT_FALSE(path.empty()) << err;
  Tokenizer t;
  ASSERT_TRUE(tokenizer_load(path, &t).ok());
  std::vector<int32_t> ids;
  ASSERT_TRUE(tokenizer_encode_continuation(t, " Hello", &ids).ok());
  EXPECT_EQ(pieces(t, ids)[0], std::string(k_ws) + "Hello");
  ASSERT_TRUE(tokenizer_encode_continuation(t, "Hello", &ids).ok());
  EXPECT_NE(pieces(t, ids)[0].compare(0, 3, k_ws), 0);
}

TEST(Tokenizer, NoDummyPrefixModel) {
  std::string dir = bk_test::scratch_dir("tokenizer_nodummy");
  TokenizerTrainOptions o;
  o.vocab_size = 500;
  o.add_dummy_prefix = false;
  std::string err;
  std::string path = bk_test::spm_fixture_train_opts(o, dir, "nodummy", &err);
  ASSERT_FALSE(path.empty()) << err;
  Tokenizer t;
  ASSERT_TRUE(tokenizer_load(path, &t).ok());
  EXPECT_FALSE(tokenizer_adds_dummy_prefix(t));
  std::vector<int32_t> a, b;
  ASSERT_TRUE(tokenizer_encode(t, "Hello world", false, &a).ok());
  ASSERT_TRUE(tokenizer_encode_continuation(t, "Hello world", &b).ok());
  EXPECT_EQ(a, b);
}

TEST(Tokenizer, TrainFromFileAndErrors) {
  std::string dir = bk_test::scratch_dir("tokenizer_file");
  std::string text;
  for (const std::string& s : bk_test::spm_fixture_corpus(800))
    if (s.find('\n') == std::string::npos) text += s + "\n";
  ASSERT_TRUE(write_file_atomic(dir + "/corpus.txt", text).ok());
  TokenizerTrainOptions o;
  o.input_files = {dir + "/corpus.txt"};
  o.vocab_size = 400;
  o.model_type = "bpe";
  o.out_prefix = dir + "/sub/m";
  std::string path;
  Status st = tokenizer_train(o, &path);
  ASSERT_TRUE(st.ok()) << st.msg;
  EXPECT_EQ(path, dir + "/sub/m.model");
  Tokenizer t;
  ASSERT_TRUE(tokenizer_load(path, &t).ok());

  TokenizerTrainOptions bad = o;
  bad.model_type = "word";
  EXPECT_NE(tokenizer_train(bad, nullptr).msg.find("unigram or bpe"), std::string::npos);
  bad = o;
  bad.input_files = {dir + "/missing.txt"};
  EXPECT_NE(tokenizer_train(bad, nullptr).msg.find("missing.txt"), std::string::npos);
  bad = o;
  bad.input_files.clear();
  EXPECT_FALSE(tokenizer_train(bad, nullptr).ok());
  bad = o;
  bad.vocab_size = 100;
  EXPECT_FALSE(tokenizer_train(bad, nullptr).ok());
}

TEST(Tokenizer, LoadErrorsNameTheFile) {
  std::string dir = bk_test::scratch_dir("tokenizer_err");
  Tokenizer missing;
  Status st = tokenizer_load(dir + "/nope.model", &missing);
  EXPECT_NE(st.msg.find("nope.model"), std::string::npos);
  ASSERT_TRUE(write_file_atomic(dir + "/garbage.model", "this is not a protobuf").ok());
  Tokenizer t;
  st = tokenizer_load(dir + "/garbage.model", &t);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.msg.find("garbage.model"), std::string::npos);
  EXPECT_FALSE(tokenizer_loaded(t));
}

TEST(Tokenizer, MoveKeepsTheModel) {
  Tokenizer a;
  ASSERT_TRUE(tokenizer_load(models().unigram, &a).ok());
  Tokenizer b = std::move(a);
  EXPECT_TRUE(tokenizer_loaded(b));
  std::vector<int32_t> ids;
  EXPECT_TRUE(tokenizer_encode(b, "Hello", false, &ids).ok());
}

TEST(ChatTemplate, ReplacesEveryPlaceholder) {
  std::string out;
  ASSERT_TRUE(template_render("<|user|>\n{prompt}\n\n<|assistant|>\n", "hi", &out).ok());
  EXPECT_EQ(out, "<|user|>\nhi\n\n<|assistant|>\n");
  // Every occurrence, not only the first; the prompt is not scanned again.
  ASSERT_TRUE(template_render("{prompt} / {prompt}", "a{prompt}b", &out).ok());
  EXPECT_EQ(out, "a{prompt}b / a{prompt}b");
  ASSERT_TRUE(template_render("{prompt}", "", &out).ok());
  EXPECT_EQ(out, "");
  // Other braces are literal text.
  ASSERT_TRUE(template_render("{\"q\": \"{prompt}\"} {prompt", "x", &out).ok());
  EXPECT_EQ(out, "{\"q\": \"x\"} {prompt");
}

TEST(ChatTemplate, MissingPlaceholderIsAnError) {
  std::string out;
  for (const char* t : {"", "no placeholder", "{Prompt}", "{ prompt }", "{prompt"}) {
    Status st = template_render(t, "hi", &out);
    EXPECT_FALSE(st.ok()) << t;
    EXPECT_NE(st.msg.find("no {prompt} placeholder"), std::string::npos) << st.msg;
    EXPECT_FALSE(template_check(t).ok()) << t;
  }
  EXPECT_TRUE(template_check("{prompt}").ok());
}

TEST(ChatTemplate, Unescape) {
  EXPECT_EQ(template_unescape("<|user|>\\n{prompt}\\n\\n<|assistant|>\\n"), "<|user|>\n{prompt}\n\n<|assistant|>\n");
  EXPECT_EQ(template_unescape("a\\tb\\rc\\\\n"), "a\tb\rc\\n");
  EXPECT_EQ(template_unescape("\\x\\"), "\\x\\");  // unknown escapes and a trailing backslash stay
}
