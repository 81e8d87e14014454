// SentencePiece ModelProto (sentencepiece_model.proto) in protobuf wire
// format, read and written by hand: the Debian package ships no generated
// ModelProto header, and only the fields in SpmVocab matter to bitkd.
#include "tokenizer/spm_model.h"

#include <cstring>

namespace bk {

namespace {

// A cursor over one message; any read past the end sets bad.
struct Pb {
  const uint8_t* p;
  size_t n, pos = 0;
  bool bad = false;
  bool at_end() const { return pos >= n || bad; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= n) {
        bad = true;
        return 0;
      }
      uint8_t b = p[pos++];
      v |= (uint64_t)(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    bad = true;
    return 0;
  }
  // Length-delimited payload.
  bool bytes(const uint8_t** d, size_t* len) {
    uint64_t l = varint();
    if (bad || l > n - pos) return bad = true, false;
    *d = p + pos;
    *len = (size_t)l;
    pos += (size_t)l;
    return true;
  }
  uint32_t fixed32() {
    if (n - pos < 4) return bad = true, 0;
    uint32_t v;
    memcpy(&v, p + pos, 4);
    pos += 4;
    return v;
  }
  void skip(int wire) {
    const uint8_t* d;
    size_t l;
    switch (wire) {
      case 0: varint(); break;
      case 1: if (n - pos < 8) bad = true; else pos += 8; break;
      case 2: bytes(&d, &l); break;
      case 5: fixed32(); break;
      default: bad = true;
    }
  }
};

// Writers: a field's tag (number and wire type), then its value.
void pb_tag(std::string* o, int field, int wire) {
  uint64_t t = (uint64_t)field << 3 | (uint64_t)wire;
  while (t >= 0x80) o->push_back((char)(t | 0x80)), t >>= 7;
  o->push_back((char)t);
}
void pb_varint(std::string* o, int field, uint64_t v) {
  pb_tag(o, field, 0);
  while (v >= 0x80) o->push_back((char)(v | 0x80)), v >>= 7;
  o->push_back((char)v);
}
void pb_int32(std::string* o, int field, int32_t v) { pb_varint(o, field, (uint64_t)(int64_t)v); }
void pb_bytes(std::string* o, int field, const std::string& s) {
  pb_tag(o, field, 2);
  uint64_t l = s.size();
  while (l >= 0x80) o->push_back((char)(l | 0x80)), l >>= 7;
  o->push_back((char)l);
  o->append(s);
}
void pb_float(std::string* o, int field, float f) {
  pb_tag(o, field, 5);
  o->append((const char*)&f, 4);
}

}  // namespace

Status spm_parse_model(const std::string& bytes, SpmVocab* out) {
  *out = SpmVocab();
  Pb top{(const uint8_t*)bytes.data(), bytes.size()};
  while (!top.at_end()) {
    uint64_t tag = top.varint();
    int field = (int)(tag >> 3), wire = (int)(tag & 7);
    if (wire == 2 && (field == 1 || field == 2 || field == 3)) {
      const uint8_t* d;
      size_t len;
      if (!top.bytes(&d, &len)) break;
      Pb sub{d, len};
      if (field == 1) {  // SentencePiece { piece = 1, score = 2, type = 3 }
        std::string piece;
        float score = 0.0f;
        int type = 1;
        while (!sub.at_end()) {
          uint64_t t = sub.varint();
          int f = (int)(t >> 3), w = (int)(t & 7);
          if (f == 1 && w == 2) {
            const uint8_t* s;
            size_t sl;
            if (sub.bytes(&s, &sl)) piece.assign((const char*)s, sl);
          } else if (f == 2 && w == 5) {
            uint32_t bits = sub.fixed32();
            memcpy(&score, &bits, 4);
          } else if (f == 3 && w == 0) {
            type = (int)sub.varint();
          } else {
            sub.skip(w);
          }
        }
        if (sub.bad) return errorf("tokenizer model: piece #%zu is malformed", out->pieces.size());
        out->pieces.push_back(piece);
        out->scores.push_back(score);
        out->types.push_back(type);
      } else if (field == 2) {  // TrainerSpec
        while (!sub.at_end()) {
          uint64_t t = sub.varint();
          int f = (int)(t >> 3), w = (int)(t & 7);
          if (w != 0) {
            sub.skip(w);
            continue;
          }
          int64_t v = (int64_t)sub.varint();
          switch (f) {
            case 3: out->model_type = (int)v; break;
            case 35: out->byte_fallback = v != 0; break;
            case 40: out->unk_id = (int)v; break;
            case 41: out->bos_id = (int)v; break;
            case 42: out->eos_id = (int)v; break;
            case 43: out->pad_id = (int)v; break;
            default: break;
          }
        }
        if (sub.bad) return errorf("tokenizer model: trainer_spec is malformed");
      } else {  // NormalizerSpec
        while (!sub.at_end()) {
          uint64_t t = sub.varint();
          int f = (int)(t >> 3), w = (int)(t & 7);
          if ((f == 1 || f == 2) && w == 2) {
            const uint8_t* s;
            size_t sl;
            if (!sub.bytes(&s, &sl)) break;
            (f == 1 ? out->normalizer_name : out->precompiled_charsmap).assign((const char*)s, sl);
          } else if (w == 0 && (f == 3 || f == 4 || f == 5)) {
            bool v = sub.varint() != 0;
            if (f == 3) out->add_dummy_prefix = v;
            else if (f == 4) out->remove_extra_whitespaces = v;
            else out->escape_whitespaces = v;
          } else {
            sub.skip(w);
          }
        }
        if (sub.bad) return errorf("tokenizer model: normalizer_spec is malformed");
      }
    } else {
      top.skip(wire);
    }
  }
  if (top.bad) return errorf("tokenizer model: not a SentencePiece model (malformed protobuf)");
  if (out->pieces.empty()) return errorf("tokenizer model: no pieces (not a SentencePiece model?)");
  return ok_status();
}

std::string spm_serialize_model(const SpmVocab& v) {
  std::string o;
  for (size_t i = 0; i < v.pieces.size(); i++) {
    std::string sp;
    pb_bytes(&sp, 1, v.pieces[i]);
    pb_float(&sp, 2, i < v.scores.size() ? v.scores[i] : 0.0f);
    int type = i < v.types.size() ? v.types[i] : 1;
    if (type != 1) pb_varint(&sp, 3, (uint64_t)type);
    pb_bytes(&o, 1, sp);
  }
  std::string ts;
  pb_varint(&ts, 3, (uint64_t)v.model_type);
  pb_int32(&ts, 4, (int32_t)v.pieces.size());
  if (v.byte_fallback) pb_varint(&ts, 35, 1);
  pb_int32(&ts, 40, v.unk_id);
  pb_int32(&ts, 41, v.bos_id);
  pb_int32(&ts, 42, v.eos_id);
  pb_int32(&ts, 43, v.pad_id);
  pb_bytes(&o, 2, ts);
  std::string ns;
  pb_bytes(&ns, 1, v.normalizer_name.empty() ? "identity" : v.normalizer_name);
  if (!v.precompiled_charsmap.empty()) pb_bytes(&ns, 2, v.precompiled_charsmap);
  pb_varint(&ns, 3, v.add_dummy_prefix ? 1 : 0);
  pb_varint(&ns, 4, v.remove_extra_whitespaces ? 1 : 0);
  pb_varint(&ns, 5, v.escape_whitespaces ? 1 : 0);
  pb_bytes(&o, 3, ns);
  return o;
}

}  // namespace bk
