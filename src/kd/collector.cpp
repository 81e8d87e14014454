#include "kd/collector.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/fs.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/timing.h"
#include "data/kd_schema.h"
#include "data/tasks/tasks.h"
#include "kd/projection.h"
#include "tokenizer/tokenizer.h"

namespace bk {

std::string collect_shard_tag(int shard_i, int shard_n, int index) {
  char buf[64];
  if (shard_n <= 1) snprintf(buf, sizeof buf, "%03d", index);
  else snprintf(buf, sizeof buf, "%dof%d_%03d", shard_i, shard_n, index);
  return buf;
}

Status collect_parse_shard(const std::string& text, int* i, int* n) {
  *i = 0, *n = 1;
  if (text.empty()) return ok_status();
  int a = -1, b = -1;
  char tail = 0;
  if (sscanf(text.c_str(), "%d/%d%c", &a, &b, &tail) != 2 || b < 1 || a < 0 || a >= b)
    return errorf("--shard '%s': expected i/n with 0 <= i < n (e.g. 0/4 ... 3/4)", text.c_str());
  *i = a, *n = b;
  return ok_status();
}

// ---------------------------------------------------------------- shard files

namespace {

const char* kStepPrefix = "kd_shard_";
const char* kPromptPrefix = "kd_prompts_";

// Shard indices of this collector's group present in dir (from either table).
std::vector<int> group_indices(const std::string& dir, int si, int sn) {
  std::set<int> found;
  std::string group = sn <= 1 ? "" : std::to_string(si) + "of" + std::to_string(sn) + "_";
  for (const char* prefix : {kStepPrefix, kPromptPrefix}) {
    for (const std::string& name : list_files(dir, prefix, ".parquet")) {
      std::string tag = name.substr(strlen(prefix), name.size() - strlen(prefix) - 8);
      if (tag.compare(0, group.size(), group) != 0) continue;
      std::string num = tag.substr(group.size());
      if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos) continue;
      found.insert(atoi(num.c_str()));
    }
  }
  return std::vector<int>(found.begin(), found.end());
}

// A token's bytes as a Parquet string: itself when valid UTF-8, else the
// "bytes:\xNN..." form that candidate_bytes() decodes back, so nothing is lost.
bool utf8_ok(const std::string& s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = (unsigned char)s[i];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > n) return false;
    for (int k = 1; k < len; k++)
      if (((unsigned char)s[i + k] & 0xC0) != 0x80) return false;
    i += len;
  }
  return true;
}

std::string raw_token_string(const std::string& bytes) {
  if (utf8_ok(bytes)) return bytes;
  std::string out = "bytes:";
  char buf[8];
  for (unsigned char c : bytes) {
    snprintf(buf, sizeof buf, "\\x%02x", c);
    out += buf;
  }
  return out;
}

TeacherCandidate to_candidate(const std::string& text, const std::string& bytes, bool has_bytes, float logprob) {
  TeacherCandidate c;
  c.text = text;
  c.bytes = bytes;
  c.has_bytes = has_bytes;
  c.logprob = logprob;
  return c;
}

// prompt_idx column of a step file (no other column is decoded).
Status read_step_prompt_ids(const std::string& path, std::vector<int64_t>* ids) {
  ids->clear();
  pq::Reader r;
  BK_TRY(r.open(path));
  int col = r.find_column("prompt_idx");
  if (col < 0) return errorf("%s: no prompt_idx column (not a KD shard?)", path.c_str());
  pq::ColumnData cd;
  for (int rg = 0; rg < r.num_row_groups(); rg++) {
    BK_TRY(r.read_column(rg, col, &cd));
    ids->insert(ids->end(), cd.i64.begin(), cd.i64.end());
  }
  return ok_status();
}

// prompt_idx and prompt_text of a prompt table, plus its metadata.
Status read_prompt_index(const std::string& path, std::map<int64_t, std::string>* texts, KdMeta* meta) {
  KdPromptReader pr;
  BK_TRY(pr.open(path));
  if (meta) *meta = pr.meta();
  int ci = pr.r.find_column("prompt_idx"), ct = pr.r.find_column("prompt_text");
  pq::ColumnData a, b;
  for (int rg = 0; rg < pr.r.num_row_groups(); rg++) {
    BK_TRY(pr.r.read_column(rg, ci, &a));
    BK_TRY(pr.r.read_column(rg, ct, &b));
    for (int64_t k = 0; k < a.num_rows(); k++) (*texts)[a.i64[k]] = std::string(b.str(k));
  }
  return ok_status();
}

