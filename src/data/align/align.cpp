#include "data/align/align.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

namespace bk {

void AlignStats::add(const AlignStats& o) {
  steps += o.steps;
  steps_aligned += o.steps_aligned;
  steps_invalid += o.steps_invalid;
  steps_unaligned += o.steps_unaligned;
  steps_duplicate += o.steps_duplicate;
  steps_truncated += o.steps_truncated;
  steps_bad_ids += o.steps_bad_ids;
  positions_kd += o.positions_kd;
  positions_ce += o.positions_ce;
  sampled_mismatch += o.sampled_mismatch;
  tokens_truncated += o.tokens_truncated;
}

void token_starts(const std::vector<TokenSpan>& spans, std::vector<int32_t>* starts) {
  starts->resize(spans.size());
  for (size_t k = 0; k < spans.size(); k++) (*starts)[k] = spans[k].end > spans[k].begin ? spans[k].begin : -1;
}

bool derive_byte_offsets(const std::vector<std::string>& sampled_texts, const std::string& response,
                         std::vector<int32_t>* offsets) {
  offsets->clear();
  size_t off = 0;
  bool ok = true;
  for (const std::string& t : sampled_texts) {
    offsets->push_back((int32_t)off);
    if (response.compare(off, t.size(), t) != 0) ok = false;
    off += t.size();
  }
  return ok && off == response.size();
}

Status align_example(const Tokenizer& student, const AlignInput& in, const std::vector<AlignStep>& steps,
                     const AlignOptions& opt, AlignedExample* out, AlignStats* stats) {
  *out = AlignedExample();
  AlignStats st;
  if (opt.max_seq_len < 1) return errorf("align: max_seq_len must be >= 1 (got %d)", opt.max_seq_len);
  if (opt.max_topk < 1) return errorf("align: max_topk must be >= 1 (got %d)", opt.max_topk);
  const int32_t vocab = tokenizer_vocab_size(student);
  const int32_t bos = tokenizer_bos_id(student), eos = tokenizer_eos_id(student);
  const bool add_eos = in.finished && eos >= 0;
  if (in.response.empty() && !add_eos) return errorf("align: empty response and no EOS: nothing to learn");

  const std::string full = in.rendered_prompt + in.response;
  const int32_t P = (int32_t)in.rendered_prompt.size();
  std::vector<int32_t> ids;
  std::vector<TokenSpan> spans;
  BK_TRY(tokenizer_encode_with_spans(student, full, &ids, &spans));
  std::vector<int32_t> starts;
  token_starts(spans, &starts);

  // seq = [BOS] + ids + [EOS]; is_resp marks tokens that belong to the
  // response (a token straddling the boundary counts as prompt).
  std::vector<int32_t> seq;
  std::vector<uint8_t> is_resp;
  std::unordered_map<int32_t, int32_t> at_offset;  // response byte offset -> seq index
  seq.reserve(ids.size() + 2);
  if (opt.add_bos && bos >= 0) {
    seq.push_back(bos);
    is_resp.push_back(0);
  }
  for (size_t k = 0; k < ids.size(); k++) {
    bool resp = spans[k].begin >= P;
    if (resp && starts[k] >= 0) at_offset.emplace(starts[k] - P, (int32_t)seq.size());
    seq.push_back(ids[k]);
    is_resp.push_back(resp ? 1 : 0);
  }
  if (add_eos) {
    at_offset.emplace((int32_t)in.response.size(), (int32_t)seq.size());
    seq.push_back(eos);
    is_resp.push_back(1);
  }
  if (seq.size() < 2) return errorf("align: the sequence has %zu token(s); nothing to predict", seq.size());
  int32_t T = (int32_t)seq.size() - 1;
  if (T > opt.max_seq_len) {
    st.tokens_truncated = T - opt.max_seq_len;
    T = opt.max_seq_len;
  }

  // Which step (if any) each position takes its KD target from.
  std::vector<int32_t> step_at(T, -1);
  for (size_t s = 0; s < steps.size(); s++) {
    const AlignStep& a = steps[s];
    st.steps++;
    if (a.topk_ids.size() != a.topk_logprobs.size())
      return errorf("align: step %d has %zu top-K ids but %zu logprobs", a.step_idx, a.topk_ids.size(),
                    a.topk_logprobs.size());
    if (!a.valid) {
      st.steps_invalid++;
      continue;
    }
    bool bad = false;
    for (int32_t id : a.topk_ids) bad |= id < 0 || id >= vocab;
    if (bad) {
      st.steps_bad_ids++;
      continue;
    }
    auto it = at_offset.find(a.byte_offset);
    if (it == at_offset.end()) {
      st.steps_unaligned++;
      continue;
    }
    int32_t pos = it->second - 1;  // the position that predicts this token
    if (pos >= T) {
      st.steps_truncated++;
      continue;
    }
    if (step_at[pos] >= 0) {
      st.steps_duplicate++;
      continue;
    }
    step_at[pos] = (int32_t)s;
  }

  const int K = opt.max_topk;
  out->topk = K;
  out->tokens.assign(seq.begin(), seq.begin() + T);
  out->targets.assign(T, -1);
  out->ce_weight.assign(T, 0.f);
  out->kd_slot.assign(T, -1);
  while (out->prompt_tokens < T && !is_resp[out->prompt_tokens]) out->prompt_tokens++;
  for (int32_t i = 0; i < T; i++) {
    if (!is_resp[i + 1]) continue;
    out->targets[i] = seq[i + 1];
    out->response_tokens++;
    if (step_at[i] < 0) {
      out->ce_weight[i] = opt.plain_ce_weight;
      st.positions_ce++;
      continue;
    }
    const AlignStep& a = steps[step_at[i]];
    int slot = out->num_slots();
    out->kd_slot[i] = slot;
    out->ce_weight[i] = opt.kd_ce_weight + (a.is_struct ? opt.format_weight : 0.f);
    // Keep the K most likely ids; the rest joins the other bucket.
    std::vector<int> order(a.topk_ids.size());
    for (size_t k = 0; k < order.size(); k++) order[k] = (int)k;
    std::stable_sort(order.begin(), order.end(),
                     [&](int x, int y) { return a.topk_logprobs[x] > a.topk_logprobs[y]; });
    double other = std::exp((double)a.other_logprob);
    bool folded = false;
    for (size_t k = 0; k < order.size(); k++) {
      if ((int)k < K) {
        out->slot_ids.push_back(a.topk_ids[order[k]]);
        out->slot_logprobs.push_back(a.topk_logprobs[order[k]]);
      } else {
        other += std::exp((double)a.topk_logprobs[order[k]]);
        folded = true;
      }
    }
    for (size_t k = order.size(); k < (size_t)K; k++) {
      out->slot_ids.push_back(-1);
      out->slot_logprobs.push_back(0.f);
    }
    out->slot_other.push_back(folded ? (float)std::log(other) : a.other_logprob);
    out->slot_struct.push_back(a.is_struct ? 1 : 0);
    out->slot_position.push_back(i);
    out->slot_step.push_back(a.step_idx);
    if (a.sampled_id >= 0 && a.sampled_id != seq[i + 1]) st.sampled_mismatch++;
    st.steps_aligned++;
    st.positions_kd++;
  }
  if (stats) stats->add(st);
  return ok_status();
}

}  // namespace bk
