// tokenizer.json (+ tokenizer_config.json) -> BpeModel. Every component type
// the file may name is either understood here or refused by name.
#include <algorithm>
#include <nlohmann/json.hpp>

#include "tokenizer/bpe.h"

namespace bk {

using nlohmann::json;

namespace {

// GPT-2's pre-tokenizer pattern (ByteLevel with use_regex: true).
const char k_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

const char k_supported_norm[] = "null, NFC, Prepend, Replace (String pattern) or a Sequence of them";
const char k_supported_pre[] =
    "null, ByteLevel (add_prefix_space false), Split (Regex, behavior Isolated, not inverted), Metaspace "
    "(prepend_scheme first/always/never, split false) or a Sequence of them";

struct Ctx {
  const std::string& where;
  BpeModel* m;
};

std::string type_of(const json& j) { return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : ""; }

Status bad(const Ctx& c, const std::string& field, const std::string& got, const char* supported) {
  return errorf("%s: %s is '%s'; supported: %s", c.where.c_str(), field.c_str(), got.c_str(), supported);
}

Status read_normalizer(const Ctx& c, const json& j, const std::string& field) {
  if (j.is_null()) return ok_status();
  const std::string t = type_of(j);
  if (t == "Sequence") {
    const json& list = j.value("normalizers", json::array());
    for (size_t i = 0; i < list.size(); i++)
      BK_TRY(read_normalizer(c, list[i], field + ".normalizers[" + std::to_string(i) + "]"));
    return ok_status();
  }
  if (t == "NFC") {
    c.m->nfc = true;
    return ok_status();
  }
  if (t == "Prepend") {
    c.m->prepend = j.value("prepend", "");
    c.m->prepend_every_segment = true;
    return ok_status();
  }
  if (t == "Replace" && j.contains("pattern") && j["pattern"].contains("String")) {
    c.m->replace_from = j["pattern"]["String"].get<std::string>();
    c.m->replace_to = j.value("content", "");
    return ok_status();
  }
  return bad(c, field + ".type", t.empty() ? j.dump() : t, k_supported_norm);
}

Status read_pre(const Ctx& c, const json& j, const std::string& field) {
  if (j.is_null()) return ok_status();
  const std::string t = type_of(j);
  if (t == "Sequence") {
    const json& list = j.value("pretokenizers", json::array());
    for (size_t i = 0; i < list.size(); i++)
      BK_TRY(read_pre(c, list[i], field + ".pretokenizers[" + std::to_string(i) + "]"));
    return ok_status();
  }
  if (c.m->split && (t == "Split" || (t == "ByteLevel" && j.value("use_regex", true))))
    return bad(c, field, "a second splitting pre-tokenizer", k_supported_pre);
  if (t == "ByteLevel") {
    if (j.value("add_prefix_space", false)) return bad(c, field + ".add_prefix_space", "true", k_supported_pre);
    c.m->byte_level = true;
    if (j.value("use_regex", true)) BK_TRY(bpe_regex_compile(k_gpt2_pattern, c.where, &c.m->split));
    return ok_status();
  }
  if (t == "Split") {
    if (!j.contains("pattern") || !j["pattern"].contains("Regex"))
      return bad(c, field + ".pattern", j.value("pattern", json()).dump(), "a Regex pattern");
    if (j.value("behavior", "") != "Isolated") return bad(c, field + ".behavior", j.value("behavior", ""), "Isolated");
    if (j.value("invert", false)) return bad(c, field + ".invert", "true", "false");
    return bpe_regex_compile(j["pattern"]["Regex"].get<std::string>(), c.where + " " + field, &c.m->split);
  }
  if (t == "Metaspace") {
    if (j.value("split", false)) return bad(c, field + ".split", "true", "false");
    const std::string scheme = j.value("prepend_scheme", j.value("add_prefix_space", true) ? "always" : "never");
    std::string rep = j.value("replacement", "\xe2\x96\x81");
    c.m->replace_from = " ";
    c.m->replace_to = rep;
    if (scheme == "first" || scheme == "always") c.m->prepend = rep;
    c.m->prepend_every_segment = scheme == "always";
    if (scheme != "first" && scheme != "always" && scheme != "never")
      return bad(c, field + ".prepend_scheme", scheme, "first, always or never");
    return ok_status();
  }
  return bad(c, field + ".type", t.empty() ? j.dump() : t, k_supported_pre);
}

// Decoders only confirm what the model already implies; Strip is the one that
// changes text here.
Status read_decoder(const Ctx& c, const json& j, const std::string& field) {
  if (j.is_null()) return ok_status();
  const std::string t = type_of(j);
  if (t == "Sequence") {
    const json& list = j.value("decoders", json::array());
    for (size_t i = 0; i < list.size(); i++)
      BK_TRY(read_decoder(c, list[i], field + ".decoders[" + std::to_string(i) + "]"));
    return ok_status();
  }
  if (t == "Strip") {
    if (j.value("content", " ") != " " || j.value("stop", 0) != 0)
      return bad(c, field, j.dump(), "Strip of leading spaces only");
    c.m->strip_leading = j.value("start", 0);
    return ok_status();
  }
  if (t == "Metaspace") {
    if (j.value("prepend_scheme", "always") != "never") c.m->strip_leading = 1;
    return ok_status();
  }
  if (t == "ByteLevel" || t == "ByteFallback" || t == "Fuse" || t == "Replace") return ok_status();
  return bad(c, field + ".type", t, "ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip or a Sequence");
}

Status read_model(const Ctx& c, const json& j) {
  const std::string t = type_of(j);
  if (t != "BPE") return bad(c, "model.type", t.empty() ? "(missing)" : t, "BPE");
  if (!j.contains("vocab") || !j["vocab"].is_object()) return errorf("%s: model.vocab is missing or not an object", c.where.c_str());
  if (!j.value("dropout", json()).is_null()) return bad(c, "model.dropout", j["dropout"].dump(), "null");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (j.contains(k) && j[k].is_string() && !j[k].get<std::string>().empty())
      return bad(c, std::string("model.") + k, j[k].get<std::string>(), "null or empty");
  BpeModel* m = c.m;
  for (auto it = j["vocab"].begin(); it != j["vocab"].end(); ++it) {
    int64_t id = it.value().get<int64_t>();
    if (id < 0 || id > (1 << 26)) return errorf("%s: model.vocab['%s'] has id %lld", c.where.c_str(), it.key().c_str(), (long long)id);
    if ((size_t)id >= m->pieces.size()) m->pieces.resize(id + 1);
    m->pieces[id] = it.key();
    m->vocab[it.key()] = (int32_t)id;
  }
  m->byte_fallback = j.value("byte_fallback", false);
  m->fuse_unk = j.value("fuse_unk", false);
  m->ignore_merges = j.value("ignore_merges", false);
  if (j.contains("unk_token") && j["unk_token"].is_string()) {
    auto u = m->vocab.find(j["unk_token"].get<std::string>());
    if (u != m->vocab.end()) m->unk_id = u->second;
  }
  const json& merges = j.value("merges", json::array());
  m->merges.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); r++) {
    std::string a, b;
    const json& e = merges[r];
    if (e.is_string()) {  // "a b"
      const std::string s = e.get<std::string>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos) return errorf("%s: model.merges[%zu] '%s' is not 'left right'", c.where.c_str(), r, s.c_str());
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      return errorf("%s: model.merges[%zu] is neither \"left right\" nor [left, right]", c.where.c_str(), r);
    }
    auto ia = m->vocab.find(a), ib = m->vocab.find(b), iab = m->vocab.find(a + b);
    if (ia == m->vocab.end() || ib == m->vocab.end() || iab == m->vocab.end())
      return errorf("%s: model.merges[%zu] ('%s' '%s') uses a token that is not in model.vocab", c.where.c_str(), r,
                    a.c_str(), b.c_str());
    uint64_t key = (uint64_t)(uint32_t)ia->second << 32 | (uint32_t)ib->second;
    m->merges.emplace(key, std::make_pair((int32_t)r, iab->second));  // first (lowest) rank wins
  }
  return ok_status();
}

