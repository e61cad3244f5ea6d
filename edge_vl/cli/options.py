"""Options shared by the workstation commands, and the :class:`~edge_vl.build.BuildConfig` they make."""

from __future__ import annotations

from pathlib import Path

import click

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
)

plan_options = combine(
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
        "method — train-mode rewards on one fixed batch, layers skipped from the first step, the "
        "gates rank the layers.",
    ),
    click.option(
        "--search-estimator",
        type=click.Choice(["gates", "effects", "prior"]),  # edge_vl.search.ESTIMATORS
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

finetune_options = combine(
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
)

train_options = combine(
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=32,
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
        type=click.Choice(["cross-entropy", "vqa-bce", "focal"]),  # edge_vl.losses.LOSSES (no torch here)
        default="cross-entropy",
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
        default=0,
        show_default=True,
        help="Seed of every random choice (data order, adapter initialisation, search): the same seed "
        "and data give the same result.",
    ),
    click.option(
        "--device",
        default="auto",
        show_default=True,
        metavar="auto|cpu|cuda|cuda:N",
        help="Where the search and the fine-tune run (auto: a CUDA GPU when there is one). Export and "
        "quantization always run on the CPU. Under torchrun, each process takes its local GPU.",
    ),
    click.option(
        "--amp",
        type=click.Choice(["off", "bf16", "fp16"]),
        default="off",
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


def given_on_command_line(names: tuple[str, ...]) -> frozenset[str]:
    """Which of ``names`` the user typed (or set through the environment), not left at their default."""
    from click.core import ParameterSource

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return frozenset()
    typed = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return frozenset(n for n in names if ctx.get_parameter_source(n) in typed)


def build_config(params: dict, out: Path, skip_layers: list[int] | None = None):
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
                estimator=params["search_estimator"],
                prior_rows=params["search_prior_rows"],
            ),
            train=TrainConfig(
                epochs=params.get("epochs", 3.0),
                max_steps=params.get("max_steps"),
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
            sign_release=params.get("sign_release"),
            progress=not params["quiet"],
            adapt_schedule=not params.get("fixed_schedule", False),
            given=given_on_command_line(("batch_size", "epochs", "das_turn", "search_epochs")),
            device=params.get("device", "auto"),
            amp=params.get("amp", "off"),
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None
