"""Stage 4: the bundle — evaluate the fine-tuned model, export the retained subgraph (converters:
FP32 IR checked against torch, the precision chosen by measurement, text buckets), time it,
write the manifest and the report, sign, and swap the bundle in atomically."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge_vl._version import __version__
from edge_vl.build_records import (
    MAX_CONFUSION_LABELS,
    Cost,
    DataInfo,
    Latency,
    Metrics,
    PrecisionChoice,
    PrecisionTarget,
    SkipPlan,
    Training,
)
from edge_vl.bundle import file_entries, finalize_manifest
from edge_vl.config import BuildConfig, model_source
from edge_vl.errors import ExportError
from edge_vl.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Architecture,
    Manifest,
    ModelSpec,
    RuntimeInfo,
    TextBucket,
)
from edge_vl.output import staged_bundle
from edge_vl.pipeline.calibrate import Reliability, reliability
from edge_vl.pipeline.prepare import Prepared
from edge_vl.report import REPORT_HTML, write_report
from edge_vl.runtime.profiles import loadable_profiles
from edge_vl.training.losses import score_kind
from edge_vl.versions import package_versions

if TYPE_CHECKING:
    from edge_vl.converters.export import ExportResult


def package_stage(
    config: BuildConfig,
    prep: Prepared,
    model,
    plan: SkipPlan,
    summary,
    started: float,
    echo: Callable[[str], None],
) -> Manifest:
    """Write the bundle of the fine-tuned ``model`` to ``config.out``; returns its manifest."""
    from edge_vl.converters import export as export_ir
    from edge_vl.training import finetune

    family = prep.family
    logits = finetune.predict_logits(family, model, prep.eval_data)
    eval_accuracy = finetune.accuracy(logits, prep.eval_data.labels)
    loss = summary.final_loss
    echo(f"fine-tune: {summary.steps} steps, final loss {loss:.4f}, eval accuracy {eval_accuracy:.4f}")
    versions = package_versions()
    with staged_bundle(config.out, overwrite=config.overwrite) as staging:
        if prep.tokenizer_file is not None:
            shutil.copy(prep.tokenizer_file, staging / prep.tokenizer_file.name)
        inputs = prep.input_specs(model)
        sample = prep.eval_data.batch(slice(0, config.parity_samples))
        exported = export_ir(family, model, inputs, sample, staging, versions=versions, folded=prep.folded)
        echo(f"export: {exported.xml.name}, OpenVINO vs torch max |diff| {exported.parity_max_abs:.2e}")
        precision, choice, ir_logits = choose_precision(config, prep, inputs, exported.xml, staging, echo)
        # calibration, "not sure" and the drift reference describe the answers the device gives:
        # FP16 and INT8 weights shift the logits a little, so the shipped IR's where it was evaluated
        shipped = logits.numpy() if ir_logits is None else ir_logits
        sure = reliability(config, prep, shipped, score_kind(config.train.loss), echo)
        buckets = text_buckets(config, prep, model, inputs, sample, staging, precision, versions, echo)
        measure = config.measure_latency
        latency = timed(prep, model, sample, exported.xml, precision, echo) if measure else None
        files = Packaged(
            exported,
            precision,
            choice,
            buckets,
            latency,
            runtime_for(config, staging),
            versions,
            sure,
            confusion_of(logits, prep.eval_data.labels, len(prep.labels)),
        )
        draft = manifest_for(config, prep, model, plan, summary, files, eval_accuracy, started, staging)
        write_report(staging, draft, config.report_variants, name=Path(config.out).name)
        manifest = finalize_manifest(staging, draft)
        if config.sign_key is not None:
            from edge_vl.signing import sign_bundle

            signature = sign_bundle(staging, config.sign_key, release=config.sign_release)
            echo(f"bundle: signed with key {signature.key_id}, release {signature.release}")
    echo(f"bundle: {Path(config.out)} ({MANIFEST_NAME} + {len(manifest.files)} files)")
    echo(f"report: {Path(config.out) / REPORT_HTML}")
    return manifest


def timed(prep: Prepared, model, sample, xml: Path, precision: str, echo) -> Latency:
    """:func:`measure_latency` (the retained model at its precision, the full model in fp32), logged."""
    latency = measure_latency(prep, model, sample, xml, precision)
    height, width = prep.full_shape.image
    echo(
        f"latency: {latency.retained:.2f} ms (batch 1, this machine); {latency.full:.2f} ms "
        f"for the full model (no layer skipped, {height}×{width} pixels)"
    )
    return latency


def confusion_of(logits, labels, n_labels: int) -> tuple[tuple[int, ...], ...] | None:
    """The eval rows' confusion matrix (rows: true label; columns: answer), for few enough labels."""
    if n_labels > MAX_CONFUSION_LABELS:
        return None
    matrix = [[0] * n_labels for _ in range(n_labels)]
    for truth, answer in zip(labels.tolist(), logits.argmax(-1).tolist(), strict=True):
        matrix[truth][answer] += 1
    return tuple(tuple(row) for row in matrix)


