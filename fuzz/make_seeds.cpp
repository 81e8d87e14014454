// Writes the binary seed files of the fuzz corpora with the project's own
// writers: fuzz_seeds <corpus dir> (scripts/fuzz.sh --seeds). Small on
// purpose: a few rows, a few tensors, a few KB a file.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "core/fs.h"
#include "data/kd_schema.h"
#include "data/parquet/parquet.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "tokenizer/spm_model.h"

using namespace bk;

static bool check(const Status& s) {
  if (!s.ok()) fprintf(stderr, "fuzz_seeds: %s\n", s.msg.c_str());
  return s.ok();
}

static KdStep step(int i) {
  KdStep s;
  s.prompt_idx = i / 2;
  s.step_idx = i % 2;
  s.teacher_sample_id = 5 + i;
  s.teacher_sample_text = i % 2 ? " world" : "Hello";
  s.topk_ids = {5 + i, 7, 9};
  s.topk_logprobs = {-0.1f, -2.5f, -4.0f};
  s.other_logprob = -3.0f;
  s.template_hash = "t1";
  s.tokenizer_hash = "h1";
  s.teacher_sample_logprob = -0.1f;
  s.byte_offset = i * 5;
  s.raw_topk_tokens = {"Hel", "He"};
  s.raw_topk_logprobs = {-0.2f, -1.9f};
  return s;
}

static bool kd_seeds(const std::string& dir) {
  KdMeta meta;
  meta.tokenizer_hash = "h1";
  meta.teacher_model = "teacher";
  meta.teacher_temperature = 0.7;
  meta.template_text = "{prompt}";
  for (pq::Codec codec : {pq::Codec::UNCOMPRESSED, pq::Codec::ZSTD, pq::Codec::SNAPPY}) {
    KdWriterOptions o;
    o.codec = codec;
    o.page_v2 = codec == pq::Codec::SNAPPY;
    o.row_group_rows = 2;
    KdStepWriter w;
    const std::string name = std::string("steps_") + pq::codec_name(codec) + ".parquet";
    if (!check(w.open(dir + "/fuzz_parquet/" + name, meta, o))) return false;
    for (int i = 0; i < 4; i++)
      if (!check(w.append(step(i)))) return false;
    if (!check(w.close())) return false;
  }
  KdPromptWriter pw;
  if (!check(pw.open(dir + "/fuzz_parquet/prompts.parquet", meta))) return false;
  for (int i = 0; i < 2; i++) {
    KdPrompt p;
    p.prompt_idx = i;
    p.prompt_text = "What is 2+2?";
    p.rendered_prompt = "Q: What is 2+2?\nA:";
    p.response_text = " 4";
    p.finish_reason = "stop";
    p.teacher_model = "teacher";
    p.provider = "bitkd";
    p.score = i ? NAN : 1.0;
    if (!check(pw.append(p))) return false;
  }
  return check(pw.close());
}

// Every column type, nulls and lists, dictionary pages.
static bool parquet_types_seed(const std::string& dir) {
  pq::Schema schema = {{"b", pq::Type::BOOL},
                       {"i", pq::Type::INT32, false, true},
                       {"l", pq::Type::INT64},
                       {"f", pq::Type::FLOAT},
                       {"d", pq::Type::DOUBLE},
                       {"s", pq::Type::STRING},
                       {"y", pq::Type::BYTES, false, true},
                       {"li", pq::Type::INT32, true, true, true}};
  std::vector<pq::ColumnData> cols;
  for (const pq::ColumnSpec& c : schema) cols.push_back(pq::make_column(c.type, c.list));
  for (int r = 0; r < 6; r++) {
    pq::push_bool(&cols[0], r % 2);
    if (r == 3) pq::push_null(&cols[1]); else pq::push_i32(&cols[1], r - 2);
    pq::push_i64(&cols[2], 1LL << (r * 7));
    pq::push_f32(&cols[3], 0.5f * r);
    pq::push_f64(&cols[4], -1.25 * r);
    pq::push_str(&cols[5], r % 2 ? "same" : "other");
    if (r == 1) pq::push_null(&cols[6]); else pq::push_str(&cols[6], std::string(r, '\x01'));
    if (r == 2) {
      pq::push_null_list(&cols[7]);
    } else {
      for (int k = 0; k < r; k++) k == 1 ? pq::push_null(&cols[7]) : pq::push_i32(&cols[7], k);
      pq::end_list(&cols[7]);
    }
  }
  pq::WriterOptions o;
  o.codec = pq::Codec::UNCOMPRESSED;
  o.dictionary_max_ratio = 1.0;
  o.key_values = {{"k", "v"}};
  pq::Writer w;
  if (!check(w.open(dir + "/fuzz_parquet/types.parquet", schema, o))) return false;
  if (!check(w.write(cols))) return false;
  return check(w.close());
}