// Copies the rows of an existing step file whose prompt is committed.
Status copy_committed_steps(const std::string& path, const std::set<int64_t>& keep, KdStepWriter* w,
                            int64_t* dropped) {
  if (!file_exists(path)) return ok_status();
  KdStepReader r;
  BK_TRY(r.open(path));
  std::vector<KdStep> rows;
  for (int rg = 0; rg < r.num_row_groups(); rg++) {
    BK_TRY(r.read_row_group(rg, &rows));
    for (const KdStep& s : rows) {
      if (keep.count(s.prompt_idx)) BK_TRY(w->append(s));
      else (*dropped)++;
    }
  }
  return ok_status();
}

Status copy_prompts(const std::string& path, KdPromptWriter* w) {
  if (!file_exists(path)) return ok_status();
  KdPromptReader r;
  BK_TRY(r.open(path));
  std::vector<KdPrompt> rows;
  for (int rg = 0; rg < r.num_row_groups(); rg++) {
    BK_TRY(r.read_row_group(rg, &rows));
    for (const KdPrompt& p : rows) BK_TRY(w->append(p));
  }
  return ok_status();
}

struct Outcome {
  size_t pos = 0;  // position in this run's list of prompts to collect
  PromptItem item;
  bool ok = false;
  std::string error, kind;
  KdPrompt prompt;
  std::vector<KdStep> steps;
  std::map<std::string, int64_t> invalid;
  int64_t floored = 0, unmapped = 0, mass_n = 0;
  int64_t end_of_text = 0;  // final end-of-text steps (no bytes), not kept as KD steps
  double mass_sum = 0;
  bool offset_mismatch = false;
};

struct OpenShard {
  int index = 0;
  std::string step_path, prompt_path;
  std::set<int64_t> ids;  // committed prompts of this shard
  int64_t step_rows = 0;
};

void open_shard_paths(const std::string& dir, const CollectOptions& o, OpenShard* sh) {
  std::string tag = collect_shard_tag(o.shard_i, o.shard_n, sh->index);
  sh->step_path = path_join(dir, kStepPrefix + tag + ".parquet");
  sh->prompt_path = path_join(dir, kPromptPrefix + tag + ".parquet");
}

// Rewrites the pair with `add` appended: steps first, then prompts (the commit).
Status commit_to_shard(OpenShard* sh, const KdMeta& meta, const std::vector<Outcome*>& add, CollectStats* st) {
  KdStepWriter sw;
  BK_TRY(sw.open(sh->step_path, meta));
  int64_t dropped = 0;
  BK_TRY(copy_committed_steps(sh->step_path, sh->ids, &sw, &dropped));
  for (const Outcome* o : add)
    for (const KdStep& s : o->steps) BK_TRY(sw.append(s));
  int64_t step_rows = sw.rows();
  BK_TRY(sw.close());
  KdPromptWriter pw;
  BK_TRY(pw.open(sh->prompt_path, meta));
  BK_TRY(copy_prompts(sh->prompt_path, &pw));
  for (const Outcome* o : add) BK_TRY(pw.append(o->prompt));
  BK_TRY(pw.close());
  for (const Outcome* o : add) sh->ids.insert(o->item.idx);
  sh->step_rows = step_rows;
  st->orphan_rows_dropped += dropped;
  st->bytes_written += file_size(sh->step_path) + file_size(sh->prompt_path);
  if (st->shard_files.empty() || st->shard_files.back() != sh->step_path) st->shard_files.push_back(sh->step_path);
  return ok_status();
}

// A pq temp file ("<name>.tmp.<pid>.<n>") whose writer process is gone.
void remove_dead_temp_files(const std::string& dir) {
  for (const char* prefix : {kStepPrefix, kPromptPrefix}) {
    for (const std::string& name : list_files(dir, prefix, "")) {
      std::string path = path_join(dir, name);
      size_t t = path.find(".parquet.tmp.");
      if (t == std::string::npos) continue;
      long pid = atol(path.c_str() + t + 13);
      if (pid > 0 && pid != getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
        BK_LOG_INFO("removing %s left by a crashed collector", path.c_str());
        unlink(path.c_str());
      }
    }
  }
}

