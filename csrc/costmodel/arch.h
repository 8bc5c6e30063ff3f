// A student encoder shape (MobileBERT family; BERT as a member) and its feature-row encoding.
// Pure C++17: no Python, no I/O.
#pragma once

#include <cstdint>
#include <string>

namespace costmodel {

// Column order of a feature row; the Python side (autodistill.arch.FEATURE_NAMES) must match.
inline constexpr int kNumFeatures = 15;
inline constexpr const char* kFeatureNames[kNumFeatures] = {
    "family",                      // 0 = bert, 1 = mobilebert
    "num_hidden_layers",
    "hidden_size",
    "embedding_size",
    "num_attention_heads",
    "intermediate_size",
    "num_feedforward_networks",
    "use_bottleneck",
    "intra_bottleneck_size",
    "use_bottleneck_attention",
    "key_query_shared_bottleneck",
    "trigram_input",
    "normalization_type",          // 0 = no_norm, 1 = layer_norm
    "hidden_act",                  // 0 relu, 1 gelu, 2 gelu_new, 3 tanh, 4 silu
    "vocab_size",
};
inline constexpr int kNumActivations = 5;
inline constexpr int64_t kMaxDim = int64_t{1} << 20;
inline constexpr int64_t kMaxLayers = 4096;
inline constexpr int64_t kMaxFfn = 64;
inline constexpr int64_t kMaxVocab = int64_t{1} << 24;

struct Arch {
  bool mobilebert = true;
  int64_t layers = 0;
  int64_t hidden = 0;
  int64_t embedding = 0;
  int64_t heads = 0;
  int64_t intermediate = 0;
  int64_t num_ffn = 1;
  bool use_bottleneck = false;
  int64_t intra_bottleneck = 0;
  bool bottleneck_attention = false;
  bool kq_shared = false;
  bool trigram = false;
  bool layer_norm = true;
  int activation = 0;
  int64_t vocab = 0;

  int64_t true_hidden() const { return use_bottleneck ? intra_bottleneck : hidden; }
  int64_t embedding_input() const { return embedding * (trigram ? 3 : 1); }
};

struct ParseError {
  int field = -1;          // index into kFeatureNames, -1 for whole-row problems
  std::string message;     // names the bad value and the valid range or choices
};

// Parses and validates one row of kNumFeatures doubles. Returns false and fills `err` on bad input.
bool parse_arch(const double* row, Arch* out, ParseError* err);

}  // namespace costmodel