static bool gguf_seed(const std::string& dir) {
  GgufWriter w;
  gguf_set(&w, "general.architecture", gguf_str("bitnet"));
  gguf_set(&w, "bitnet.block_count", gguf_u32(1));
  gguf_set(&w, "bitnet.rope.freq_base", gguf_f32(10000.0f));
  gguf_set(&w, "general.flag", gguf_bool(true));
  gguf_set(&w, "tokenizer.ggml.tokens", gguf_arr_str({"<unk>", "<s>", "a"}));
  gguf_set(&w, "tokenizer.ggml.scores", gguf_arr_f32({0, 0, -1}));
  gguf_set(&w, "tokenizer.ggml.token_type", gguf_arr_i32({2, 3, 1}));
  std::vector<float> v(256);
  for (int i = 0; i < 256; i++) v[i] = std::sin(0.1f * i);
  if (!check(gguf_add_tensor_f32(&w, "a.f32", GGML_TYPE_F32, {8, 2}, v.data()))) return false;
  if (!check(gguf_add_tensor_f32(&w, "b.f16", GGML_TYPE_F16, {4}, v.data()))) return false;
  if (!check(gguf_add_tensor_f32(&w, "c.bf16", GGML_TYPE_BF16, {4}, v.data()))) return false;
  std::vector<int8_t> codes(256);
  for (int i = 0; i < 256; i++) codes[i] = (int8_t)(i % 3 - 1);
  for (uint32_t t : {GGML_TYPE_TQ2_0, GGML_TYPE_TQ1_0}) {
    std::string tq;
    if (!check(ternary_codes_to_tq(t, codes.data(), 1, 256, 0x3c00, &tq))) return false;
    if (!check(gguf_add_tensor(&w, std::string("d.") + ggml_type_name(t), t, {256}, tq))) return false;
  }
  return check(gguf_write(dir + "/fuzz_gguf/small.gguf", w));
}

static bool safetensors_seed(const std::string& dir) {
  static const float f[6] = {1, -2, 0.5f, 3, 4, 5};
  static const uint16_t h[4] = {0x3c00, 0xc000, 0x3f80, 0};
  static const int64_t i[2] = {7, -7};
  SafeTensorsWriter w;
  st_writer_add(&w, "w.f32", ST_F32, {2, 3}, f);
  st_writer_add(&w, "w.f16", ST_F16, {4}, h);
  st_writer_add(&w, "w.bf16", ST_BF16, {2, 2}, h);
  st_writer_add(&w, "step", ST_I64, {2}, i);
  w.metadata["format"] = "pt";
  return check(safetensors_write(dir + "/fuzz_safetensors/small.safetensors", w));
}

static bool spm_seed(const std::string& dir) {
  SpmVocab v;
  v.pieces = {"<unk>", "<s>", "</s>", "<0x41>", "\xe2\x96\x81" "a", "b"};
  v.scores = {0, 0, 0, 0, -1, -2};
  v.types = {2, 3, 3, 6, 1, 1};
  v.byte_fallback = true;
  return check(write_file_atomic(dir + "/fuzz_spm_model/small.model", spm_serialize_model(v)));
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: fuzz_seeds <corpus dir>\n");
    return 2;
  }
  const std::string dir = argv[1];
  for (const char* t : {"fuzz_parquet", "fuzz_gguf", "fuzz_safetensors", "fuzz_spm_model"})
    if (!check(make_dirs(dir + "/" + t))) return 1;
  const bool ok = kd_seeds(dir) && parquet_types_seed(dir) && gguf_seed(dir) && safetensors_seed(dir) && spm_seed(dir);
  return ok ? 0 : 1;
}
