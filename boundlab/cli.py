"""The ``boundlab`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys


def _version() -> str:
    from boundlab import __version__

    return __version__


def _cmd_bench(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from boundlab.benchmarks import rounding_benchmark

    timings = rounding_benchmark(size=args.size, fmt=args.format, repeats=args.repeats, peers=not args.no_peers)
    if args.json:
        json.dump({"device": str(jax.devices()[0]), "size": args.size, "format": args.format,
                   "rounding": [dataclasses.asdict(t) for t in timings]}, sys.stdout, indent=2)
        print()
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"rounding {args.size:.0e} values to {args.format} on {jax.devices()[0]}")
    for column in ("what", "best s", "first call s", "ratio to jit(x*1.0)", "note"):
        table.add_column(column)
    for t in timings:
        table.add_row(t.name, f"{t.seconds:.4f}", f"{t.first_call_seconds:.3f}",
                      "" if t.ratio is None else f"{t.ratio:.2f}", t.note)
    Console(width=120).print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boundlab",
        description="Round-off analysis of transformers: emulated low-precision arithmetic, "
        "condition numbers and the rounding-error bounds of Budzinskiy et al.",
    )
    parser.add_argument("--version", action="version", version=f"boundlab {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    bench = commands.add_parser("bench", help="time rounding against a jitted copy (ratios in one process)")
    bench.add_argument("--size", type=int, default=10**7, help="number of float64 values (default 1e7)")
    bench.add_argument("--format", default="fp16", help="target format (default fp16)")
    bench.add_argument("--repeats", type=int, default=5, help="timed repeats; the best is kept")
    bench.add_argument("--no-peers", action="store_true", help="skip pychop and gfloat even if installed")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.set_defaults(run=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"boundlab {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