// RAII flock: one collector per shard group and directory.
struct DirLock {
  int fd = -1;
  ~DirLock() {
    if (fd >= 0) close(fd);
  }
};

Status lock_group(const std::string& dir, const CollectOptions& o, DirLock* lk) {
  std::string name = o.shard_n <= 1 ? ".kd_collect.lock"
                                    : ".kd_collect_" + std::to_string(o.shard_i) + "of" + std::to_string(o.shard_n) + ".lock";
  std::string path = path_join(dir, name);
  lk->fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lk->fd < 0) return errorf("cannot create %s: %s", path.c_str(), strerror(errno));
  if (flock(lk->fd, LOCK_EX | LOCK_NB) != 0)
    return errorf("another `bitkd collect` (shard %d/%d) is writing to %s; wait for it or give each collector its "
                  "own --shard i/n",
                  o.shard_i, o.shard_n, dir.c_str());
  return ok_status();
}

bool fatal_kind(const std::string& kind) {
  return kind == "http_401" || kind == "http_403" || kind == "http_404" || kind == "config";
}

}  // namespace

Status collect_committed_prompts(const std::string& dir, std::set<int64_t>* out) {
  out->clear();
  for (const std::string& name : list_files(dir, kPromptPrefix, ".parquet")) {
    std::string path = path_join(dir, name);
    std::map<int64_t, std::string> texts;
    BK_TRY(read_prompt_index(path, &texts, nullptr));
    for (auto& it : texts) out->insert(it.first);
  }
  return ok_status();
}

// ---------------------------------------------------------------- one prompt

