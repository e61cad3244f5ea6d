"""The ``edge-vl`` command. Heavy imports (torch, transformers) happen inside the commands that
need them, so ``predict``, ``info``, ``bench`` and ``--help`` stay light.

Exit codes: 0 success, 1 runtime failure, 2 bad input (usage, data, bundle, model).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from edge_vl._version import __version__
from edge_vl.errors import EdgeVLError

DEMO_DIR = Path("edge-vl-demo")
#: the model used when --model is not given (shipped inside edge-vl)
DEFAULT_MODEL = "edge-vl-mini"


class _Group(click.Group):
    """Turns :class:`EdgeVLError` into a one-line message and the error's exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgeVLError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge-vl")
def cli() -> None:
    """edge-vl: adapt a vision-language model with DAS (skip redundant layers, train light
    adapters) and run it on CPUs with OpenVINO.

    \b
    Typical flow:
      edge-vl build --model DIR --data train.jsonl --eval-data val.jsonl --out BUNDLE
      edge-vl predict BUNDLE photo.png "what color is the shape?"
      edge-vl info BUNDLE
      edge-vl bench BUNDLE
    """


def _parse_layers(ctx, param, value: str | None) -> list[int] | None:
    """Comma-separated distinct non-negative integers (layer indices, text lengths), sorted."""
    if value is None:
        return None
    try:
        layers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like '1,3', got {value!r}") from None
    if len(set(layers)) != len(layers) or any(v < 0 for v in layers):
        raise click.BadParameter(f"expected distinct non-negative integers, got {value!r}")
    return sorted(layers)


def _options(*decorators):
    def apply(f):
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


input_options = _options(
    click.option(
        "--model",
        "model_dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Local Hugging Face checkpoint directory (config.json, weights, tokenizer), loaded offline; "
        "or a model shipped with edge-vl by name [default: edge-vl-mini].",
    ),
    click.option(
        "--data",
        "train_data",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Training manifest: JSONL or CSV rows with 'image', 'text' and 'label'.",
    ),
    click.option(
        "--eval-data",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Evaluation manifest, same format; its accuracy goes into the bundle's manifest.",
    ),
)

plan_options = _options(
    click.option(
        "--skip-count",
        type=click.IntRange(min=0),
        default=None,
        help="How many layers the DAS search skips [default: a third of the skippable layers].",
    ),
    click.option("--skip", "skip_count_alias", type=click.IntRange(min=0), default=None, hidden=True),
    click.option(
        "--flops-budget",
        type=click.FloatRange(min=0, max=1, min_open=True),
        default=None,
        help="Skip enough layers that the retained model uses at most this fraction of the full "
        "model's MACs; the search picks which.",
    ),
    click.option(
        "--latency-budget-ms",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Skip enough layers to meet this batch-1 latency on this machine (measured on the "
        "exported graph); the search picks which.",
    ),
    click.option(
        "--search-mode",
        type=click.Choice(["clean", "paper"]),
        default="clean",
        show_default=True,
        help="clean: eval-mode rewards on a fresh held-out batch per round; paper: the authors' "
        "train-mode rewards on one fixed batch.",
    ),
    click.option(
        "--search-epochs",
        type=click.IntRange(min=2),
        default=3,
        show_default=True,
        help="Search length in epochs (the first is warm-up without gate updates).",
    ),
    click.option(
        "--search-rows",
        type=click.IntRange(min=1),
        default=None,
        help="Train the search on at most this many training rows (a seeded subset); default all.",
    ),
    click.option(
        "--das-turn",
        type=click.IntRange(min=1),
        default=10,
        show_default=True,
        help="Training steps between two bandit rounds.",
    ),
    click.option(
        "--gate-lr",
        type=click.FloatRange(min=0, min_open=True),
        default=1.0,
        show_default=True,
        help="Gate learning rate η of the bandit update (the authors' 1.0; rewards exp(-loss) are small "
        "when the loss is large, so gates move slowly).",
    ),
    click.option(
        "--das-step",
        type=click.IntRange(min=1),
        default=3,
        show_default=True,
        help="Distinct candidate skip sets scored per round.",
    ),
)

train_options = _options(
    click.option(
        "--epochs",
        type=click.FloatRange(min=0, min_open=True),
        default=3.0,
        show_default=True,
        help="Fine-tuning epochs over the training data.",
    ),
    click.option(
        "--max-steps",
        type=click.IntRange(min=1),
        default=None,
        help="Stop fine-tuning after this many optimizer steps (overrides --epochs).",
    ),
    click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True),
    click.option(
        "--lr",
        type=click.FloatRange(min=0, min_open=True),
        default=1e-3,
        show_default=True,
        help="Adapter learning rate (the head uses 10x).",
    ),
    click.option(
        "--loss",
        type=click.Choice(["cross-entropy", "vqa-bce"]),
        default="cross-entropy",
        show_default=True,
        help="Task loss. vqa-bce is the DAS paper's (BCE x labels, sigmoid scores); cross-entropy "
        "learns rare answers much faster on single-answer data.",
    ),
    click.option(
        "--prompts",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="Label prompts (JSON object label → prompt, or 'label<TAB>prompt' lines): classify images "
        "against the prompts' text embeddings (CLIP). The bundle then takes images only; labels may be "
        "prompt-only (zero-shot).",
    ),
    click.option(
        "--prompt-template",
        default=None,
        metavar="TEXT",
        help="A prompt for every training label, '{}' standing for the label, e.g. 'a photo of a {}' "
        "(--prompts entries win).",
    ),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--quiet", is_flag=True, help="No progress bars."),
)


