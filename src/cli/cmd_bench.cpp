// bitkd bench train: training-step throughput at a given shape (random
// tokens): forward, CE loss, backward, AdamW, timed separately, with the
// achieved matmul GFLOP/s against a measured fp32 FMA peak. --compare-torch
// runs bench/torch_train.py (the same math in PyTorch) right after, with the
// same shape and thread count, and prints the ratio.
#include <omp.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/machine_json.h"
#include "cli/train_flags.h"
#include "core/fs.h"
#include "core/rng.h"
#include "core/timing.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/peak.h"
#include "model/model.h"
#include "train/kd_loss.h"
#include "train/loss.h"
#include "train/optimizer.h"

namespace bk {

namespace {

// ---- locating and running the PyTorch side ----------------------------------------
std::string find_torch_script(const std::string& given) {
  if (!given.empty()) return given;
  if (file_exists("bench/torch_train.py")) return "bench/torch_train.py";
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = 0;
    std::string dir = path_dirname(exe);
    for (const char* rel : {"/../bench/torch_train.py", "/../../bench/torch_train.py"})
      if (file_exists(dir + rel)) return dir + rel;
  }
  return "";
}

std::string shell_quote(const std::string& s) {
  std::string r = "'";
  for (char c : s) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return r + "'";
}

Status run_capture(const std::string& cmd, std::string* out) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return errorf("cannot run: %s", cmd.c_str());
  char buf[4096];
  size_t n;
  out->clear();
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out->append(buf, n);
  int rc = pclose(p);
  if (rc != 0) return errorf("'%s' failed (exit status %d)", cmd.c_str(), rc);
  return ok_status();
}