static void collect_one(ProviderClient* client, const Tokenizer& student, ProjectionCache* cache,
                        const PromptItem& item, const CollectOptions& opt, const std::string& template_hash,
                        const std::string& teacher_model, const std::string& provider, Outcome* out) {
  out->item = item;
  std::string rendered;
  Status st = template_render(opt.template_text, item.prompt, &rendered);
  if (!st.ok()) {
    out->error = st.msg;
    out->kind = "config";
    return;
  }
  CompletionResult res;
  if (opt.source == "teacher_sample") {
    CompletionRequest req;
    req.messages = {{"user", item.prompt}};
    if (!opt.instruction.empty()) req.messages.insert(req.messages.begin(), {"system", opt.instruction});
    req.prompt = rendered;  // used by the legacy Completions API only
    req.temperature = opt.temperature;
    req.top_p = opt.top_p;
    req.max_tokens = opt.max_tokens;
    req.logprobs = true;
    req.top_logprobs = opt.top_logprobs;
    if (opt.seed >= 0) req.seed = opt.seed + item.idx;
    st = provider_complete(client, req, &res);
  } else {
    ScoreRequest req;
    req.prompt = rendered;
    req.top_logprobs = opt.top_logprobs;
    if (opt.source == "reference") req.continuation = item.reference;
    else if (opt.continuation) st = opt.continuation(item, rendered, &req.continuation);
    else st = errorf("trace source %s needs a continuation (a student to sample from)", opt.source.c_str());
    if (st.ok() && req.continuation.empty())
      st = errorf("prompt %lld has no %s text to score", (long long)item.idx, opt.source.c_str());
    if (st.ok()) st = provider_score(client, req, &res);
  }
  if (!st.ok()) {
    out->error = st.msg;
    out->kind = res.error_kind.empty() ? "error" : res.error_kind;
    return;
  }

  const std::string& tok_hash = tokenizer_hash(student);
  // A scored continuation may start inside a teacher token that straddled the
  // prompt boundary (dropped): the text before its first whole token counts
  // as spelled.
  std::string spelled;
  if (!res.tokens.empty() && res.tokens[0].byte_offset > 0)
    spelled = res.text.substr(0, std::min((size_t)res.tokens[0].byte_offset, res.text.size()));
  std::vector<TeacherCandidate> cands;
  ProjectedStep ps;
  out->steps.reserve(res.tokens.size());
  for (size_t t = 0; t < res.tokens.size(); t++) {
    const TokenStep& ts = res.tokens[t];
    // Servers that report the end-of-text token send it as a last step with
    // no text. It ends the answer (the student learns that from its own EOS
    // target), it is not a token of it: counted, not stored, not invalid.
    if (t + 1 == res.tokens.size() && token_bytes(ts).empty() && res.finish_reason == "stop") {
      out->end_of_text++;
      break;
    }
    TeacherCandidate sample = to_candidate(ts.text, ts.bytes, ts.has_bytes, ts.logprob);
    std::string sample_bytes = candidate_bytes(sample);
    cands.clear();
    for (const TokenCandidate& c : ts.top) cands.push_back(to_candidate(c.text, c.bytes, c.has_bytes, c.logprob));
    project_step(student, cands, opt.top_logprobs, &ps, cache);

    KdStep s;
    s.prompt_idx = item.idx;
    s.step_idx = (int32_t)t;
    s.teacher_sample_id = project_candidate(student, sample, cache);
    s.teacher_sample_text = raw_token_string(sample_bytes);
    s.topk_ids = ps.ids;
    s.topk_logprobs = ps.logprobs;
    s.other_logprob = ps.other_logprob;
    s.is_struct_token = is_struct_token(sample_bytes);
    s.template_hash = template_hash;
    s.tokenizer_hash = tok_hash;
    s.teacher_sample_logprob = ts.logprob;
    s.byte_offset = (int32_t)spelled.size();
    s.valid = ps.valid;
    for (const TeacherCandidate& c : cands) {
      s.raw_topk_tokens.push_back(raw_token_string(candidate_bytes(c)));
      s.raw_topk_logprobs.push_back(c.logprob);
    }
    std::string reason;
    if (!ps.valid) reason = projection_status_name(ps.status);
    else if (s.teacher_sample_id < 0) reason = "empty_sample";  // a token with no bytes has no student position
    if (reason.empty()) {
      std::string col, what;
      if (!kd_check_step(s, 1e-4f, &col, &what)) reason = "bad_" + col;
    }
    if (!reason.empty()) {
      s.valid = false;
      out->invalid[reason]++;
    }
    if (ps.other_floored) out->floored++;
    out->unmapped += ps.unmapped;
    if (std::isfinite(ps.mass) && ps.mass > 0) out->mass_sum += ps.mass, out->mass_n++;
    spelled += sample_bytes;
    out->steps.push_back(std::move(s));
  }
  out->offset_mismatch = spelled != res.text;
  if (out->offset_mismatch) {
    // The server's text differs from its tokens' bytes (e.g. invalid UTF-8
    // replaced in the content). Steps past the first differing byte would
    // attach to the wrong student positions: keep them, but not as KD targets.
    size_t lcp = 0;
    while (lcp < spelled.size() && lcp < res.text.size() && spelled[lcp] == res.text[lcp]) lcp++;
    for (size_t t = 0; t < out->steps.size(); t++) {
      KdStep& s = out->steps[t];
      size_t end = t + 1 < out->steps.size() ? (size_t)out->steps[t + 1].byte_offset : spelled.size();
      if (end > lcp && s.valid) {
        s.valid = false;
        out->invalid["text_mismatch"]++;
      }
    }
  }

  KdPrompt& p = out->prompt;
  p.prompt_idx = item.idx;
  p.prompt_text = item.prompt;
  p.rendered_prompt = rendered;
  p.response_text = res.text;
  p.finish_reason = res.finish_reason;
  p.teacher_model = res.model.empty() ? teacher_model : res.model;
  p.provider = provider;
  p.prompt_tokens = (int32_t)res.prompt_tokens;
  p.completion_tokens = (int32_t)(res.has_usage ? res.completion_tokens : (int64_t)res.tokens.size());
  p.latency_ms = res.latency_s * 1000.0;
  p.task = item.task;
  p.reference = item.reference;
  p.source = opt.source;
  if (!item.task.empty() && !item.reference.empty()) {
    TaskScore ts;
    if (task_score(item.task, item.reference, res.text, &ts).ok()) p.score = ts.score;
  }
  out->ok = true;
}

// ---------------------------------------------------------------- the run

