"""A report's data for the report tests: a small run with every kind of row, and the flaws the summary
must call out (a flash ranking that full distillation reversed, a search-front student dominated after
full distillation, a drift ratio far from 1, a refit written but not used, a failed trial)."""

from __future__ import annotations

from autodistill.report import ReportData, StudentRow, TrialPoint


def report_data() -> ReportData:
    students = (
        StudentRow(
            "trial0006",
            "mobilebert-L4-H256-B64",
            4_360_000,
            46.6e-6,
            flash_accuracy=0.069,
            mlm_accuracy=0.049,
            local_est_latency_s=2.0e-3,
            measured_latency_s=2.1e-3,
            pareto=True,
            local_interval_s=(1.8e-3, 2.3e-3),
            est_interval_s=(30e-6, 80e-6),
            mlm_predictions=5000,
            exported="runs/synth/students/trial0006/hf",
        ),
        StudentRow(
            "trial0003",
            "mobilebert-L3-H384-B128",
            4_510_000,
            46.9e-6,
            flash_accuracy=0.061,
            mlm_accuracy=0.066,
            local_est_latency_s=3.0e-3,
            measured_latency_s=2.5e-3,
            drift_est_latency_s=2.7e-3,
            pareto=True,
            local_interval_s=(2.7e-3, 3.5e-3),
            est_interval_s=(30e-6, 80e-6),
            mlm_predictions=5000,
        ),
        StudentRow(
            "trial0001",
            "mobilebert-L2-H256-B128",
            3_900_000,
            47.3e-6,
            flash_accuracy=0.058,
            mlm_accuracy=0.060,
            local_est_latency_s=1.5e-3,
            measured_latency_s=1.6e-3,
            pareto=True,
            est_interval_s=(30e-6, 80e-6),
            mlm_predictions=5000,
            recal_est_latency_s=1.58e-3,
        ),
        StudentRow(
            "baseline",
            "mobilebert-L6-H384-B96",
            7_000_000,
            150e-6,
            mlm_accuracy=0.055,
            baseline=True,
            local_est_latency_s=4.0e-3,
            measured_latency_s=4.1e-3,
            recal_est_latency_s=4.08e-3,
            est_interval_s=(100e-6, 250e-6),
            mlm_predictions=5000,
        ),
        StudentRow(
            "teacher (MiniLM)",
            "bert-L6-H384",
            22_000_000,
            400e-6,
            reference=True,
            mlm_accuracy=0.118,
            mlm_predictions=5000,
        ),
        StudentRow("bert-base", "bert-L12-H768", 110_000_000, 2.1e-3, reference=True),
        StudentRow("mobilebert", "mobilebert-L24-H512", 24_581_888, 5.1e-4, reference=True),
    )
    trials = tuple(
        TrialPoint(
            0.04 + 0.003 * (i % 7),
            40e-6 * (1 + 0.3 * i),
            trial_id=i,
            config=f"cfg{i}",
            params=4_000_000 + i * 10000,
            source="initial" if i < 4 else "qlognehvi",
        )
        for i in range(12)
    )
    trials += (TrialPoint(None, 60e-6, trial_id=12, status="failed", config="cfgX"),)
    data = ReportData(
        "autodistill run: synth",
        "tpu_v4i",
        "cpu (profile cpu_local)",
        students,
        trials,
        tuple(0.001 * i for i in range(1, 13)),
        {
            "n": 4,
            "mape_before": 0.08,
            "within_10pct_before": 0.75,
            "mape_after": 0.01,
            "within_10pct_after": 1.0,
            "recalibrated": 1.0,
            "drift_ratio": 1.21,
            "drift_anchors": 6,
        },
        ("a note",),
        reference_point=(0.0, 1e-3),
        metadata={"run": "synth", "autodistill": "0.1.0"},
        stage_times_s={"search": 100.0, "distill": 200.0},
        refit_profile="runs/synth/cpu_local_refit.toml",
        link_base="runs/synth",
    )
    return data
