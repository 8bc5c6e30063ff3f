// The analytic latency model (see model.h). The Python reference in
// python/autodistill/costmodel_reference.py is the readable twin and the test oracle.
#include "costmodel/model.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <thread>

namespace costmodel {
namespace {

// Elementwise FLOPs per element.
constexpr double kBiasFlops = 1, kResidualFlops = 1, kScaleMaskFlops = 2, kSoftmaxFlops = 5;
constexpr double kLayerNormFlops = 8, kNoNormFlops = 2;
constexpr double kActivationFlops[kNumActivations] = {1, 10, 10, 6, 5};  // relu gelu gelu_new tanh silu

inline double pad(int64_t x, double tile) {
  const int64_t t = static_cast<int64_t>(tile);
  return static_cast<double>((x + t - 1) / t * t);
}

bool is_int_in(double v, double lo, double hi) {
  return std::isfinite(v) && v == std::floor(v) && v >= lo && v <= hi;
}

// Shortest text that round-trips (1048576, 1e+30, nan, 2.5).
std::string fmt(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

// Ways to split K tried on parallel units (1: no split), and the steps of K each split costs a tile.
constexpr int kNumSplits = 5;
constexpr int64_t kSplits[kNumSplits] = {1, 2, 4, 8, 16};
constexpr double kSplitCostK = 16.0;

// The ways of running a matmul: way i costs a[i] + b[i] * half_rate_k FLOPs of matrix-unit time.
// Mirrors costmodel_reference.tile_candidates.
struct TileWays {
  TileWays() : n(0) {}       // user-provided: the arrays are not zeroed per op (only the first n are read)
  int n;
  double a[kNumSplits];
  double b[kNumSplits];
};

// `mp` is m padded to tile_m when the caller has it (the hot path pads M once per student), else < 0.
TileWays tile_candidates(const Hardware& hw, double groups, int64_t m, int64_t n, int64_t k, double mp = -1.0) {
  TileWays w;
  const double units = hw.parallel_units;
  if (units <= 0) {
    const double area = 2.0 * groups * (mp >= 0 ? mp : pad(m, hw.tile_m)) * pad(n, hw.tile_n);
    w.n = 1;
    w.a[0] = area * pad(k, hw.tile_k);
    w.b[0] = area;
    return w;
  }
  const int64_t tm = static_cast<int64_t>(hw.tile_m), tn = static_cast<int64_t>(hw.tile_n);
  const double tiles = groups * static_cast<double>((m + tm - 1) / tm) * static_cast<double>((n + tn - 1) / tn);
  w.n = kNumSplits;
  for (int i = 0; i < kNumSplits; ++i) {
    const int64_t s = kSplits[i];
    const double per_step = 2.0 * std::ceil(tiles * static_cast<double>(s) / units) * units * hw.tile_m * hw.tile_n;
    w.a[i] = per_step * (pad((k + s - 1) / s, hw.tile_k) + (s > 1 ? kSplitCostK * static_cast<double>(s) : 0.0));
    w.b[i] = per_step;
  }
  return w;
}

// An op before costing: shapes turned into work and bytes for ONE instance. Matmuls (`matmul` set) cost
// padded_flops + ramp_b * half_rate_k when they have one way (no parallel units), else the cheapest of
// `ways` (which points at the caller's TileWays while the op is costed); `dims` are M, N, K of one group.
struct OpShape {
  const char* name;
  OpClass cls;
  double count;
  double flops, padded_flops, vector_flops, weight_bytes, act_bytes;
  bool matmul;
  double ramp_b;
  const TileWays* ways;
  int64_t dims[3];
};

// Sets a matmul op's ways from tile_candidates: one way inline, several through `store`.
inline void set_ways(OpShape* op, const TileWays& w, const TileWays* store) {
  op->matmul = true;
  op->padded_flops = w.a[0];
  op->ramp_b = w.b[0];
  op->ways = w.n > 1 ? store : nullptr;
}

// Mirrors costmodel_reference.log_residual.
__attribute__((noinline)) double log_residual(const ClassTerms& t, const int64_t* dims) {
  if (t.n_residual == 0 || dims[0] <= 0) return 0.0;
  const double last = kResidualKnot0 + kResidualKnotStep * (kResidualKnots - 1);
  double r = 0.0;
  for (int d = 0; d < 3; ++d) {
    const double x = std::min(std::max(std::log2(static_cast<double>(dims[d])), kResidualKnot0), last);
    const int j = std::min(static_cast<int>(std::floor((x - kResidualKnot0) / kResidualKnotStep)), kResidualKnots - 2);
    const double kj = kResidualKnot0 + kResidualKnotStep * j, kj1 = kResidualKnot0 + kResidualKnotStep * (j + 1);
    const double u = (x - kj) / (kj1 - kj);
    r += (1.0 - u) * t.residual[d * kResidualKnots + j] + u * t.residual[d * kResidualKnots + j + 1];
  }
  return std::min(std::max(r, -kResidualMaxLog), kResidualMaxLog);
}

// Precomputed per call: reciprocals of effective rates and the residency decisions.
struct Rates {
  double inv_compute[kNumOpClasses];
  double inv_vector;
  double inv_mem_w[kNumOpClasses];
  double inv_mem_a_onchip[kNumOpClasses];
  double inv_mem_a_hbm[kNumOpClasses];
  double overhead[kNumOpClasses];
  double half_rate_k[kNumOpClasses];
  const ClassTerms* terms;
  double act_capacity;
  bool weights_onchip;
  bool sum_roofline;  // combine the terms by sum instead of max
};

Rates make_rates(const Arch& a, const Hardware& hw, const Workload& w) {
  Rates r{};
  const double onchip_bw = std::max(hw.onchip_bytes_per_s, hw.hbm_bytes_per_s);
  r.weights_onchip = weight_bytes(a, w, hw.dtype_bytes) <= 0.5 * hw.onchip_bytes;
  r.act_capacity = 0.5 * hw.onchip_bytes;
  r.sum_roofline = hw.roofline == Roofline::kSum;
  r.terms = hw.terms;
  const double vec_eff = hw.terms[static_cast<int>(OpClass::kVector)].compute_efficiency;
  r.inv_vector = 1.0 / (hw.vector_flops_per_s * vec_eff);
  for (int c = 0; c < kNumOpClasses; ++c) {
    const ClassTerms& t = hw.terms[c];
    r.inv_compute[c] = 1.0 / (hw.peak_flops_per_s * t.compute_efficiency);
    r.inv_mem_w[c] = 1.0 / ((r.weights_onchip ? onchip_bw : hw.hbm_bytes_per_s) * t.memory_efficiency);
    r.inv_mem_a_onchip[c] = 1.0 / (onchip_bw * t.memory_efficiency);
    r.inv_mem_a_hbm[c] = 1.0 / (hw.hbm_bytes_per_s * t.memory_efficiency);
    r.overhead[c] = t.overhead_s;
    r.half_rate_k[c] = t.half_rate_k;
  }
  return r;
}

struct Costed {
  double padded_flops, compute_s, vector_s, memory_s, overhead_s, shape_factor, latency_s;
  bool acts_onchip;
};

// Cost of ONE instance of the op.
inline Costed cost(const OpShape& op, const Rates& r) {
  const int c = static_cast<int>(op.cls);
  Costed k;
  k.acts_onchip = op.act_bytes <= r.act_capacity;
  // The cheapest way of running a matmul, with the class's K ramp.
  double compute_flops = op.padded_flops;
  k.padded_flops = op.padded_flops;
  if (op.ways != nullptr) {  // the cheapest way of running the matmul, with the class's K ramp
    const double k0 = r.half_rate_k[c];
    compute_flops = op.ways->a[0] + op.ways->b[0] * k0;
    for (int i = 1; i < op.ways->n; ++i) {
      const double v = op.ways->a[i] + op.ways->b[i] * k0;
      if (v < compute_flops) compute_flops = v, k.padded_flops = op.ways->a[i];
    }
  } else if (op.matmul) {
    compute_flops += op.ramp_b * r.half_rate_k[c];
  }
  k.compute_s = compute_flops * r.inv_compute[c];
  k.vector_s = op.vector_flops * r.inv_vector;
  k.memory_s = op.weight_bytes * r.inv_mem_w[c] + op.act_bytes * (k.acts_onchip ? r.inv_mem_a_onchip[c] : r.inv_mem_a_hbm[c]);
  k.overhead_s = r.overhead[c];
  k.latency_s = (r.sum_roofline ? k.compute_s + k.vector_s + k.memory_s
                                : std::max(k.compute_s, std::max(k.vector_s, k.memory_s))) +
                k.overhead_s;
  k.shape_factor = (op.matmul && r.terms[c].n_residual > 0) ? std::exp(log_residual(r.terms[c], op.dims)) : 1.0;
  if (k.shape_factor != 1.0) k.latency_s *= k.shape_factor;
  return k;
}

// Walks the ops of one inference, calling sink(OpShape) for each. Shared by the total and breakdown paths.
template <class Sink>
void walk(const Arch& a, const Hardware& hw, const Workload& w, Sink&& sink) {
  const double db = hw.dtype_bytes;
  const int64_t m = w.batch * w.seq;
  const double M = static_cast<double>(m);
  const double Mp = pad(m, hw.tile_m);  // M of every dense op, padded once
  const double norm_flops = a.layer_norm ? kLayerNormFlops : kNoNormFlops;
  const double act_flops = kActivationFlops[a.activation];
  const double L = static_cast<double>(a.layers);
  const int64_t h = a.hidden, t = a.true_hidden(), f = a.intermediate;

  // Dense layer [M, k] x [k, n] with a fused epilogue of `epi_flops` per output element,
  // `residual` extra reads of the output shape, and `norm` parameters.
  auto dense = [&](const char* name, double count, int64_t k, int64_t n, double epi_flops, bool residual,
                   bool norm) {
    const double K = static_cast<double>(k), N = static_cast<double>(n);
    OpShape op{name, OpClass::kMatmul, count, 0, 0, 0, 0, 0, false, 0, nullptr, {m, n, k}};
    const TileWays ways = tile_candidates(hw, 1.0, m, n, k, Mp);
    set_ways(&op, ways, &ways);
    op.flops = 2.0 * M * K * N;
    op.vector_flops = M * N * epi_flops;
    op.weight_bytes = (K * N + N + (norm ? 2.0 * N : 0.0)) * db;
    op.act_bytes = (M * K + M * N + (residual ? M * N : 0.0)) * db;
    sink(op);
  };
  const double ln = norm_flops;

  // --- embeddings: gather word rows, add position and token-type rows; project (MobileBERT); norm.
  {
    const double E = static_cast<double>(a.embedding), H = static_cast<double>(h);
    const bool project = a.mobilebert && (a.trigram || a.embedding != a.hidden);
    OpShape g{"embedding_gather", OpClass::kGather, 1, 0, 0, 0, 0, 0, false, 0, nullptr, {0, 0, 0}};
    g.act_bytes = (M * E + 2.0 * M * H + M * static_cast<double>(a.embedding_input())) * db;
    g.vector_flops = project ? 0.0 : M * H * (2.0 + ln);  // adds + norm fuse into the gather when no projection
    sink(g);
    if (project) dense("embedding_transformation", 1, a.embedding_input(), h, kBiasFlops + 2.0 + ln, true, true);
  }

  // --- encoder layers (each op below runs once per layer, times `count`).
  const int64_t heads = a.heads, d = t / heads;
  if (a.use_bottleneck) {
    dense("bottleneck_input", L, h, t, kBiasFlops + ln, false, true);
    if (a.kq_shared && !a.bottleneck_attention) dense("bottleneck_attention", L, h, t, kBiasFlops + ln, false, true);
  }
  dense("query", L, t, t, kBiasFlops, false, false);
  dense("key", L, t, t, kBiasFlops, false, false);
  dense("value", L, (a.use_bottleneck && a.bottleneck_attention) ? t : h, t, kBiasFlops, false, false);
  {
    const double B = static_cast<double>(w.batch) * static_cast<double>(heads);
    const double S = static_cast<double>(w.seq), D = static_cast<double>(d);
    OpShape sc{"attention_scores", OpClass::kAttention, L, 0, 0, 0, 0, 0, false, 0, nullptr, {w.seq, w.seq, d}};
    const double Sp = pad(w.seq, hw.tile_m);
    const TileWays sways = tile_candidates(hw, B, w.seq, w.seq, d, Sp);
    set_ways(&sc, sways, &sways);
    sc.flops = 2.0 * B * S * D * S;
    sc.vector_flops = B * S * S * kScaleMaskFlops;
    sc.act_bytes = (2.0 * B * S * D + B * S * S) * db;
    sink(sc);
    OpShape sm{"softmax", OpClass::kVector, L, 0, 0, B * S * S * kSoftmaxFlops, 0, 2.0 * B * S * S * db, false, 0,
               nullptr, {0, 0, 0}};
    sink(sm);
    OpShape cx{"attention_context", OpClass::kAttention, L, 0, 0, 0, 0, 0, false, 0, nullptr, {w.seq, d, w.seq}};
    const TileWays cways = tile_candidates(hw, B, w.seq, d, w.seq, Sp);
    set_ways(&cx, cways, &cways);
    cx.flops = 2.0 * B * S * S * D;
    cx.act_bytes = (B * S * S + 2.0 * B * S * D) * db;
    sink(cx);
  }
  dense("attention_output", L, t, t, kBiasFlops + kResidualFlops + ln, true, true);
  if (a.num_ffn > 1) {
    const double extra = L * static_cast<double>(a.num_ffn - 1);
    dense("ffn_stacked_intermediate", extra, t, f, kBiasFlops + act_flops, false, false);
    dense("ffn_stacked_output", extra, f, t, kBiasFlops + kResidualFlops + ln, true, true);
  }
  dense("intermediate", L, t, f, kBiasFlops + act_flops, false, false);
  dense("output", L, f, t, kBiasFlops + kResidualFlops + ln, true, true);
  if (a.use_bottleneck) dense("output_bottleneck", L, t, h, kBiasFlops + kResidualFlops + ln, true, true);

  // --- optional MLM head: transform (dense + act + LayerNorm) and the vocabulary projection.
  if (w.mlm_head) {
    dense("mlm_transform", 1, h, h, kBiasFlops + act_flops + kLayerNormFlops, false, true);
    dense("mlm_decoder", 1, h, a.vocab, kBiasFlops, false, false);
  }
}

}  // namespace

std::string validate_hardware(const Hardware& hw) {
  auto pos = [](double v) { return std::isfinite(v) && v > 0; };
  if (!pos(hw.peak_flops_per_s)) return "peak_flops_per_s=" + fmt(hw.peak_flops_per_s) + " must be finite and > 0";
  if (!pos(hw.vector_flops_per_s)) return "vector_flops_per_s=" + fmt(hw.vector_flops_per_s) + " must be finite and > 0";
  if (!pos(hw.hbm_bytes_per_s)) return "hbm_bytes_per_s=" + fmt(hw.hbm_bytes_per_s) + " must be finite and > 0";
  if (!pos(hw.onchip_bytes_per_s)) return "onchip_bytes_per_s=" + fmt(hw.onchip_bytes_per_s) + " must be finite and > 0";
  if (!(std::isfinite(hw.onchip_bytes) && hw.onchip_bytes >= 0)) return "onchip_bytes=" + fmt(hw.onchip_bytes) + " must be finite and >= 0";
  if (!is_int_in(hw.tile_m, 1, 4096)) return "tile_m=" + fmt(hw.tile_m) + " must be an integer in 1..4096";
  if (!is_int_in(hw.tile_n, 1, 4096)) return "tile_n=" + fmt(hw.tile_n) + " must be an integer in 1..4096";
  if (!is_int_in(hw.tile_k, 1, 4096)) return "tile_k=" + fmt(hw.tile_k) + " must be an integer in 1..4096";
  if (!(hw.dtype_bytes == 1 || hw.dtype_bytes == 2 || hw.dtype_bytes == 4)) return "dtype_bytes=" + fmt(hw.dtype_bytes) + " must be 1, 2 or 4";
  if (!(std::isfinite(hw.fixed_overhead_s) && hw.fixed_overhead_s >= 0)) return "fixed_overhead_s=" + fmt(hw.fixed_overhead_s) + " must be finite and >= 0";
  if (!is_int_in(hw.parallel_units, 0, 1e6)) return "parallel_units=" + fmt(hw.parallel_units) + " must be an integer in 0..1000000";
  const int roof = static_cast<int>(hw.roofline);
  if (roof < 0 || roof >= kNumRooflines) return "roofline=" + std::to_string(roof) + " must be 0 (max) or 1 (sum)";
  for (int c = 0; c < kNumOpClasses; ++c) {
    const ClassTerms& t = hw.terms[c];
    const std::string n = kOpClassNames[c];
    if (!pos(t.compute_efficiency)) return n + "_compute_efficiency=" + fmt(t.compute_efficiency) + " must be finite and > 0";
    if (!pos(t.memory_efficiency)) return n + "_memory_efficiency=" + fmt(t.memory_efficiency) + " must be finite and > 0";
    if (!(std::isfinite(t.overhead_s) && t.overhead_s >= 0)) return n + "_overhead_s=" + fmt(t.overhead_s) + " must be finite and >= 0";
    if (!(std::isfinite(t.half_rate_k) && t.half_rate_k >= 0 && t.half_rate_k <= 65536)) return n + "_half_rate_k=" + fmt(t.half_rate_k) + " must be in 0..65536";
    if (t.n_residual != 0 && t.n_residual != kResidualLen) return n + "_residual must have 0 or " + std::to_string(kResidualLen) + " values";
    for (int i = 0; i < t.n_residual; ++i) {
      if (!(std::isfinite(t.residual[i]) && std::abs(t.residual[i]) <= 4.0)) return n + "_residual[" + std::to_string(i) + "]=" + fmt(t.residual[i]) + " must be finite, in [-4, 4]";
    }
  }
  return {};
}

std::string validate_workload(const Workload& w) {
  if (w.batch < 1 || w.batch > (int64_t{1} << 20)) return "batch=" + std::to_string(w.batch) + " must be in 1..1048576";
  if (w.seq < 1 || w.seq > (int64_t{1} << 20)) return "seq=" + std::to_string(w.seq) + " must be in 1..1048576";
  return {};
}

bool parse_arch(const double* row, Arch* out, ParseError* err) {
  auto bad = [&](int field, const std::string& msg) {
    err->field = field;
    err->message = std::string("feature '") + kFeatureNames[field] + "'=" + fmt(row[field]) + " " + msg;
    return false;
  };
  static constexpr double kHi[kNumFeatures] = {
      1, static_cast<double>(kMaxLayers), kMaxDim, kMaxDim, kMaxDim, kMaxDim, kMaxFfn, 1, kMaxDim, 1, 1, 1, 1,
      kNumActivations - 1, static_cast<double>(kMaxVocab)};
  static constexpr double kLo[kNumFeatures] = {0, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1};
  for (int i = 0; i < kNumFeatures; ++i) {
    if (!is_int_in(row[i], kLo[i], kHi[i])) {
      return bad(i, "is not an integer in " + fmt(kLo[i]) + ".." + fmt(kHi[i]));
    }
  }
  Arch a;
  a.mobilebert = row[0] != 0;
  a.layers = static_cast<int64_t>(row[1]);
  a.hidden = static_cast<int64_t>(row[2]);
  a.embedding = static_cast<int64_t>(row[3]);
  a.heads = static_cast<int64_t>(row[4]);
  a.intermediate = static_cast<int64_t>(row[5]);
  a.num_ffn = static_cast<int64_t>(row[6]);
  a.use_bottleneck = row[7] != 0;
  a.intra_bottleneck = static_cast<int64_t>(row[8]);
  a.bottleneck_attention = row[9] != 0;
  a.kq_shared = row[10] != 0;
  a.trigram = row[11] != 0;
  a.layer_norm = row[12] != 0;
  a.activation = static_cast<int>(row[13]);
  a.vocab = static_cast<int64_t>(row[14]);
  if (a.true_hidden() % a.heads != 0) {
    return bad(4, "does not divide the attention width " + std::to_string(a.true_hidden()));
  }
  if (!a.mobilebert) {
    if (a.use_bottleneck) return bad(7, "must be 0 for family bert");
    if (a.trigram) return bad(11, "must be 0 for family bert");
    if (a.num_ffn != 1) return bad(6, "must be 1 for family bert");
    if (!a.layer_norm) return bad(12, "must be 1 (layer_norm) for family bert");
    if (a.embedding != a.hidden) return bad(3, "must equal hidden_size for family bert");
  }
  if (a.use_bottleneck && !a.bottleneck_attention && !a.kq_shared && a.intra_bottleneck != a.hidden) {
    return bad(8, "must equal hidden_size when the bottleneck feeds neither attention nor a shared query/key");
  }
  *out = a;
  return true;
}

double weight_bytes(const Arch& a, const Workload& w, double db) {
  const double h = static_cast<double>(a.hidden), t = static_cast<double>(a.true_hidden());
  const double f = static_cast<double>(a.intermediate);
  const double v_in = (a.use_bottleneck && a.bottleneck_attention) ? t : h;
  double layer = 2 * (t * t + t) + (v_in * t + t) + (t * t + 3 * t);
  layer += static_cast<double>(a.num_ffn) * ((t * f + f) + (f * t + 3 * t));
  if (a.use_bottleneck) {
    layer += (h * t + 3 * t) + (t * h + 3 * h);
    if (a.kq_shared && !a.bottleneck_attention) layer += h * t + 3 * t;
  }
  double total = static_cast<double>(a.layers) * layer;
  if (a.mobilebert && (a.trigram || a.embedding != a.hidden)) {
    total += static_cast<double>(a.embedding_input()) * h + 3 * h;
  }
  if (w.mlm_head) total += (h * h + 3 * h) + (h * static_cast<double>(a.vocab) + static_cast<double>(a.vocab));
  return total * db;
}

Estimate estimate(const Arch& a, const Hardware& hw, const Workload& w) {
  const Rates r = make_rates(a, hw, w);
  Estimate e;
  e.fixed_overhead_s = hw.fixed_overhead_s;
  double total = hw.fixed_overhead_s;
  walk(a, hw, w, [&](const OpShape& op) {
    const Costed k = cost(op, r);
    OpCost c;
    c.name = op.name;
    c.op_class = op.cls;
    c.count = op.count;
    c.flops = op.flops * op.count;
    c.padded_flops = k.padded_flops * op.count;
    c.vector_flops = op.vector_flops * op.count;
    c.weight_bytes = op.weight_bytes * op.count;
    c.act_bytes = op.act_bytes * op.count;
    c.weights_onchip = r.weights_onchip;
    c.acts_onchip = k.acts_onchip;
    c.compute_s = k.compute_s * op.count;
    c.vector_s = k.vector_s * op.count;
    c.memory_s = k.memory_s * op.count;
    c.overhead_s = k.overhead_s * op.count;
    c.shape_factor = k.shape_factor;
    c.latency_s = k.latency_s * op.count;
    total += c.latency_s;
    e.ops.push_back(std::move(c));
  });
  e.latency_s = total;
  return e;
}

double estimate_total(const Arch& a, const Hardware& hw, const Workload& w) {
  const Rates r = make_rates(a, hw, w);
  double total = hw.fixed_overhead_s;
  walk(a, hw, w, [&](const OpShape& op) { total += cost(op, r).latency_s * op.count; });
  return total;
}

bool estimate_batch(const double* features, int64_t n, const Hardware& hw, const Workload& w, double* out,
                    int threads, BatchError* err) {
  // One pass: each worker parses, validates and scores its rows, remembering its first bad row.
  // On any bad row the whole call fails (the caller discards `out`), naming the lowest bad row.
  struct Worker {
    int64_t bad_row = -1;
    ParseError parse;
  };
  auto run = [&](int64_t lo, int64_t hi, Worker* wk) {
    for (int64_t i = lo; i < hi; ++i) {
      Arch a;
      if (!parse_arch(features + i * kNumFeatures, &a, &wk->parse)) {
        wk->bad_row = i;
        return;
      }
      out[i] = estimate_total(a, hw, w);
    }
  };
  int nt = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int64_t min_rows_per_thread = 4096;
  nt = static_cast<int>(std::min<int64_t>(nt, std::max<int64_t>(1, n / min_rows_per_thread)));
  std::vector<Worker> workers(nt);
  if (nt <= 1) {
    run(0, n, &workers[0]);
  } else {
    std::vector<std::thread> pool;
    pool.reserve(nt);
    const int64_t chunk = (n + nt - 1) / nt;
    for (int k = 0; k < nt; ++k) {
      const int64_t lo = k * chunk, hi = std::min(n, lo + chunk);
      if (lo < hi) pool.emplace_back(run, lo, hi, &workers[k]);
    }
    for (auto& th : pool) th.join();
  }
  for (const Worker& wk : workers) {  // workers hold increasing row ranges: the first bad one is the lowest
    if (wk.bad_row >= 0) {
      err->row = wk.bad_row;
      err->parse = wk.parse;
      return false;
    }
  }
  return true;
}

}  // namespace costmodel