// A token given as "text" or {"content": "text"}; -1 when absent or unknown.
int32_t config_token(const BpeModel& m, const json& cfg, const char* key) {
  if (!cfg.contains(key)) return -1;
  const json& v = cfg[key];
  std::string s = v.is_string() ? v.get<std::string>() : v.is_object() ? v.value("content", "") : "";
  auto it = m.vocab.find(s);
  return s.empty() || it == m.vocab.end() ? -1 : it->second;
}

Status read_added(const Ctx& c, const json& list) {
  BpeModel* m = c.m;
  for (size_t i = 0; i < list.size(); i++) {
    const json& a = list[i];
    std::string content = a.value("content", "");
    int64_t id = a.value("id", (int64_t)-1);
    if (content.empty() || id < 0 || id > (1 << 26))
      return errorf("%s: added_tokens[%zu] needs a non-empty content and an id", c.where.c_str(), i);
    if (a.value("lstrip", false) || a.value("rstrip", false) || a.value("single_word", false))
      return bad(c, "added_tokens[" + std::to_string(i) + "] (" + content + ")", "lstrip/rstrip/single_word",
                 "added tokens matched exactly (lstrip, rstrip and single_word false)");
    if ((size_t)id >= m->pieces.size()) m->pieces.resize(id + 1);
    m->pieces[id] = content;
    m->vocab[content] = (int32_t)id;
    if (m->kinds.size() < m->pieces.size()) m->kinds.resize(m->pieces.size(), BPE_NORMAL);
    m->kinds[id] = a.value("special", false) ? BPE_SPECIAL : BPE_ADDED;
    m->added.push_back(BpeModel::Added{content, (int32_t)id});
  }
  std::stable_sort(m->added.begin(), m->added.end(), [](const BpeModel::Added& x, const BpeModel::Added& y) {
    return x.content.size() > y.content.size();
  });
  return ok_status();
}

}  // namespace

