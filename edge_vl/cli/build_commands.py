"""Workstation commands: ``edge-vl build`` (data → bundle) and ``edge-vl search`` (the DAS search
alone). They need the ``build`` extra; in a runtime-only install they say so in one line."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import click

from edge_vl.choices import BUILD_PRECISIONS
from edge_vl.cli.options import (
    build_config,
    finetune_options,
    input_options,
    parse_indices,
    plan_options,
    reliability_options,
    train_options,
)
from edge_vl.config import BuildConfig, default
from edge_vl.errors import MissingExtraError

DEMO_DIR = Path("edge-vl-demo")


def require_build_extra(command: str) -> None:
    """A :class:`MissingExtraError` naming the extra, before anything imports torch."""
    if any(importlib.util.find_spec(m) is None for m in ("torch", "transformers")):
        raise MissingExtraError(command)


@click.command()
@input_options
@click.option("--out", type=click.Path(path_type=Path), help="Bundle directory to create.")
@click.option(
    "--skip-layers",
    callback=parse_indices,
    default=None,
    metavar="I,J,...",
    help="Skip exactly these layers (0-based), no search; '' skips none (adapters only).",
)
@plan_options
@train_options
@finetune_options
@reliability_options
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the bundle at --out (atomically; only a directory holding an edge-vl bundle is replaced).",
)
@click.option(
    "--sign-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Sign the bundle with this private key (`edge-vl keygen`); devices holding the public key "
    "can refuse unsigned or altered bundles.",
)
@click.option(
    "--release",
    "sign_release",
    type=click.IntRange(min=1),
    default=None,
    help="Release number signed with the bundle (with --sign-key); devices can refuse older ones "
    "[default: the build time, YYYYMMDDHHMMSS UTC].",
)
@click.option(
    "--restart", is_flag=True, help="Discard an unfinished build's checkpoints instead of resuming."
)
@click.option(
    "--precision",
    type=click.Choice(BUILD_PRECISIONS),
    default=default(BuildConfig, "precision"),
    show_default=True,
    help="Model precision in the bundle. fp16: weights stored in half the bytes (CPUs still compute "
    "in f32), checked against fp32 on the eval rows and fp32 kept if they lose more than "
    "--max-accuracy-drop. int8: NNCF post-training quantization calibrated on the training data; "
    "auto: measure fp32 and int8 here (eval accuracy, batch-1 latency) and keep the fastest within "
    "--max-accuracy-drop.",
)
@click.option(
    "--image-sizes",
    callback=parse_indices,
    default=None,
    metavar="A,B,...",
    help="Input sizes (pixels, square) the build may choose among: with --flops-budget or "
    "--latency-budget-ms it scores each size and its skip set on held-out rows and keeps the "
    "lowest estimated loss that meets the budget (one warm-up per size). Instead of --image-size.",
)
@click.option(
    "--text-buckets",
    callback=parse_indices,
    default=None,
    metavar="L,M,...",
    help="Also export these shorter text lengths (tokens); the Predictor runs each input on the "
    "shortest one that holds its text (answers unchanged: only padding is cut). Each length is a "
    "whole extra IR: the bundle, cold start and memory grow with every one, for a gain that is small "
    "when the image side dominates (the demo: 5 % latency for 3× the size). Off by default.",
)
@click.option(
    "--target-profile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A profile saved on the target device by `edge-vl bench --profile`: --precision auto/int8 "
    "quantize for the target's ISA and compare precisions by the latency predicted there, and the "
    "build fails if the target's runtime (default or legacy) could not load the bundle.",
)
@click.option(
    "--max-accuracy-drop",
    type=click.FloatRange(min=0, max=1),
    default=default(BuildConfig, "max_accuracy_drop"),
    show_default=True,
    help="Eval accuracy (fraction) fp16/int8/auto may lose against fp32; more is refused.",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=default(BuildConfig, "checkpoint_every"),
    show_default=True,
    help="Training steps between two checkpoints of the search and the fine-tune.",
)
@click.option(
    "--demo",
    is_flag=True,
    help="Run the demo: edge-vl-mini on easy-vqa (needs the 'demo' extra), about 30 minutes on 2 cores. "
    "Missing --model/--data/--eval-data/--out are filled in. Same as giving none of "
    "--model/--data/--eval-data.",
)
@click.option(
    "--quick",
    is_flag=True,
    help="The demo on a small subset in a few minutes; its accuracy is not representative.",
)
def build(out, skip_layers, demo, quick, **params) -> None:
    """Search which layers to skip (DAS), fine-tune adapters, export to OpenVINO and write a bundle
    and its report. Without --model/--data/--eval-data it runs the demo (see --demo).

    An interrupted build (Ctrl-C, SIGTERM) saves a checkpoint; rerun the same command to resume.
    """
    require_build_extra("edge-vl build")
    from edge_vl.pipeline import build as run_build

    if quick and (params["train_data"] is not None or params["eval_data"] is not None):
        raise click.UsageError(
            "--quick runs the demo on a small subset of easy-vqa; with your own data, leave it out "
            "(and shorten training with --epochs or --max-steps)"
        )
    demo = demo or quick or all(params[k] is None for k in ("model_dir", "train_data", "eval_data"))
    if demo:
        out = _demo_defaults(params, out, quick)
    if out is None:
        raise click.UsageError("missing option --out")
    result = run_build(build_config(params, out, skip_layers), echo=click.echo)
    m = result.manifest
    if m is None:  # a rank other than 0 under torchrun: rank 0 reports
        return
    click.echo(
        f"\ndone: {result.bundle}  (eval accuracy {m.metrics.eval_accuracy:.4f} on "
        f"{m.metrics.eval_examples} rows; skipped layers {list(m.architecture.skipped)}; "
        f"{m.cost.retained_fraction:.1%} of the full model's MACs)"
    )
    if demo:
        _demo_prediction(result.bundle, params["eval_data"])
        if quick:
            from edge_vl.demo import QUICK_DEMO

            click.echo(f"note: {QUICK_DEMO.caveat}")


@click.command()
@input_options
@plan_options
@train_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the scores, ranking, chosen set and per-round trace to this JSON file.",
)
def search(out, **params) -> None:
    """Run only the DAS search and print its ranking (which layers are most redundant); writes no
    bundle."""
    import tempfile

    require_build_extra("edge-vl search")
    from edge_vl.pipeline import prepare, read_data, skip_plan, stop_on_signals

    config = build_config(params, Path(tempfile.gettempdir()) / "edge-vl-search")
    if out is not None and out.resolve() in (config.train_data.resolve(), config.eval_data.resolve()):
        raise click.BadParameter(f"{out} is an input of the search; name another file", param_hint="--out")
    with tempfile.TemporaryDirectory(prefix="edge-vl-search-") as work, stop_on_signals() as should_stop:
        prep = prepare(config, read_data(config), Path(work), click.echo)
        plan = skip_plan(config, prep, Path(work), should_stop, click.echo)
    result = plan.search
    if result is None:
        click.echo(f"no search needed: skip {list(plan.skipped)}")
    else:
        # the estimator's per-layer score, higher: more redundant (the gates for the paper's)
        click.echo(f"layer  {result.estimator + ' score':<14}  name")
        for i in result.ranking:
            mark = "  skip" if i in plan.skipped else ""
            click.echo(f"{i:>5}  {result.scores[i]:+14.5f}  {prep.layer_names[i]}{mark}")
    if out is not None:
        from edge_vl.fileio import write_json_atomic
        from edge_vl.schema import to_json

        write_json_atomic(out, {"layers": prep.layer_names, **to_json(plan)})
        click.echo(f"saved: {out}")


def _demo_defaults(params: dict, out, quick: bool):
    """Fill what the user left out for the demo: edge-vl-mini, easy-vqa manifests, the demo's
    training lengths (options given on the command line win)."""
    from click.core import ParameterSource

    from edge_vl.demo import FULL_DEMO, QUICK_DEMO, write_easy_vqa_manifests

    settings = QUICK_DEMO if quick else FULL_DEMO
    name = "quick" if quick else "full"
    # under torchrun every rank writes the same manifests (atomically); only rank 0 says so
    say = click.echo if os.environ.get("RANK", "0") == "0" else (lambda _: None)
    if params["train_data"] is None or params["eval_data"] is None:
        data_dir = DEMO_DIR / f"data-{name}"
        say(f"demo: writing easy-vqa manifests to {data_dir}/")
        train_default, eval_default = write_easy_vqa_manifests(
            data_dir, train_size=settings.train_size, eval_size=settings.eval_size
        )
        params["train_data"] = params["train_data"] or train_default
        params["eval_data"] = params["eval_data"] or eval_default
    ctx = click.get_current_context()
    for key in ("epochs", "search_epochs", "search_rows", "batch_size", "text_buckets"):
        if ctx.get_parameter_source(key) == ParameterSource.DEFAULT:
            params[key] = getattr(settings, key)
    if out is None:
        out = DEMO_DIR / f"bundle-{name}"
        if out.exists() and not params.get("overwrite"):
            raise click.UsageError(f"{out} exists from an earlier demo run; add --overwrite to replace it")
    if settings.caveat:
        say(f"demo: {settings.caveat}")
    return out


def _demo_prediction(bundle: Path, eval_data: Path) -> None:
    from edge_vl.data import read_examples
    from edge_vl.runtime.predictor import Predictor

    example = read_examples(eval_data, check_images=False)[0]
    prediction = Predictor(bundle).predict(example.image, example.text)
    click.echo(
        f"\nexample: {example.image}\n  question: {example.text}\n  expected: {example.label}\n"
        f"  predicted: {prediction.label} ({prediction.score:.3f})"
    )
    click.echo(f'try it:  edge-vl predict {bundle} {example.image} "{example.text}"')
