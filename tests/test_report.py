"""The report's own judgements, on hand-made tables."""

from __future__ import annotations

import pandas as pd
from ablation_lab.report.page import ReportInputs, last_epoch_share, render


def history(rows: list[tuple[str, int, list[float]]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"family": "f", "variant": run, "run": run, "seed": seed, "epoch": epoch, "loss": 1.0, "val_loss": value}
            for run, seed, values in rows
            for epoch, value in enumerate(values, start=1)
        ]
    )


def test_runs_still_improving_at_their_last_epoch_are_counted():
    table = history([("a", 1, [0.9, 0.5, 0.4]), ("a", 2, [0.9, 0.3, 0.4]), ("b", 1, [0.8, 0.7, 0.6]), ("c", 1, [0.5])])
    assert last_epoch_share(table) == (2, 3), "single-epoch runs say nothing about it"
    assert last_epoch_share(history([("c", 1, [0.5])])) == (0, 0)


def test_user_strings_are_escaped_in_the_report():
    label = "<script>alert(1)</script>"
    summary = pd.DataFrame(
        [
            {
                "family": "dropout",
                "variant": "x",
                "label": label,
                "order": 0,
                "seeds": 1,
                "diverged": 0,
                "accuracy_mean": 0.9,
                "accuracy_ci_low": 0.8,
                "accuracy_ci_high": 1.0,
            }
        ]
    )
    comparisons = pd.DataFrame(
        [{"family": "dropout", "variant": "x", "difference": 0.0, "diff_ci_low": 0.0, "diff_ci_high": 0.0, "p_holm": 1.0}]
    )
    runs = pd.DataFrame([{"family": "dropout", "variant": "x", "seed": 1, "run": "r", "status": "ok"}])
    findings = pd.DataFrame(columns=["claim", "estimate", "ci_low", "ci_high", "seeds", "verdict", "detail"])
    inputs = ReportInputs(
        study={"study": "s", "seeds": [1], "dataset": {"name": "csv"}, "note": label},
        meta={"sizes": {"test": 1}},
        tables={"summary": summary, "comparisons": comparisons, "runs": runs, "findings": findings},
    )
    page = render(inputs)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
