"""The ``boundlab`` command line: ``main(argv)`` parses (``parser``) and runs one command
(``commands``, ``bench_command``); a signal marks the run's folder incomplete."""

from __future__ import annotations

import signal
import sys
import threading

from boundlab.cli.parser import build_parser
from boundlab.output.run_folder import (
    forget_signals,
    install_signal_handlers,
    interrupted_line,
)

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    # SIGTERM, like Ctrl-C, marks an output folder incomplete (run_folder); the handlers are the
    # caller's again afterwards (main also runs inside other programs: tests, notebooks). As the
    # command-line program (argv from sys.argv) a signal also ends a run stuck in compiled code.
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
        previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
        install_signal_handlers(watch=argv is None)
    try:
        return args.run(args)
    except KeyboardInterrupt as error:
        name = getattr(error, "signal_name", "SIGINT")
        print(interrupted_line(args.command, name, getattr(args, "out", None)), file=sys.stderr)
        return 128 + int(getattr(signal.Signals, name))
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"boundlab {args.command}: error: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        if type(error).__name__ != "ExtraMissing":  # boundlab.models.ExtraMissing: an extra to install
            raise
        print(f"boundlab {args.command}: {error}", file=sys.stderr)
        return 3
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        forget_signals()

