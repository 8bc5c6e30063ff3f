// The only pybind11 file: exposes the pure C++ cost model to Python as autodistill._costmodel.
// Arrays come in as contiguous float64 without copies (when already so) and go out as new arrays.
// The GIL is released only around pure C++ loops that create no Python objects.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "costmodel/model.h"

namespace py = pybind11;
using namespace costmodel;

namespace {

std::string roofline_choices() {
  std::string out;
  for (int i = 0; i < kNumRooflines; ++i) out += (i ? ", " : "") + std::string(kRooflineNames[i]);
  return out;
}

Roofline roofline_from(const py::handle& value) {
  if (!py::isinstance<py::str>(value)) {
    throw py::value_error("roofline must be a string; valid choices: " + roofline_choices());
  }
  const std::string name = py::cast<std::string>(value);
  for (int i = 0; i < kNumRooflines; ++i) {
    if (name == kRooflineNames[i]) return static_cast<Roofline>(i);
  }
  throw py::value_error("unknown roofline '" + name + "'; valid choices: " + roofline_choices());
}

Hardware hardware_from_kwargs(const py::kwargs& kw) {
  Hardware hw;
  for (auto item : kw) {
    const std::string key = py::cast<std::string>(item.first);
    if (key == "roofline") {
      hw.roofline = roofline_from(item.second);
      continue;
    }
    if (key.size() > 9 && key.compare(key.size() - 9, 9, "_residual") == 0) {
      const std::string cls = key.substr(0, key.size() - 9);
      int c = 0;
      while (c < kNumOpClasses && cls != kOpClassNames[c]) ++c;
      if (c == kNumOpClasses) throw py::value_error("unknown hardware field '" + key + "'");
      const auto vals = py::cast<std::vector<double>>(item.second);
      if (!vals.empty() && static_cast<int>(vals.size()) != kResidualLen) {
        throw py::value_error(key + " must have 0 or " + std::to_string(kResidualLen) + " values");
      }
      hw.terms[c].n_residual = static_cast<int>(vals.size());
      for (size_t i = 0; i < vals.size(); ++i) hw.terms[c].residual[i] = vals[i];
      continue;
    }
    const double v = py::cast<double>(item.second);
    if (key == "peak_flops_per_s") hw.peak_flops_per_s = v;
    else if (key == "vector_flops_per_s") hw.vector_flops_per_s = v;
    else if (key == "hbm_bytes_per_s") hw.hbm_bytes_per_s = v;
    else if (key == "onchip_bytes") hw.onchip_bytes = v;
    else if (key == "onchip_bytes_per_s") hw.onchip_bytes_per_s = v;
    else if (key == "tile_m") hw.tile_m = v;
    else if (key == "tile_n") hw.tile_n = v;
    else if (key == "tile_k") hw.tile_k = v;
    else if (key == "dtype_bytes") hw.dtype_bytes = v;
    else if (key == "fixed_overhead_s") hw.fixed_overhead_s = v;
    else if (key == "parallel_units") hw.parallel_units = v;
    else {
      bool found = false;
      for (int c = 0; c < kNumOpClasses && !found; ++c) {
        const std::string p = kOpClassNames[c];
        if (key == p + "_compute_efficiency") hw.terms[c].compute_efficiency = v, found = true;
        else if (key == p + "_memory_efficiency") hw.terms[c].memory_efficiency = v, found = true;
        else if (key == p + "_overhead_s") hw.terms[c].overhead_s = v, found = true;
        else if (key == p + "_half_rate_k") hw.terms[c].half_rate_k = v, found = true;
      }
      if (!found) throw py::value_error("unknown hardware field '" + key + "'");
    }
  }
  const std::string msg = validate_hardware(hw);
  if (!msg.empty()) throw py::value_error("bad hardware: " + msg);
  return hw;
}

Workload make_workload(int64_t batch, int64_t seq, bool mlm_head) {
  Workload w{batch, seq, mlm_head};
  const std::string msg = validate_workload(w);
  if (!msg.empty()) throw py::value_error(msg);
  return w;
}

using Array = py::array_t<double, py::array::c_style | py::array::forcecast>;

py::dict estimate_one(const Array& row, const Hardware& hw, int64_t batch, int64_t seq, bool mlm_head) {
  if (row.ndim() != 1 || row.shape(0) != kNumFeatures) {
    throw py::value_error("feature row must have shape (" + std::to_string(kNumFeatures) + ",)");
  }
  const Workload w = make_workload(batch, seq, mlm_head);
  Arch a;
  ParseError err;
  if (!parse_arch(row.data(), &a, &err)) throw py::value_error(err.message);
  const Estimate e = estimate(a, hw, w);
  py::list ops;
  for (const OpCost& op : e.ops) {
    py::dict d;
    d["name"] = op.name;
    d["op_class"] = kOpClassNames[static_cast<int>(op.op_class)];
    d["count"] = op.count;
    d["flops"] = op.flops;
    d["padded_flops"] = op.padded_flops;
    d["vector_flops"] = op.vector_flops;
    d["weight_bytes"] = op.weight_bytes;
    d["act_bytes"] = op.act_bytes;
    d["weights_onchip"] = op.weights_onchip;
    d["acts_onchip"] = op.acts_onchip;
    d["compute_s"] = op.compute_s;
    d["vector_s"] = op.vector_s;
    d["memory_s"] = op.memory_s;
    d["overhead_s"] = op.overhead_s;
    d["shape_factor"] = op.shape_factor;
    d["latency_s"] = op.latency_s;
    ops.append(std::move(d));
  }
  py::dict out;
  out["latency_s"] = e.latency_s;
  out["fixed_overhead_s"] = e.fixed_overhead_s;
  out["ops"] = ops;
  return out;
}

py::array_t<double> estimate_many(const Array& features, const Hardware& hw, int64_t batch, int64_t seq,
                                  bool mlm_head, int threads) {
  if (features.ndim() != 2 || features.shape(1) != kNumFeatures) {
    throw py::value_error("features must have shape (n, " + std::to_string(kNumFeatures) + "), got ndim=" +
                          std::to_string(features.ndim()));
  }
  const Workload w = make_workload(batch, seq, mlm_head);
  const int64_t n = features.shape(0);
  py::array_t<double> out(n);
  const double* in = features.data();
  double* dst = out.mutable_data();
  BatchError err;
  bool ok;
  {
    py::gil_scoped_release release;
    ok = estimate_batch(in, n, hw, w, dst, threads, &err);
  }
  if (!ok) throw py::value_error("row " + std::to_string(err.row) + ": " + err.parse.message);
  return out;
}

}  // namespace