Status bpe_from_hf_json(const std::string& text, const std::string& config_text, const std::string& where,
                        BpeModel* m, std::string* chat_template) {
  json j, cfg = json::object();
  try {
    j = json::parse(text);
    if (!config_text.empty()) cfg = json::parse(config_text);
  } catch (const std::exception& e) {
    return errorf("%s: not valid JSON (%s)", where.c_str(), e.what());
  }
  if (!j.is_object() || !j.contains("model")) return errorf("%s: no \"model\" field; not a tokenizer.json", where.c_str());
  Ctx c{where, m};
  try {
    BK_TRY(read_model(c, j["model"]));
    BK_TRY(read_normalizer(c, j.value("normalizer", json()), "normalizer"));
    BK_TRY(read_pre(c, j.value("pre_tokenizer", json()), "pre_tokenizer"));
    BK_TRY(read_decoder(c, j.value("decoder", json()), "decoder"));
    BK_TRY(read_added(c, j.value("added_tokens", json::array())));
    m->kinds.resize(m->pieces.size(), BPE_NORMAL);
    bpe_finish(m);
    if (m->byte_level)
      for (int b = 0; b < 256; b++)
        if (m->byte_ids[b] < 0)
          return errorf("%s: byte-level model without a token for byte 0x%02X in model.vocab", where.c_str(), b);
    // BOS/EOS/PAD: tokenizer_config.json names them; the post-processor's
    // template says which token a single sequence starts with.
    m->bos_id = config_token(*m, cfg, "bos_token");
    m->eos_id = config_token(*m, cfg, "eos_token");
    m->pad_id = config_token(*m, cfg, "pad_token");
    const json& post = j.value("post_processor", json());
    if (m->bos_id < 0 && type_of(post) == "TemplateProcessing") {
      const json& single = post.value("single", json::array());
      if (!single.empty() && single[0].contains("SpecialToken")) {
        auto it = m->vocab.find(single[0]["SpecialToken"].value("id", ""));
        if (it != m->vocab.end()) m->bos_id = it->second;
      }
    }
    chat_template->clear();
    const json& ct = cfg.value("chat_template", json());
    if (ct.is_string()) *chat_template = ct.get<std::string>();
    else if (ct.is_array())  // [{name, template}]: the "default" one
      for (const json& e : ct)
        if (e.value("name", "") == "default") *chat_template = e.value("template", "");
  } catch (const std::exception& e) {
    return errorf("%s: unexpected value in the tokenizer file (%s)", where.c_str(), e.what());
  }
  for (size_t id = 0; id < m->pieces.size(); id++)
    if (m->pieces[id].empty() && m->kinds[id] == BPE_NORMAL) m->kinds[id] = BPE_UNKNOWN;  // a hole in the ids
  return ok_status();
}

}  // namespace bk
