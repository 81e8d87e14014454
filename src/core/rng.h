#pragma once
// Deterministic random numbers (xoshiro256**, seeded by splitmix64). The whole
// state is four words, so it is saved in checkpoints and restored exactly.
#include <cstdint>
#include <string>

namespace bk {

struct Rng {
  uint64_t s[4];
};

void rng_seed(Rng* r, uint64_t seed);
uint64_t rng_next_u64(Rng* r);
uint32_t rng_next_u32(Rng* r);
// Uniform in [0, 1) with 24 (float) or 53 (double) random bits.
float rng_uniform(Rng* r);
double rng_uniform_f64(Rng* r);
// Uniform integer in [0, n).
uint64_t rng_below(Rng* r, uint64_t n);
// Standard normal (Box-Muller, no cached second value so state stays 4 words).
float rng_normal(Rng* r);
// "s0,s1,s2,s3" in hex, and back.
std::string rng_state_to_string(const Rng& r);
bool rng_state_from_string(const std::string& text, Rng* r);

}  // namespace bk