def text_buckets(config, prep, model, inputs, sample, staging, precision, versions, echo) -> list[TextBucket]:
    """Shorter text lengths exported next to the full one (``--text-buckets``), where they apply."""
    from edge_vl.converters.buckets import export_text_buckets

    full = prep.shape.text_length
    lengths = [b for b in config.text_buckets if full and b < full]
    if config.text_buckets and full is None:
        echo("text buckets: not exported (this model takes no text)")
    elif config.text_buckets and prep.folded is not None:
        echo("text buckets: not exported (the text is folded into the graph, without its padding)")
    elif lengths and precision == "int8":
        echo("text buckets: not exported with int8 (separately quantized lengths change answers)")
    elif lengths:
        return export_text_buckets(
            prep.family,
            model,
            inputs,
            sample,
            lengths,
            staging,
            precision=precision,
            versions=versions,
            echo=echo,
        )
    return []


@dataclass(frozen=True)
class Packaged:
    """What the export wrote into the staging directory, and what was measured on it."""

    exported: ExportResult
    precision: str
    precision_choice: PrecisionChoice | None
    buckets: list[TextBucket]
    latency: Latency | None
    runtime: RuntimeInfo
    versions: dict[str, str]
    reliability: Reliability
    confusion: tuple[tuple[int, ...], ...] | None


# long: one constructor call, field by field, so the manifest's shape reads top to bottom
def manifest_for(
    config,
    prep,
    model,
    plan: SkipPlan,
    summary,
    files: Packaged,
    eval_accuracy: float,
    started: float,
    staging: Path,
) -> Manifest:
    """The bundle's manifest, listing the files in ``staging`` so far (:func:`~edge_vl.bundle.
    finalize_manifest` lists the rest and seals it)."""
    family, costs, exported = prep.family, prep.costs, files.exported
    skipped = tuple(family.skipped(model))
    trainable = family.active_trainable_parameters(model)
    total = sum(p.numel() for p in model.parameters())
    majority = float((prep.eval_data.labels == prep.train_data.labels.mode().values).float().mean())
    return Manifest(
        format_version=FORMAT_VERSION,
        edge_vl_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        versions=files.versions,
        runtime=files.runtime,  # the runtime profiles whose OpenVINO reads every IR file
        architecture=Architecture(
            family=family.name,
            model_type=model.config.model_type,
            source=model_source(config.model_dir),
            layers=tuple(prep.layer_names),
            skipped=skipped,
            kept=tuple(i for i in range(len(prep.layer_names)) if i not in skipped),
        ),
        model=ModelSpec(
            xml=exported.xml.name,
            bin=exported.bin.name,
            precision=files.precision,
            inputs=tuple(exported.inputs),
            outputs=tuple(exported.outputs),
            text_buckets=tuple(files.buckets),
            folded_texts=prep.folded,
        ),
        preprocessing=prep.preprocessing,
        head=family.head(model, score_kind(config.train.loss), config.label_prompts(prep.labels)),
        files=file_entries(staging),
        data=DataInfo(warnings=tuple(prep.warnings), eval_fingerprint=files.reliability.eval_fingerprint),
        calibration=files.reliability.calibration,
        abstention=files.reliability.abstention,
        reference=files.reliability.reference,
        metrics=Metrics(
            eval_accuracy=eval_accuracy,
            eval_examples=prep.n_eval,
            majority_accuracy=majority,
            train_examples=prep.n_train,
            parity_max_abs=exported.parity_max_abs,
            parity_samples=exported.parity_samples,
            latency_ms=files.latency,
            confusion=files.confusion,
            coverage_curve=tuple(files.reliability.coverage_curve),
        ),
        cost=Cost(
            unit="MACs (batch 1; matmuls and convolutions)",
            full_model=prep.full_costs.full(),  # with its text tower, as the checkpoint runs
            retained_model=costs.retained(skipped),
            retained_fraction=costs.retained(skipped) / prep.full_costs.full(),
            per_layer=costs,
        ),
        skip_plan=plan,
        precision_choice=files.precision_choice,
        training=Training(
            **config.train.to_dict(),
            steps=summary.steps,
            final_loss=summary.final_loss,
            adapters=(config.adapters or family.default_adapters).to_dict(),
            schedule_changes=tuple(config.schedule_changes),
            trainable_parameters=trainable,
            total_parameters=total,
            trainable_fraction=trainable / total,
            train_data=str(Path(config.train_data).resolve()),
            eval_data=str(Path(config.eval_data).resolve()),
            seconds=round(time.perf_counter() - started, 1),
        ),
    )


