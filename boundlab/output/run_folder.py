"""Output folders that cannot be mistaken for a finished run.

Every command that writes a folder (``figure``, ``reproduce``, ``model``, ``train``, ``analyze
--model``) runs inside ``run_folder``:

* a folder that already holds files (an earlier run, finished or not) is refused with a one-line
  message, unless ``force`` (``--force``), which empties it first and says so;
* while the command runs, the folder holds ``INCOMPLETE`` (what runs, since when, its process)
  and, until the command writes its own, a ``summary.json`` whose ``"status"`` is ``"running"``;
* when the command finishes, ``INCOMPLETE`` is removed and the top-level ``summary.json`` (if
  any) gets ``"status": "complete"``;
* when it is interrupted (SIGINT, SIGTERM: ``install_signal_handlers``) or fails, ``INCOMPLETE``
  stays and says so (``interrupted by SIGINT``, or the error), the placeholder ``summary.json``
  says ``"status": "interrupted"`` (or ``"failed"``), and whatever finished stays in place.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import sys
import threading

from boundlab.output.strict_json import write_json

MARKER = "INCOMPLETE"
SUMMARY = "summary.json"


class Interrupted(KeyboardInterrupt):
    """A termination signal turned into an exception, so that ``run_folder`` can mark the folder."""

    def __init__(self, name: str):
        super().__init__(name)
        self.signal_name = name


_received: list[str] = []  # the signals received since the handlers were installed
GRACE = 3.0  # seconds the main thread has to act on a signal before the watcher ends the run itself
_lock = threading.Lock()  # one writer of the ended marker: the main thread or the watcher
_active: list[dict] = []  # the folder being written: out, marker, summary, state, command
_signals = threading.Condition()  # guards _counts
_counts = {"seen": 0, "handled": 0}  # SIGINT/SIGTERM the watcher has read / the main thread's handler has run
_watch: dict = {}


def install_signal_handlers(watch: bool = False) -> None:
    """SIGTERM (and SIGINT) raise ``Interrupted`` in the main thread, as Ctrl-C raises
    KeyboardInterrupt, so that an interrupted run marks its folder before it exits.

    Python may swallow an exception raised by a signal handler (when the signal lands in a
    garbage-collection callback or a ``__del__``, it prints "Exception ignored" and goes on), so
    the signal is also remembered: ``checkpoint()`` (each chunk of a sweep, each progress step)
    and the end of ``run_folder`` raise it again.

    Python runs a handler only when the main thread is back in Python: inside a long XLA
    compilation or a long compiled program a Ctrl-C would wait for it (a minute, measured).  So
    with ``watch`` (the command-line program, not ``main`` called inside a notebook or a test) a
    watcher thread learns of the signal at once (``signal.set_wakeup_fd``); if the main thread
    has not acted on it within ``GRACE`` seconds, the watcher marks the folder interrupted,
    prints the command's one line and ends the process with 128 + the signal's number.  Each
    signal counts on its own: a second one while the main thread is stuck again (say, in compiled
    code during the cleanup after the first) is forced as well.  (Two signals that land before
    the main thread looks run its handler once, so the second counts as not acted upon: two
    Ctrl-Cs end the run within ``GRACE`` whatever the main thread does.)"""
    _received.clear()
    with _signals:
        _counts.update(seen=0, handled=0)

    def handler(number, frame):
        name = signal.Signals(number).name
        _received.append(name)
        with _signals:  # the main thread is back in Python and acts on it: the watcher stands down
            _counts["handled"] += 1
            _signals.notify_all()
        raise Interrupted(name)

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, handler)
    if watch and threading.current_thread() is threading.main_thread() and not _watch:
        read, write = os.pipe()
        os.set_blocking(write, False)
        previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        thread = threading.Thread(target=_watcher, args=(read,), name="boundlab-signal-watcher", daemon=True)
        _watch.update(read=read, write=write, previous=previous, thread=thread)
        thread.start()


def _watcher(read: int) -> None:
    while True:
        try:
            data = os.read(read, 1)
        except OSError:
            return
        if not data:  # the write end closed: the handlers were taken down
            return
        number = data[0]
        if number not in (signal.SIGINT, signal.SIGTERM):
            continue
        with _signals:  # each signal read needs a run of the handler of its own (which may come first)
            _counts["seen"] += 1
            seen = _counts["seen"]
            if _signals.wait_for(lambda: _counts["handled"] >= seen, GRACE):
                continue
        with _lock:
            name = signal.Signals(number).name
            run = _active[-1] if _active else None
            if run is not None:
                _mark(run, "interrupted", f"interrupted by {name}")
            command = run["command"].split()[0] if run is not None else "run"
            print(f"{interrupted_line(command, name, run and run['out'])}\n(the main thread was in compiled "
                  f"code; ended {GRACE:g} s after the signal)", file=sys.stderr, flush=True)
            os._exit(128 + number)


def interrupted_line(command: str, name: str, out: str | None) -> str:
    """The one line an interrupted command prints (naming its folder if it marked one)."""
    marked = out and os.path.exists(os.path.join(out, MARKER))
    return f"boundlab {command}: interrupted by {name}" + (
        f"; {out} is marked incomplete ({os.path.join(out, MARKER)})" if marked else "")


def forget_signals() -> None:
    """Forget the signals received (when the handlers are taken down again) and stop the watcher."""
    _received.clear()
    if _watch and threading.current_thread() is threading.main_thread():
        signal.set_wakeup_fd(_watch["previous"])
        os.close(_watch["write"])  # the watcher reads the end of the pipe and returns
        _watch["thread"].join(timeout=1)
        os.close(_watch["read"])
        _watch.clear()


def checkpoint() -> None:
    """Raise ``Interrupted`` if a signal arrived whose exception was swallowed (see above)."""
    if _received:
        raise Interrupted(_received[0])


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _write_json(path, data) -> None:
    write_json(path, data)  # atomic: a reader sees the old file or the new one


def prepare(out: str, force: bool = False) -> str | None:
    """Refuse a folder that holds an earlier run (ValueError, one line) unless ``force``; with
    ``force`` empty it.  Returns a sentence to print when an earlier run was replaced."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} is a file, not a folder")
    if not os.path.isdir(out) or not os.listdir(out):
        return None
    earlier = "an interrupted or failed run" if os.path.exists(os.path.join(out, MARKER)) else "an earlier run"
    if not force:
        raise ValueError(f"{out} already holds {earlier}; pass --force to replace it, or --out another folder")
    for entry in os.listdir(out):
        path = os.path.join(out, entry)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
    return f"replacing {earlier} in {out} (--force)"


