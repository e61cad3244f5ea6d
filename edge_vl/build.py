"""``build()``: labelled data + a local checkpoint → adapted, layer-skipped model → bundle.

Steps: validate data → load the checkpoint (offline) → insert adapters, apply the skip set,
freeze → fine-tune → evaluate → export the retained subgraph to OpenVINO (parity-checked) →
write the bundle atomically. Nothing is written before the data has been validated, and a failed
build leaves no bundle directory behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from edge_vl._version import __version__
from edge_vl.adapters import AdapterConfig
from edge_vl.architectures.quiet import quiet_transformers
from edge_vl.bundle import MANIFEST_NAME, finalize_manifest, staged_bundle
from edge_vl.data import Example, label_set, read_examples
from edge_vl.errors import DataError, MissingExtraError
from edge_vl.finetune import TrainConfig

log = logging.getLogger("edge_vl.build")


@dataclass
class BuildConfig:
    """Everything :func:`build` needs. Paths may be relative to the working directory."""

    model_dir: Path
    train_data: Path
    eval_data: Path
    out: Path
    skip_layers: Sequence[int] = ()
    train: TrainConfig = field(default_factory=TrainConfig)
    adapters: AdapterConfig | None = None
    overwrite: bool = False
    progress: bool = True
    #: number of eval rows used for the torch↔OpenVINO parity check
    parity_samples: int = 8


@dataclass(frozen=True)
class BuildResult:
    """The written bundle and its manifest; ``model``/``family`` are the trained torch model (with
    adapters and the skip set applied) and its architecture family, for inspection and tests."""

    bundle: Path
    manifest: dict[str, Any]
    model: Any = field(default=None, repr=False)
    family: Any = field(default=None, repr=False)


def build(config: BuildConfig, *, echo: Callable[[str], None] = print) -> BuildResult:
    """Run the whole pipeline; see the module docstring. Returns the bundle path and manifest."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read once when huggingface_hub is imported
    _require_build_extra()
    import torch

    from converters import converter_for
    from edge_vl import finetune
    from edge_vl.architectures import family_for_checkpoint
    from edge_vl.runtime.tokenize import TextEncoder

    started = time.perf_counter()
    train_examples = read_examples(config.train_data)
    eval_examples = read_examples(config.eval_data)
    labels = label_set(train_examples)
    _check_eval_labels(eval_examples, labels)
    echo(f"data: {len(train_examples)} training and {len(eval_examples)} eval rows, {len(labels)} labels")

    model_dir = Path(config.model_dir)
    family = family_for_checkpoint(model_dir)
    torch.manual_seed(config.train.seed)
    with quiet_transformers():
        model = family.load(model_dir, labels)
    preprocessing = family.preprocessing(model_dir, model)
    family.insert_adapters(model, config.adapters)
    family.set_skipped(model, list(config.skip_layers))
    trainable = family.freeze(model)
    arm_names = family.arm_names(model)
    skipped = family.skipped(model)
    echo(f"model: {family.name} from {model_dir}, {len(arm_names)} arms, skipping {skipped or 'none'}")

    with staged_bundle(config.out, overwrite=config.overwrite) as staging:
        with quiet_transformers():
            preprocessing["text"] = family.save_tokenizer(
                model_dir, staging, preprocessing["text"]["max_length"]
            )
        encoder = TextEncoder.from_spec(staging, preprocessing["text"])
        train_data = finetune.encode_examples(train_examples, preprocessing, encoder, labels)
        eval_data = finetune.encode_examples(eval_examples, preprocessing, encoder, labels)

        report = finetune.train(family, model, train_data, config.train, progress=config.progress)
        eval_logits = finetune.predict_logits(family, model, eval_data)
        eval_accuracy = finetune.accuracy(eval_logits, eval_data["labels"])
        echo(
            f"fine-tune: {report.steps} steps, final loss {report.final_loss:.4f}, "
            f"eval accuracy {eval_accuracy:.4f}"
        )

        inputs = family.input_specs(model, preprocessing)
        versions = _versions()
        sample = {k: v[: config.parity_samples] for k, v in eval_data.items() if k != "labels"}
        exported = converter_for(family.name).export(
            family, model, inputs, sample, staging, versions=versions
        )
        echo(f"export: {exported.xml.name}, OpenVINO vs torch max |diff| {exported.parity_max_abs:.2e}")

        manifest = {
            "edge_vl_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": versions,
            "architecture": {
                "family": family.name,
                "model_type": model.config.model_type,
                "source": str(model_dir.resolve()),
                "arms": arm_names,
                "skipped": skipped,
                "kept": [i for i in range(len(arm_names)) if i not in skipped],
            },
            "model": {
                "xml": exported.xml.name,
                "bin": exported.bin.name,
                "precision": "fp32",
                "inputs": [spec.to_dict() for spec in exported.inputs],
                "outputs": exported.outputs,
            },
            "preprocessing": preprocessing,
            "head": family.head(model).to_dict(),
            "metrics": {
                "eval_accuracy": eval_accuracy,
                "eval_examples": len(eval_examples),
                "train_examples": len(train_examples),
                "parity_max_abs": exported.parity_max_abs,
                "parity_samples": exported.parity_samples,
            },
            "training": {
                **config.train.to_dict(),
                "steps": report.steps,
                "final_loss": report.final_loss,
                "adapters": (config.adapters or family.default_adapters).to_dict(),
                "trainable_parameters": family.active_trainable_parameters(model),
                "trainable_tensors": len(trainable),
                "total_parameters": sum(p.numel() for p in model.parameters()),
                "train_data": str(Path(config.train_data).resolve()),
                "eval_data": str(Path(config.eval_data).resolve()),
                "seconds": round(time.perf_counter() - started, 1),
            },
        }
        manifest = finalize_manifest(staging, manifest)
    echo(f"bundle: {Path(config.out)} ({MANIFEST_NAME} + {len(manifest['files'])} files)")
    return BuildResult(bundle=Path(config.out), manifest=manifest, model=model, family=family)


def _check_eval_labels(examples: Sequence[Example], labels: Sequence[str]) -> None:
    known = set(labels)
    for ex in examples:
        if ex.label not in known:
            raise DataError(
                f"label {ex.label!r} does not occur in the training data", path=ex.manifest, line=ex.line
            )


def _require_build_extra() -> None:
    for module in ("torch", "transformers"):
        try:
            __import__(module)
        except ImportError:
            raise MissingExtraError("edge-vl build") from None


def _versions() -> dict[str, str]:
    out = {"edge_vl": __version__}
    for dist in ("openvino", "torch", "transformers", "tokenizers", "numpy", "nncf"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out