Status collect_run(ProviderClient* client, const Tokenizer& student, const std::vector<PromptItem>& prompts,
                   const CollectOptions& opt, CollectStats* stats) {
  *stats = CollectStats();
  CollectStats& S = *stats;
  const ProviderSettings& ps = provider_client_settings(*client);
  BK_TRY(provider_check_kd(ps, opt.top_logprobs));
  if (opt.shard_n < 1 || opt.shard_i < 0 || opt.shard_i >= opt.shard_n)
    return errorf("shard %d/%d: need 0 <= i < n", opt.shard_i, opt.shard_n);
  if (opt.shard_rows < 1) return errorf("KD_SHARD_ROWS=%lld must be >= 1", (long long)opt.shard_rows);
  if (opt.flush_prompts < 1) return errorf("KD_FLUSH_PROMPTS=%lld must be >= 1", (long long)opt.flush_prompts);
  if (opt.max_tokens < 1) return errorf("KD_MAX_TOKENS_PER_PROMPT=%d must be >= 1", opt.max_tokens);
  std::string probe;
  BK_TRY(template_render(opt.template_text, "", &probe));
  const std::string& dir = opt.data_dir;
  BK_TRY(make_dirs(dir));
  DirLock lock;
  BK_TRY(lock_group(dir, opt, &lock));
  remove_dead_temp_files(dir);

  KdMeta meta;
  meta.tokenizer_hash = tokenizer_hash(student);
  meta.teacher_model = ps.model;
  meta.teacher_temperature = opt.temperature;
  meta.teacher_top_p = opt.top_p;
  meta.template_text = opt.template_text;
  meta.extra = {{"bitkd_provider", ps.provider},
                {"bitkd_teacher_api", provider_api_name(ps.api)},
                {"bitkd_prompt_format", provider_api_takes_raw_prompt(ps.api) || opt.source != "teacher_sample"
                                            ? std::string("raw: TEMPLATE rendered by bitkd") +
                                                  (ps.prompt_prefix.empty() ? "" : ", after TEACHER_PROMPT_PREFIX")
                                            : "chat messages: the server applies its own chat template"},
                {"bitkd_top_logprobs", std::to_string(opt.top_logprobs)},
                {"bitkd_max_tokens", std::to_string(opt.max_tokens)},
                {"bitkd_collect_shard", std::to_string(opt.shard_i) + "/" + std::to_string(opt.shard_n)}};
  // The instruction and a prompt prefix change what the teacher answers: part of the hash.
  const std::string template_hash =
      sha256_hex(opt.template_text + (opt.instruction.empty() ? "" : "\n[instruction]\n" + opt.instruction) +
                 (ps.prompt_prefix.empty() ? "" : "\n[prompt_prefix]\n" + ps.prompt_prefix));

  // What is committed already (every group), and whether it belongs with this run.
  std::map<int64_t, std::string> committed;
  for (const std::string& name : list_files(dir, kPromptPrefix, ".parquet")) {
    std::string path = path_join(dir, name);
    KdMeta m;
    BK_TRY(read_prompt_index(path, &committed, &m));
    if (m.tokenizer_hash != meta.tokenizer_hash)
      return errorf("%s was projected for tokenizer %.16s, this run uses %.16s (TOKENIZER_NAME): collect into another "
                    "KD_DATA_PATH, or move the old shards away",
                    path.c_str(), m.tokenizer_hash.c_str(), meta.tokenizer_hash.c_str());
    if (m.teacher_model != meta.teacher_model)
      return errorf("%s holds traces of teacher '%s', this run asks '%s': collect into another KD_DATA_PATH",
                    path.c_str(), m.teacher_model.c_str(), meta.teacher_model.c_str());
    if (m.template_text != meta.template_text)
      return errorf("%s was collected with another TEMPLATE: collect into another KD_DATA_PATH", path.c_str());
  }
  for (const PromptItem& p : prompts) {
    auto it = committed.find(p.idx);
    if (it != committed.end() && it->second != p.prompt)
      return errorf("prompt %lld in %s is not the prompt at that position of this run's list: the prompt list "
                    "changed (KD_PROMPTS_FILE, KD_MAX_PROMPTS, SEED); collect into another KD_DATA_PATH",
                    (long long)p.idx, dir.c_str());
  }

  // Repair this group's pairs after a crash, and find the shard to continue.
  OpenShard sh;
  std::vector<int> idx = group_indices(dir, opt.shard_i, opt.shard_n);
  for (int k : idx) {
    OpenShard s2;
    s2.index = k;
    open_shard_paths(dir, opt, &s2);
    std::map<int64_t, std::string> texts;
    KdMeta m;
    bool has_prompts = file_exists(s2.prompt_path);
    if (has_prompts) BK_TRY(read_prompt_index(s2.prompt_path, &texts, &m));
    for (auto& t : texts) s2.ids.insert(t.first);
    std::vector<int64_t> step_ids;
    if (file_exists(s2.step_path)) BK_TRY(read_step_prompt_ids(s2.step_path, &step_ids));
    int64_t orphans = 0;
    for (int64_t id : step_ids) orphans += !s2.ids.count(id);
    s2.step_rows = (int64_t)step_ids.size() - orphans;
    if (orphans > 0 && !has_prompts) {
      BK_LOG_WARN("%s holds only rows of uncommitted prompts (a crash before its first commit); removing it",
                  s2.step_path.c_str());
      unlink(s2.step_path.c_str());
    } else if (orphans > 0) {
      KdMeta sm;
      {
        KdStepReader r;
        BK_TRY(r.open(s2.step_path));
        sm = r.meta();
      }
      KdStepWriter w;
      BK_TRY(w.open(s2.step_path, sm));
      int64_t dropped = 0;
      BK_TRY(copy_committed_steps(s2.step_path, s2.ids, &w, &dropped));
      BK_TRY(w.close());
      BK_LOG_WARN("%s: dropped %lld step rows of uncommitted prompts (a crash between commits)",
                  s2.step_path.c_str(), (long long)dropped);
    }
    S.orphan_rows_dropped += orphans;
    if (k != idx.back()) continue;
    // The newest shard of this group: continue it when it has room and the same sampling settings.
    bool same = m.teacher_temperature == meta.teacher_temperature && m.teacher_top_p == meta.teacher_top_p;
    if (!has_prompts) {
      sh.index = k;  // nothing committed in it: start it afresh
    } else if (s2.step_rows < opt.shard_rows && same) {
      sh = s2;
    } else {
      if (!same) BK_LOG_INFO("temperature/top_p differ from %s: starting a new shard", s2.prompt_path.c_str());
      sh.index = k + 1;
    }
  }
  open_shard_paths(dir, opt, &sh);

  // This collector's share, minus what is committed.
  std::vector<const PromptItem*> todo;
  S.prompts_listed = (int64_t)prompts.size();
  for (const PromptItem& p : prompts) {
    if (p.idx % opt.shard_n != opt.shard_i) continue;
    S.prompts_assigned++;
    if (committed.count(p.idx)) S.prompts_already++;
    else todo.push_back(&p);
  }
  BK_LOG_INFO("collect: %lld prompts for shard %d/%d, %lld already collected, %zu to go -> %s", (long long)S.prompts_assigned,
              opt.shard_i, opt.shard_n, (long long)S.prompts_already, todo.size(), sh.step_path.c_str());

  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::unique_ptr<Outcome>> pending;
  std::atomic<size_t> next{0};
  std::atomic<bool> abort{false};
  size_t finished = 0;
  int64_t ok_so_far = 0;
  std::string abort_reason;
  const std::string teacher_model = ps.model, provider = ps.provider;
  int nthreads = std::max(1, std::min<int>(opt.concurrency, (int)std::max<size_t>(1, todo.size())));
  std::vector<std::thread> workers;
  double t0 = now_seconds();
  for (int w = 0; w < nthreads && !todo.empty(); w++)
    workers.emplace_back([&] {
      ProjectionCache cache;  // per thread: the map is not thread-safe
      for (;;) {
        if (abort.load()) break;
        size_t i = next.fetch_add(1);
        if (i >= todo.size()) break;
        auto o = std::make_unique<Outcome>();
        o->pos = i;
        collect_one(client, student, &cache, *todo[i], opt, template_hash, teacher_model, provider, o.get());
        std::lock_guard<std::mutex> lk(mu);
        if (o->ok) ok_so_far++;
        else if (fatal_kind(o->kind) || (o->kind == "no_logprobs" && ok_so_far == 0)) {
          if (!abort.exchange(true)) abort_reason = o->error;
        }
        pending.push_back(std::move(o));
        finished++;
        cv.notify_all();
      }
    });

  Progress pr;
  if (opt.progress) progress_begin(&pr, "collect", (long)todo.size());
  double last_flush = now_seconds();
  Status result = ok_status();
  int64_t done_prompts = 0;
  auto take_stats = [&](const Outcome& o) {
    done_prompts++;
    if (!o.ok) {
      S.prompts_failed++;
      S.failed_by_kind[o.kind]++;
      if (S.first_errors.size() < 5) S.first_errors.push_back("prompt " + std::to_string(o.item.idx) + ": " + o.error);
      BK_LOG_WARN("prompt %lld failed (%s): %s", (long long)o.item.idx, o.kind.c_str(), o.error.c_str());
      return;
    }
    S.prompts_ok++;
    S.steps += (int64_t)o.steps.size();
    int64_t inv = 0;
    for (auto& it : o.invalid) S.invalid_by_reason[it.first] += it.second, inv += it.second;
    S.steps_valid += (int64_t)o.steps.size() - inv;
    S.steps_other_floored += o.floored;
    S.steps_end_of_text += o.end_of_text;
    S.unmapped_candidates += o.unmapped;
    S.mass_sum += o.mass_sum;
    S.mass_n += o.mass_n;
    if (o.offset_mismatch) {
      if (S.offset_mismatch_prompts == 0)
        BK_LOG_WARN("prompt %lld: the teacher's token bytes do not spell its response text; byte offsets follow the "
                    "tokens",
                    (long long)o.item.idx);
      S.offset_mismatch_prompts++;
    }
  };
  // Commits a batch, rotating shards so a shard holds about shard_rows step rows.
  auto flush = [&](std::vector<std::unique_ptr<Outcome>>& batch) -> Status {
    std::sort(batch.begin(), batch.end(), [](const std::unique_ptr<Outcome>& a, const std::unique_ptr<Outcome>& b) {
      return a->item.idx < b->item.idx;
    });
    std::vector<Outcome*> add;
    int64_t rows = sh.step_rows;
    for (size_t k = 0; k < batch.size(); k++) {
      take_stats(*batch[k]);
      if (!batch[k]->ok) continue;
      add.push_back(batch[k].get());
      rows += (int64_t)batch[k]->steps.size();
      if (rows >= opt.shard_rows) {
        BK_TRY(commit_to_shard(&sh, meta, add, &S));
        S.flushes++;
        add.clear();
        OpenShard next_sh;
        next_sh.index = sh.index + 1;
        open_shard_paths(dir, opt, &next_sh);
        sh = next_sh;
        rows = 0;
      }
    }
    if (!add.empty()) {
      BK_TRY(commit_to_shard(&sh, meta, add, &S));
      S.flushes++;
    }
    return ok_status();
  };

  // Prompts are committed in list order whatever order the requests finish
  // in (a prompt waits for the ones before it), so the traces' row order, and
  // with it the training stream, does not depend on timing. A slow request
  // holds back the commit of the answers after it; a collector killed then
  // asks for those again when it resumes.
  size_t next_commit = 0;
  {
    std::unique_lock<std::mutex> lk(mu);
    for (;;) {
      bool all_in = finished == todo.size() || (abort.load() && finished == std::min(next.load(), todo.size()));
      std::sort(pending.begin(), pending.end(),
                [](const std::unique_ptr<Outcome>& a, const std::unique_ptr<Outcome>& b) { return a->pos < b->pos; });
      size_t ready = 0, ok_ready = 0;  // the in-order prefix of pending
      while (ready < pending.size() && (all_in || pending[ready]->pos == next_commit + ready))
        ok_ready += pending[ready++]->ok;
      bool time_up = now_seconds() - last_flush >= opt.flush_seconds;
      if (ready > 0 && (all_in || (int64_t)ok_ready >= opt.flush_prompts || time_up)) {
        std::vector<std::unique_ptr<Outcome>> batch;
        for (size_t k = 0; k < ready; k++) batch.push_back(std::move(pending[k]));
        pending.erase(pending.begin(), pending.begin() + ready);
        next_commit = batch.back()->pos + 1;
        lk.unlock();
        Status fs = flush(batch);
        last_flush = now_seconds();
        lk.lock();
        if (!fs.ok()) {
          result = fs;
          abort.store(true);
        }
        continue;
      }
      if (opt.progress) {
        double el = now_seconds() - t0;
        int64_t steps_now = S.steps;
        for (auto& o : pending) steps_now += (int64_t)o->steps.size();
        char extra[128];
        snprintf(extra, sizeof extra, "steps %lld | failed %lld", (long long)steps_now,
                 (long long)(S.prompts_failed));
        progress_update(&pr, (long)finished, extra, el > 0 ? steps_now / el : 0, "steps/s");
      }
      if (all_in && pending.empty()) break;
      cv.wait_for(lk, std::chrono::milliseconds(200));
    }
  }
  for (auto& t : workers) t.join();
  S.elapsed_s = now_seconds() - t0;
  if (opt.progress) {
    char extra[128];
    snprintf(extra, sizeof extra, "steps %lld | failed %lld", (long long)S.steps, (long long)S.prompts_failed);
    progress_end(&pr, extra);
  }
  S.provider = provider_stats(*client);
  if (!result.ok()) return result;
  if (abort.load()) {
    S.aborted = true;
    S.abort_reason = abort_reason;
    return errorf("collection stopped: %s", abort_reason.c_str());
  }
  return ok_status();
}

