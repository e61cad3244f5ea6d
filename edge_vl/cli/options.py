"""Options shared by the workstation commands, and the :class:`~edge_vl.pipeline.BuildConfig` they make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edge_vl.choices import AMP_MODES, ESTIMATORS, LOSSES, SEARCH_MODES
from edge_vl.config import BuildConfig, SearchConfig, TrainConfig, default

trusted_key_option = click.option(
    "--trusted-key",
    "trusted_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Accept the bundle only if it is signed by this Ed25519 public key (repeatable; default: "
    "the keys in EDGE_VL_TRUSTED_KEYS, if set).",
)
min_release_option = click.option(
    "--min-release",
    type=click.IntRange(min=1),
    default=None,
    help="Refuse signed bundles with a lower release number (anti-rollback; default: "
    "EDGE_VL_MIN_RELEASE, if set). Needs a trusted key.",
)

#: the model used when --model is not given (shipped inside edge-vl)
DEFAULT_MODEL = "edge-vl-mini"


def parse_indices(ctx, param, value: str | None) -> list[int] | None:
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


def combine(*decorators):
    def apply(f):
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


input_options = combine(
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
    click.option(
        "--image-size",
        type=click.IntRange(min=1),
        default=None,
        help="Feed the model square images of this many pixels instead of the checkpoint's size (a "
        "multiple of its patch size): fewer image tokens, less work; recorded in the bundle.",
    ),
    click.option(
        "--fold-text/--no-fold-text",
        default=default(BuildConfig, "fold_text"),
        show_default=True,
        help="When the training data asks at most 5 distinct texts (a fixed question), compute the text "
        "tower's output once and ship the graph without it; the device then refuses other texts.",
    ),
)

plan_options = combine(
    click.option(
        "--skip-count",
        type=click.IntRange(min=0),
        default=None,
        help="How many layers the DAS search skips [default: a third of the skippable layers].",
    ),
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
        type=click.Choice(SEARCH_MODES),
        default=default(SearchConfig, "mode"),
        show_default=True,
        help="clean: eval-mode rewards on a fresh held-out batch per round; paper: the authors' "
        "method — train-mode rewards on one fixed batch, layers skipped from the first step, the "
        "gates rank the layers.",
    ),
    click.option(
        "--search-estimator",
        type=click.Choice(ESTIMATORS),
        default=None,
        help="What ranks the layers after the search: the bandit's gates (the paper); each layer's "
        "added held-out loss fitted to every candidate the rounds scored; or (prior) each layer's "
        "held-out loss when skipped alone after the warm-up, which ends the search there "
        "[default: prior; gates with --search-mode paper].",
    ),
    click.option(
        "--search-prior-rows",
        type=click.IntRange(min=0),
        default=None,
        help="After the warm-up, score each layer skipped alone on this many held-out rows (0: no such "
        "round) [default: 1000 for the prior estimator, else 0].",
    ),
    click.option(
        "--search-epochs",
        type=click.IntRange(min=2),
        default=default(SearchConfig, "epochs"),
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
        default=default(SearchConfig, "das_turn"),
        show_default=True,
        help="Training steps between two bandit rounds.",
    ),
    click.option(
        "--gate-lr",
        type=click.FloatRange(min=0, min_open=True),
        default=default(SearchConfig, "gate_lr"),
        show_default=True,
        help="Gate learning rate η of the bandit update (the authors' 1.0; rewards exp(-loss) are small "
        "when the loss is large, so gates move slowly).",
    ),
    click.option(
        "--das-step",
        type=click.IntRange(min=1),
        default=default(SearchConfig, "das_step"),
        show_default=True,
        help="Distinct candidate skip sets scored per round.",
    ),
)

finetune_options = combine(
    click.option(
        "--epochs",
        type=click.FloatRange(min=0, min_open=True),
        default=default(TrainConfig, "epochs"),
        show_default=True,
        help="Fine-tuning epochs over the training data.",
    ),
    click.option(
        "--max-steps",
        type=click.IntRange(min=1),
        default=None,
        help="Stop fine-tuning after this many optimizer steps (overrides --epochs).",
    ),
)

train_options = combine(
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=default(TrainConfig, "batch_size"),
        show_default=True,
        help="Training examples per optimizer step (search and fine-tune).",
    ),
    click.option(
        "--lr",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Adapter learning rate (the head uses 10x). Default: the architecture's (1e-4 for "
        "METER-style models such as edge-vl-mini, 1e-3 for ViLT and CLIP).",
    ),
    click.option(
        "--loss",
        type=click.Choice(LOSSES),
        default=default(TrainConfig, "loss"),
        show_default=True,
        help="Task loss. vqa-bce is the DAS paper's (BCE x labels, sigmoid scores); cross-entropy "
        "learns rare answers much faster on single-answer data; focal down-weights rows the model "
        "already gets right (Lin et al., 2017).",
    ),
    click.option(
        "--prompts",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="Label prompts (JSON object label → prompt, or 'label<TAB>prompt' lines): classify images "
        "against the prompts' text embeddings (CLIP). The model then takes images only; labels may be "
        "prompt-only (zero-shot).",
    ),
    click.option(
        "--prompt-template",
        default=None,
        metavar="TEXT",
        help="A prompt for every training label, '{}' standing for the label, e.g. 'a photo of a {}' "
        "(--prompts entries win).",
    ),
    click.option(
        "--seed",
        type=int,
        default=default(TrainConfig, "seed"),
        show_default=True,
        help="Seed of every random choice (data order, adapter initialisation, search): the same seed "
        "and data give the same result.",
    ),
    click.option(
        "--device",
        default=default(BuildConfig, "device"),
        show_default=True,
        metavar="auto|cpu|cuda|cuda:N",
        help="Where the search and the fine-tune run (auto: a CUDA GPU when there is one). Export and "
        "quantization always run on the CPU. Under torchrun, each process takes its local GPU.",
    ),
    click.option(
        "--amp",
        type=click.Choice(AMP_MODES),
        default=default(BuildConfig, "amp"),
        show_default=True,
        help="Mixed precision on CUDA (fp16 with a gradient scaler); the CPU trains in fp32.",
    ),
    click.option(
        "--fixed-schedule",
        is_flag=True,
        help="Train exactly the given lengths even on small data (by default a small data set gets a "
        "smaller batch, at least 300 fine-tune steps and at least 20 search rounds; the build says so).",
    ),
    click.option("--quiet", is_flag=True, help="No progress bars."),
)

reliability_options = combine(
    click.option(
        "--target-precision",
        type=click.FloatRange(0, 1),
        default=default(BuildConfig, "target_precision"),
        show_default=True,
        help="Precision the bundle's answers keep on the eval rows: below the calibrated score that reaches "
        "it the bundle says 'not sure' (0: always answer).",
    ),
)


def given_on_command_line(names: tuple[str, ...]) -> frozenset[str]:
    """Which of ``names`` the user typed (or set through the environment), not left at their default."""
    from click.core import ParameterSource

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return frozenset()
    typed = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return frozenset(n for n in names if ctx.get_parameter_source(n) in typed)


#: CLI parameter → field of the config it sets (only the parameters a command has are passed on)
SEARCH_FIELDS = {
    "search_epochs": "epochs",
    "das_turn": "das_turn",
    "das_step": "das_step",
    "gate_lr": "gate_lr",
    "search_mode": "mode",
    "search_rows": "max_rows",
    "search_estimator": "estimator",
    "search_prior_rows": "prior_rows",
}
TRAIN_FIELDS = {name: name for name in ("epochs", "max_steps", "batch_size", "lr", "loss", "seed")}
BUILD_FIELDS = {
    name: name
    for name in (
        "skip_count",
        "flops_budget",
        "latency_budget_ms",
        "overwrite",
        "restart",
        "checkpoint_every",
        "precision",
        "prompt_template",
        "max_accuracy_drop",
        "sign_key",
        "sign_release",
        "device",
        "amp",
        "target_precision",
        "image_size",
        "fold_text",
    )
}


def _fields(params: dict, mapping: dict[str, str]) -> dict:
    """The config fields ``params`` sets: the dataclass defaults stay the only defaults."""
    return {field: params[name] for name, field in mapping.items() if name in params}


def build_config(params: dict, out: Path, skip_layers: list[int] | None = None) -> BuildConfig:
    """The :class:`BuildConfig` of a command's parameters."""
    from edge_vl.bench import read_target_profile
    from edge_vl.data import read_label_prompts

    flags = {"train_data": "--data", "eval_data": "--eval-data"}
    missing = [flag for key, flag in flags.items() if params[key] is None]
    if missing:
        raise click.UsageError(f"missing option(s) {', '.join(missing)}")
    extra: dict[str, Any] = {}
    if params.get("prompts"):
        extra["prompts"] = read_label_prompts(params["prompts"])
    if params.get("target_profile"):
        extra["target_profile"] = read_target_profile(params["target_profile"])
    for key in ("text_buckets", "image_sizes"):
        if params.get(key):
            extra[key] = tuple(params[key])
    try:
        return BuildConfig(
            model_dir=Path(params["model_dir"] or DEFAULT_MODEL),
            train_data=params["train_data"],
            eval_data=params["eval_data"],
            out=out,
            skip_layers=skip_layers,
            search=SearchConfig(**_fields(params, SEARCH_FIELDS)),
            train=TrainConfig(**_fields(params, TRAIN_FIELDS)),
            progress=not params["quiet"],
            adapt_schedule=not params.get("fixed_schedule", False),
            given=given_on_command_line(("batch_size", "epochs", "das_turn", "search_epochs")),
            **_fields(params, BUILD_FIELDS),
            **extra,
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None
