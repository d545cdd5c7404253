"""Progress on long work: a rich bar on a terminal, plain log lines in a pipe or a log file."""

from __future__ import annotations

from boundlab.output.run_folder import checkpoint


class ProgressBar:
    """Progress on stderr: a rich bar on a terminal; plain log lines otherwise (a pipe or a log
    file gets "description: k/N (s)" at about every tenth of the work, never blank lines).
    ``status(text)`` says what is happening now (e.g. compiling) without advancing."""

    def __init__(self, total, description):
        import sys
        import time

        self._total, self._done, self._description = total, 0, description or "sweep"
        self._start, self._clock = time.perf_counter(), time.perf_counter
        self._next_report = max(1, total // 10)
        self._terminal = sys.stderr.isatty()
        self._progress = None
        if self._terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), transient=True)
            self._progress.start()
            self._task = self._progress.add_task(self._description, total=total)
        else:
            self._log(f"{self._description}: 0/{total}")

    def _log(self, text):
        import sys

        print(f"{text} ({self._clock() - self._start:.0f} s)", file=sys.stderr, flush=True)

    def status(self, text):
        if self._progress is not None:
            self._progress.update(self._task, description=f"{self._description}: {text}")
        else:
            self._log(f"{self._description}: {text}")

    def update(self, advance, description=None):
        checkpoint()
        self._done += advance
        if description is not None:
            self._description = description
        if self._progress is not None:
            self._progress.update(self._task, advance=advance, description=self._description)
        elif self._done >= self._next_report or self._done >= self._total:
            self._log(f"{self._description}: {self._done}/{self._total}")
            self._next_report = self._done + max(1, self._total // 10)

    def close(self):
        if self._progress is not None:
            self._progress.stop()