def _build_config(params: dict, out: Path, skip_layers: list[int] | None = None):
    from edge_vl.bench import read_target_profile
    from edge_vl.build import BuildConfig
    from edge_vl.data import read_label_prompts
    from edge_vl.finetune import TrainConfig
    from edge_vl.search import SearchConfig

    flags = {"train_data": "--data", "eval_data": "--eval-data"}
    missing = [flag for key, flag in flags.items() if params[key] is None]
    if missing:
        raise click.UsageError(f"missing option(s) {', '.join(missing)}")
    try:
        return BuildConfig(
            model_dir=params["model_dir"] or DEFAULT_MODEL,
            train_data=params["train_data"],
            eval_data=params["eval_data"],
            out=out,
            skip_layers=skip_layers,
            skip_count=params["skip_count"]
            if params["skip_count"] is not None
            else params["skip_count_alias"],
            flops_budget=params["flops_budget"],
            latency_budget_ms=params["latency_budget_ms"],
            search=SearchConfig(
                epochs=params["search_epochs"],
                das_turn=params["das_turn"],
                das_step=params["das_step"],
                gate_lr=params["gate_lr"],
                mode=params["search_mode"],
                max_rows=params["search_rows"],
            ),
            train=TrainConfig(
                epochs=params["epochs"],
                max_steps=params["max_steps"],
                batch_size=params["batch_size"],
                lr=params["lr"],
                loss=params["loss"],
                seed=params["seed"],
            ),
            overwrite=params.get("overwrite", False),
            restart=params.get("restart", False),
            checkpoint_every=params.get("checkpoint_every", 50),
            precision=params.get("precision", "fp32"),
            prompts=read_label_prompts(params["prompts"]) if params.get("prompts") else None,
            prompt_template=params.get("prompt_template"),
            target_profile=(
                read_target_profile(params["target_profile"]) if params.get("target_profile") else None
            ),
            text_buckets=params.get("text_buckets") or (),
            max_accuracy_drop=params.get("max_accuracy_drop", 0.01),
            sign_key=params.get("sign_key"),
            progress=not params["quiet"],
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None


@cli.command()
@input_options
@click.option("--out", type=click.Path(path_type=Path), help="Bundle directory to create.")
@click.option(
    "--skip-layers",
    callback=_parse_layers,
    default=None,
    metavar="I,J,...",
    help="Skip exactly these layers (0-based), no search; '' skips none (adapters only).",
)
@plan_options
@train_options
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
    "--restart", is_flag=True, help="Discard an unfinished build's checkpoints instead of resuming."
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8", "auto"]),
    default="fp32",
    show_default=True,
    help="Model precision in the bundle. int8: NNCF post-training quantization calibrated on the "
    "training data; auto: measure fp32 and int8 here (eval accuracy, batch-1 latency) and keep the "
    "fastest within --max-accuracy-drop. fp16 halves the file; CPUs still compute in f32.",
)
@click.option(
    "--text-buckets",
    callback=_parse_layers,
    default=None,
    metavar="L,M,...",
    help="Also export these shorter text lengths (tokens); the Predictor runs each input on the "
    "shortest one that holds its text. Answers are unchanged: only padding is cut.",
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
    default=0.01,
    show_default=True,
    help="Eval accuracy (fraction) int8/auto may lose against fp32; more is refused.",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=50,
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
    from edge_vl.build import build as run_build

    demo = demo or quick or all(params[k] is None for k in ("model_dir", "train_data", "eval_data"))
    if demo:
        out = _demo_defaults(params, out, quick)
    if out is None:
        raise click.UsageError("missing option --out")
    result = run_build(_build_config(params, out, skip_layers), echo=click.echo)
    m = result.manifest
    click.echo(
        f"\ndone: {result.bundle}  (eval accuracy {m['metrics']['eval_accuracy']:.4f} on "
        f"{m['metrics']['eval_examples']} rows; skipped layers {m['architecture']['skipped']}; "
        f"{m['cost']['retained_fraction']:.1%} of the full model's MACs)"
    )
    if demo:
        _demo_prediction(result.bundle, params["eval_data"])
        if quick:
            from edge_vl.demo import QUICK_DEMO

            click.echo(f"note: {QUICK_DEMO.caveat}")


@cli.command()
@input_options
@plan_options
@train_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the gates, ranking, chosen set and per-round trace to this JSON file.",
)
def search(out, **params) -> None:
    """Run only the DAS search and print the gates (which layers are most redundant)."""
    import tempfile

    from edge_vl.build import prepare, read_data, skip_plan, stop_on_signals

    config = _build_config(params, Path(tempfile.gettempdir()) / "edge-vl-search")
    if out is not None and out.resolve() in (config.train_data.resolve(), config.eval_data.resolve()):
        raise click.BadParameter(f"{out} is an input of the search; name another file", param_hint="--out")
    with tempfile.TemporaryDirectory(prefix="edge-vl-search-") as work, stop_on_signals() as should_stop:
        prep = prepare(config, read_data(config), Path(work), click.echo)
        plan = skip_plan(config, prep, Path(work), should_stop, click.echo)
    result = plan.get("search")
    if result is None:
        click.echo(f"no search needed: skip {plan['skipped']}")
    else:
        click.echo("layer  gate      layer")
        for i in result["ranking"]:
            mark = "  skip" if i in plan["skipped"] else ""
            click.echo(f"{i:>3}  {result['gates'][i]:+.5f}  {prep.layer_names[i]}{mark}")
    if out is not None:
        from edge_vl.fileio import write_json_atomic

        write_json_atomic(out, {"layers": prep.layer_names, **plan})
        click.echo(f"saved: {out}")


