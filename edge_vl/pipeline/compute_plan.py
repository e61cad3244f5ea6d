"""Stage 2 with ``--image-sizes``: the compute plan — the input size and the skip set, chosen
together to meet a FLOPs or latency budget at the lowest estimated held-out loss.

Wu et al. (NeurIPS 2023) search only which layers to skip, at the pretraining input size. The
work of these models also grows with their input (image tokens ∝ pixels), and many tasks need
less than the pretraining size, so edge-vl departs from the paper here: it runs the default
(``prior``) search once per candidate size — a warm-up epoch at that size, then every layer
skipped alone on the same held-out rows — and estimates a skip set's loss at that size as the
loss with nothing skipped plus each skipped layer's increase. Per size, the skip set is the one the
budget needs (its cost measured at that size: MACs, or two exported graphs timed for latency).
Across sizes the lowest estimate wins, and the plan says when the held-out rows cannot tell it from
another size's. (An earlier rule took the cheapest size within two standard errors of the lowest;
on small data that meant the smallest size, which lost after fine-tuning: docs/benchmarks.md, part l.)
The fine-tune then runs at the chosen size only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from edge_vl.budget import BudgetError, select_within
from edge_vl.build_records import SearchRecord, SizeCandidate, SizePlan, SkipPlan
from edge_vl.config import BuildConfig
from edge_vl.pipeline.dataset import TrainingData
from edge_vl.pipeline.plan import say_what_the_search_found, search_stage, skip_budget
from edge_vl.pipeline.prepare import prepare
from edge_vl.schema import parse, to_json
from edge_vl.training.search import prior_base_loss


def compute_plan(
    config: BuildConfig,
    data: TrainingData,
    work,
    should_stop: Callable[[], bool],
    echo: Callable[[str], None],
    *,
    placement=None,
) -> SkipPlan:
    """Score every size of ``config.image_sizes`` (resumable: a finished size is kept in ``work``'s
    state) and return the chosen size's skip plan, with every candidate in its ``sizes`` record."""
    kind = "flops" if config.flops_budget is not None else "latency"
    done: dict[str, dict] = dict(work.state.get("sizes", {}))
    scored: dict[int, tuple[SizeCandidate, SkipPlan | None]] = {}
    for size in sorted(config.image_sizes, reverse=True):
        if str(size) not in done:
            at_size = replace(config, image_size=size, image_sizes=())
            candidate, plan, full = score_size(at_size, data, work.path, should_stop, echo, placement)
            done[str(size)] = {"candidate": to_json(candidate), "plan": to_json(plan) if plan else None}
            work.update(sizes=done, sizes_full_model_macs=full)
        record = done[str(size)]
        plan = parse(SkipPlan, record["plan"]) if record["plan"] is not None else None
        scored[size] = (parse(SizeCandidate, record["candidate"]), plan)
    candidates = [c for c, _ in scored.values()]
    chosen = choose_size(candidates)
    limit = config.flops_budget if kind == "flops" else config.latency_budget_ms
    plan = scored[chosen.size][1]
    assert plan is not None and limit is not None  # a feasible candidate has a plan
    sizes = SizePlan(
        chosen=chosen.size,
        candidates=tuple(sorted(candidates, key=lambda c: c.size)),
        kind=kind,
        limit=limit,
        full_model_macs=float(work.state["sizes_full_model_macs"]),
    )
    say_the_choice(sizes, echo)
    return replace(plan, sizes=sizes)


