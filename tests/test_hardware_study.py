"""``boundlab hardware``: the FP8 promotion study (boundlab.experiments.hardware)."""

import csv
import json

import numpy as np
import pytest

from boundlab.cli import main
from boundlab.experiments.hardware import QUICK, HardwareStudy, quantise


@pytest.mark.slow  # a study's CLI run end to end (its parts are tested in the default run): `pytest -m slow`, see docs/benchmarks.md
@pytest.mark.fast_compile  # files, tables and inequalities (bounds above errors, growth ratios): tests/conftest.py
def test_hardware_quick_writes_a_plot_tables_and_a_strict_summary_with_the_promotion_result(tmp_path, capsys):
    out = tmp_path / "hw"
    assert main(["hardware", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "with promotion every 128" in printed
    for name in ("ksweep.csv", "models.csv", "ksweep.png", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "INCOMPLETE").exists()
    summary = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert summary["status"] == "complete" and summary["deepseek_v3"]["K"] == 4096
    rows = list(csv.DictReader(open(out / "ksweep.csv")))
    configurations = 1 + len(QUICK.intervals)
    assert len(rows) == len(QUICK.Ks) * configurations * len(QUICK.distributions)
    for row in rows:  # the deterministic bound is never below the measured accumulation error
        assert float(row["bound_max"]) >= float(row["max"]) and float(row["bound_normwise"]) >= float(row["normwise"])
        assert int(row["overflow"]) == 0
    # positive operands: the accumulator grows and F = 13 bits truncate every product against it;
    # promotion every 128 restarts it, and the error stops growing with K
    uniform = {(r["configuration"], int(r["K"])): float(r["normwise"]) for r in rows if r["distribution"] == "uniform"}
    assert uniform["fp8 no promotion", 4096] > 10 * uniform["fp8 N_C=128", 4096]
    assert uniform["fp8 no promotion", 4096] > 4 * uniform["fp8 no promotion", 128]
    by = summary["by_distribution"]["uniform"]
    assert by["no_promotion"]["normwise"] == pytest.approx(uniform["fp8 no promotion", 4096])
    models = list(csv.DictReader(open(out / "models.csv")))
    assert {m["model"] for m in models} == {"network"} and all(m["finite"] == "True" for m in models)


def test_hardware_refuses_bad_choices_in_one_line(tmp_path, capsys):
    assert main(["hardware", "--quick", "--out", str(tmp_path / "a"), "--intervals", "100"]) == 2
    assert "multiple of the group length 32" in capsys.readouterr().err
    assert main(["hardware", "--quick", "--out", str(tmp_path / "b"), "--distributions", "cauchy"]) == 2
    assert "choose from" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Ks must be positive"):
        HardwareStudy(Ks=(0,))


def test_quantise_scales_to_the_formats_largest_number():
    X = np.asarray([[3.0, -1e-3], [0.5, 2.0]])
    Xq, s = quantise(X, "fp8_e4m3")
    assert s == np.float32(3.0 / 448.0) and np.max(np.abs(Xq)) == 448.0
    assert np.all(np.abs(Xq * s - X) <= 2.0**-4 * np.abs(X) + s * 2.0**-10)  # u |x| + s (half the smallest subnormal)
