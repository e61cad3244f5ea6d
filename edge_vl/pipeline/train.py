"""Stage 3: the fine-tune — fresh adapters on the pretrained weights with the chosen skip set, as
the authors' fine-tune run reloads the pretrained checkpoint rather than the search's (resumable)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from edge_vl.config import BuildConfig
from edge_vl.pipeline.prepare import Prepared, load_adapted


def finetune_stage(
    config: BuildConfig,
    prep: Prepared,
    skipped: Sequence[int],
    work: Path,
    should_stop: Callable[[], bool],
    echo: Callable[[str], None],
):
    """Train the adapters and head with ``skipped`` layers bypassed; returns (model, summary)."""
    from edge_vl.training.finetune import Checkpointer, TrainLoop

    family = prep.family
    model = load_adapted(family, config, prep.labels)
    family.set_skipped(model, skipped)
    loop = TrainLoop(family, model, prep.train_data, config.train, **prep.placed)
    checkpointer = Checkpointer(work / "finetune", every=config.checkpoint_every, should_stop=should_stop)
    if checkpointer.restore(loop) is not None:
        echo(f"fine-tune: resuming at step {loop.step}/{loop.total_steps}")
    summary = loop.run(after_step=checkpointer.after_step, progress=config.progress)
    return model, summary
