"""The handlers of ``boundlab analyze | figure | reproduce | model | train | hardware``: each reads
its arguments, runs its study and prints where the results went."""

from __future__ import annotations

import argparse
import dataclasses
import os

from boundlab.output.run_folder import run_folder


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


def _cmd_decoder(args: argparse.Namespace) -> int:
    """``boundlab model smollm2``: the decoder study (``boundlab.experiments.decoder_study``)."""
    from boundlab.experiments import decoder_study

    for option in ("sentences", "variants", "fractions"):
        if getattr(args, option) is not None:
            raise ValueError(f"--{option} belongs to the encoder study; the decoder study takes --formats "
                             f"(arithmetics: {', '.join(decoder_study.ARITHMETICS)}), --layers and --quick")
    changes = dict(decoder_study.QUICK) if args.quick else {}
    changes["model"] = args.name
    if args.formats:
        changes["arithmetics"] = tuple(part.strip() for part in args.formats.split(","))
    if args.layers is not None:
        changes["layers"] = _at_least(args.layers, "layers", 1)
    if args.prompt is not None:
        changes["prompts"] = tuple(args.prompt)
    if args.steps is not None:
        changes["steps"] = _at_least(args.steps, "steps", 1)
    if args.tokens is not None:
        changes["text_tokens"] = _at_least(args.tokens, "tokens", 2)
    study = decoder_study.DecoderStudy(**changes)
    out = args.out = args.out or f"boundlab-model-{args.name}"
    with run_folder(out, f"model {args.name}", args.force):
        result = decoder_study.run(study, progress=not args.no_progress)  # ExtraMissing: exit 3 (main)
        headline = decoder_study.write(result, out)
    for name, numbers in headline.items():
        print(f"{name}: top-1 agreement {numbers['top1_agreement']:.3f}, KL {numbers['kl_mean']:.2e} nats, "
              f"perplexity {numbers['perplexity']:.4g} (float64 {numbers['perplexity_exact']:.4g})")
    print(f"model {args.name}: wrote {out}/summary.json, layers.png, outliers.png, divergence.png, advisor.png "
          f"and their CSVs")
    return 0


def _cmd_model(args: argparse.Namespace) -> int:
    _enable_x64()
    from boundlab.experiments import real_model
    from boundlab.models import MODELS

    if args.name not in MODELS:
        raise ValueError(f"unknown model {args.name!r}; boundlab knows {', '.join(MODELS)}")
    if args.name not in real_model.STUDY_MODELS:
        return _cmd_decoder(args)
    for option in ("prompt", "steps", "tokens"):
        if getattr(args, option) is not None:
            raise ValueError(f"--{option} belongs to the decoder study (smollm2); the encoder study takes --sentences")
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

    from boundlab.experiments.recipe_study import (
        QUICK_RECIPES,
        RecipeStudy,
        recipes_study,
    )

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
