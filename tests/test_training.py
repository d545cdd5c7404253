"""boundlab train: the study's outputs (at a size below --quick) and its summary."""

import json

import numpy as np
import pytest

from boundlab.cli import main
from boundlab.experiments.training_study import DIAGNOSTICS, TrainStudy, correlations, load_digits_tokens

pytestmark = pytest.mark.fast_compile  # inequalities, tables, files: tests/conftest.py


def test_digits_are_rows_as_tokens_and_split_without_overlap():
    (train_x, train_y), (test_x, test_y) = load_digits_tokens(seed=0, test_samples=100)
    assert train_x.shape[1:] == test_x.shape[1:] == (8, 8) and len(test_y) == 100
    assert len(train_y) + len(test_y) == 1797
    assert 0 <= train_x.min() and train_x.max() <= 1
    rows = {row.tobytes() for row in train_x.reshape(len(train_x), -1)}
    assert not any(row.tobytes() in rows for row in test_x.reshape(len(test_x), -1)[:20])


def test_correlations_of_a_monotone_relation_are_one():
    rows = [{name: 10.0 ** k for name in DIAGNOSTICS} | {"err": 10.0 ** (2 * k)} for k in range(1, 6)]
    for name in DIAGNOSTICS:
        rows[0][name] = float(rows[0][name]) if not name.startswith("log10_") else 1.0
    for name in DIAGNOSTICS:
        for row, k in zip(rows, range(1, 6)):
            row[name] = float(k) if name.startswith("log10_") else 10.0 ** k
    rows.append({name: float("inf") for name in DIAGNOSTICS} | {"err": float("nan")})  # dropped, counted out
    result = correlations(rows, "err")
    for name in DIAGNOSTICS:
        assert result[name]["points"] == 5
        assert result[name]["pearson_log"] == pytest.approx(1.0) and result[name]["spearman"] == pytest.approx(1.0)


def test_bad_study_configurations_are_refused():
    with pytest.raises(ValueError, match="widths"):
        TrainStudy(widths=(1,))
    with pytest.raises(ValueError, match="beta"):
        TrainStudy(beta=0.0)
    with pytest.raises(ValueError, match="penalty_samples"):
        TrainStudy(batch=4, penalty_samples=8)


@pytest.mark.slow  # a study's CLI run end to end (its parts are tested in the default run): `pytest -m slow`, see docs/benchmarks.md
def test_train_quick_writes_plots_csv_and_a_strict_json_summary(tmp_path, capsys):
    out = tmp_path / "train"
    assert main(["train", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "4 runs" in printed and "Theorem 4.30 against the measured bf16 error over the checkpoints: " in printed
    for name in ("checkpoints.csv", "trajectories.png", "scatter.png", "summary.json"):
        assert (out / name).stat().st_size > 0, name

    def refuse(constant):
        raise ValueError(f"summary.json holds {constant}, which is not JSON")

    summary = json.loads((out / "summary.json").read_text(), parse_constant=refuse)
    assert summary["runs"] == 4 and summary["checkpoints"] == 4 * 5
    assert "n u < 1" in summary["hypothesis_failures"] and summary["hypothesis_failures"]["n u < 1"] == 0
    for fmt in ("bf16", "fp16"):  # the theorem against the measured error: never failed, every checkpoint counted
        check = summary["theorem_4_30_check"][fmt]
        assert check["failed"] == 0 and check["holds"] is not False
        assert check["checked"] + sum(check["not_checked"].values()) == check["checkpoints"] == 20
        assert (check["holds"] is True) == (check["checked"] > 0)
    for error in ("error_normwise/bf16", "error_componentwise/fp16"):
        for name in DIAGNOSTICS:
            entry = summary["correlations_all_checkpoints"][error][name]
            assert set(entry) == {"points", "pearson_log", "spearman"}
            assert entry["pearson_log"] is None or -1 <= entry["pearson_log"] <= 1
    for group in ("with", "without"):
        assert 0 <= summary["penalty"][group]["test_accuracy_mean"] <= 1
        assert summary["penalty"][group]["runs"] == 2
    rows = (out / "checkpoints.csv").read_text().splitlines()
    assert len(rows) == 1 + 20 and "error_normwise/bf16" in rows[0]
    accuracy_column = rows[0].split(",").index("test_accuracy")
    final = [float(row.split(",")[accuracy_column]) for row in rows[1:] if row.split(",")[3] == "60"]
    assert np.mean(final) > 0.2  # trained: better than chance (0.1) after 60 steps