trusted_key_option = click.option(
    "--trusted-key",
    "trusted_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Accept the bundle only if it is signed by this Ed25519 public key (repeatable; default: "
    "the keys in EDGE_VL_TRUSTED_KEYS, if set).",
)


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("image", type=click.Path(path_type=Path))
@click.argument("text")
@click.option("--json", "as_json", is_flag=True, help="Print the prediction as JSON.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="OpenVINO inference threads.")
@click.option(
    "--top", type=click.IntRange(min=1), default=5, show_default=True, help="Scores to list (text output)."
)
@trusted_key_option
def predict(bundle, image, text, as_json, threads, top, trusted_keys) -> None:
    """Answer TEXT about IMAGE with BUNDLE (runs on OpenVINO, no torch needed)."""
    from edge_vl.runtime.predictor import Predictor

    keys = list(trusted_keys) or None
    prediction = Predictor(bundle, threads=threads, trusted_keys=keys).predict(image, text)
    if as_json:
        click.echo(json.dumps(prediction.to_dict(), indent=2))
        return
    click.echo(f"{prediction.label}\t{prediction.score:.4f}")
    for label, score in sorted(prediction.scores.items(), key=lambda kv: -kv[1])[:top]:
        click.echo(f"  {score:.4f}  {label}")


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@trusted_key_option
def info(bundle, as_json, trusted_keys) -> None:
    """Describe BUNDLE (verifying every file's hash) and this host's CPU."""
    from edge_vl.bundle import read_bundle
    from edge_vl.runtime.cpu import cpu_flags, cpu_name
    from edge_vl.runtime.profiles import active_profile, installed_openvino

    b = read_bundle(bundle, trusted_keys=list(trusted_keys) or None)
    m = b.manifest
    host = {"cpu": cpu_name(), "flags": cpu_flags(), "runtime_profile": active_profile().name,
            "openvino": installed_openvino()}  # fmt: skip
    if as_json:
        click.echo(json.dumps({"manifest": b.data, "host": host, "signed_by": b.signed_by}, indent=2))
        return
    arch, model = m.architecture, m.model
    click.echo(f"bundle        {b.path}  (format {m.format_version}, edge-vl {m.edge_vl_version})")
    click.echo(f"signed by     {b.signed_by or 'not checked (no trusted keys given)'}")
    click.echo(f"architecture  {arch.family} ({arch.model_type}), {len(arch.layers)} layers")
    click.echo(f"skipped       {list(arch.skipped) or 'none'}  kept {list(arch.kept)}")
    click.echo(f"precision     {model.precision}")
    click.echo("inputs        " + ", ".join(f"{i.name}{list(i.shape)}:{i.dtype}" for i in model.inputs))
    click.echo(f"labels        {len(m.labels)} ({m.head.kind}): {', '.join(m.labels)}")
    for key, value in m.metrics.items():
        click.echo(f"metric        {key} = {value}")
    click.echo(f"runtimes      {', '.join(m.runtime.profiles)}")
    click.echo(f"host cpu      {host['cpu']}")
    click.echo("host flags    " + " ".join(f"{k}{'+' if v else '-'}" for k, v in host["flags"].items()))
    click.echo(f"host runtime  {host['runtime_profile']} (OpenVINO {host['openvino']})")


@cli.command()
@click.option(
    "--out",
    "private_key",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Private key file to create (PEM, readable by you only); the public key goes next to it "
    "with '.pub' appended.",
)
def keygen(private_key) -> None:
    """Make an Ed25519 key pair for signing bundles (keep the private key on the build machine,
    copy the .pub file to devices)."""
    from edge_vl.signing import generate_key

    public = private_key.with_name(private_key.name + ".pub")
    try:
        kid = generate_key(private_key, public)
    except FileExistsError as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"private key  {private_key}\npublic key   {public}\nkey id       {kid}")


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--key",
    "private_key",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Private key from `edge-vl keygen`.",
)
def sign(bundle, private_key) -> None:
    """Sign BUNDLE (after checking every file's hash): devices given the public key accept it."""
    from edge_vl.signing import sign_bundle

    kid = sign_bundle(bundle, private_key)
    click.echo(f"signed {bundle} with key {kid}")


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--threads", type=click.IntRange(min=1), default=None, help="OpenVINO inference threads.")
@click.option(
    "--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Inputs per inference."
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds of measurement, split between the latency and the throughput phase.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option(
    "--profile",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also measure FP32 vs INT8 speed on a reference graph and save everything (machine, ISA, "
    "runtime profile, speeds) to this JSON file: a target profile for `edge-vl build --target-profile`.",
)
@click.option(
    "--compare",
    type=click.Choice(["torch"]),
    default=None,
    help="Also time the retained and the full model in torch eager and the full model on OpenVINO, "
    "interleaved with the bundle at batch 1, and print the bundle's speed-up (needs the build extra).",
)
@click.option(
    "--runs", type=click.IntRange(min=3), default=30, show_default=True, help="Rounds of --compare."
)
@click.option(
    "--model",
    "model_dir",
    default=None,
    help="Checkpoint (directory or shipped name) --compare rebuilds the torch models from "
    "[default: the bundle's source].",
)
def bench(bundle, threads, batch, duration, as_json, profile, compare, runs, model_dir) -> None:
    """Measure BUNDLE on this machine: cold start, latency p50/p90/p99, throughput, peak memory."""
    from edge_vl.bench import benchmark

    report = benchmark(bundle, threads=threads, batch=batch, duration=duration)
    if compare:
        from edge_vl.compare import compare_with_torch

        report["compare"] = compare_with_torch(bundle, runs=runs, threads=threads, source=model_dir)
    if profile is not None:
        from edge_vl.bench import target_profile
        from edge_vl.fileio import write_json_atomic

        report = target_profile(report, threads=threads)
        write_json_atomic(profile, report)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    lat, thr, machine = report["latency_ms"], report["throughput"], report["machine"]
    flags = " ".join(k for k, v in machine["flags"].items() if v) or "none"
    click.echo(f"cpu           {machine['cpu']}  ({machine['cores']} cores; {flags})")
    click.echo(f"openvino      {machine['openvino']}")
    click.echo(f"precision     bundle {report['precision']}, executed {report['executed_precision']}")
    click.echo(f"cold start    {report['cold_start_ms']:.1f} ms (verify + compile + first inference)")
    click.echo(
        f"latency (ms)  p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}  "
        f"at batch {report['batch']} over {lat['iterations']} runs"
    )
    click.echo(
        f"throughput    {thr['samples_per_s']:.1f} samples/s ({thr['inferences_per_s']:.1f} inferences/s, "
        f"{thr['requests']} async requests)"
    )
    click.echo(f"peak memory   {report['peak_rss_mb']:.0f} MB resident")
    if compare:
        cmp = report["compare"]
        click.echo(f"compared at batch 1, median of {cmp['runs']} interleaved rounds (ms; bundle speed-up):")
        for name, lat in cmp["latency_ms"].items():
            ratio = cmp["speedup_of_bundle"].get(name)
            shown = "the bundle" if ratio is None else f"{ratio:.2f}x"
            spread = f"p10 {lat['p10']:.2f}, p90 {lat['p90']:.2f}"
            click.echo(f"  {name:<18} {lat['median']:8.2f}  ({spread})  {shown}")
        click.echo(f"  note: {cmp['note']}")


def _demo_defaults(params: dict, out, quick: bool):
    """Fill what the user left out for the demo: edge-vl-mini, easy-vqa manifests, the demo's
    training lengths (options given on the command line win)."""
    from click.core import ParameterSource

    from edge_vl.demo import FULL_DEMO, QUICK_DEMO, write_easy_vqa_manifests

    settings = QUICK_DEMO if quick else FULL_DEMO
    name = "quick" if quick else "full"
    if params["train_data"] is None or params["eval_data"] is None:
        data_dir = DEMO_DIR / f"data-{name}"
        click.echo(f"demo: writing easy-vqa manifests to {data_dir}/")
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
        click.echo(f"demo: {settings.caveat}")
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


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cli(prog_name="edge-vl")
