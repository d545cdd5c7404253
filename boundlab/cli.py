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
    from boundlab.benchmarks import forward_benchmark, rounding_benchmark

    if args.quick:
        # rounding keeps 1e7 values (smaller arrays measure call overhead, not throughput)
        args.batch, args.layers = min(args.batch, 500), min(args.layers, 10)
    sections = {}
    if args.only in (None, "rounding"):
        sections["rounding"] = (f"rounding {args.size:.0e} values to {args.format}", "ratio to jit(x*1.0)",
                                rounding_benchmark(size=args.size, fmt=args.format, repeats=args.repeats,
                                                   peers=not args.no_peers))
    if args.only in (None, "forward"):
        sections["forward"] = (f"transformer forward, {args.batch} initialisations, L = {args.layers}",
                               "ratio to Exact()",
                               forward_benchmark(batch=args.batch, L=args.layers, fmt=args.emulate,
                                                 repeats=max(1, args.repeats // 2)))
    device = str(jax.devices()[0])
    if args.json:
        report = {"device": device, **{key: [dataclasses.asdict(t) for t in rows]
                                       for key, (_, _, rows) in sections.items()}}
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    for title, ratio_name, rows in sections.values():
        table = Table(title=f"{title} on {device}")
        for column in ("what", "best s", "first call s", ratio_name, "note"):
            table.add_column(column)
        for t in rows:
            table.add_row(t.name, f"{t.seconds:.4f}", f"{t.first_call_seconds:.3f}",
                          "" if t.ratio is None else f"{t.ratio:.2f}", t.note)
        console.print(table)
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from boundlab.analysis import analyze
    from boundlab.interchange import load_case

    params, X = load_case(args.case)
    result = analyze(params, X, args.format, args.norm, mode=args.mode, accumulation=args.accumulation,
                     key=jax.random.key(args.seed) if args.mode == "stochastic" else None,
                     conditions=not args.no_conditions)
    if args.json:
        print(result.to_json(indent=1))
    else:
        print(result.table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boundlab",
        description="Round-off analysis of transformers: emulated low-precision arithmetic, "
        "condition numbers and the rounding-error bounds of Budzinskiy et al.",
    )
    parser.add_argument("--version", action="version", version=f"boundlab {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    bench = commands.add_parser("bench", help="time rounding and the emulated forward (ratios in one process)")
    bench.add_argument("--only", choices=("rounding", "forward"), help="run one part only")
    bench.add_argument("--quick", action="store_true", help="a small forward (500 inits, L = 10)")
    bench.add_argument("--size", type=int, default=10**7, help="number of float64 values (default 1e7)")
    bench.add_argument("--format", default="fp16", help="rounding target format (default fp16)")
    bench.add_argument("--batch", type=int, default=5000, help="initialisations in the forward (default 5000)")
    bench.add_argument("--layers", type=int, default=40, help="layers L in the forward (default 40)")
    bench.add_argument("--emulate", default="t10", help="format of the emulated forward (default t10)")
    bench.add_argument("--repeats", type=int, default=5, help="timed repeats; the best is kept")
    bench.add_argument("--no-peers", action="store_true", help="skip pychop and gfloat even if installed")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.set_defaults(run=_cmd_bench)

    analyze = commands.add_parser("analyze", help="every Section 4 bound beside the measured error, for one case",
                                  description="Read an interchange file (.npz with Wq, Wk, Wv, A1, b1, A2, b2 "
                                  "stacked over layers, and X; float64), emulate the network, and print each bound of "
                                  "the paper beside the error it bounds, the condition numbers and the flags.")
    analyze.add_argument("case", help="interchange .npz file")
    analyze.add_argument("--format", default="fp16", help="emulated format (fp16, bf16, t10, ...; default fp16)")
    analyze.add_argument("--norm", choices=("layer", "rms"), default="layer", help="layer norm (7) or RMS norm (10)")
    analyze.add_argument("--mode", default="nearest", help="rounding mode (default nearest)")
    analyze.add_argument("--accumulation", default="recursive", help="recursive (the paper's), pairwise or blocked")
    analyze.add_argument("--seed", type=int, default=0, help="seed for stochastic rounding")
    analyze.add_argument("--no-conditions", action="store_true", help="skip the condition numbers (faster)")
    analyze.add_argument("--json", action="store_true", help="print JSON keyed by statement names")
    analyze.set_defaults(run=_cmd_analyze)
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
