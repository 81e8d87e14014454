#include "tokenizer/bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/unorm2.h>
#include <unicode/utf8.h>

#include <cstdio>
#include <cstring>
#include <queue>

namespace bk {

static const char k_metaspace[] = "\xe2\x96\x81";  // U+2581 "▁"

static void append_utf8(std::string* s, uint32_t cp) {
  char buf[4];
  int n = 0;
  if (cp < 0x80) buf[n++] = (char)cp;
  else if (cp < 0x800) { buf[n++] = (char)(0xC0 | cp >> 6); buf[n++] = (char)(0x80 | (cp & 63)); }
  else if (cp < 0x10000) {
    buf[n++] = (char)(0xE0 | cp >> 12); buf[n++] = (char)(0x80 | (cp >> 6 & 63)); buf[n++] = (char)(0x80 | (cp & 63));
  } else {
    buf[n++] = (char)(0xF0 | cp >> 18); buf[n++] = (char)(0x80 | (cp >> 12 & 63));
    buf[n++] = (char)(0x80 | (cp >> 6 & 63)); buf[n++] = (char)(0x80 | (cp & 63));
  }
  s->append(buf, n);
}

void bpe_byte_to_unicode(std::string out[256]) {
  int extra = 0;
  for (int b = 0; b < 256; b++) {
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    out[b].clear();
    append_utf8(&out[b], printable ? (uint32_t)b : (uint32_t)(256 + extra++));
  }
}

BpeModel::BpeModel() {
  for (int i = 0; i < 256; i++) byte_ids[i] = -1;
}

void bpe_finish(BpeModel* m) {
  bpe_byte_to_unicode(m->byte_char);
  m->char_byte.clear();
  for (int b = 0; b < 256; b++) {
    m->char_byte[m->byte_char[b]] = (uint8_t)b;
    m->byte_ids[b] = -1;
  }
  if (m->kinds.size() < m->pieces.size()) m->kinds.resize(m->pieces.size(), BPE_NORMAL);
  for (size_t id = 0; id < m->pieces.size(); id++) {
    const std::string& p = m->pieces[id];
    unsigned v = 0;
    if (m->byte_level) {
      if (m->kinds[id] != BPE_NORMAL) continue;
      auto it = m->char_byte.find(p);
      if (it != m->char_byte.end()) m->byte_ids[it->second] = (int32_t)id;
    } else if (p.size() == 6 && sscanf(p.c_str(), "<0x%2X>", &v) == 1 && v < 256) {
      m->byte_ids[v] = (int32_t)id;
      if (m->kinds[id] == BPE_NORMAL) m->kinds[id] = BPE_BYTE;
    }
  }
  for (int b = 0; b < 256; b++) m->added_first[b] = false;
  for (const BpeModel::Added& a : m->added) m->added_first[(uint8_t)a.content[0]] = true;
  if (m->unk_id >= 0 && m->unk_id < (int32_t)m->kinds.size() && m->kinds[m->unk_id] == BPE_NORMAL)
    m->kinds[m->unk_id] = BPE_UNKNOWN;
}

// ---------------------------------------------------------------------------
// Regex (PCRE2, UTF + UCP: \p{L}, \p{N} and \s follow Unicode).

struct BpeRegex {
  pcre2_code* code = nullptr;
};

void BpeRegexDeleter::operator()(BpeRegex* r) const {
  if (r && r->code) pcre2_code_free(r->code);
  delete r;
}

Status bpe_regex_compile(const std::string& pattern, const std::string& where,
                         std::unique_ptr<BpeRegex, BpeRegexDeleter>* out) {
  int err = 0;
  PCRE2_SIZE off = 0;
  // MATCH_INVALID_UTF: bytes that are not UTF-8 never match and end up in
  // the gaps between matches instead of failing the whole text.
  pcre2_code* c = pcre2_compile((PCRE2_SPTR)pattern.data(), pattern.size(),
                                PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, nullptr);
  if (!c) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    return errorf("%s: the pre-tokenizer regex does not compile at offset %zu: %s", where.c_str(), (size_t)off,
                  (const char*)msg);
  }
  out->reset(new BpeRegex);
  (*out)->code = c;
  return ok_status();
}

// ---------------------------------------------------------------------------
// Normalization with an offset map: off[i] is the byte of the original text
// that normalized byte i came from; off[size] is the end.