def score_size(
    config: BuildConfig,
    data: TrainingData,
    work: Path,
    should_stop: Callable[[], bool],
    echo: Callable[[str], None],
    placement,
) -> tuple[SizeCandidate, SkipPlan | None, float]:
    """One size: the skip set its budget needs and its estimated held-out loss (after a warm-up at
    that size), not feasible when no skip set meets the budget there; and the full model's MACs at
    the checkpoint's size."""
    size = config.image_size
    assert size is not None

    def say(line: str) -> None:
        echo(f"[{size} px] {line}")

    prep = prepare(config, data, work, say, placement=placement)
    assert prep.full_costs is not None
    full = float(prep.full_costs.full())
    try:
        need = skip_budget(config, prep, say)
    except BudgetError as e:
        say(f"not a candidate: {e}")
        return SizeCandidate(size=size, feasible=False), None, full
    # the search needs one arm to score; with nothing to skip the pick is empty
    started = time.perf_counter()
    result = search_stage(config, prep, max(need.count, 1), work, should_stop, name=f"search-{size}px")
    seconds = time.perf_counter() - started  # this process's part of a resumed search
    ranking = [i for i in result.ranking if i not in prep.free_layers]
    skipped = select_within(ranking, need.count, need.limit, need.cost_of) if need.count else []
    if need.count:
        say_what_the_search_found(result, skipped, seconds, say)
    base, loss = estimated_loss(result, skipped)
    se = prior_base_loss(result.rounds)[1]
    frontier = tuple(
        (float(need.cost_of(ranking[:k])), estimated_loss(result, ranking[:k])[1])
        for k in range(len(ranking))
    )
    candidate = SizeCandidate(
        size=size,
        feasible=True,
        skipped=tuple(skipped),
        cost=float(need.cost_of(skipped)),
        base_loss=base,
        loss_se=se,
        estimated_loss=loss,
        frontier=frontier,
    )
    plan = SkipPlan(
        method="budget" if not need.count else "das" if result.decided else "das-undecided",
        skipped=tuple(skipped),
        budget=need.record,
        search=result,
        search_config=config.search.to_dict(),
        search_seconds=round(seconds, 3),
    )
    return candidate, plan, full


def estimated_loss(result: SearchRecord, skipped: Sequence[int]) -> tuple[float, float]:
    """(loss with nothing skipped, estimated loss of ``skipped``) from the search's prior round:
    each skipped layer adds its increase when skipped alone (interactions are not modelled)."""
    from edge_vl.training.search import prior_losses

    base = prior_base_loss(result.rounds)[0]
    alone = prior_losses(result.rounds, len(result.ranking))
    return base, base + sum(alone[i] - base for i in skipped)


def choose_size(candidates: Sequence[SizeCandidate]) -> SizeCandidate:
    """The feasible candidate with the lowest estimated loss (on a tie, the cheaper).

    Raises:
        BudgetError: no size meets the budget.
    """
    feasible = [c for c in candidates if c.feasible and c.estimated_loss is not None]
    if not feasible:
        sizes = ", ".join(str(c.size) for c in candidates)
        raise BudgetError(f"no input size of {sizes} px meets the budget, whatever layers are skipped")
    return min(feasible, key=lambda c: (c.estimated_loss or 0.0, c.cost or 0.0, c.size))


def say_the_choice(sizes: SizePlan, echo: Callable[[str], None]) -> None:
    """The build log's table of candidates and the choice, with a warning when it is a bet."""
    unit = "GMACs" if sizes.kind == "flops" else "ms"
    scale = 1e-9 if sizes.kind == "flops" else 1.0
    chosen = next(c for c in sizes.candidates if c.size == sizes.chosen)
    for c in sorted(sizes.candidates, key=lambda c: -c.size):
        if not c.feasible:
            echo(f"compute plan: {c.size} px: the budget cannot be met")
            continue
        echo(
            f"compute plan: {c.size} px, skip {list(c.skipped) or 'none'}: {(c.cost or 0) * scale:.3g} "
            f"{unit}, held-out loss {c.base_loss:.4f} ± {c.loss_se or 0:.4f} with nothing skipped, "
            f"{c.estimated_loss:.4f} estimated"
        )
    echo(
        f"compute plan: chose {chosen.size} px, skip {list(chosen.skipped) or 'none'} (the lowest "
        "estimated loss)"
    )
    if doubt := sizes.doubt():
        echo(f"compute plan: WARNING: {doubt}")
