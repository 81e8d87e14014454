// model_load_any: dispatch on the file's magic bytes.
#include "train/model_load.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "model/gguf_model.h"
#include "model/hf_model.h"
#include "train/checkpoint.h"

namespace bk {

bool file_is_gguf(const std::string& path) {
  FILE* fp = fopen(path.c_str(), "rb");
  if (!fp) return false;
  char magic[4] = {0, 0, 0, 0};
  size_t n = fread(magic, 1, 4, fp);
  fclose(fp);
  return n == 4 && memcmp(magic, "GGUF", 4) == 0;
}

Status model_load_any(const std::string& path, Model* m, ModelSource* src) {
  ModelSource local;
  ModelSource* s = src ? src : &local;
  *s = ModelSource();
  if (hf_is_model_dir(path)) {
    HfLoadInfo info;
    BK_TRY(hf_load_model(path, m, &info));
    s->format = "hf";
    s->name = info.arch;
    s->warnings = std::move(info.warnings);
    return ok_status();
  }
  if (FILE* fp = fopen(path.c_str(), "rb")) fclose(fp);
  else return errorf("%s: cannot open model file: %s", path.c_str(), strerror(errno));
  if (file_is_gguf(path)) {
    GgufLoadInfo info;
    BK_TRY(gguf_load_model(path, m, &info));
    s->format = "gguf";
    s->tokenizer_model = std::move(info.tokenizer_model);
    s->training_json = std::move(info.training_json);
    s->name = std::move(info.name);
    s->warnings = std::move(info.warnings);
    s->embed_type = info.embed_type;
    return ok_status();
  }
  TrainState st;
  BK_TRY(checkpoint_load(path, m, &st));
  s->format = "safetensors";
  s->training_json = st.summary_json;
  s->step = st.step;
  return ok_status();
}

}  // namespace bk
