"""``build()``: labelled data + a local checkpoint → DAS search → adapter fine-tune → bundle.

The orchestrator only sequences the stages, each a module with one job:

0. :mod:`~edge_vl.pipeline.dataset` — read and check the data (nothing is written before this passes);
   :mod:`edge_vl.output` checks ``--out`` and locks it.
1. :mod:`~edge_vl.pipeline.prepare` — load the checkpoint offline, encode every example once.
2. :mod:`~edge_vl.pipeline.plan` — the skip set: given, or found by the DAS search;
   with ``--image-sizes``, :mod:`~edge_vl.pipeline.compute_plan` chooses the input size with it.
3. :mod:`~edge_vl.pipeline.train` — fine-tune fresh adapters with that skip set.
4. :mod:`~edge_vl.pipeline.package` — export (:mod:`converters`), manifest, report, atomic bundle.

Long stages checkpoint into a work directory next to the bundle (:mod:`~edge_vl.pipeline.workdir`).
Rerunning the same command resumes where it stopped; finished stages are not redone. SIGINT/SIGTERM
stop a build at the next step boundary after saving a checkpoint. The work directory is removed
once the bundle is written.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_vl.build_records import SkipPlan
from edge_vl.config import BuildConfig as BuildConfig
from edge_vl.errors import BuildError, MissingExtraError
from edge_vl.fileio import disk_full, free_space
from edge_vl.manifest import Manifest
from edge_vl.output import OutputLock, check_output
from edge_vl.pipeline.compute_plan import compute_plan
from edge_vl.pipeline.dataset import TrainingData as TrainingData
from edge_vl.pipeline.dataset import build_inputs
from edge_vl.pipeline.dataset import read_data as read_data
from edge_vl.pipeline.package import package_stage
from edge_vl.pipeline.plan import skip_plan as skip_plan
from edge_vl.pipeline.prepare import Prepared as Prepared
from edge_vl.pipeline.prepare import load_adapted as load_adapted
from edge_vl.pipeline.prepare import prepare as prepare
from edge_vl.pipeline.schedule import adapt_schedule
from edge_vl.pipeline.train import finetune_stage
from edge_vl.pipeline.workdir import WorkDir
from edge_vl.pipeline.workdir import stop_on_signals as stop_on_signals
from edge_vl.schema import to_json
from edge_vl.versions import package_versions as package_versions


@dataclass(frozen=True)
class BuildResult:
    """The written bundle and its manifest; ``model``/``family`` are the trained torch model (with
    adapters and the skip set applied) and its architecture family, for inspection and tests."""

    bundle: Path
    manifest: Manifest | None
    model: Any = field(default=None, repr=False)
    family: Any = field(default=None, repr=False)


def build(config: BuildConfig, *, echo: Callable[[str], None] = print) -> BuildResult:
    """Run every stage (see the module docstring). Returns the bundle path and manifest. Under
    ``torchrun`` every process calls it; only rank 0 locks ``--out``, writes and returns a manifest
    (the other ranks return ``manifest=None`` once the bundle is written)."""
    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read once when huggingface_hub is imported
    for module in ("torch", "transformers"):
        try:
            __import__(module)
        except ImportError:
            raise MissingExtraError("edge-vl build") from None
    from edge_vl.training.architectures import family_for_checkpoint
    from edge_vl.training.parallel import placement

    where = placement(config.device, config.amp)
    echo = echo if where.is_main else _quiet
    echo(where.describe())
    if config.sign_key is not None:
        from edge_vl.signing import load_private_key

        load_private_key(config.sign_key)  # a wrong key fails now, not after the training
    check_output(config.out, {}, overwrite=config.overwrite)  # fail fast; inputs are checked below
    data = read_data(config)  # fails on bad data before anything is written
    config, _ = adapt_schedule(config, len(data.train), echo)
    # a concrete learning rate, so the work directory's fingerprint and the manifest record it
    config = replace(config, train=config.train.for_family(family_for_checkpoint(config.model_dir)))
    with OutputLock(config.out) if where.is_main else contextlib.nullcontext():  # one build per --out
        if where.is_main:
            check_output(config.out, build_inputs(config, data), overwrite=config.overwrite)
            for warning in data.warnings:
                echo(f"warning: {warning}")
        work = WorkDir.open(config, data, echo, placement=where)
        try:
            with stop_on_signals() as should_stop:
                config, prep, plan = plan_stage(config, data, work, should_stop, echo, where)
                model, summary = finetune_stage(config, prep, plan.skipped, work.path, should_stop, echo)
                manifest = None
                if where.is_main:  # export, parity check and bundle: on the CPU, once
                    model.to("cpu")
                    manifest = package_stage(config, prep, model, plan, summary, started, echo)
                where.barrier()
        except (OSError, RuntimeError) as e:  # torch and OpenVINO report a full disk as RuntimeError
            if disk_full(e, work.path):
                raise BuildError(
                    f"the disk is full while building {config.out} ({free_space(work.path)}; {e}); free "
                    f"some space and rerun the same command: {work.path} keeps the progress"
                ) from e
            work.discard_if_useless()
            raise
        except BaseException:
            work.discard_if_useless()
            raise
        if where.is_main:
            work.remove()
    return BuildResult(bundle=Path(config.out), manifest=manifest, model=model, family=prep.family)


def plan_stage(
    config: BuildConfig, data: TrainingData, work: WorkDir, should_stop: Callable[[], bool], echo, where
) -> tuple[BuildConfig, Prepared, SkipPlan]:
    """The skip plan (with ``image_sizes``: and the input size) and the data prepared at that size;
    a plan an earlier run of the build finished is reused. Returns the config at the chosen size."""
    plan = work.plan()
    if plan is None and config.image_sizes:
        plan = compute_plan(config, data, work, should_stop, echo, placement=where)
        work.update(plan=to_json(plan))
    if plan is not None and plan.sizes is not None:  # train and export at the chosen size
        config = replace(config, image_size=plan.sizes.chosen, image_sizes=())
    prep = prepare(config, data, work.path, echo, placement=where)
    plan = plan or skip_plan(config, prep, work.path, should_stop, echo)
    work.update(plan=to_json(plan))
    return config, prep, plan


def _quiet(_: str) -> None:
    """What ranks other than 0 print: nothing (rank 0 speaks for the build)."""
