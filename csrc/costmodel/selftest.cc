// Plain-CMake self-test of the core (no Python): scores MobileBERT on a TPU-like device.
#include <cstdio>

#include "costmodel/model.h"

int main() {
  using namespace costmodel;
  const double row[kNumFeatures] = {1, 24, 512, 128, 4, 512, 4, 1, 128, 0, 1, 1, 0, 0, 30522};
  Arch a;
  ParseError err;
  if (!parse_arch(row, &a, &err)) {
    std::fprintf(stderr, "parse failed: %s\n", err.message.c_str());
    return 1;
  }
  Hardware hw;
  hw.peak_flops_per_s = 138e12;
  hw.vector_flops_per_s = 4e12;
  hw.hbm_bytes_per_s = 614e9;
  hw.onchip_bytes = 128.0 * (1 << 20);
  hw.onchip_bytes_per_s = 2e12;
  hw.tile_m = 8;
  hw.tile_n = 128;
  hw.tile_k = 128;
  if (!validate_hardware(hw).empty()) return 1;
  Workload w;
  const Estimate e = estimate(a, hw, w);
  double sum = e.fixed_overhead_s;
  for (const OpCost& op : e.ops) sum += op.latency_s;
  std::printf("mobilebert latency_s=%g ops=%zu\n", e.latency_s, e.ops.size());
  return (e.latency_s > 0 && sum == e.latency_s && e.latency_s == estimate_total(a, hw, w)) ? 0 : 1;
}
