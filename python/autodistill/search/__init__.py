"""Multi-objective search over student architectures (accuracy x cost-model latency).

Modules, lightest first (only `engine` imports torch/BoTorch):

* `types`: `Trial`, `TrialResult`, `Suggestion` (frozen records at every boundary).
* `pareto`: Pareto masks and exact 2-D hypervolume in the (accuracy, -ln latency_s) plane.
* `evaluators`: the `Evaluator` protocol and `SyntheticEvaluator` (a known landscape for tests/benchmarks).
* `base`, `baselines`: ask/tell bookkeeping over a candidate pool; random search and NSGA-II.
* `engine`: `SearchEngine`, the GP + qLogNEHVI (or scalarized qLogNEI) ask/tell engine.
* `store`: `TrialStore`, the SQLite (WAL) record of every proposal and result.
* `runner`: `run_search`, the resumable loop of engine + evaluator + store.

Nothing here is imported by ``import autodistill``.
"""
from __future__ import annotations
