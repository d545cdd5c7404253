"""``boundlab bench``: which parts to time, the timing run, and its table."""

from __future__ import annotations

import argparse
import json
import sys

BENCH_PARTS = ("rounding", "forward", "stochastic", "theorem", "figure1", "analyze", "diagnostics", "emulate",
               "kernels", "model", "decoder", "soak", "hardware", "training")


def _bench_parts(text: str) -> frozenset[str]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in parts if part not in BENCH_PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(unknown) or repr(text)}; "
                                         f"choose from {', '.join(BENCH_PARTS)}")
    return frozenset(parts)


def _cmd_bench(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from boundlab.bench import (
        analyze_benchmark,
        decoder_benchmark,
        diagnostics_benchmark,
        emulate_benchmark,
        figure1_benchmark,
        forward_benchmark,
        hardware_benchmark,
        kernels_benchmark,
        model_benchmark,
        rounding_benchmark,
        soak_benchmark,
        stochastic_benchmark,
        theorem_benchmark,
        training_benchmark,
    )

    if args.quick:
        # rounding keeps 1e7 values (smaller arrays measure call overhead, not throughput)
        args.batch, args.layers = min(args.batch, 500), min(args.layers, 10)
    sections = {}

    def wanted(part: str, default: bool = False) -> bool:  # default: in a run without --only
        return default if args.only is None else part in args.only

    if wanted("rounding", default=True):
        sections["rounding"] = (f"rounding {args.size:.0e} values to {args.format}", "ratio to jit(x*1.0)",
                                rounding_benchmark(size=args.size, fmt=args.format, repeats=args.repeats,
                                                   peers=not args.no_peers))
    if wanted("forward", default=True):
        sections["forward"] = (f"transformer forward, {args.batch} initialisations, L = {args.layers}",
                               "ratio to Exact()",
                               forward_benchmark(batch=args.batch, L=args.layers, fmt=args.emulate,
                                                 repeats=max(1, args.repeats // 2)))
    if wanted("stochastic", default=True):
        batch, layers = (200, 10) if args.quick else (1000, 40)
        sections["stochastic"] = (f"stochastic vs round-to-nearest forward, {batch} initialisations, L = {layers}",
                                  "ratio to nearest", stochastic_benchmark(batch=batch, L=layers,
                                                                           repeats=max(1, args.repeats // 2)))
    if wanted("theorem", default=True):
        layers = 10 if args.quick else 40
        sections["theorem"] = (f"Theorem 4.30 on 64 Figure 1 networks, L = {layers}", "ratio to exact forward",
                               theorem_benchmark(L=layers, repeats=args.repeats))
    if wanted("figure1", default=True):
        inits, layers = (500, 10) if args.quick else (5000, 40)
        sections["figure1"] = (f"Figure 1 sweep, {inits} initialisations, L = {layers}, t = 12, 16, 20, 24",
                               "ratio to float64 sweep", figure1_benchmark(inits=inits, L=layers))
    if wanted("analyze", default=True):
        layers = 10 if args.quick else 40
        sections["analyze"] = (f"analyze, one case, d = n = D = 20, L = {layers}, t24 (first call compiles)",
                               "ratio to one emulated forward", analyze_benchmark(L=layers, repeats=max(1, args.repeats // 2)))
    if wanted("diagnostics", default=True):
        sections["diagnostics"] = ("in-loop diagnostics vs one training step (boundlab train's classifier, d = 16)",
                                   "ratio to one training step", diagnostics_benchmark(repeats=args.repeats))
    if wanted("emulate", default=True):
        batch, layers = (200, 10) if args.quick else (1000, 40)
        sections["emulate"] = (f"emulate(f) of the paper's network in plain jnp vs forward, {batch} inits, d = 20, "
                               f"L = {layers}; first_order of one network", "ratio to forward(..., Emulated)",
                               emulate_benchmark(batch=batch, L=layers, repeats=args.repeats))
    if wanted("model", default=_models_available()):
        count = 8 if args.quick else 32
        sections["model"] = (f"MiniLM-L6, {count} sentences x 32 tokens (the models extra)", "ratio to exact float64",
                             model_benchmark(sentences=count, repeats=max(1, args.repeats // 2)))
    if wanted("decoder"):  # not in the default run: minutes of compilation on the 30-layer model
        tokens = 32 if args.quick else 128
        sections["decoder"] = (f"decoder LLM forward, {tokens} tokens; emulate, first_order, generation",
                               "ratio to exact float64", decoder_benchmark(tokens=tokens, steps=8 if args.quick else 32,
                                                                           repeats=max(1, args.repeats // 2)))
    if wanted("soak"):  # not in the default run: minutes, and it measures memory, not speed
        calls = 50 if args.quick else 200
        sections["soak"] = (f"soak: analyze x {calls} on fresh cases, diagnostics in an nnx.jit loop",
                            "resident memory end / after warm-up", soak_benchmark(calls=calls, warm_up=min(20, calls // 4)))
    if wanted("training"):  # not in the default run: each recipe's step compiles
        sections["training"] = ("emulated training steps (boundlab.training) vs the native float32 step",
                                "ratio to native float32", training_benchmark(repeats=args.repeats))
    if wanted("hardware"):  # not in the default run: a minute of matrix-unit emulation
        size, K = (64, 1024) if args.quick else (256, 4096)
        sections["hardware"] = (f"matrix unit: C = A B, {size} x {K} x {size}, Hopper wgmma FP8", "ratio to boundlab's unit",
                                hardware_benchmark(m=size, n=size, K=K, repeats=args.repeats))
    if wanted("kernels"):  # not in the default run: on the CPU Pallas only interprets
        sections["kernels"] = ("rounded matmul: XLA path vs the Pallas kernel", "ratio to the XLA path",
                               kernels_benchmark(size=64 if args.quick else 256, repeats=args.repeats,
                                                 **_kernel_goal_sizes(args.quick)))
    device = str(jax.devices()[0])
    if args.json:
        report = {"device": device, "jax": jax.__version__, **{key: [t.to_dict() for t in rows]
                                       for key, (_, _, rows) in sections.items()}}
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    for title, ratio_name, rows in sections.values():
        table = Table(title=f"{title} on {device}")
        for column in ("what", "best s", "first call s", ratio_name, "goal", "met", "note"):
            table.add_column(column)
        for t in rows:
            met = {None: "", True: "yes", False: "no"}[t.met]
            table.add_row(t.name, f"{t.seconds:.4f}", f"{t.first_call_seconds:.3f}",
                          "" if t.ratio is None else f"{t.ratio:.2f}", t.goal, met, t.note)
        console.print(table)
    return 0


def _kernel_goal_sizes(quick: bool) -> dict:
    """The kernels' GPU speed goals (K = 768; a GPT-2-sized layer): compiled kernels only, since on the CPU
    Pallas interprets, which at these sizes takes hours."""
    from boundlab.kernels.common import on_accelerator

    if not on_accelerator():
        return {}
    return {"wide": (256, 768, 256) if quick else (1024, 768, 1024),
            "layer": (192, 256, 768) if quick else (768, 1024, 3072)}


def _models_available() -> bool:
    from boundlab.models import available

    return available()
