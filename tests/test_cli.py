"""The installed ``boundlab`` console script."""

import json
import shutil
import subprocess
import sys

import pytest

import boundlab
from boundlab.cli import main

pytestmark = pytest.mark.fast_compile  # inequalities, tables, files: tests/conftest.py


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


def test_bench_only_takes_a_comma_separated_list_of_known_parts(capsys):
    from boundlab.cli.bench_command import BENCH_PARTS, _bench_parts

    assert _bench_parts("kernels, figure1") == {"kernels", "figure1"} and _bench_parts("model") == {"model"}
    assert set(BENCH_PARTS) >= {"rounding", "kernels", "figure1", "model", "training"}
    with pytest.raises(SystemExit) as stop:
        main(["bench", "--only", "kernels,figure9"])
    assert stop.value.code == 2 and "unknown part(s) figure9" in capsys.readouterr().err


def test_bad_format_is_a_one_line_error_with_status_2(capsys):
    assert main(["bench", "--size", "100", "--format", "fp12", "--no-peers"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown format 'fp12'" in err


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("argv, needles", [
    (["figure", "1", "--quick", "--size", "0"], ["--size must be >= 2"]),
    (["figure", "1", "--quick", "--inits", "0"], ["--inits must be >= 1"]),
    (["figure", "1", "--quick", "--precisions", "abc"], ["--precisions must be comma-separated integers"]),
    (["figure", "2", "--quick", "--depths", "0,5"], ["--depths must be integers >= 1"]),
    (["figure", "4", "--quick", "--layers", "0"], ["--layers must be >= 1"]),
    (["train", "--quick", "--widths", "1"], ["--widths must be integers >= 2"]),
])
def test_figure_and_train_arguments_are_checked_before_any_work(capsys, argv, needles):
    _one_line_error(capsys, argv, *needles)


def test_bad_case_files_are_named_in_one_line(capsys, tmp_path):
    import jax
    import numpy as np

    from boundlab import save_case
    from boundlab.models.paper import init

    params, X = init(jax.random.key(0), "figure1", d=3, n=2, D=4, L=1)
    text = tmp_path / "notes.npz"
    text.write_text("not an archive\n")
    err = _one_line_error(capsys, ["analyze", str(text)], "not an .npz archive")
    assert "pickle" not in err
    single = tmp_path / "x.npy"
    np.save(single, np.asarray(X))
    _one_line_error(capsys, ["analyze", str(single)], "single .npy array")
    empty = tmp_path / "empty.npz"
    save_case(empty, jax.tree.map(lambda a: a[:0], params), X)
    _one_line_error(capsys, ["analyze", str(empty)], "L = 0 layers")
    no_tokens = tmp_path / "no_tokens.npz"
    save_case(no_tokens, params, np.zeros((3, 0)))
    _one_line_error(capsys, ["analyze", str(no_tokens)], "n = 0 tokens", "X has shape (3, 0)")
    _one_line_error(capsys, ["analyze", str(tmp_path)], "a directory, not an .npz file")
    narrow = tmp_path / "narrow.npz"
    params1, X1 = init(jax.random.key(0), "figure1", d=1, n=2, D=4, L=1)
    save_case(narrow, params1, X1)
    _one_line_error(capsys, ["analyze", str(narrow)], "d >= 2")


def test_figure_configs_refuse_nonsense_from_the_api():
    import dataclasses

    from boundlab.experiments import Figure1, Figure2, Figure3

    with pytest.raises(ValueError, match="inits must be an integer >= 1"):
        dataclasses.replace(Figure1(), inits=0).check()
    with pytest.raises(ValueError, match="lambdas must be finite and positive"):
        dataclasses.replace(Figure2(), lambdas=(1.0, -2.0)).check()
    with pytest.raises(ValueError, match="scales must be finite and positive"):
        dataclasses.replace(Figure3(), scales=()).check()


MODEL_SOURCE = '''
import jax, jax.numpy as jnp
from flax import nnx


class Small(nnx.Module):
    def __init__(self, rngs):
        self.norm = nnx.LayerNorm(4, rngs=rngs)
        self.up, self.down = nnx.Linear(4, 8, rngs=rngs), nnx.Linear(8, 4, rngs=rngs)

    def __call__(self, x):
        return x + self.down(jax.nn.relu(self.up(self.norm(x))))


def make_model():
    return Small(nnx.Rngs(0))
'''


def test_analyze_a_saved_user_model_writes_its_report(tmp_path, capsys):
    import importlib.util
    import json

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from boundlab.analysis import model_diagnostics

    from boundlab.models import save_state

    source = tmp_path / "mymodel.py"
    source.write_text(MODEL_SOURCE)
    spec = importlib.util.spec_from_file_location("mymodel", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trained = module.make_model()
    trained.up.kernel[...] = 3 * trained.up.kernel[...]  # weights the factory alone would not give
    save_state(trained, tmp_path / "state.npz")
    x = np.asarray(jax.random.normal(jax.random.key(0), (2, 3, 4)), np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "report"
    argv = ["analyze", "--model", f"{source}:make_model", "--state", str(tmp_path / "state.npz"), "--input",
            str(tmp_path / "x.npy"), "--formats", "bf16", "--no-conditions", "--no-first-order", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "norm:layer_norm" in printed and "model:perceptron" in printed and (out / "report.md").exists()
    summary = json.loads((out / "summary.json").read_text())
    expected = model_diagnostics(trained, jnp.asarray(x), formats=("bf16",), first_order=False, condition=False)
    assert summary["output"]["error_normwise/bf16"] == float(expected.output["error_normwise/bf16"])
    assert main(["analyze", "--model", f"{source}:nothing", "--input", str(tmp_path / "x.npy")]) == 2
    assert "has no function 'nothing'" in capsys.readouterr().err
    wrong = nnx.Linear(4, 4, rngs=nnx.Rngs(0))
    save_state(wrong, tmp_path / "wrong.npz")
    assert main(argv[:3] + ["--state", str(tmp_path / "wrong.npz")] + argv[5:]) == 2
    assert "has no array" in capsys.readouterr().err


TINY_FIGURE = ["figure", "3", "--quick", "--inits", "2", "--size", "2", "--precisions", "12", "--no-progress"]


def test_an_earlier_run_is_replaced_only_with_force_and_a_finished_run_carries_no_marker(tmp_path, capsys):
    out = tmp_path / "figure"
    out.mkdir()
    (out / "old.csv").write_text("an earlier run\n")
    assert main(TINY_FIGURE + ["--out", str(out)]) == 2  # refused before any work, the earlier run intact
    assert "already holds an earlier run; pass --force" in capsys.readouterr().err
    assert (out / "old.csv").exists() and not (out / "INCOMPLETE").exists()
    assert main(TINY_FIGURE + ["--out", str(out), "--force"]) == 0
    assert "replacing an earlier run" in capsys.readouterr().err
    assert not (out / "old.csv").exists() and not (out / "INCOMPLETE").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["figure"] == 3
    (out / "INCOMPLETE").write_text("{}")  # what an interrupted run leaves: named as such
    assert main(TINY_FIGURE + ["--out", str(out)]) == 2
    assert "already holds an interrupted or failed run" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(TINY_FIGURE + ["--out", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_an_interrupted_reproduce_says_so_in_its_marker_index_and_exit_status(tmp_path, capsys, monkeypatch):
    from boundlab.experiments import reproduce as reproduce_module

    def interrupted(config, progress=True):
        raise KeyboardInterrupt  # Ctrl-C during the first figure

    monkeypatch.setitem(reproduce_module.RUNNERS, 1, interrupted)
    out = tmp_path / "run"
    assert main(["reproduce", "--out", str(out), "--no-progress"]) == 130
    assert f"interrupted by SIGINT; {out} is marked incomplete" in capsys.readouterr().err
    marker = json.loads((out / "INCOMPLETE").read_text())
    assert marker["status"] == "interrupted" and marker["why"] == "interrupted by SIGINT"
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    assert (out / "index.md").read_text().splitlines()[2].startswith("**INCOMPLETE")


SPIN = """
import sys, time, jax
from jax import lax
from boundlab.output.run_folder import Interrupted, install_signal_handlers, run_folder
install_signal_handlers(watch=True)
spin = jax.jit(lambda n: lax.fori_loop(0, n, lambda i, x: x * 1.0000001 + 1e-9, 1.0))
spin(3).block_until_ready()
"""
STUCK = SPIN + """
with run_folder(sys.argv[1], "figure"):
    spin(2**31 - 1).block_until_ready()  # seconds to minutes in compiled code, where no Python handler runs
"""
STUCK_AGAIN = SPIN + """
with run_folder(sys.argv[1], "figure"):
    try:
        while True:
            time.sleep(0.01)  # in Python: the handler acts on the first signal at once
    except Interrupted:
        print("handled", flush=True)
        spin(2**31 - 1).block_until_ready()  # a cleanup stuck in compiled code
"""


def _signalled(script, out, first_signal_after):
    """Run ``script`` on the folder ``out``; once it holds INCOMPLETE, send SIGTERM, and a second
    one once ``first_signal_after`` (a line on stdout) if given. -> (exit status, stderr, seconds
    from the last signal to the exit)."""
    import os
    import signal
    import time

    process = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    deadline = time.monotonic() + 120
    while not (out / "INCOMPLETE").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # inside the compiled loop (or the Python one)
    process.send_signal(signal.SIGTERM)
    if first_signal_after:
        assert process.stdout.readline().strip() == first_signal_after
        time.sleep(0.5)  # inside the compiled cleanup
        process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, err = process.communicate(timeout=120)
    return process.returncode, err, time.monotonic() - sent


@pytest.mark.parametrize("script, first_signal_after", [(STUCK, None), (STUCK_AGAIN, "handled")],
                         ids=["stuck", "stuck-again-in-the-cleanup"])
def test_a_signal_while_the_main_thread_is_in_compiled_code_ends_the_run_within_the_grace(
        tmp_path, script, first_signal_after):
    from boundlab.output.run_folder import GRACE

    out = tmp_path / "stuck"
    status, err, waited = _signalled(script, out, first_signal_after)
    assert status == 143, err
    assert f"boundlab figure: interrupted by SIGTERM; {out} is marked incomplete ({out}/INCOMPLETE)" in err.splitlines()
    assert "the main thread was in compiled code" in err and waited < GRACE + 30  # not the loop's minutes
    marker = json.loads((out / "INCOMPLETE").read_text())
    assert marker["status"] == "interrupted" and marker["why"] == "interrupted by SIGTERM"
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"


@pytest.mark.parametrize("name, status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_during_a_figure_run_leaves_a_folder_marked_incomplete(tmp_path, name, status):
    import os
    import signal
    import time

    out = tmp_path / "figure"
    env = {**os.environ, "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "boundlab", "figure", "1", "--quick", "--out", str(out),
                                "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "INCOMPLETE").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (out / "INCOMPLETE").exists(), process.communicate()
    process.send_signal(getattr(signal, name))
    _, err = process.communicate(timeout=300)
    assert process.returncode == status, err
    # the one line (a warning from the interpreter's shutdown may follow it, e.g. leaked semaphores)
    assert f"boundlab figure: interrupted by {name}; {out} is marked incomplete ({out}/INCOMPLETE)" in \
        err.strip().splitlines()
    marker = json.loads((out / "INCOMPLETE").read_text())
    assert marker["status"] == "interrupted" and marker["why"] == f"interrupted by {name}" and "ended" in marker
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "figure" not in summary  # not a finished figure's summary
