// The analytic latency model: a walk over the ops of one inference of a student, costed per op.
// Pure C++17: no Python, no I/O.
//
// Each op gets FLOPs (2 per MAC), FLOPs padded to the matrix-unit tile, the FLOPs of elementwise work
// fused into it (bias, activation, residual, norm, softmax), weight bytes and activation bytes. Its time is
//   combine(padded_flops / (peak * ce_class), vector_flops / (vector_peak * ce_vector),
//           weight_bytes / (bw_w * me_class) + act_bytes / (bw_a * me_class)) + overhead_class
// where combine is max (Roofline::kMax, the default) or the sum (Roofline::kSum) of the three terms,
// bw_w is on-chip bandwidth when all non-embedding weights fit in half the on-chip memory and
// bw_a is on-chip bandwidth when the op's activations fit in the other half (else HBM bandwidth).
// Matmuls are shape-aware: on hw.parallel_units, output tiles run in whole waves and K may be split;
// each way costs a + b * half_rate_k[class] FLOPs (the K ramp) and the cheapest is taken; padded_flops
// is that way's work without the ramp. See costmodel_reference.py.
// Ops repeated in every layer are costed once and multiplied by the layer count.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "costmodel/arch.h"
#include "costmodel/hardware.h"

namespace costmodel {

struct Workload {
  int64_t batch = 1;
  int64_t seq = 128;
  bool mlm_head = false;
};

// Returns an empty string when `w` is usable, else a message naming the bad field.
std::string validate_workload(const Workload& w);

struct OpCost {
  std::string name;
  OpClass op_class = OpClass::kMatmul;
  double count = 1;          // how many times the op runs per inference (layers x stacked FFNs)
  // The rest are totals over all `count` instances.
  double flops = 0;          // matrix-unit FLOPs, unpadded
  double padded_flops = 0;   // after padding M, N, K to the tile
  double vector_flops = 0;   // fused elementwise FLOPs
  double weight_bytes = 0;
  double act_bytes = 0;
  bool weights_onchip = false;
  bool acts_onchip = false;
  double compute_s = 0;
  double vector_s = 0;
  double memory_s = 0;
  double overhead_s = 0;
  double shape_factor = 1;   // the class's fitted shape residual at this op: latency_s includes it as a factor
  double latency_s = 0;
};

struct Estimate {
  double latency_s = 0;      // fixed overhead + sum of op latencies
  double fixed_overhead_s = 0;
  std::vector<OpCost> ops;
};

// Bytes of every weight read by matmuls in one inference (embedding tables excluded: only rows are read).
double weight_bytes(const Arch& a, const Workload& w, double dtype_bytes);

// Full breakdown; inputs must already be valid.
Estimate estimate(const Arch& a, const Hardware& hw, const Workload& w);

// Total only: the hot path, no allocation.
double estimate_total(const Arch& a, const Hardware& hw, const Workload& w);

struct BatchError {
  int64_t row = -1;
  ParseError parse;
};

// Scores `n` rows of kNumFeatures doubles (row-major) into `out`. Validates every row first; on a bad row
// returns false with `err` naming the first one, writing nothing. `threads` <= 0 means all hardware threads.
bool estimate_batch(const double* features, int64_t n, const Hardware& hw, const Workload& w, double* out,
                    int threads, BatchError* err);

}  // namespace costmodel