PYBIND11_MODULE(_costmodel, m) {
  m.doc() = "C++ analytic latency cost model for BERT-style students (see autodistill.costmodel)";
  py::class_<Hardware>(m, "Hardware")
      .def(py::init(&hardware_from_kwargs))
      .def_readonly("peak_flops_per_s", &Hardware::peak_flops_per_s)
      .def_readonly("hbm_bytes_per_s", &Hardware::hbm_bytes_per_s)
      .def_readonly("onchip_bytes", &Hardware::onchip_bytes)
      .def_property_readonly("roofline", [](const Hardware& hw) {
        return std::string(kRooflineNames[static_cast<int>(hw.roofline)]);
      });
  std::vector<std::string> names(kFeatureNames, kFeatureNames + kNumFeatures);
  m.attr("FEATURE_NAMES") = py::tuple(py::cast(names));
  std::vector<std::string> classes(kOpClassNames, kOpClassNames + kNumOpClasses);
  m.attr("OP_CLASSES") = py::tuple(py::cast(classes));
  std::vector<std::string> rooflines(kRooflineNames, kRooflineNames + kNumRooflines);
  m.attr("ROOFLINES") = py::tuple(py::cast(rooflines));
  m.def("estimate", &estimate_one, py::arg("row"), py::arg("hardware"), py::arg("batch"), py::arg("seq"),
        py::arg("mlm_head") = false, "Latency and per-op breakdown of one feature row.");
  m.def("estimate_batch", &estimate_many, py::arg("features"), py::arg("hardware"), py::arg("batch"),
        py::arg("seq"), py::arg("mlm_head") = false, py::arg("threads") = 0,
        "Latencies (n,) of an (n, F) float64 feature array; GIL released; threads<=0 means all cores.");
}