std::string collect_stats_json(const CollectStats& s, const CollectOptions& o, const ProviderSettings& ps) {
  nlohmann::ordered_json j;
  j["timestamp"] = utc_timestamp_iso();
  j["provider"] = ps.provider;
  j["model"] = ps.model;
  j["base_url"] = redact_secret(provider_safe_url(ps.base_url), ps.api_key);
  j["api"] = provider_api_name(ps.api);
  j["teacher"] = {{"temperature", o.temperature}, {"top_p", o.top_p}, {"top_logprobs", o.top_logprobs},
                  {"max_tokens", o.max_tokens}};
  j["data_dir"] = o.data_dir;
  j["shard"] = {{"i", o.shard_i}, {"n", o.shard_n}};
  nlohmann::ordered_json p;
  p["listed"] = s.prompts_listed;
  p["assigned"] = s.prompts_assigned;
  p["already_collected"] = s.prompts_already;
  p["ok"] = s.prompts_ok;
  p["failed"] = s.prompts_failed;
  p["failed_by_kind"] = s.failed_by_kind;
  p["first_errors"] = s.first_errors;
  p["offset_mismatch"] = s.offset_mismatch_prompts;
  j["prompts"] = p;
  nlohmann::ordered_json st;
  st["total"] = s.steps;
  st["valid"] = s.steps_valid;
  st["invalid"] = s.steps - s.steps_valid;
  st["invalid_by_reason"] = s.invalid_by_reason;
  st["other_floored"] = s.steps_other_floored;
  st["end_of_text"] = s.steps_end_of_text;
  st["unmapped_candidates"] = s.unmapped_candidates;
  st["mean_topk_mass"] = s.mass_n ? s.mass_sum / s.mass_n : 0.0;
  j["steps"] = st;
  j["orphan_rows_dropped"] = s.orphan_rows_dropped;
  j["flushes"] = s.flushes;
  j["bytes_written"] = s.bytes_written;
  j["shard_files"] = s.shard_files;
  j["elapsed_s"] = s.elapsed_s;
  j["steps_per_s"] = s.elapsed_s > 0 ? s.steps / s.elapsed_s : 0.0;
  j["aborted"] = s.aborted;
  if (s.aborted) j["abort_reason"] = s.abort_reason;
  const ProviderStats& q = s.provider;
  j["requests"] = {{"sent", q.requests},
                   {"ok", q.ok},
                   {"failed", q.failed},
                   {"retries", q.retries},
                   {"http_429", q.http_429},
                   {"http_5xx", q.http_5xx},
                   {"timeouts", q.timeouts},
                   {"connection_errors", q.connection_errors},
                   {"malformed", q.malformed},
                   {"rate_limit_waits", q.rate_limit_waits},
                   {"max_in_flight", q.max_in_flight}};
  return j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

}  // namespace bk
