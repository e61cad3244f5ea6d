"""Stage 2: the skip plan — which layers the retained model skips. Given (``skip_layers``), or found
by the DAS search for a count from ``skip_count``, a FLOPs budget or a latency budget
(:mod:`edge_vl.budget`). The search trains on the training data minus a held-out part that scores
its candidate skip sets."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_vl.build_records import SearchRecord, SkipPlan
from edge_vl.config import BuildConfig
from edge_vl.errors import DataError, ModelError
from edge_vl.pipeline.prepare import Prepared, load_adapted
from edge_vl.report import describe_uncertainty

#: the smallest search: rows it holds out to score candidates, and rows it trains on
MIN_SEARCH_HELD_OUT, MIN_SEARCH_TRAIN = 2, 8


def skip_plan(
    config: BuildConfig,
    prep: Prepared,
    work: Path,
    should_stop: Callable[[], bool],
    echo: Callable[[str], None],
) -> SkipPlan:
    """The skip set: given, or found by the DAS search within the requested budget."""
    from edge_vl import budget

    n_layers = prep.costs.n_layers
    if config.skip_layers is not None:
        skipped = sorted(int(i) for i in config.skip_layers)
        bad = [i for i in skipped if not 0 <= i < n_layers]
        if bad:
            raise ModelError(f"skip index(es) {bad} out of range: this model has layers 0..{n_layers - 1}")
        echo(f"skip plan: layers {skipped or 'none'} (given, no search)")
        return SkipPlan(method="given", skipped=tuple(skipped))
    need = skip_budget(config, prep, echo)
    if need.count == 0:
        echo("skip plan: the budget is met without skipping; no search")
        return SkipPlan(method="budget", skipped=(), budget=need.record)

    search = config.search
    echo(
        f"skip plan: DAS search for {need.count} of {n_layers} layers ({search.mode} mode, "
        f"{search.estimator} estimator)"
    )
    started = time.perf_counter()
    result = search_stage(config, prep, need.count, work, should_stop)
    seconds = time.perf_counter() - started  # this process's part of a resumed search
    # a folded text tower is not in the graph: skipping its layers would save nothing
    ranking = [i for i in result.ranking if i not in prep.free_layers]
    skipped = budget.select_within(ranking, need.count, need.limit, need.cost_of)
    say_what_the_search_found(result, skipped, seconds, echo)
    return SkipPlan(
        method="das" if result.decided else "das-undecided",
        skipped=tuple(skipped),
        budget=need.record,
        search=result,
        search_config=search.to_dict(),
        search_seconds=round(seconds, 3),
    )


@dataclass(frozen=True)
class SkipBudget:
    """How many layers to skip, and the cost limit a skip set must meet (from a count, a FLOPs
    budget or a latency budget)."""

    count: int
    limit: float
    cost_of: Callable[[Sequence[int]], float]
    #: what the manifest records of the budget
    record: dict[str, Any]


def skip_budget(config: BuildConfig, prep: Prepared, echo: Callable[[str], None]) -> SkipBudget:
    """The number of layers ``config`` asks to skip, directly or through a budget. A FLOPs budget
    is a fraction of the full model's MACs at the checkpoint's own input size (``prep.full_costs``),
    whatever size the bundle takes."""
    from edge_vl import budget

    costs = prep.costs
    n_layers = costs.n_layers
    savings = [costs.saving(i) for i in range(n_layers)]
    if config.flops_budget is not None:
        assert prep.full_costs is not None
        limit = config.flops_budget * prep.full_costs.full()
        count = budget.min_layers_for(limit, costs.retained, savings, "FLOPs")
        record = {"kind": "flops", "fraction": config.flops_budget, "limit_macs": limit}
        return SkipBudget(count, limit, costs.retained, record)
    if config.latency_budget_ms is not None:
        latency, scale = measure_latency_model(config, prep, echo)
        limit = config.latency_budget_ms
        count = budget.min_layers_for(limit, latency.predict, savings, "latency")
        on = (config.target_profile or {}).get("machine", {}).get("cpu", "this machine")
        record = {"kind": "latency", "limit_ms": limit, **asdict(latency), "costs": None, "on": on}
        record["scale"] = scale
        return SkipBudget(count, limit, latency.predict, record)
    arms = n_layers - len(prep.free_layers)
    count = config.skip_count if config.skip_count is not None else arms // 3
    if not 0 <= count < n_layers:
        raise budget.BudgetError(
            f"--skip-count must be between 0 and {n_layers - 1} for {n_layers} layers, got {count}"
        )
    return SkipBudget(count, float("inf"), costs.retained, {"kind": "count", "count": count})


def say_what_the_search_found(
    result: SearchRecord, skipped: Sequence[int], seconds: float, echo: Callable[[str], None]
) -> None:
    """The build log's lines on the search: its scores, how sure it is, and a warning when its data
    did not separate the pick."""
    scores = ", ".join(f"{i}:{result.scores[i]:+.2e}" for i in result.ranking)
    bandit_rounds = sum(r.get("kind") != "prior" for r in result.rounds)
    echo(
        f"search: {bandit_rounds} bandit rounds in {result.steps} steps ({seconds:.0f} s); skip "
        f"{list(skipped)}; {result.estimator} scores, most redundant first: {scores}"
    )
    sureness = result.uncertainty
    if sureness is not None:
        echo(f"search: {describe_uncertainty(sureness)}")
    if result.decided:
        return
    boundary = sureness.boundary if sureness is not None else None
    reason = (
        f"the {sureness.rows} held-out rows do not separate layer {boundary.picked_layer} (skipped) "
        f"from layer {boundary.kept_layer} (kept)"
        if sureness is not None and boundary is not None
        else f"the search's {result.estimator} scores did not separate the layers"
    )
    echo(
        f"warning: {reason}; the skip set {list(skipped)} is the search's best guess, not a finding "
        "(give more data, or choose with --skip-layers)"
    )


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


def search_stage(
    config: BuildConfig,
    prep: Prepared,
    count: int,
    work: Path,
    should_stop: Callable[[], bool],
    *,
    name: str = "search",
) -> SearchRecord:
    """Run the DAS search on a held-out split of the training data (resumable from ``work/name``)."""
    from edge_vl.training.search import run_search

    train_data, val_data = search_split(config, prep)
    return run_search(
        prep.family,
        prep.model,
        train_data,
        val_data,
        count,
        config.search,
        config.train,
        progress=config.progress,
        checkpoint_dir=work / name,
        checkpoint_every=config.checkpoint_every,
        should_stop=should_stop,
        **prep.placed,
    )


def measure_latency_model(config: BuildConfig, prep: Prepared, echo: Callable[[str], None]):
    """Time the exported graph with every layer kept and every layer skipped (batch 1, this machine);
    layers in between are interpolated by their MACs. Returns the model and the factor its times were
    scaled by (a target profile's speed against this machine's; 1.0 without one)."""
    from edge_vl.budget import LatencyModel
    from edge_vl.converters import latency_with_skipped

    family = prep.family
    model = load_adapted(family, config, prep.labels)
    inputs = prep.input_specs(model)
    sample = prep.eval_data.batch(slice(0, 2))
    kept, skipped = (
        latency_with_skipped(family, model, inputs, sample, layers, folded=prep.folded)
        for layers in ([], list(range(prep.costs.n_layers)))
    )
    echo(f"latency: {kept:.2f} ms with every layer kept, {skipped:.2f} ms with every layer skipped")
    factor = 1.0
    if prep.target_scale:  # the budget is the target's: scale by its speed on the reference graph
        factor = prep.target_scale["int8" if config.precision == "int8" else "fp32"]
        kept, skipped = kept * factor, skipped * factor
        echo(f"latency: {kept:.2f} / {skipped:.2f} ms predicted on the target (× {factor:.2f})")
    return LatencyModel(all_kept_ms=kept, all_skipped_ms=skipped, costs=prep.costs), factor