namespace {

struct Normalized {
  std::string s;
  std::vector<int32_t> off;
};

void norm_append(Normalized* n, const char* p, size_t len, int32_t at, bool identity) {
  for (size_t i = 0; i < len; i++) n->off.push_back(identity ? at + (int32_t)i : at);
  n->s.append(p, len);
}

// NFC in chunks that start at normalization boundaries: NFC(a + b) equals
// NFC(a) + NFC(b) there, so unchanged chunks keep exact byte offsets and a
// changed chunk maps to its own range.
Status nfc_into(const std::string& text, int32_t base, Normalized* n) {
  UErrorCode ec = U_ZERO_ERROR;
  const UNormalizer2* nfc = unorm2_getNFCInstance(&ec);
  if (U_FAILURE(ec)) return errorf("tokenizer: ICU has no NFC normalizer (%s)", u_errorName(ec));
  const char* s = text.data();
  int32_t len = (int32_t)text.size();
  int32_t i = 0;
  std::u16string buf, res;
  while (i < len) {
    int32_t start = i;
    buf.clear();
    bool valid = true;
    do {
      UChar32 c;
      int32_t at = i;
      U8_NEXT(s, i, len, c);
      if (c < 0) {
        if (at == start) valid = false;
        else i = at;
        break;
      }
      if (at != start && unorm2_hasBoundaryBefore(nfc, c)) {
        i = at;
        break;
      }
      if (c <= 0xFFFF) buf.push_back((char16_t)c);
      else { buf.push_back((char16_t)U16_LEAD(c)); buf.push_back((char16_t)U16_TRAIL(c)); }
    } while (i < len);
    if (!valid) {  // an invalid byte passes through as itself
      norm_append(n, s + start, (size_t)(i - start), base + start, true);
      continue;
    }
    ec = U_ZERO_ERROR;
    if (unorm2_isNormalized(nfc, (const UChar*)buf.data(), (int32_t)buf.size(), &ec) || U_FAILURE(ec)) {
      norm_append(n, s + start, (size_t)(i - start), base + start, true);
      continue;
    }
    res.resize(buf.size() * 3 + 4);
    ec = U_ZERO_ERROR;
    int32_t m = unorm2_normalize(nfc, (const UChar*)buf.data(), (int32_t)buf.size(), (UChar*)&res[0],
                                 (int32_t)res.size(), &ec);
    if (U_FAILURE(ec)) return errorf("tokenizer: NFC failed (%s)", u_errorName(ec));
    std::string u8;
    for (int32_t k = 0; k < m;) {
      UChar32 c;
      U16_NEXT(res.data(), k, m, c);
      append_utf8(&u8, (uint32_t)c);
    }
    norm_append(n, u8.data(), u8.size(), base + start, false);
  }
  return ok_status();
}

Status normalize(const BpeModel& m, const std::string& text, int32_t base, bool prepend, Normalized* n) {
  n->s.clear();
  n->off.clear();
  if (text.empty()) {
    n->off.push_back(base);
    return ok_status();
  }
  Normalized a;
  if (m.nfc) BK_TRY(nfc_into(text, base, &a));
  else norm_append(&a, text.data(), text.size(), base, true);
  a.off.push_back(base + (int32_t)text.size());
  if (prepend && !m.prepend.empty()) norm_append(n, m.prepend.data(), m.prepend.size(), base, false);
  const std::string& from = m.replace_from;
  for (size_t i = 0; i < a.s.size();) {
    if (!from.empty() && a.s.compare(i, from.size(), from) == 0) {
      norm_append(n, m.replace_to.data(), m.replace_to.size(), a.off[i], false);
      i += from.size();
    } else {
      n->s.push_back(a.s[i]);
      n->off.push_back(a.off[i]);
      i++;
    }
  }
  n->off.push_back(a.off.back());
  return ok_status();
}

// ---------------------------------------------------------------------------
// Merging. Symbols form a linked list; candidate pairs sit in a heap ordered
// by (rank, position), so the lowest rank merges first and ties go to the
// leftmost pair. A popped pair whose symbols changed since is skipped.

struct Sym {
  int32_t id;
  int32_t begin, end;  // bytes of the piece
  int prev, next;
};

struct Cand {
  int32_t rank;
  int32_t pos;  // begin byte of the left symbol: the tie-break order
  int left, right;
  int32_t left_id, right_id;
  bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

void push_pair(const BpeModel& m, const std::vector<Sym>& sy, int l, std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>>* q) {
  int r = sy[l].next;
  if (l < 0 || r < 0) return;
  auto it = m.merges.find((uint64_t)(uint32_t)sy[l].id << 32 | (uint32_t)sy[r].id);
  if (it == m.merges.end()) return;
  q->push(Cand{it->second.first, sy[l].begin, l, r, sy[l].id, sy[r].id});
}

void merge_symbols(const BpeModel& m, std::vector<Sym>* syms) {
  std::vector<Sym>& sy = *syms;
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> q;
  for (int i = 0; i + 1 < (int)sy.size(); i++) push_pair(m, sy, i, &q);
  while (!q.empty()) {
    Cand c = q.top();
    q.pop();
    if (sy[c.left].id != c.left_id || sy[c.left].next != c.right || sy[c.right].id != c.right_id) continue;
    auto it = m.merges.find((uint64_t)(uint32_t)c.left_id << 32 | (uint32_t)c.right_id);
    Sym& l = sy[c.left];
    l.id = it->second.second;
    l.end = sy[c.right].end;
    l.next = sy[c.right].next;
    sy[c.right].id = -1;  // dead
    if (l.next >= 0) sy[l.next].prev = c.left;
    if (l.prev >= 0) push_pair(m, sy, l.prev, &q);
    push_pair(m, sy, c.left, &q);
  }
}

void add_sym(std::vector<Sym>* sy, int32_t id, int32_t b, int32_t e) {
  int n = (int)sy->size();
  sy->push_back(Sym{id, b, e, n - 1, -1});
  if (n > 0) (*sy)[n - 1].next = n;
}

// One pre-tokenized piece [b, e) of n.s into ids.
void encode_piece(const BpeModel& m, const Normalized& n, int32_t b, int32_t e, std::vector<int32_t>* ids,
                  std::vector<BpeSpan>* spans) {
  if (b >= e) return;
  std::vector<Sym> sy;
  if (m.byte_level) {
    std::string word;
    for (int32_t i = b; i < e; i++) word += m.byte_char[(uint8_t)n.s[i]];
    auto whole = m.ignore_merges ? m.vocab.find(word) : m.vocab.end();
    if (whole != m.vocab.end()) {
      add_sym(&sy, whole->second, b, e);
    } else {
      for (int32_t i = b; i < e; i++) add_sym(&sy, m.byte_ids[(uint8_t)n.s[i]], i, i + 1);
    }
  } else {
    std::string whole_s = n.s.substr(b, e - b);
    auto whole = m.ignore_merges ? m.vocab.find(whole_s) : m.vocab.end();
    if (whole != m.vocab.end()) add_sym(&sy, whole->second, b, e);
    for (int32_t i = b; whole == m.vocab.end() && i < e;) {
      int32_t j = i + 1;
      while (j < e && ((uint8_t)n.s[j] & 0xC0) == 0x80) j++;
      auto it = m.vocab.find(n.s.substr(i, j - i));
      if (it != m.vocab.end()) {
        add_sym(&sy, it->second, i, j);
      } else if (m.byte_fallback && m.byte_ids[(uint8_t)n.s[i]] >= 0) {
        for (int32_t k = i; k < j; k++) add_sym(&sy, m.byte_ids[(uint8_t)n.s[k]], k, k + 1);
      } else if (m.fuse_unk && !sy.empty() && sy.back().id == m.unk_id) {
        sy.back().end = j;
      } else {
        add_sym(&sy, m.unk_id, i, j);
      }
      i = j;
    }
  }
  merge_symbols(m, &sy);
  for (int i = sy.empty() ? -1 : 0; i >= 0; i = sy[i].next) {
    if (sy[i].id < 0) continue;  // a byte or character the model cannot spell, no unk
    ids->push_back(sy[i].id);
    if (spans) spans->push_back(BpeSpan{n.off[sy[i].begin], n.off[sy[i].end]});
  }
}

Status encode_segment(const BpeModel& m, const std::string& text, int32_t base, bool prepend,
                      std::vector<int32_t>* ids, std::vector<BpeSpan>* spans) {
  Normalized n;
  BK_TRY(normalize(m, text, base, prepend, &n));
  if (!m.split) {
    encode_piece(m, n, 0, (int32_t)n.s.size(), ids, spans);
    return ok_status();
  }
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(m.split->code, nullptr);
  PCRE2_SIZE pos = 0, gap = 0;
  const PCRE2_SIZE len = n.s.size();
  while (pos <= len) {
    int rc = pcre2_match(m.split->code, (PCRE2_SPTR)n.s.data(), len, pos, 0, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      return errorf("tokenizer: the pre-tokenizer regex failed on a text of %zu bytes (PCRE2 error %d)", text.size(),
                    rc);
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[1] == ov[0]) {  // empty match: step one byte
      pos = ov[0] + 1;
      continue;
    }
    encode_piece(m, n, (int32_t)gap, (int32_t)ov[0], ids, spans);  // Isolated: the gap is a piece too
    encode_piece(m, n, (int32_t)ov[0], (int32_t)ov[1], ids, spans);
    pos = gap = ov[1];
  }
  pcre2_match_data_free(md);
  encode_piece(m, n, (int32_t)gap, (int32_t)len, ids, spans);
  return ok_status();
}

}  // namespace

Status bpe_encode(const BpeModel& m, const std::string& text, bool continuation, std::vector<int32_t>* ids,
                  std::vector<BpeSpan>* spans) {
  ids->clear();
  if (spans) spans->clear();
  size_t seg = 0;
  bool first = true;
  for (size_t i = 0; i <= text.size(); i++) {
    const BpeModel::Added* hit = nullptr;
    if (i < text.size() && m.added_first[(uint8_t)text[i]])
      for (const BpeModel::Added& a : m.added)
        if (text.compare(i, a.content.size(), a.content) == 0) {
          hit = &a;  // longest first
          break;
        }
    if (!hit && i < text.size()) continue;
    if (i > seg) {
      bool prepend = !continuation && (first || m.prepend_every_segment);
      BK_TRY(encode_segment(m, text.substr(seg, i - seg), (int32_t)seg, prepend, ids, spans));
    }
    if (hit) {
      ids->push_back(hit->id);
      if (spans) spans->push_back(BpeSpan{(int32_t)i, (int32_t)(i + hit->content.size())});
      i += hit->content.size() - 1;
      seg = i + 1;
    }
    first = false;
  }
  return ok_status();
}

// ---------------------------------------------------------------------------
// Decoding.

std::string bpe_token_bytes(const BpeModel& m, int32_t id) {
  if (id < 0 || id >= (int32_t)m.pieces.size()) return "";
  const std::string& p = m.pieces[id];
  switch (m.kinds[id]) {
    case BPE_SPECIAL:
    case BPE_UNKNOWN: return "";
    case BPE_ADDED: return p;
    case BPE_BYTE: {
      unsigned v = 0;
      sscanf(p.c_str(), "<0x%2X>", &v);
      return std::string(1, (char)v);
    }
    default: break;
  }
  std::string out;
  if (m.byte_level) {
    for (size_t i = 0; i < p.size();) {
      size_t j = i + 1;
      while (j < p.size() && ((uint8_t)p[j] & 0xC0) == 0x80) j++;
      auto it = m.char_byte.find(p.substr(i, j - i));
      if (it != m.char_byte.end()) out.push_back((char)it->second);
      else out.append(p, i, j - i);
      i = j;
    }
    return out;
  }
  for (size_t i = 0; i < p.size();) {
    if (p.compare(i, 3, k_metaspace) == 0) {
      out.push_back(' ');
      i += 3;
    } else {
      out.push_back(p[i++]);
    }
  }
  return out;
}

Status bpe_decode(const BpeModel& m, const std::vector<int32_t>& ids, bool skip_special, std::string* text) {
  text->clear();
  const int32_t n = (int32_t)m.pieces.size();
  for (int32_t id : ids) {
    if (id < 0 || id >= n) return errorf("tokenizer: id %d is outside the vocabulary [0, %d)", id, n);
    if (m.kinds[id] == BPE_SPECIAL) {
      if (!skip_special) text->append(m.pieces[id]);
      continue;
    }
    if (m.kinds[id] == BPE_UNKNOWN && !skip_special) {
      text->append(m.pieces[id]);
      continue;
    }
    text->append(bpe_token_bytes(m, id));
  }
  // Strip decoder (SentencePiece-style): the space the "▁" prefix stood for.
  for (int k = 0; k < m.strip_leading && !text->empty() && (*text)[0] == ' '; k++) text->erase(0, 1);
  return ok_status();
}

}  // namespace bk
