"""``build()``: labelled data + a local checkpoint → DAS search → adapter fine-tune → bundle.

Stages:

1. **prepare** — validate the data (nothing is written before this passes), load the checkpoint
   offline, save its tokenizer, preprocess every example once with the runtime's own code.
2. **skip plan** — the skip set is given (``skip_layers``), or found by the DAS search with k from
   ``skip``, a FLOPs budget or a latency budget (:mod:`edge_vl.budget`). The search trains on
   the training data minus a held-out part that scores its candidates.
3. **fine-tune** — from the pretrained weights again, with fresh adapters and the chosen skip set
   (spec §4.1).
4. **export + bundle** — retained subgraph → OpenVINO IR, parity-checked; bundle written atomically.

Long stages checkpoint into a work directory next to the bundle (``.<out>.work/``). Rerunning
the same command resumes where it stopped; finished stages are not redone. SIGINT/SIGTERM stop
a build at the next step boundary after saving a checkpoint. The work directory is removed once
the bundle is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from edge_vl._version import __version__
from edge_vl.adapters import AdapterConfig
from edge_vl.bundle import MANIFEST_NAME, Preprocessing, finalize_manifest
from edge_vl.data import Example, data_fingerprint, data_warnings, label_set, read_examples
from edge_vl.errors import BuildError, BundleError, DataError, MissingExtraError
from edge_vl.fileio import disk_full, free_space, write_json_atomic
from edge_vl.finetune import TrainConfig
from edge_vl.losses import score_kind
from edge_vl.output import OutputLock, check_output, staged_bundle
from edge_vl.report import REPORT_HTML, write_report
from edge_vl.runtime.profiles import loadable_profiles
from edge_vl.runtime.tokenize import TEXT_INPUTS
from edge_vl.schema import to_json
from edge_vl.search import SearchConfig

WORK_STATE = "build.json"
#: the smallest search: rows it holds out to score candidates, and rows it trains on
MIN_SEARCH_HELD_OUT, MIN_SEARCH_TRAIN = 2, 8
#: models users can name instead of giving a directory (checkpoints shipped inside edge-vl)
NAMED_MODELS = {"edge-vl-mini": Path(__file__).parent / "mini" / "checkpoint"}


def model_source(model_dir: str | Path) -> str:
    """What the manifest records as the model's source: the name of a shipped model (which
    resolves on any machine), else the absolute checkpoint directory."""
    resolved = Path(model_dir).resolve()
    for name, shipped in NAMED_MODELS.items():
        if resolved == shipped.resolve():
            return name
    return str(resolved)


def resolve_model_dir(value: str | Path) -> Path:
    """A checkpoint directory, or the shipped checkpoint of a named model (``edge-vl-mini``)."""
    shipped = NAMED_MODELS.get(str(value))
    if shipped is None:
        return Path(value)
    if not (shipped / "config.json").is_file():
        from edge_vl.errors import ModelError

        raise ModelError(
            f"{value}: this edge-vl version does not ship its pretrained checkpoint yet ({shipped} is "
            "empty); pass --model with a local checkpoint directory"
        )
    return shipped


@dataclass
class BuildConfig:
    """Everything :func:`build` needs. Give at most one of ``skip_layers``, ``skip``,
    ``flops_budget``, ``latency_budget_ms``; with none, the search skips a third of the arms."""

    model_dir: Path
    train_data: Path
    eval_data: Path
    out: Path
    #: a fixed skip set (arm indices): no search
    skip_layers: Sequence[int] | None = None
    #: number of arms the search skips
    skip: int | None = None
    #: fraction of the full model's MACs the retained model may use
    flops_budget: float | None = None
    #: batch-1 latency (ms, this machine) the retained model may take
    latency_budget_ms: float | None = None
    search: SearchConfig = field(default_factory=SearchConfig)
    #: fraction of training rows held out to score search candidates
    search_holdout: float = 0.1
    train: TrainConfig = field(default_factory=TrainConfig)
    adapters: AdapterConfig | None = None
    overwrite: bool = False
    #: discard an unfinished build's checkpoints instead of resuming
    restart: bool = False
    checkpoint_every: int = 50
    progress: bool = True
    #: number of eval rows used for the torch↔OpenVINO parity check
    parity_samples: int = 8
    #: time the retained and the full exported model (batch 1) for the manifest and report
    measure_latency: bool = True
    #: fp32, fp16 (weights), int8 (NNCF), or auto: the fastest within ``max_accuracy_drop`` of fp32
    precision: str = "fp32"
    #: accuracy (fraction) ``auto``/``int8`` may lose against fp32 on the eval data
    max_accuracy_drop: float = 0.01
    #: training rows used to calibrate INT8
    calibration_size: int = 300
    #: a target profile (:func:`edge_vl.bench.read_target_profile`): precision is chosen for it
    target_profile: dict[str, Any] | None = None
    #: shorter text lengths to export too; the Predictor runs each input on the shortest that fits
    text_buckets: Sequence[int] = ()
    #: extra rows for the report's accuracy-vs-MACs comparison (see :mod:`edge_vl.report`)
    report_variants: Sequence[dict[str, Any]] = ()
    #: label → prompt text: classify images against the prompts' text embeddings (dual encoders
    #: such as CLIP); the device then runs the image tower only. Labels may be prompt-only.
    prompts: dict[str, str] | None = None
    #: the same from a template for every training label, e.g. ``"a photo of a {}"``
    prompt_template: str | None = None
    #: private key (``edge-vl keygen``) to sign the bundle with (:mod:`edge_vl.signing`)
    sign_key: Path | None = None

    def label_prompts(self, labels: Sequence[str]) -> dict[str, str] | None:
        """The prompt per label (``prompts`` entries win over ``prompt_template``), or None."""
        if self.prompts is None and self.prompt_template is None:
            return None
        template = self.prompt_template
        from_template = {label: template.replace("{}", label) for label in labels} if template else {}
        return {**from_template, **(self.prompts or {})}

    def __post_init__(self) -> None:
        self.model_dir = resolve_model_dir(self.model_dir)
        given = [
            n
            for n in ("skip_layers", "skip", "flops_budget", "latency_budget_ms")
            if getattr(self, n) is not None
        ]
        if len(given) > 1:
            raise ValueError(
                f"give at most one of skip_layers, skip, flops_budget, latency_budget_ms; got {given}"
            )
        if self.flops_budget is not None and not 0 < self.flops_budget <= 1:
            raise ValueError(f"flops_budget must be a fraction in (0, 1], got {self.flops_budget}")
        from converters.precision import PRECISIONS

        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if any(int(b) < 2 for b in self.text_buckets):
            raise ValueError(
                f"text buckets must be lengths of at least 2 tokens, got {list(self.text_buckets)}"
            )
        score_kind(self.train.loss)  # raises on an unknown loss name
        if not 0 < self.search_holdout < 1:
            raise ValueError(f"search_holdout must be in (0, 1), got {self.search_holdout}")


@dataclass(frozen=True)
class BuildResult:
    """The written bundle and its manifest; ``model``/``family`` are the trained torch model (with
    adapters and the skip set applied) and its architecture family, for inspection and tests."""

    bundle: Path
    manifest: dict[str, Any]
    model: Any = field(default=None, repr=False)
    family: Any = field(default=None, repr=False)


@dataclass
class Prepared:
    """Stage 1 output: validated, preprocessed data and everything derived from the checkpoint."""

    family: Any
    labels: list[str]
    preprocessing: Preprocessing
    #: the static input shapes the exported graph is built for
    shape: Any  # InputShape
    #: what the data check found worth a look (printed, and recorded in the manifest and report)
    warnings: list[str]
    train_data: Any  # EncodedData
    eval_data: Any
    n_train: int
    n_eval: int
    arm_names: list[str]
    costs: Any
    tokenizer_file: Path | None
    model: Any = field(repr=False)
    #: training rows with raw inputs (as the exported model takes them), for INT8 calibration
    calibration_data: Any = None
    #: per-precision factors from latency here to latency on ``config.target_profile`` (measured once)
    target_scale: dict[str, float] | None = None


def build(config: BuildConfig, *, echo: Callable[[str], None] = print) -> BuildResult:
    """Run every stage (see the module docstring). Returns the bundle path and manifest."""
    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read once when huggingface_hub is imported
    _require_build_extra()
    if config.sign_key is not None:
        from edge_vl.signing import load_private_key

        load_private_key(config.sign_key)  # a wrong key fails now, not after the training
    check_output(config.out, {}, overwrite=config.overwrite)  # fail fast; inputs are checked below
    data = read_data(config)  # fails on bad data before anything is written
    with OutputLock(config.out):  # one build per --out; cleans up after killed ones
        check_output(config.out, build_inputs(config, data), overwrite=config.overwrite)
        for warning in data.warnings:
            echo(f"warning: {warning}")
        work = WorkDir.open(config, data, echo)
        try:
            with stop_on_signals() as should_stop:
                prep = prepare(config, data, work.path, echo)
                plan = work.state.get("plan") or skip_plan(config, prep, work.path, should_stop, echo)
                work.update(plan=plan)
                model, report = finetune_stage(config, prep, plan["skipped"], work.path, should_stop, echo)
                result = export_stage(config, prep, model, plan, report, started, echo)
        except (OSError, RuntimeError) as e:  # torch and OpenVINO report a full disk as RuntimeError
            if disk_full(e, work.path):
                raise BuildError(
                    f"the disk is full while building {config.out} ({free_space(work.path)}; {e}); free "
                    f"some space and rerun the same command: {work.path} keeps the progress"
                ) from e
            raise
        work.remove()
    return result


# -- stages -----------------------------------------------------------------------------------
def prepare(config: BuildConfig, data: TrainingData, work: Path, echo: Callable[[str], None]) -> Prepared:
    """Load the checkpoint, save its tokenizer into ``work``, preprocess the examples (from
    :func:`read_data`). The returned ``model`` has fresh adapters and is ready for the search."""
    from edge_vl.architectures import family_for_checkpoint
    from edge_vl.architectures.base import InputShape
    from edge_vl.architectures.quiet import quiet_transformers
    from edge_vl.encoded import encode_examples
    from edge_vl.runtime.tokenize import TextEncoder

    train_examples, eval_examples, labels = data.train, data.evals, data.labels
    echo(f"data: {len(train_examples)} training and {len(eval_examples)} eval rows, {len(labels)} labels")
    family = family_for_checkpoint(config.model_dir)
    model = load_adapted(family, config, labels)
    text_length = family.text_length(model)
    text = encoder = tokenizer_file = None
    if text_length is not None:  # image-only models (a prompt head) take no text
        with quiet_transformers():
            text = family.save_tokenizer(Path(config.model_dir), work, text_length)
        encoder, tokenizer_file = TextEncoder.from_spec(work, text), work / text.tokenizer
    preprocessing = Preprocessing(image=family.image_spec(Path(config.model_dir), model), text=text)
    shape = InputShape.of(preprocessing)
    echo(f"model: {family.name} from {config.model_dir}, {len(family.arms(model))} arms")
    calibration = None
    if config.precision in ("int8", "auto"):
        import random

        rows = random.Random(config.train.seed).sample(
            train_examples, min(config.calibration_size, len(train_examples))
        )
        calibration = encode_examples(rows, preprocessing.image, encoder, labels)
    return Prepared(
        calibration_data=calibration,
        target_scale=target_scale(config.target_profile, echo) if config.target_profile else None,
        family=family,
        labels=labels,
        preprocessing=preprocessing,
        shape=shape,
        warnings=data.warnings,
        train_data=family.cache_frozen_features(
            model, encode_examples(train_examples, preprocessing.image, encoder, labels)
        ),
        eval_data=family.cache_frozen_features(
            model, encode_examples(eval_examples, preprocessing.image, encoder, labels), keep_pixels=True
        ),
        n_train=len(train_examples),
        n_eval=len(eval_examples),
        arm_names=family.arm_names(model),
        costs=family.arm_costs(model, shape),
        tokenizer_file=tokenizer_file,
        model=model,
    )


def skip_plan(
    config: BuildConfig,
    prep: Prepared,
    work: Path,
    should_stop: Callable[[], bool],
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """The skip set: given, or found by the DAS search within the requested budget."""
    from edge_vl import budget

    costs = prep.costs
    n_arms = costs.n_arms
    if config.skip_layers is not None:
        skipped = sorted(int(i) for i in config.skip_layers)
        bad = [i for i in skipped if not 0 <= i < n_arms]
        if bad:
            from edge_vl.errors import ModelError

            raise ModelError(f"skip index(es) {bad} out of range: this model has arms 0..{n_arms - 1}")
        echo(f"skip plan: layers {skipped or 'none'} (given, no search)")
        return {"method": "given", "skipped": skipped}

    savings = [costs.saving(i) for i in range(n_arms)]
    budget_info: dict[str, Any]
    if config.flops_budget is not None:
        limit = config.flops_budget * costs.full()
        k = budget.min_arms_for(limit, costs.retained, savings, "FLOPs")
        budget_info = {"kind": "flops", "fraction": config.flops_budget, "limit_macs": limit}
        cost_of: Callable[[Sequence[int]], float] = costs.retained
    elif config.latency_budget_ms is not None:
        latency = measure_latency_model(config, prep, echo)
        limit = config.latency_budget_ms
        k = budget.min_arms_for(limit, latency.predict, savings, "latency")
        on = (config.target_profile or {}).get("machine", {}).get("cpu", "this machine")
        budget_info = {"kind": "latency", "limit_ms": limit, **asdict(latency), "costs": None, "on": on}
        cost_of = latency.predict
    else:
        k = config.skip if config.skip is not None else n_arms // 3
        if not 0 <= k < n_arms:
            raise budget.BudgetError(f"--skip must be between 0 and {n_arms - 1} for {n_arms} arms, got {k}")
        budget_info, limit, cost_of = {"kind": "count", "k": k}, float("inf"), costs.retained
    if k == 0:
        echo("skip plan: the budget is met without skipping; no search")
        return {"method": "budget", "skipped": [], "budget": budget_info}

    echo(f"skip plan: DAS search for k={k} of {n_arms} arms ({config.search.mode} mode)")
    result = search_stage(config, prep, k, work, should_stop)
    skipped = budget.select_within(result.ranking, k, limit, cost_of)
    gates = ", ".join(f"{i}:{result.gates[i]:+.2e}" for i in result.ranking)
    echo(f"search: skip {skipped}; gates, most redundant first: {gates}")
    return {
        "method": "das",
        "skipped": skipped,
        "budget": budget_info,
        "search": result.to_dict(),
        "search_config": config.search.to_dict(),
    }


def search_split(config: BuildConfig, prep: Prepared):
    """(search training rows, held-out rows) of the training data: disjoint, seeded."""
    import torch

    n = prep.n_train
    n_val = max(MIN_SEARCH_HELD_OUT, round(n * config.search_holdout))
    if n - n_val < MIN_SEARCH_TRAIN:
        raise DataError(
            f"the DAS search needs at least {MIN_SEARCH_HELD_OUT + MIN_SEARCH_TRAIN} training rows "
            f"({MIN_SEARCH_HELD_OUT} are held out to score its candidates); got {n}. Give more rows, or "
            "skip layers without a search: --skip-layers I,J (or '' for none)",
            path=str(config.train_data),
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.train.seed))
    rows = order[n_val:] if config.search.max_rows is None else order[n_val : n_val + config.search.max_rows]
    return prep.train_data.subset(rows), prep.train_data.subset(order[:n_val])


def search_stage(config: BuildConfig, prep: Prepared, k: int, work: Path, should_stop: Callable[[], bool]):
    """Run the DAS search on a held-out split of the training data (resumable)."""
    from edge_vl.search import run_search

    family, model = prep.family, prep.model
    train_data, val_data = search_split(config, prep)
    return run_search(
        family, model, train_data, val_data, k, config.search, config.train,
        progress=config.progress, checkpoint_dir=work / "search",
        checkpoint_every=config.checkpoint_every, should_stop=should_stop,
    )  # fmt: skip


def finetune_stage(
    config: BuildConfig,
    prep: Prepared,
    skipped: Sequence[int],
    work: Path,
    should_stop: Callable[[], bool],
    echo: Callable[[str], None],
):
    """Fresh adapters on the pretrained weights, the chosen skip set, then training (resumable)."""
    from edge_vl.finetune import Checkpointer, TrainLoop

    family = prep.family
    model = load_adapted(family, config, prep.labels)
    family.set_skipped(model, skipped)
    loop = TrainLoop(family, model, prep.train_data, config.train)
    checkpointer = Checkpointer(work / "finetune", every=config.checkpoint_every, should_stop=should_stop)
    if checkpointer.restore(loop) is not None:
        echo(f"fine-tune: resuming at step {loop.step}/{loop.total_steps}")
    report = loop.run(after_step=checkpointer.after_step, progress=config.progress)
    return model, report


def export_stage(
    config: BuildConfig,
    prep: Prepared,
    model,
    plan: dict[str, Any],
    report,
    started: float,
    echo: Callable[[str], None],
) -> BuildResult:
    """Evaluate, export the retained subgraph, write the bundle atomically."""
    from converters import converter_for
    from edge_vl import finetune

    family = prep.family
    eval_logits = finetune.predict_logits(family, model, prep.eval_data)
    eval_accuracy = finetune.accuracy(eval_logits, prep.eval_data.labels)
    echo(
        f"fine-tune: {report.steps} steps, final loss {report.final_loss:.4f}, "
        f"eval accuracy {eval_accuracy:.4f}"
    )
    skipped = family.skipped(model)
    costs = prep.costs
    versions = package_versions()
    with staged_bundle(config.out, overwrite=config.overwrite) as staging:
        if prep.tokenizer_file is not None:
            shutil.copy(prep.tokenizer_file, staging / prep.tokenizer_file.name)
        inputs = family.input_specs(model, prep.shape)
        sample = prep.eval_data.batch(slice(0, config.parity_samples))
        exported = converter_for(family.name).export(
            family, model, inputs, sample, staging, versions=versions
        )
        echo(f"export: {exported.xml.name}, OpenVINO vs torch max |diff| {exported.parity_max_abs:.2e}")
        precision = choose_precision(config, prep, inputs, exported.xml, staging, echo)
        chosen = precision["chosen"] if precision else "fp32"
        buckets = []
        if config.text_buckets:
            if prep.tokenizer_file is None:
                echo("text buckets: not exported (this model takes no text)")
            elif chosen == "int8":
                # each length would be quantized on its own: answers differ from the full-length
                # model (edge-vl-mini/easy-vqa: 97.1 % identical) and the saving vanished (6.73 vs
                # 6.70 ms)
                echo("text buckets: not exported with int8 (separately quantized lengths change answers)")
            else:
                buckets = export_text_buckets(
                    config, prep, model, inputs, sample, staging, versions, echo, chosen
                )
        latency = measure_latency(family, model, inputs, sample, exported.xml, config.measure_latency)
        if latency and precision:
            latency["precision"] = precision["chosen"]  # the full model stays fp32
        if latency:
            echo(f"latency: {latency['retained']:.2f} ms (batch 1, this machine); "
                 f"{latency['full']:.2f} ms with no arm skipped")  # fmt: skip
        trainable = family.active_trainable_parameters(model)
        total = sum(p.numel() for p in model.parameters())
        manifest = {
            "edge_vl_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": versions,
            # which runtime profiles can read every IR file of the bundle (by the opsets it uses)
            "runtime": runtime_for(config, staging),
            "architecture": {
                "family": family.name,
                "model_type": model.config.model_type,
                "source": model_source(config.model_dir),
                "arms": prep.arm_names,
                "skipped": skipped,
                "kept": [i for i in range(len(prep.arm_names)) if i not in skipped],
            },
            "model": {
                "xml": exported.xml.name,
                "bin": exported.bin.name,
                "precision": precision["chosen"] if precision else "fp32",
                "inputs": exported.inputs,
                "outputs": exported.outputs,
                **({"text_buckets": buckets} if buckets else {}),
            },
            "preprocessing": prep.preprocessing,
            "head": family.head(model, score_kind(config.train.loss), config.label_prompts(prep.labels)),
            "data": {"warnings": prep.warnings},
            "metrics": {
                "eval_accuracy": eval_accuracy,
                "eval_examples": prep.n_eval,
                "train_examples": prep.n_train,
                "parity_max_abs": exported.parity_max_abs,
                "parity_samples": exported.parity_samples,
                **({"latency_ms": latency} if latency else {}),
            },
            "cost": {
                "unit": "MACs (batch 1; matmuls and convolutions)",
                "full_model": costs.full(),
                "retained_model": costs.retained(skipped),
                "retained_fraction": costs.retained(skipped) / costs.full(),
                "per_arm": costs.to_dict(),
            },
            "skip_plan": plan,
            **({"precision": precision} if precision else {}),
            "training": {
                **config.train.to_dict(),
                "steps": report.steps,
                "final_loss": report.final_loss,
                "adapters": (config.adapters or family.default_adapters).to_dict(),
                "trainable_parameters": trainable,
                "total_parameters": total,
                "trainable_fraction": trainable / total,
                "train_data": str(Path(config.train_data).resolve()),
                "eval_data": str(Path(config.eval_data).resolve()),
                "seconds": round(time.perf_counter() - started, 1),
            },
        }
        manifest = to_json(manifest)
        write_report(staging, manifest, config.report_variants)
        manifest = finalize_manifest(staging, manifest)
        if config.sign_key is not None:
            from edge_vl.signing import sign_bundle

            echo(f"bundle: signed with key {sign_bundle(staging, config.sign_key)}")
    echo(f"bundle: {Path(config.out)} ({MANIFEST_NAME} + {len(manifest['files'])} files)")
    echo(f"report: {Path(config.out) / REPORT_HTML}")
    return BuildResult(bundle=Path(config.out), manifest=manifest, model=model, family=family)


# -- helpers ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingData:
    """Checked training and eval rows, the label set (the head's class order), and warnings."""

    train: list[Example]
    evals: list[Example]
    labels: list[str]
    warnings: list[str]


def read_data(config: BuildConfig) -> TrainingData:
    """Validate both manifests; eval labels must occur in training (or, with label prompts, have
    a prompt; every training label then needs one); at least two classes."""
    prompt_head = config.prompts is not None or config.prompt_template is not None
    train_examples = read_examples(config.train_data, require_text=not prompt_head)
    eval_examples = read_examples(config.eval_data, require_text=not prompt_head)
    labels = label_set(train_examples)
    if prompt_head:
        prompts = config.label_prompts(labels)
        missing = [label for label in labels if label not in prompts]
        if missing:
            raise DataError(f"training label(s) {missing} have no prompt in the label prompts")
        labels = sorted(prompts)
    if len(labels) < 2:
        raise DataError(f"every training row has the label {labels[0]!r}; a classifier needs at least two "
                        "classes", path=str(config.train_data))  # fmt: skip
    known = set(labels)
    where = "the training data or the label prompts" if prompt_head else "the training data"
    for ex in eval_examples:
        if ex.label not in known:
            raise DataError(f"label {ex.label!r} does not occur in {where}", path=ex.manifest, line=ex.line)
    return TrainingData(train_examples, eval_examples, labels, data_warnings(train_examples, eval_examples))


def build_inputs(config: BuildConfig, data: TrainingData) -> dict[str, list[Path]]:
    """Every path the build reads, by role: what ``--out`` must never be or contain."""
    images = {ex.image for ex in [*data.train, *data.evals]}
    inputs = {
        "the training data": [Path(config.train_data)],
        "the eval data": [Path(config.eval_data)],
        "images of the data": sorted(images),
        "the model": [Path(config.model_dir)],
    }
    return inputs


def load_adapted(family, config: BuildConfig, labels: Sequence[str]):
    """Pretrained weights, fresh head and adapters (seeded), backbone frozen."""
    import torch

    from edge_vl.architectures.quiet import quiet_transformers

    torch.manual_seed(config.train.seed)
    with quiet_transformers():
        model = family.load(Path(config.model_dir), labels, prompts=config.label_prompts(labels))
    family.insert_adapters(model, config.adapters)
    family.freeze(model)
    return model


def export_text_buckets(
    config: BuildConfig,
    prep: Prepared,
    model,
    inputs,
    sample,
    staging: Path,
    versions,
    echo,
    precision: str = "fp32",
) -> list[dict[str, Any]]:
    """Export the model again at each shorter text length of ``config.text_buckets`` (FP32
    parity-checked like the main export, then FP16-compressed if the main model is; INT8 bundles
    get no buckets); returns the manifest entries."""
    from dataclasses import replace

    from converters import converter_for
    from converters.precision import compress_fp16_in_place

    if precision not in ("fp32", "fp16"):
        raise ValueError(f"text buckets are exported in fp32 or fp16 only, not {precision}")

    full = prep.shape.text_length
    lengths = sorted({int(b) for b in config.text_buckets if int(b) < full})
    entries = []
    for length in lengths:
        specs = [
            replace(spec, shape=(spec.shape[0], length)) if spec.name in TEXT_INPUTS else spec
            for spec in inputs
        ]
        cut = {k: (v[:, :length] if k in TEXT_INPUTS else v) for k, v in sample.items()}
        exported = converter_for(prep.family.name).export(
            prep.family, model, specs, cut, staging, name=f"model-t{length}", versions=versions
        )
        if precision == "fp16":
            compress_fp16_in_place(exported.xml)
        entries.append({"length": length, "xml": exported.xml.name, "bin": exported.bin.name,
                        "parity_max_abs": exported.parity_max_abs})  # fmt: skip
        echo(
            f"export: text bucket {length} tokens, OpenVINO vs torch max |diff| {exported.parity_max_abs:.2e}"
        )
    return entries


def numpy_batches(data, names: Sequence[str], size: int):
    """A re-iterable source of ``data``'s rows as numpy feeds of the inputs ``names``, ``size`` rows
    each."""

    def feed(i: int) -> dict[str, Any]:
        rows = data.batch(slice(i, i + size))
        return {n: v.numpy() for n, v in rows.items() if n in names}

    return lambda: (feed(i) for i in range(0, len(data), size))


def choose_precision(
    config: BuildConfig, prep: Prepared, inputs, fp32_xml: Path, staging: Path, echo: Callable[[str], None]
) -> dict[str, Any] | None:
    """Export, evaluate and time the precision candidates; install the chosen one as ``model.xml``.
    None for a plain FP32 build."""
    from converters import precision as P
    from edge_vl.bench import median_latency_ms
    from edge_vl.runtime.cpu import has_int8_dot_product

    if config.precision == "fp32":
        return None
    names = [spec.name for spec in inputs]
    wanted = P.AUTO_CANDIDATES if config.precision == "auto" else ("fp32", config.precision)
    target = config.target_profile
    vnni = has_int8_dot_product(target["machine"]["flags"] if target else None)
    scale = prep.target_scale

    def latency_ms(name: str) -> Callable[[Path, Any], float]:
        factor = 1.0 if scale is None else scale["int8" if name == "int8" else "fp32"]
        return lambda xml, feed: median_latency_ms(xml, feed) * factor

    eval_batches = numpy_batches(prep.eval_data, names, 64)
    labels = prep.eval_data.labels.numpy()
    feed = {n: v[:1] for n, v in next(iter(eval_batches())).items()}
    candidates: list[P.Candidate] = []
    reference = None
    for name in wanted:
        if name == "fp32":
            xml = fp32_xml
        elif name == "fp16":
            xml = P.compress_fp16(fp32_xml, staging)
        else:
            echo(f"precision: NNCF INT8 calibration on {len(prep.calibration_data)} training rows "
                 f"({'VNNI' if vnni else 'no VNNI: overflow fix on'})")  # fmt: skip
            calibration = numpy_batches(prep.calibration_data, names, 1)()
            xml = P.quantize_int8(fp32_xml, calibration, staging, vnni=vnni, size=config.calibration_size)
        candidate, predictions = P.measure(name, xml, eval_batches, labels, reference, feed, latency_ms(name))
        reference = predictions if name == "fp32" else reference
        candidates.append(candidate)
        echo(f"precision: {name} accuracy {candidate.accuracy:.4f}, top-1 agreement with fp32 "
             f"{candidate.agreement_with_fp32:.4f}, {candidate.latency_ms:.2f} ms")  # fmt: skip
    required = None if config.precision == "auto" else config.precision
    chosen, reason = P.choose(candidates, config.max_accuracy_drop, required=required)
    if config.precision != "auto" and chosen.precision != config.precision:
        from edge_vl.errors import ExportError

        raise ExportError(f"{config.precision} was refused: {reason}; build with --precision fp32 or "
                          "raise --max-accuracy-drop")  # fmt: skip
    P.install(chosen, staging)
    echo(f"precision: {reason}")
    return {"requested": config.precision, "chosen": chosen.precision, "reason": reason,
            "max_accuracy_drop": config.max_accuracy_drop, "vnni": vnni,
            **({"target": {"cpu": target["machine"].get("cpu"), "latency_scale": scale}} if target else {}),
            "candidates": [c.to_dict() for c in candidates]}  # fmt: skip


def runtime_for(config: BuildConfig, staging: Path) -> dict[str, Any]:
    """The bundle's loadable runtime profiles; fails if the target profile's runtime is not one."""
    runtime = loadable_profiles(sorted(staging.glob("*.xml")))
    wanted = (config.target_profile or {}).get("runtime_profile")
    if wanted and wanted not in runtime["profiles"]:
        from edge_vl.errors import ExportError

        raise ExportError(
            f"the target runs the {wanted} runtime, which cannot read this bundle's IR "
            f"(opset{runtime['max_opset']}); it loads with: {', '.join(runtime['profiles'])}"
        )
    return runtime


def target_scale(target: dict[str, Any], echo: Callable[[str], None]) -> dict[str, float]:
    """Per-precision factors from latency here to latency on the target: the ratio of the two
    machines' :func:`~edge_vl.bench.precision_probe` times (an estimate from one reference graph)."""
    from edge_vl.bench import precision_probe

    here, there = precision_probe(), target["precision_probe"]
    scale = {p: there[f"{p}_ms"] / here[f"{p}_ms"] for p in ("fp32", "int8")}
    echo(
        f"precision: target {target['machine'].get('cpu', '?')}: latencies predicted as measured here "
        f"× {scale['fp32']:.2f} (fp32/fp16), × {scale['int8']:.2f} (int8), from the reference graph"
    )
    return scale


def latency_with_skipped(family, model, inputs, sample, skipped: Sequence[int]) -> float:
    """Median batch-1 latency (ms, this machine) of ``model`` exported with ``skipped`` arms, to a
    temporary directory; the model's own skip set is restored afterwards."""
    from converters import temporary_export
    from edge_vl.bench import median_latency_ms

    feed = {spec.name: sample[spec.name][:1].numpy() for spec in inputs}
    with temporary_export(family, model, inputs, sample, skipped) as xml:
        return median_latency_ms(xml, feed)


def measure_latency(
    family, model, inputs, sample, retained_xml: Path, enabled: bool
) -> dict[str, Any] | None:
    """Median batch-1 latency (ms) of the exported retained model and of the same model with no arm
    skipped, on this machine."""
    from edge_vl.bench import median_latency_ms

    if not enabled:
        return None
    feed = {spec.name: sample[spec.name][:1].numpy() for spec in inputs}
    full_ms = latency_with_skipped(family, model, inputs, sample, [])
    return {"retained": median_latency_ms(retained_xml, feed), "full": full_ms, "batch": 1,
            "precision": "fp32", "threads": None}  # fmt: skip


def measure_latency_model(config: BuildConfig, prep: Prepared, echo: Callable[[str], None]):
    """Time the exported graph with every arm kept and every arm skipped (batch 1, this machine)."""
    from edge_vl.budget import LatencyModel

    family = prep.family
    model = load_adapted(family, config, prep.labels)
    inputs = family.input_specs(model, prep.shape)
    sample = prep.eval_data.batch(slice(0, 2))
    kept, skipped = (
        latency_with_skipped(family, model, inputs, sample, arms)
        for arms in ([], list(range(prep.costs.n_arms)))
    )
    echo(f"latency: {kept:.2f} ms with every arm kept, {skipped:.2f} ms with every arm skipped")
    if config.target_profile:  # the budget is the target's: scale by its speed on the reference graph
        factor = prep.target_scale["int8" if config.precision == "int8" else "fp32"]
        kept, skipped = kept * factor, skipped * factor
        echo(f"latency: {kept:.2f} / {skipped:.2f} ms predicted on the target (× {factor:.2f})")
    return LatencyModel(all_kept_ms=kept, all_skipped_ms=skipped, costs=prep.costs)


class WorkDir:
    """The resumable state of one build: ``.<out>.work/`` next to the bundle."""

    def __init__(self, path: Path, state: dict[str, Any]):
        self.path, self.state = path, state

    @classmethod
    def open(cls, config: BuildConfig, data: TrainingData, echo: Callable[[str], None]) -> WorkDir:
        """Resume the unfinished build of ``config.out`` (same fingerprint) or start a new one."""
        out = Path(config.out)
        path = out.parent / f".{out.name}.work"
        fingerprint = _fingerprint(config, data)
        state_file = path / WORK_STATE
        if path.exists() and config.restart:
            shutil.rmtree(path)
        if state_file.is_file():
            state = json.loads(state_file.read_text(encoding="utf-8"))
            if state.get("fingerprint") != fingerprint:
                raise BundleError(
                    f"{path} holds an unfinished build with other settings or data; rerun it with the same "
                    "settings to resume, or pass --restart to discard it"
                )
            echo(f"resuming the unfinished build in {path}")
            return cls(path, state)
        path.mkdir(parents=True, exist_ok=True)
        work = cls(path, {"fingerprint": fingerprint})
        work.update()
        return work

    def update(self, **values: Any) -> None:
        self.state.update(values)
        write_json_atomic(self.path / WORK_STATE, self.state)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Callable[[], bool]]:
    """While active, SIGINT/SIGTERM only set a flag that training loops poll at step boundaries
    (a second SIGINT interrupts at once). Yields the flag's reader."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop.is_set
        return

    def handler(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop.is_set
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _fingerprint(config: BuildConfig, data: TrainingData) -> str:
    """What a resumed build must share with the one that started: model, data (rows and image
    bytes) and settings."""
    h = hashlib.sha256()
    model_dir = Path(config.model_dir)
    h.update((model_dir / "config.json").read_bytes() if (model_dir / "config.json").is_file() else b"")
    for p in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")):
        h.update(f"{p.name}:{p.stat().st_size}".encode())
    for rows in (data.train, data.evals):
        h.update(data_fingerprint(rows).encode())
    unrelated = ("out", "overwrite", "restart", "progress", "measure_latency", "report_variants", "sign_key")
    settings = {k: v for k, v in asdict(config).items() if k not in unrelated}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _require_build_extra() -> None:
    for module in ("torch", "transformers"):
        try:
            __import__(module)
        except ImportError:
            raise MissingExtraError("edge-vl build") from None


def package_versions() -> dict[str, str]:
    out = {"edge_vl": __version__}
    for dist in ("openvino", "torch", "transformers", "tokenizers", "numpy", "nncf"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out
