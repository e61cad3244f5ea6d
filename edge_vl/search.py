"""DAS search (Wu et al., NeurIPS 2023): a bandit whose arms are the skippable layers.

Per training micro-batch, k distinct layers are sampled with weights ``sigmoid(gate)`` and replaced
by their skip adapters; adapters, skip adapters and head train under that sub-network. After the
warm-up epoch, every ``das_turn`` micro-batches ``das_step`` distinct candidate skip sets are scored
on a held-out batch without gradients; reward ``R = exp(-loss)``, baseline ``b = mean(R)``, and
every layer ``i`` in candidate ``c`` moves by ``η (R_c − b) p_i (1 − p_i)`` with ``p`` frozen for the
round. The result is the top-k of the gates.

Two modes:

- ``paper``: the authors' choices, quirks included — rewards computed in *train* mode (dropout
  on) and on the *same* held-out batch every round, as the authors' ViLT/METER search modules
  (``*_module_search.py``) do.
- ``clean`` (default): rewards in eval mode on a *fresh* random held-out batch each round, and
  no layer skipped during the warm-up epoch (see below).

In both modes the held-out batches come from a split of the training data that the search never
trains on (the authors' METER/NLVR2 "validation" overlapped training — we knowingly
differ there). Unlike the paper, the fine-tune run is started by the caller (see
:mod:`edge_vl.build`), which reloads the pretrained weights with fresh adapters, as the authors'
fine-tune run does.

Warm-up without skipping (``clean`` mode; ``warmup_skipping``): the paper samples k skipped layers
from the first step. Then the layers sampled early get trained skip adapters first and keep winning
("rich get richer"), and later every skip set scores about the same: in the
search trace of ``examples/benchmarks/results/demo-precision-auto/manifest.json`` the candidates of
a round differ by a median 0.0105 in held-out loss over the first 25 rounds and 0.0014 over the last
25, so the first rounds' noise picks the set (``examples/benchmarks/search_trace.py``; the demo's
search with the clean warm-up, ``results/demo-default``: 0.2699 and 0.0240). The search that
skipped during warm-up chose the last MiniLM layer (layer 5), which PETL training alone shows to be
the layer the task can least lose
(``examples/benchmarks/layer_importance.py``: after 500 PETL steps, skipping layer 5 alone raised the
held-out loss 0.46 → 2.01 and took colour questions from 49 % to 0 %; no other layer cost more than
0.45; a trained skip adapter recovers much of it: the random set [3, 5, 7, 9] reached 0.9311 in
``examples/benchmarks/variants.py``). Training only the PETL adapters during warm-up lets the
first rewards measure what each layer does for a model that has started to solve the task. The
authors' LLaVA-DAS likewise skips fewer layers during warm-up (k ramps up in its ``das_trainer.py``).

Estimators (not in the paper except ``gates``): what ranks the layers at the end. ``gates``: the
bandit's gates (Wu et al., Sec. 3.2). ``effects``: each layer's added held-out loss, fitted by least
squares to every candidate the rounds scored. ``prior``: each layer's held-out loss when skipped
alone right after the warm-up (the ``prior_rows`` round) — an importance prior from the warm-up,
with no bandit rounds, so the search ends after its warm-up epoch. On the demo its ranking agreed
with fine-tuned accuracies far better than the gates' (``examples/benchmarks/search_quality.py``,
README "Status").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_vl.architectures.base import ArchitectureFamily
from edge_vl.encoded import EncodedData
from edge_vl.errors import Interrupted
from edge_vl.finetune import CPU, Checkpointer, TrainConfig, TrainLoop
from edge_vl.losses import row_losses
from edge_vl.parallel import Placement

MODES = ("clean", "paper")
#: how the final ranking is read off a search: the bandit's gates (the paper), the layers' added
#: held-out loss estimated from every candidate the rounds scored (:func:`layer_effects`), or the
#: held-out loss of each layer skipped alone after the warm-up (:func:`prior_losses`)
ESTIMATORS = ("gates", "effects", "prior")
#: held-out rows of the single-layer round when the ``prior`` estimator needs one and none is given
PRIOR_ROWS = 1000
#: bootstrap resamples of those rows that measure how sure the prior's pick is
PRIOR_RESAMPLES = 1000
#: the estimator of ``clean`` searches (``paper`` mode reads the gates, as the authors do): on the
#: demo the prior ranked fine-tuned skip sets better than the gates, at a third of the cost (README)
DEFAULT_ESTIMATOR = "prior"


@dataclass
class SearchConfig:
    """DAS hyper-parameters (defaults: the authors' ``config.py``, "DAS setting")."""

    #: search length in epochs over the search's training split (epoch 0 is warm-up)
    epochs: int = 3
    #: epochs without gate updates at the start
    warmup_epochs: int = 1
    #: training micro-batches between two bandit rounds
    das_turn: int = 10
    #: distinct candidate skip sets scored per round
    das_step: int = 3
    #: gate learning rate η
    gate_lr: float = 1.0
    #: held-out batch size for rewards
    val_batch_size: int = 64
    mode: str = "clean"
    #: skip k sampled layers during warm-up as the paper does (None: only in ``paper`` mode)
    warmup_skipping: bool | None = None
    #: train the search on at most this many training rows (a seeded subset; None: all of them).
    #: Not in the paper: it bounds the search's cost on large datasets.
    max_rows: int | None = None
    #: what ranks the layers at the end (``ESTIMATORS``; None: ``DEFAULT_ESTIMATOR``, or the gates in
    #: ``paper`` mode — the paper reads the gates)
    estimator: str | None = None
    #: after the warm-up, score every layer skipped alone on ``prior_rows`` held-out rows (one extra
    #: round of single-layer candidates, used by the ``effects`` and ``prior`` estimators; None:
    #: ``PRIOR_ROWS`` for ``prior``, else no such round). Not in the paper.
    prior_rows: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"search mode must be one of {MODES}, got {self.mode!r}")
        if self.estimator is None:
            self.estimator = "gates" if self.mode == "paper" else DEFAULT_ESTIMATOR
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"search estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.prior_rows is None:
            self.prior_rows = PRIOR_ROWS if self.estimator == "prior" else 0
        if self.estimator == "prior" and (self.prior_rows < 1 or self.warmup_epochs < 1):
            raise ValueError(
                "the prior estimator scores layers after a warm-up on held-out rows: it needs "
                f"warmup_epochs ≥ 1 and prior_rows ≥ 1, got {self.warmup_epochs} and {self.prior_rows}"
            )
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"search max_rows must be at least 1, got {self.max_rows}")
        if self.epochs <= self.warmup_epochs:
            raise ValueError(
                f"search epochs ({self.epochs}) must exceed warm-up epochs ({self.warmup_epochs})"
            )

    @property
    def stops_after_warmup(self) -> bool:
        """The ``prior`` estimator needs no bandit rounds: the search ends with its prior round."""
        return self.estimator == "prior"

    @property
    def skips_in_warmup(self) -> bool:
        return self.mode == "paper" if self.warmup_skipping is None else self.warmup_skipping

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GateBandit:
    """The redundancy gates and the update rule; knows nothing about models."""

    def __init__(self, n_layers: int, k: int, *, das_step: int = 3, gate_lr: float = 1.0, seed: int = 0):
        if not 0 < k < n_layers:
            raise ValueError(f"k must be between 1 and {n_layers - 1} for {n_layers} layers, got {k}")
        if das_step > math.comb(n_layers, k):
            raise ValueError(
                f"das_step={das_step} exceeds the {math.comb(n_layers, k)} distinct skip sets of size {k}"
            )
        self.n_layers, self.k, self.das_step, self.gate_lr = n_layers, k, das_step, gate_lr
        self.gates = torch.zeros(n_layers, dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(seed)

    def probs(self) -> torch.Tensor:
        return torch.sigmoid(self.gates)

    def sample(self) -> list[int]:
        """k distinct layers, drawn without replacement with weights ``sigmoid(gates)``."""
        drawn = torch.multinomial(self.probs(), self.k, replacement=False, generator=self.generator)
        return sorted(drawn.tolist())

    def candidates(self) -> list[tuple[int, ...]]:
        """``das_step`` pairwise-distinct sorted skip sets."""
        out: list[tuple[int, ...]] = []
        while len(out) < self.das_step:
            s = tuple(self.sample())
            if s not in out:
                out.append(s)
        return out

    def update(self, candidates: Sequence[Sequence[int]], losses: Sequence[float]) -> dict[str, Any]:
        """Apply one round's rewards; returns a trace record."""
        p = self.probs()
        rewards = torch.exp(-torch.tensor(losses, dtype=torch.float64))
        baseline = rewards.mean()
        delta = torch.zeros_like(self.gates)
        for cand, reward in zip(candidates, rewards, strict=True):
            for i in cand:
                delta[i] += self.gate_lr * (reward - baseline) * p[i] * (1 - p[i])
        self.gates += delta
        return {
            "candidates": [list(c) for c in candidates],
            "losses": [float(v) for v in losses],
            "rewards": rewards.tolist(),
            "baseline": float(baseline),
            "gates": self.gates.tolist(),
        }

    def round(self, evaluate: Callable[[tuple[int, ...]], float]) -> dict[str, Any]:
        """Draw candidates, score each with ``evaluate(skip_set) -> loss``, update the gates."""
        candidates = self.candidates()
        return self.update(candidates, [evaluate(c) for c in candidates])

    def top_k(self) -> list[int]:
        """The k layers with the largest gates (most redundant), sorted by index."""
        return sorted(torch.topk(self.gates, self.k).indices.tolist())

    def ranking(self) -> list[int]:
        """All layers from most to least redundant by the gates."""
        return rank_by(self.gates.tolist())

    def state_dict(self) -> dict[str, Any]:
        return {"gates": self.gates.clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gates = state["gates"].clone()
        self.generator.set_state(state["generator"])


@dataclass
class SearchResult:
    k: int
    skipped: list[int]
    gates: list[float]
    ranking: list[int]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    #: rows the search trained on and scored candidates on
    train_rows: int = 0
    val_rows: int = 0
    #: each layer's estimated added held-out loss when skipped (:func:`layer_effects`)
    effects: list[float] | None = None
    #: what ranked the layers (``ESTIMATORS``) and its per-layer score, higher: more redundant (the
    #: gates; minus the effects; minus the loss skipped alone)
    estimator: str = "gates"
    redundancy: list[float] | None = None
    #: the training loss of every search step (the warm-up's, for the prior estimator)
    losses: list[float] = field(default_factory=list)
    #: how sure the prior's pick is (:func:`prior_uncertainty`); None for the other estimators
    uncertainty: dict[str, Any] | None = None

    @property
    def decided(self) -> bool:
        """Whether the pick is supported by its data: the prior's boundary separated (or, for the
        other estimators, scores that are not all equal)."""
        if self.uncertainty is not None:
            return bool(self.uncertainty["decided"])
        return self.redundancy is None or len(set(self.redundancy)) > 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def layer_effects(rounds: Sequence[dict[str, Any]], n_layers: int, *, ridge: float = 1e-3) -> list[float]:
    """Each layer's added held-out loss when skipped, fitted to every candidate the rounds scored:
    ``loss(round r, set S) ≈ a_r + Σ_{i∈S} e_i`` by ridge least squares, the per-round offsets
    ``a_r`` absorbing training progress and batch-to-batch differences. Unlike the gates, which move
    by ``(R − mean R)·p(1−p)`` per round, this uses every score at its full size, and rounds of
    different candidate counts (the single-layer prior) mix freely. Only differences between layers
    are meaningful (the mean of the effects is taken as 0 where the rounds cannot tell)."""
    rows, targets = [], []
    for record in rounds:
        x = torch.zeros(len(record["candidates"]), n_layers, dtype=torch.float64)
        for c, candidate in enumerate(record["candidates"]):
            x[c, list(candidate)] = 1.0
        y = torch.tensor(record["losses"], dtype=torch.float64)
        rows.append(x - x.mean(0))
        targets.append(y - y.mean())
    if not rows:
        return [0.0] * n_layers
    x, y = torch.cat(rows), torch.cat(targets)
    effects = torch.linalg.solve(x.T @ x + ridge * torch.eye(n_layers, dtype=torch.float64), x.T @ y)
    return (effects - effects.mean()).tolist()


def _prior(rounds: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    return next((r for r in rounds if r.get("kind") == "prior"), None)


def _uncertainty(rounds: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    prior = _prior(rounds)
    return None if prior is None else prior.get("uncertainty")


def prior_uncertainty(
    table: torch.Tensor, k: int, *, resamples: int = PRIOR_RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """How sure the prior's pick of ``k`` layers is, from ``table`` (layers × held-out rows of
    per-row losses, each layer skipped alone), by resampling the rows with replacement (a paired
    bootstrap: every resample scores every layer on the same rows).

    ``boundary`` compares the k-th most redundant layer (the last one picked) with the (k+1)-th
    (the first one kept): their mean loss gap and its 95 % interval. The pick is ``decided`` when
    that interval lies above 0, i.e. the held-out rows separate what is skipped from what is kept.
    ``pick_frequency``: the share of resamples whose k lowest-loss layers are the pick."""
    n_layers, rows = table.shape
    order = rank_by((-table.mean(1)).tolist())
    out: dict[str, Any] = {"rows": rows, "resamples": resamples, "k": k}
    if not 0 < k < n_layers:
        return {**out, "decided": True, "pick_frequency": 1.0, "boundary": None}
    generator = torch.Generator().manual_seed(seed + 3)
    counts = torch.stack([torch.bincount(torch.randint(rows, (rows,), generator=generator), minlength=rows)
                          for _ in range(resamples)]).double()  # fmt: skip
    means = counts @ table.double().T / rows  # resamples × layers
    last, first_kept = order[k - 1], order[k]
    gaps = means[:, first_kept] - means[:, last]
    low, high = torch.quantile(gaps, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    picked = set(order[:k])
    ranks = torch.argsort(means + torch.arange(n_layers, dtype=torch.float64) * 1e-12, dim=1)[:, :k]
    frequency = sum(set(r.tolist()) == picked for r in ranks) / resamples
    boundary = {"picked_layer": last, "kept_layer": first_kept, "gap": float(gaps.mean()),
                "interval": [low, high]}  # fmt: skip
    return {**out, "decided": low > 0, "pick_frequency": frequency, "boundary": boundary}


def prior_losses(rounds: Sequence[dict[str, Any]], n_layers: int) -> list[float]:
    """Each layer's held-out loss when skipped alone in the prior round (after the warm-up)."""
    prior = _prior(rounds)
    if prior is None:
        raise ValueError("no prior round in this search (it ran with prior_rows = 0)")
    loss = {c[0]: v for c, v in zip(prior["candidates"], prior["losses"], strict=True)}
    if sorted(loss) != list(range(n_layers)):
        raise ValueError(f"the prior round scored layers {sorted(loss)}, not all {n_layers}")
    return [loss[i] for i in range(n_layers)]


def redundancy_scores(rounds: Sequence[dict[str, Any]], gates: Sequence[float]) -> dict[str, list[float]]:
    """Each estimator's per-layer redundancy (higher: more redundant) from one search's record: the
    gates; minus the fitted effects (:func:`layer_effects`); with a prior round, minus each layer's
    loss skipped alone (:func:`prior_losses`)."""
    n_layers = len(gates)
    found = {"gates": list(gates), "effects": [-e for e in layer_effects(rounds, n_layers)]}
    if any(r.get("kind") == "prior" for r in rounds):
        found["prior"] = [-v for v in prior_losses(rounds, n_layers)]
    return found


def rank_by(redundancy: Sequence[float]) -> list[int]:
    """All layers from most to least redundant (ties broken by index)."""
    return sorted(range(len(redundancy)), key=lambda i: (-redundancy[i], i))


def run_search(
    family: ArchitectureFamily,
    model: nn.Module,
    train_data: EncodedData,
    val_data: EncodedData,
    k: int,
    config: SearchConfig,
    train_config: TrainConfig,
    *,
    progress: bool = True,
    checkpoint_dir: Path | None = None,
    checkpoint_every: int = 50,
    should_stop: Callable[[], bool] = lambda: False,
    placement: Placement = CPU,
) -> SearchResult:
    """Run the DAS search on ``model`` (adapters inserted, frozen); see the module docstring.

    With ``checkpoint_dir``, state is saved every ``checkpoint_every`` steps and when
    ``should_stop()`` turns true (then :class:`Interrupted` is raised); an existing checkpoint
    there is resumed.
    """
    n_layers = len(family.layers(model))
    # a round cannot score more distinct sets than exist (few layers, e.g. a small image tower)
    das_step = min(config.das_step, math.comb(n_layers, k)) if 0 < k < n_layers else config.das_step
    bandit = GateBandit(n_layers, k, das_step=das_step, gate_lr=config.gate_lr, seed=train_config.seed + 1)
    steps_per_epoch = math.ceil(len(train_data) / train_config.batch_size)
    # the search has its own length and LR schedule, as in the authors' search scripts
    total_steps = config.epochs * steps_per_epoch
    # the prior estimator stops after the warm-up (and its prior round) but keeps the whole search's
    # LR schedule, so its warm-up trains exactly as the gates' and effects' searches do
    stop_after = config.warmup_epochs * steps_per_epoch if config.stops_after_warmup else None
    loop = TrainLoop(family, model, train_data, train_config, total_steps=total_steps,
                     stop_after=stop_after, placement=placement)  # fmt: skip
    val_data = val_data.to(placement.device)
    val_generator = torch.Generator().manual_seed(train_config.seed + 2)
    n_val = len(val_data)

    def held_out(rows: int) -> dict[str, torch.Tensor]:
        """This rank's share of ``rows`` random held-out rows (the same rows on every rank)."""
        index = torch.randperm(n_val, generator=val_generator)[:rows]
        return val_data.trimmed_batch(placement.shard(index))

    fixed_val = held_out(config.val_batch_size)
    state: dict[str, Any] = {"count": 0, "rounds": [], "prior_done": not config.prior_rows, "losses": []}

    def extra() -> dict[str, Any]:
        return {"bandit": bandit.state_dict(), "val_generator": val_generator.get_state(), **state}

    checkpointer = None
    if checkpoint_dir is not None:
        checkpointer = Checkpointer(
            checkpoint_dir, every=checkpoint_every, should_stop=should_stop, extra=extra
        )
        restored = checkpointer.restore(loop)
        if restored is not None:
            bandit.load_state_dict(restored["bandit"])
            val_generator.set_state(restored["val_generator"])
            state.update(count=restored["count"], rounds=restored["rounds"],
                         prior_done=restored.get("prior_done", True),
                         losses=restored.get("losses", []))  # fmt: skip

    def evaluate(batch: dict[str, torch.Tensor]) -> Callable[[tuple[int, ...]], float]:
        def loss_of(skip_set: tuple[int, ...]) -> float:
            family.set_skipped(model, skip_set)
            rows = len(batch["labels"])
            total = 0.0
            if rows:  # a rank may hold none of a few held-out rows
                with torch.no_grad(), placement.autocast():
                    total = float(loop.loss_fn(family.forward(model, batch), batch["labels"])) * rows
            return placement.mean(total, rows)  # every rank gets the loss over all rows

        return loss_of

    def held_out_rows(rows: int) -> Callable[[tuple[int, ...]], torch.Tensor]:
        """Per-row held-out losses of a skip set, on ``rows`` random held-out rows (all ranks' rows)."""
        batch, per_row = held_out(rows), row_losses(train_config.loss)

        def losses_of(skip_set: tuple[int, ...]) -> torch.Tensor:
            family.set_skipped(model, skip_set)
            mine = torch.zeros(0)
            if len(batch["labels"]):
                with torch.no_grad(), placement.autocast():
                    mine = per_row(family.forward(model, batch), batch["labels"]).double().cpu()
            return placement.gather_rows(mine, rows)

        return losses_of

    def prior_round(losses_of: Callable[[tuple[int, ...]], torch.Tensor], step: int) -> dict[str, Any]:
        table = torch.stack([losses_of((i,)) for i in range(n_layers)])  # layers × held-out rows
        return {"kind": "prior", "candidates": [[i] for i in range(n_layers)], "step": step,
                "losses": table.mean(1).tolist(), "rows": table.shape[1],
                "uncertainty": prior_uncertainty(table, k, seed=train_config.seed)}  # fmt: skip

    def before_step(lp: TrainLoop) -> None:
        in_warmup = lp.step // lp.steps_per_epoch < config.warmup_epochs
        family.set_skipped(model, [] if in_warmup and not config.skips_in_warmup else bandit.sample())

    def after_step(lp: TrainLoop) -> None:
        state["count"] += 1
        state["losses"].append(lp.recent_losses[-1])
        epoch_of_step = (lp.step - 1) // lp.steps_per_epoch
        if not state["prior_done"] and lp.step >= config.warmup_epochs * lp.steps_per_epoch:
            state["prior_done"] = True  # each layer skipped alone, once, after the warm-up
            model.eval()
            state["rounds"].append(prior_round(held_out_rows(min(config.prior_rows, n_val)), lp.step))
            model.train()
        if state["count"] >= config.das_turn and epoch_of_step >= config.warmup_epochs:
            state["count"] = 0
            if config.mode == "paper":
                batch = fixed_val  # the same held-out batch every round, train mode (dropout on)
                model.train()
            else:
                batch = held_out(config.val_batch_size)
                model.eval()
            record = bandit.round(evaluate(batch))
            model.train()
            if placement.distributed:  # one bandit: the same gates on every rank
                record["gates_agree"] = placement.same_everywhere(record["gates"])
            record.update(step=lp.step, epoch=epoch_of_step)
            state["rounds"].append(record)
        if checkpointer is not None:
            checkpointer.after_step(lp)
        elif placement.any(should_stop()):
            raise Interrupted(f"search interrupted at step {lp.step}/{lp.last_step}")

    loop.run(before_step=before_step, after_step=after_step, progress=progress, description="DAS search")
    scores = redundancy_scores(state["rounds"], bandit.gates.tolist())
    redundancy = scores[config.estimator]
    ranking = rank_by(redundancy)
    skipped = sorted(ranking[:k])
    family.set_skipped(model, skipped)
    return SearchResult(
        k=k,
        skipped=skipped,
        gates=bandit.gates.tolist(),
        ranking=ranking,
        rounds=state["rounds"],
        steps=loop.step,
        train_rows=len(train_data),
        val_rows=n_val,
        effects=[-e for e in scores["effects"]],
        estimator=config.estimator,
        redundancy=redundancy,
        losses=state["losses"],
        uncertainty=prior["uncertainty"]
        if config.estimator == "prior" and (prior := _prior(state["rounds"]))
        else None,
    )