@contextlib.contextmanager
def run_folder(out: str, command: str, force: bool = False):
    """Run the body with ``out`` marked incomplete (see the module docstring); yields ``out``."""
    replaced = prepare(out, force)
    if replaced:
        print(f"boundlab {command}: {replaced}", file=sys.stderr)
    os.makedirs(out, exist_ok=True)
    marker, summary = os.path.join(out, MARKER), os.path.join(out, SUMMARY)
    state = {"status": "running", "command": f"boundlab {command}", "argv": sys.argv, "started": _now(),
             "pid": os.getpid()}
    _write_json(marker, state)
    _write_json(summary, {**state, "note": "the run has not finished; this file is replaced when it does"})
    run = {"out": out, "marker": marker, "summary": summary, "state": state, "command": command}
    _active.append(run)
    try:
        yield out
        checkpoint()  # a swallowed signal: the run is not what the user let finish
    except BaseException as error:
        if isinstance(error, Interrupted):
            status, why = "interrupted", f"interrupted by {error.signal_name}"
        elif isinstance(error, KeyboardInterrupt):
            status, why = "interrupted", "interrupted by SIGINT"
        else:
            status, why = "failed", f"failed: {type(error).__name__}: {error}"
        with _lock:  # not while the watcher marks it
            _mark(run, status, why)
        raise
    finally:
        _active.remove(run)
    if _placeholder(summary):
        os.remove(summary)  # the command writes no top-level summary of its own
    elif os.path.exists(summary):
        with open(summary) as handle:
            data = json.load(handle)
        if isinstance(data, dict):
            _write_json(summary, {"status": "complete", **data})
    os.remove(marker)


def _mark(run: dict, status: str, why: str) -> None:
    """Write the ended marker (and the placeholder summary, if the command wrote none)."""
    out, marker, summary = run["out"], run["marker"], run["summary"]
    ended = {**run["state"], "status": status, "why": why, "ended": _now(), "kept": sorted(os.listdir(out))}
    _write_json(marker, ended)
    if _placeholder(summary):
        _write_json(summary, {**ended, "note": "the run did not finish; the files listed in 'kept' are what it "
                                               "wrote before it stopped"})


def _placeholder(path) -> bool:
    """Is ``path`` still the summary this module wrote (not the command's own)?"""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("status") == "running" and "pid" in data
