"""The installed ``boundlab`` console script."""

import json
import shutil
import subprocess
import sys

import pytest

import boundlab
from boundlab.cli import main


def run_cli(*args):
    exe = shutil.which("boundlab")
    command = [exe, *args] if exe else [sys.executable, "-m", "boundlab", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_version_and_help_from_the_console_script():
    version = run_cli("--version")
    assert version.returncode == 0 and boundlab.__version__ in version.stdout
    usage = run_cli("--help")
    assert usage.returncode == 0 and "bench" in usage.stdout


def test_bench_json_reports_ratios_to_the_copy(capsys):
    assert main(["bench", "--only", "rounding", "--size", "20000", "--repeats", "1", "--no-peers", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {row["name"]: row for row in report["rounding"]}
    assert rows["jit(x * 1.0) float64"]["ratio"] == 1.0
    nearest = rows["round_to fp16 nearest, float64"]
    assert nearest["seconds"] > 0 and nearest["ratio"] == pytest.approx(
        nearest["seconds"] / rows["jit(x * 1.0) float64"]["seconds"])


def test_bad_format_is_a_one_line_error_with_status_2(capsys):
    assert main(["bench", "--size", "100", "--format", "fp12", "--no-peers"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown format 'fp12'" in err