def choose_precision(
    config: BuildConfig, prep: Prepared, inputs, fp32_xml: Path, staging: Path, echo
) -> tuple[str, PrecisionChoice | None, np.ndarray | None]:
    """``(precision, choice, logits)``: FP32 as exported, or the candidate :func:`edge_vl.converters.
    precision.select_precision` measures best here (or on the target profile's machine), with its
    logits on the eval rows."""
    if config.precision == "fp32":
        return "fp32", None, None
    from edge_vl.converters.precision import numpy_batches, select_precision
    from edge_vl.runtime.cpu import has_int8_dot_product

    names = [spec.name for spec in inputs]
    target = config.target_profile
    vnni = has_int8_dot_product(target["machine"]["flags"] if target else None)
    choice, logits = select_precision(
        config.precision,
        fp32_xml,
        staging,
        eval_batches=numpy_batches(prep.eval_data, names, 64),
        labels=prep.eval_data.labels.numpy(),
        calibration=numpy_batches(prep.calibration_data, names, 1) if prep.calibration_data else None,
        calibration_size=len(prep.calibration_data) if prep.calibration_data else 0,
        vnni=vnni,
        max_accuracy_drop=config.max_accuracy_drop,
        latency_scale=prep.target_scale,
        echo=echo,
    )
    if target:
        choice = replace(choice, target=PrecisionTarget(target["machine"].get("cpu"), prep.target_scale))
    return choice.chosen, choice, logits


def runtime_for(config: BuildConfig, staging: Path) -> RuntimeInfo:
    """The bundle's loadable runtime profiles; fails if the target profile's runtime is not one."""
    runtime = loadable_profiles(sorted(staging.glob("*.xml")))
    wanted = (config.target_profile or {}).get("runtime_profile")
    if wanted and wanted not in runtime.profiles:
        raise ExportError(
            f"the target runs the {wanted} runtime, which cannot read this bundle's IR "
            f"(opset{runtime.max_opset}); it loads with: {', '.join(runtime.profiles)}"
        )
    return runtime


#: interleaved rounds that time the retained against the full model in a build
LATENCY_ROUNDS = 30


def measure_latency(prep: Prepared, model, sample, retained_xml: Path, precision: str) -> Latency:
    """Median batch-1 latency (ms, this machine) of the exported retained model and of the full
    model as a user would otherwise run it (no layer skipped, its text tower, the checkpoint's own
    image size), timed in interleaved rounds (timed one after the other, a noisy spell could make
    the retained model look no faster)."""
    import torch

    from edge_vl.converters.export import temporary_export
    from edge_vl.timing import interleaved_ir_latency

    full_inputs = prep.family.input_specs(model, prep.full_shape)  # token inputs, not folded
    full_sample = dict(sample)
    # the eval images at the checkpoint's size: real pixels for the export's parity check (bilinear,
    # not the Predictor's resample of the original files; the values do not change the timing)
    if prep.full_shape.image != prep.shape.image:
        pixels = sample["pixel_values"]
        full_sample["pixel_values"] = torch.nn.functional.interpolate(
            pixels, size=prep.full_shape.image, mode="bilinear", align_corners=False
        )
    feeds = {
        name: {spec.name: data[spec.name][:1].numpy() for spec in specs}
        for name, specs, data in (
            ("retained", prep.input_specs(model), sample),
            ("full", full_inputs, full_sample),
        )
    }
    with temporary_export(prep.family, model, full_inputs, full_sample, []) as full_xml:
        times = interleaved_ir_latency({"retained": retained_xml, "full": full_xml}, feeds, LATENCY_ROUNDS)
    median = {name: float(np.median(t)) for name, t in times.items()}
    return Latency(
        retained=median["retained"],
        full=median["full"],
        precision=precision,
        full_image_size=tuple(prep.full_shape.image),
    )