int run_bench_train(Args& a) {
  long long v = 0;
  int batch = 0, seq = 0, steps = 0, warmup = 0;
  for (auto& it : std::vector<std::pair<const char*, int*>>{{"batch", &batch}, {"seq", &seq}, {"steps", &steps},
                                                            {"warmup", &warmup}}) {
    if (!arg_int_or_report(a, it.first, &v)) return 1;
    *it.second = (int)v;
  }
  if (batch <= 0 || seq <= 1 || steps <= 0 || warmup < 0)
    return cli_fail(a, errorf("--batch, --seq (>= 2) and --steps must be positive, --warmup >= 0"));
  ModelConfig cfg;
  Status st = model_config_from_args(a, 32000, seq, &cfg);
  if (!st.ok()) return cli_fail(a, st);
  long long threads_req = 0;
  st = config_int(a.cfg, "THREADS", &threads_req);
  if (!st.ok()) return cli_fail(a, st);
  kernels_set_threads((int)threads_req);
  const int threads = kernels_get_threads();
  const std::string loss_mode = arg_str(a, "loss");
  if (loss_mode != "ce" && loss_mode != "kd" && loss_mode != "both")
    return cli_fail(a, errorf("--loss '%s' is unknown: use ce, kd or both", loss_mode.c_str()));
  if (!arg_int_or_report(a, "topk", &v)) return 1;
  const int K = (int)v;
  if (K < 1 || K > cfg.vocab_size) return cli_fail(a, errorf("--topk %d must be in [1, vocab]", K));
  KdLossConfig kc;
  double tau = 0;
  if (!arg_double_or_report(a, "tau", &tau)) return 1;
  kc.tau = (float)tau;
  st = kd_loss_config_validate(kc);
  if (!st.ok()) return cli_fail(a, st);

  Model m;
  st = model_init(&m, cfg, 1234);
  if (!st.ok()) return cli_fail(a, st);
  model_alloc_grads(&m);
  Optimizer opt;
  st = optimizer_init(&opt, AdamWConfig(), m.info, m.params.size());
  if (!st.ok()) return cli_fail(a, st);
  Activations* acts = activations_create(m, batch, seq);
  if (!acts) return cli_fail(a, errorf("cannot allocate activations for batch %d x seq %d", batch, seq));

  const int N = batch * seq;
  std::vector<int32_t> tokens(N), targets(N);
  Rng rng;
  rng_seed(&rng, 1234);
  for (int i = 0; i < N; i++) tokens[i] = (int32_t)rng_below(&rng, cfg.vocab_size);
  for (int i = 0; i < N; i++) targets[i] = (int32_t)rng_below(&rng, cfg.vocab_size);

  // --loss kd: synthetic teacher buckets, K distinct ids per position holding
  // 90% of the mass (the target among them), 20% structural steps.
  std::vector<uint8_t> kd_mask(N, 1), is_struct(N, 0);
  std::vector<int32_t> kd_ids((size_t)N * K);
  std::vector<float> kd_lps((size_t)N * K), kd_other(N, std::log(0.1f));
  for (int i = 0; i < N; i++) {
    int32_t* ids = kd_ids.data() + (size_t)i * K;
    float* lps = kd_lps.data() + (size_t)i * K;
    double sum = 0;
    for (int k = 0; k < K; k++) {
      int32_t id = k == 0 ? targets[i] : (int32_t)rng_below(&rng, cfg.vocab_size);
      for (int j = 0; j < k; j++)
        if (ids[j] == id) id = (int32_t)rng_below(&rng, cfg.vocab_size), j = -1;
      ids[k] = id;
      lps[k] = std::exp(2.0f * rng_normal(&rng));
      sum += lps[k];
    }
    for (int k = 0; k < K; k++) lps[k] = (float)std::log(0.9 * lps[k] / sum);
    is_struct[i] = rng_below(&rng, 5) == 0;
  }
  KdTargets kt;
  kt.n = N, kt.K = K;
  kt.targets = targets.data(), kt.kd_mask = kd_mask.data(), kt.is_struct = is_struct.data();
  kt.topk_ids = kd_ids.data(), kt.topk_logprobs = kd_lps.data(), kt.other_logprob = kd_other.data();

  // Peak before and after the run (best of both): a busy machine lowers both
  // the peak and the achieved rate, and the load may change during the run.
  const nlohmann::ordered_json machine_before = machine_json();
  MeasuredPeak pk = measure_fma_peak(threads);
  MeasuredPeak sg = measure_sgemm_peak(threads);
  struct LoopTimes {
    double t_fwd = 0, t_loss = 0, t_bwd = 0, t_opt = 0, t_mm = 0, flops = 0, loss_first = 0, loss_last = 0;
  };
  // One training step of model mm with the CE or the KD loss, timed into *lt.
  auto one_step = [&](Model* mm, Optimizer* oo, bool kd, int s, LoopTimes* lt) -> Status {
    double t0 = now_seconds();
    BK_TRY(model_forward(mm, acts, tokens.data(), nullptr, batch, seq));
    double t1 = now_seconds();
    float loss;
    if (kd) {
      KdLossParts kp;
      kd_loss_forward_backward(activations_logits(acts), cfg.vocab_size, kt, kc, &kp);
      loss = (float)kp.loss;
    } else {
      loss = ce_loss_forward_backward(activations_logits(acts), targets.data(), nullptr, N, cfg.vocab_size, nullptr);
    }
    double t2 = now_seconds();
    BK_TRY(model_backward(mm, acts));
    double t3 = now_seconds();
    optimizer_step(oo, mm->params.data(), mm->grads.data(), mm->params.size(), 6e-4, 0.1, loss);
    model_zero_grads(mm);
    double t4 = now_seconds();
    if (s == 0) lt->loss_first = loss;
    lt->loss_last = loss;
    if (s < warmup) return ok_status();
    ModelTimings mt = model_last_timings(acts);
    lt->t_fwd += t1 - t0, lt->t_loss += t2 - t1, lt->t_bwd += t3 - t2, lt->t_opt += t4 - t3;
    lt->t_mm += mt.matmul_s;
    lt->flops += mt.flops_forward + mt.flops_backward;
    return ok_status();
  };
  // --loss both: a second, identically initialised model trains with the KD
  // loss, its steps interleaved with the CE model's, so a changing machine
  // load hits both the same way.
  Model m_kd;
  Optimizer opt_kd;
  if (loss_mode == "both") {
    st = model_init(&m_kd, cfg, 1234);
    if (st.ok()) model_alloc_grads(&m_kd), st = optimizer_init(&opt_kd, AdamWConfig(), m_kd.info, m_kd.params.size());
  }
  LoopTimes ce_run, kd_run;
  for (int s = 0; st.ok() && s < warmup + steps; s++) {
    if (loss_mode != "kd") st = one_step(&m, &opt, false, s, &ce_run);
    if (st.ok() && loss_mode != "ce")
      st = loss_mode == "both" ? one_step(&m_kd, &opt_kd, true, s, &kd_run) : one_step(&m, &opt, true, s, &kd_run);
  }
  activations_destroy(acts);
  if (!st.ok()) return cli_fail(a, st);
  const LoopTimes& main_run = loss_mode == "kd" ? kd_run : ce_run;
  const double t_fwd = main_run.t_fwd, t_loss = main_run.t_loss, t_bwd = main_run.t_bwd, t_opt = main_run.t_opt;
  const double t_mm = main_run.t_mm, flops = main_run.flops;
  const double loss_first = main_run.loss_first, loss_last = main_run.loss_last;
  const double step_s = (t_fwd + t_loss + t_bwd + t_opt) / steps;
  const double mm_gflops = flops / std::max(1e-12, t_mm) / 1e9;
  const double step_gflops = flops / std::max(1e-12, t_fwd + t_loss + t_bwd + t_opt) / 1e9;
  MeasuredPeak pk2 = measure_fma_peak(threads), sg2 = measure_sgemm_peak(threads);
  if (pk2.gflops > pk.gflops) pk = pk2;
  if (sg2.gflops > sg.gflops) sg = sg2;

  nlohmann::ordered_json j;
  j["bench"] = "train";
  j["impl"] = "bitkd";
  j["machine"] = machine_before;
  j["machine"]["cpuinfo_mhz"] = pk.mhz;
  j["machine"]["loadavg_after"] = machine_json()["loadavg"];
  j["threads"] = threads;
  j["config"] = nlohmann::ordered_json::parse(model_config_to_json(cfg));
  j["batch"] = batch;
  j["seq"] = seq;
  j["steps"] = steps;
  j["warmup_steps"] = warmup;
  j["params"] = model_num_params(m);
  j["tokens_per_s"] = N / step_s;
  j["step_s"] = step_s;
  j["time_split_s"] = {{"forward", t_fwd / steps},
                       {"loss", t_loss / steps},
                       {"backward", t_bwd / steps},
                       {"optimizer", t_opt / steps}};
  j["matmul"] = {{"flops_per_step", flops / steps},
                 {"seconds_per_step", t_mm / steps},
                 {"gflops", mm_gflops},
                 {"share_of_step", t_mm / std::max(1e-12, t_fwd + t_loss + t_bwd + t_opt)}};
  j["peak_fp32"] = {{"gflops", pk.gflops},
                    {"flops_per_cycle_per_core_at_cpuinfo_mhz", pk.flops_per_cycle_per_core},
                    {"method", pk.method + "; best of a measurement before and after the timed steps"}};
  j["peak_sgemm"] = {{"gflops", sg.gflops},
                     {"method", sg.method + "; best of a measurement before and after the timed steps"}};
  j["step_gflops"] = step_gflops;
  j["mfu_matmul"] = pk.gflops > 0 ? mm_gflops / pk.gflops : 0.0;
  j["mfu_step"] = pk.gflops > 0 ? step_gflops / pk.gflops : 0.0;
  // The whole step's matmul FLOPs over its wall time, against the best this
  // machine's BLAS does on one large square sgemm.
  j["step_over_sgemm_peak"] = sg.gflops > 0 ? step_gflops / sg.gflops : 0.0;
  j["loss"] = loss_mode == "kd" ? "kd" : "ce";
  j["loss_first"] = loss_first;
  j["loss_last"] = loss_last;
  if (loss_mode != "ce") {
    // The KD run: fused KD loss (KL over K+1 buckets at tau + CE + format CE) in place of CE.
    const double kd_step = (kd_run.t_fwd + kd_run.t_loss + kd_run.t_bwd + kd_run.t_opt) / steps;
    nlohmann::ordered_json k;
    k["topk"] = K;
    k["tau"] = kc.tau;
    k["tokens_per_s"] = N / kd_step;
    k["step_s"] = kd_step;
    k["loss_s"] = kd_run.t_loss / steps;
    if (loss_mode == "both") {
      k["ce_tokens_per_s"] = N / step_s;
      k["ce_loss_s"] = t_loss / steps;
      k["overhead_vs_ce"] = kd_step / step_s - 1.0;  // step time, KD over CE
    }
    j["kd"] = k;
  }
  j["peak_rss_mb"] = peak_rss_bytes() / 1048576.0;

  bool compare = false;
  st = arg_bool(a, "compare-torch", &compare);
  if (!st.ok()) return cli_fail(a, st);
  if (compare) {
    std::string script = find_torch_script(arg_str(a, "torch-script"));
    if (script.empty())
      return cli_fail(a, errorf("bench/torch_train.py not found: run from the source tree or pass --torch-script"));
    // The same BLAS kernel family for PyTorch (Debian's links the same OpenBLAS).
    std::string cmd = "OPENBLAS_CORETYPE=" + shell_quote(kernels_info().blas_family) + " " +
                      shell_quote(arg_str(a, "python")) + " " + shell_quote(script);
    auto add = [&](const char* flag, const std::string& val) { cmd += std::string(" --") + flag + " " + shell_quote(val); };
    add("vocab", std::to_string(cfg.vocab_size));
    add("dim", std::to_string(cfg.dim));
    add("layers", std::to_string(cfg.n_layers));
    add("heads", std::to_string(cfg.n_heads));
    add("kv-heads", std::to_string(cfg.n_kv_heads));
    add("ffn", std::to_string(cfg.ffn_dim));
    add("ffn-act", ffn_act_name(cfg.ffn_act));
    add("weight-quant", weight_quant_name(cfg.weight_quant));
    add("act-bits", std::to_string(cfg.act_bits));
    add("a4-scope", a4_scope_name(cfg.a4_scope));
    add("subln", cfg.subln ? "1" : "0");
    add("tie", cfg.tie_embeddings ? "1" : "0");
    add("rope-theta", std::to_string(cfg.rope_theta));
    add("seq", std::to_string(seq));
    add("batch", std::to_string(batch));
    add("steps", std::to_string(steps));
    add("warmup", std::to_string(warmup));
    add("threads", std::to_string(threads));
    std::string out;
    fprintf(stderr, "bench train: bitkd %.1f tokens/s; running PyTorch: %s\n", N / step_s, cmd.c_str());
    st = run_capture(cmd, &out);
    if (!st.ok()) return cli_fail(a, with_context(st, "PyTorch comparison (is python3-torch installed?)"));
    size_t brace = out.rfind("\n{");
    std::string last = brace == std::string::npos ? out : out.substr(brace + 1);
    try {
      nlohmann::ordered_json t = nlohmann::ordered_json::parse(last);
      j["torch"] = t;
      double tt = t.at("tokens_per_s").get<double>();
      j["speedup_vs_torch"] = tt > 0 ? (N / step_s) / tt : 0.0;
      j["compare_command"] = cmd;
    } catch (const std::exception& e) {
      return cli_fail(a, errorf("PyTorch comparison printed no JSON result (%s): %s", e.what(), out.c_str()));
    }
  }
  printf("%s\n", j.dump(2).c_str());
  return 0;
}

}  // namespace

