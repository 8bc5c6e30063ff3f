// Hardware numbers the cost model needs, resolved for one dtype.
// Pure C++17: no Python, no I/O. Units are in every name.
#pragma once

#include <string>

namespace costmodel {

enum class OpClass : int { kMatmul = 0, kAttention = 1, kVector = 2, kGather = 3 };
inline constexpr int kNumOpClasses = 4;
inline constexpr const char* kOpClassNames[kNumOpClasses] = {"matmul", "attention", "vector", "gather"};

// How an op's compute, vector and memory times combine into its time:
//   kMax: max(compute, vector, memory) -- the units overlap perfectly (the classic roofline);
//   kSum: compute + vector + memory    -- no overlap (closer to XLA on a CPU core).
enum class Roofline : int { kMax = 0, kSum = 1 };
inline constexpr int kNumRooflines = 2;
inline constexpr const char* kRooflineNames[kNumRooflines] = {"max", "sum"};

// Calibrated terms of one op class:
//   time = combine(flops / (peak * compute_efficiency), bytes / (bandwidth * memory_efficiency)) + overhead_s
// where combine is max or sum (see Roofline).
// A matmul tile's loop over K runs at K / (K + half_rate_k) of the class's rate (0: no ramp).
// The bounded shape residual of a matmul class: piecewise-linear terms of log2 M, N and K at the knots
// kResidualKnot0 + i * kResidualKnotStep (i < kResidualKnots), flat beyond the end knots; the op's time is
// multiplied by exp(clip(sum, +-kResidualMaxLog)). n_residual is 0 (none) or kResidualLen.
inline constexpr int kResidualKnots = 7;
inline constexpr int kResidualLen = 3 * kResidualKnots;
inline constexpr double kResidualKnot0 = 4.0, kResidualKnotStep = 2.0, kResidualMaxLog = 0.5;

struct ClassTerms {
  double compute_efficiency = 1.0;
  double memory_efficiency = 1.0;
  double overhead_s = 0.0;
  double half_rate_k = 0.0;
  int n_residual = 0;
  double residual[kResidualLen] = {};
};

struct Hardware {
  double peak_flops_per_s = 0.0;    // matrix unit, for the chosen dtype
  double vector_flops_per_s = 0.0;  // elementwise unit
  double hbm_bytes_per_s = 0.0;
  double onchip_bytes = 0.0;        // half holds pinned weights, half holds activations
  double onchip_bytes_per_s = 0.0;
  double tile_m = 1.0;              // matrix unit pads M, N, K up to multiples of these
  double tile_n = 1.0;
  double tile_k = 1.0;
  double dtype_bytes = 2.0;
  double fixed_overhead_s = 0.0;    // once per inference
  double parallel_units = 0.0;      // output tiles spread over these in waves (SMs, TensorCores x MXUs); 0: none
  Roofline roofline = Roofline::kMax;
  ClassTerms terms[kNumOpClasses];
};

// Returns an empty string when `hw` is usable, else a message naming the bad field.
std::string validate_hardware(const Hardware& hw);

}  // namespace costmodel
