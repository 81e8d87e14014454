#pragma once
// The "machine" object every benchmark and report prints: which CPU, which
// vector unit, which BLAS kernel family (and who chose it), which ternary
// kernels, and the load average, so a number is never read without them.
#include <nlohmann/json.hpp>

namespace bk {

nlohmann::ordered_json machine_json();

}  // namespace bk