const Command& command_bench_train() {
  static const Command c = [] {
    Command cmd{
        "bench train",
        "Training throughput (forward, loss, backward, AdamW) as JSON; --compare-torch runs PyTorch too",
        "Random tokens at the given shape; --warmup untimed steps, then --steps timed ones. Prints one JSON\n"
        "object: machine (CPU, vector unit, BLAS kernel family), threads, config, tokens_per_s, the per-step\n"
        "time split, achieved matmul GFLOP/s, MFU against a measured FMA peak of the widest vector unit, and\n"
        "the step's rate over a measured 2048^3 sgemm (step_over_sgemm_peak). --compare-torch then runs bench/torch_train.py (the same math\n"
        "in PyTorch, same shape and threads) and adds its result and speedup_vs_torch.",
        {
            {"seq", nullptr, "256", "Sequence length"},
            {"batch", nullptr, "8", "Sequences per step"},
            {"steps", nullptr, "10", "Timed steps"},
            {"warmup", nullptr, "2", "Untimed warmup steps"},
            {"compare-torch", nullptr, "", "Also run the PyTorch implementation and print the ratio", true},
            {"loss", nullptr, "ce", "ce, kd (fused KD loss on synthetic top-K targets) or both (CE then KD, same model)"},
            {"topk", nullptr, "20", "Top-K slots per position for --loss kd"},
            {"tau", nullptr, "1.3", "KD temperature for --loss kd"},
            {"python", nullptr, "/usr/bin/python3", "Python with torch for --compare-torch"},
            {"torch-script", nullptr, "", "Path of bench/torch_train.py (default: found from the cwd or binary)"},
        },
        run_bench_train,
    };
    for (const Flag& f : model_flags_bench()) cmd.flags.push_back(f);
    return cmd;
  }();
  return c;
}

}  // namespace bk
