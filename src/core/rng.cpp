#include "core/rng.h"

#include <cinttypes>
#include <cmath>
#include <cstdio>

namespace bk {

static uint64_t splitmix64(uint64_t* x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void rng_seed(Rng* r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

uint64_t rng_next_u64(Rng* r) {
  uint64_t* s = r->s;
  const uint64_t result = rotl(s[1] * 5, 7) * 9;
  const uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

uint32_t rng_next_u32(Rng* r) { return (uint32_t)(rng_next_u64(r) >> 32); }

float rng_uniform(Rng* r) { return (float)(rng_next_u64(r) >> 40) * (1.0f / 16777216.0f); }

double rng_uniform_f64(Rng* r) { return (double)(rng_next_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

uint64_t rng_below(Rng* r, uint64_t n) {
  if (n <= 1) return 0;
  // Lemire's multiply-shift with rejection: unbiased.
  uint64_t x = rng_next_u64(r);
  __uint128_t m = (__uint128_t)x * n;
  uint64_t l = (uint64_t)m;
  if (l < n) {
    uint64_t t = (0 - n) % n;
    while (l < t) {
      x = rng_next_u64(r);
      m = (__uint128_t)x * n;
      l = (uint64_t)m;
    }
  }
  return (uint64_t)(m >> 64);
}

float rng_normal(Rng* r) {
  double u1 = rng_uniform_f64(r);
  double u2 = rng_uniform_f64(r);
  if (u1 < 1e-300) u1 = 1e-300;
  return (float)(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

std::string rng_state_to_string(const Rng& r) {
  char buf[96];
  snprintf(buf, sizeof buf, "%016" PRIx64 ",%016" PRIx64 ",%016" PRIx64 ",%016" PRIx64, r.s[0], r.s[1], r.s[2],
           r.s[3]);
  return buf;
}

bool rng_state_from_string(const std::string& text, Rng* r) {
  uint64_t a, b, c, d;
  if (sscanf(text.c_str(), "%" SCNx64 ",%" SCNx64 ",%" SCNx64 ",%" SCNx64, &a, &b, &c, &d) != 4) return false;
  r->s[0] = a, r->s[1] = b, r->s[2] = c, r->s[3] = d;
  return true;
}

}  // namespace bk
