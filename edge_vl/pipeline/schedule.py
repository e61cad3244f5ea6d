"""Training lengths that fit the data: the defaults (3 epochs of batch 32; a 3-epoch search that
scores candidates every 10 steps) are made for thousands of rows, and on a few dozen they would
train a handful of steps and run no bandit round at all. With ``BuildConfig.adapt_schedule`` (the
default) a build on small data instead:

- shrinks the batch so that an epoch has at least :data:`MIN_STEPS_PER_EPOCH` steps;
- fine-tunes for at least :data:`MIN_FINETUNE_STEPS` steps (unless ``max_steps`` is given);
- lets a bandit search (not the ``prior`` estimator's, which has no rounds) run at least
  :data:`MIN_SEARCH_ROUNDS` rounds, by scoring candidates more often (``das_turn``) and, if needed,
  searching for more epochs.

Every change is printed and recorded in the manifest (``training.schedule``). Settings that already
fit the data are left alone, nothing is ever shortened, and a length the user gave
(``BuildConfig.given``: ``--batch-size``, ``--epochs``/``--max-steps``, ``--das-turn``/``--search-epochs``
on the command line) is kept as given — the build then says what the schedule would have done.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from edge_vl.config import BuildConfig, SearchConfig, TrainConfig

MIN_STEPS_PER_EPOCH = 8
MIN_FINETUNE_STEPS = 300
MIN_SEARCH_ROUNDS = 20


def adapt_schedule(
    config: BuildConfig, n_train: int, echo: Callable[[str], None] = print
) -> tuple[BuildConfig, list[str]]:
    """``config`` with training lengths that fit ``n_train`` rows, and what was changed."""
    if not config.adapt_schedule:
        return config, []
    notes: list[str] = []  # what was changed
    kept: list[str] = []  # what would have been changed, had the user not given it
    train = _batch(config.train, n_train, "batch_size" in config.given, notes, kept)
    train = _epochs(train, n_train, "epochs" in config.given, notes, kept)
    search = config.search
    if config.needs_search and not search.stops_after_warmup:  # the prior estimator has no rounds
        search_rows = n_train - max(2, round(n_train * config.search_holdout))
        if search.max_rows is not None:
            search_rows = min(search_rows, search.max_rows)
        per_epoch = max(1, math.ceil(search_rows / train.batch_size))
        given = bool(config.given & {"das_turn", "search_epochs"})
        search = _search_rounds(search, per_epoch, given, notes, kept)
    for note in notes:
        echo(f"small data: {note}")
    if notes:
        echo("small data: give the value (e.g. --epochs) or --fixed-schedule to keep your own lengths")
    for note in kept:
        echo(f"small data: {note}")
    return replace(config, train=train, search=search, schedule_changes=tuple(notes)), notes


def _batch(train: TrainConfig, n_train: int, given: bool, notes: list[str], kept: list[str]) -> TrainConfig:
    """A batch small enough for :data:`MIN_STEPS_PER_EPOCH` steps per epoch."""
    batch = min(train.batch_size, max(1, n_train // MIN_STEPS_PER_EPOCH))
    if batch == train.batch_size:
        return train
    if given:
        steps = math.ceil(n_train / train.batch_size)
        kept.append(
            f"--batch-size {train.batch_size} kept as given ({steps} steps per epoch of {n_train} rows; "
            f"without it the batch would be {batch})"
        )
        return train
    notes.append(
        f"batch size {train.batch_size} → {batch}, so that an epoch of {n_train} rows has "
        f"{math.ceil(n_train / batch)} steps"
    )
    return replace(train, batch_size=batch)


def _epochs(train: TrainConfig, n_train: int, given: bool, notes: list[str], kept: list[str]) -> TrainConfig:
    """Enough epochs for :data:`MIN_FINETUNE_STEPS` fine-tune steps (unless ``max_steps`` is set)."""
    per_epoch = math.ceil(n_train / train.batch_size)
    steps = math.ceil(train.epochs * per_epoch)
    if train.max_steps is not None or steps >= MIN_FINETUNE_STEPS:
        return train
    if given:
        kept.append(
            f"--epochs {train.epochs:g} kept as given ({steps} fine-tune steps; without it the build "
            f"would train at least {MIN_FINETUNE_STEPS})"
        )
        return train
    epochs = MIN_FINETUNE_STEPS / per_epoch
    notes.append(
        f"fine-tune epochs {train.epochs:g} → {epochs:.1f} ({MIN_FINETUNE_STEPS} steps; "
        f"{train.epochs:g} epochs were {steps})"
    )
    return replace(train, epochs=epochs)


def _search_rounds(
    search: SearchConfig, per_epoch: int, given: bool, notes: list[str], kept: list[str]
) -> SearchConfig:
    """A bandit search that scores candidates often enough for :data:`MIN_SEARCH_ROUNDS` rounds."""
    scoring = (search.epochs - search.warmup_epochs) * per_epoch
    rounds = scoring // search.das_turn
    if rounds >= MIN_SEARCH_ROUNDS:
        return search
    if given:
        kept.append(
            f"--das-turn {search.das_turn} / --search-epochs {search.epochs} kept as given ({rounds} "
            f"bandit rounds; without them at least {MIN_SEARCH_ROUNDS})"
        )
        return search
    das_turn = max(1, scoring // MIN_SEARCH_ROUNDS)
    epochs = search.epochs
    while (epochs - search.warmup_epochs) * per_epoch // das_turn < MIN_SEARCH_ROUNDS:
        epochs += 1
    notes.append(
        f"search: candidates scored every {das_turn} steps (was {search.das_turn}) over {epochs} "
        f"epochs (was {search.epochs}), for at least {MIN_SEARCH_ROUNDS} bandit rounds"
    )
    return replace(search, das_turn=das_turn, epochs=epochs)
