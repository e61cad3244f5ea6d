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
:mod:`edge_vl.pipeline`), which reloads the pretrained weights with fresh adapters, as the authors'
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
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_vl.build_records import Boundary, SearchRecord, Uncertainty
from edge_vl.config import SearchConfig, TrainConfig
from edge_vl.errors import Interrupted
from edge_vl.schema import parse, to_json
from edge_vl.training.architectures.base import ArchitectureFamily
from edge_vl.training.encoded import EncodedData
from edge_vl.training.finetune import CPU, Checkpointer, TrainLoop
from edge_vl.training.losses import row_losses
from edge_vl.training.parallel import Placement


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

    def ranking(self) -> list[int]:
        """All layers from most to least redundant by the gates."""
        return rank_by(self.gates.tolist())

    def state_dict(self) -> dict[str, Any]:
        return {"gates": self.gates.clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gates = state["gates"].clone()
        self.generator.set_state(state["generator"])


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


def _uncertainty(rounds: Sequence[dict[str, Any]]) -> Uncertainty | None:
    prior = _prior(rounds)
    return None if prior is None or "uncertainty" not in prior else parse(Uncertainty, prior["uncertainty"])


#: bootstrap resamples of the prior round's held-out rows that measure how sure its pick is
PRIOR_RESAMPLES = 1000


def prior_uncertainty(
    table: torch.Tensor, k: int, *, resamples: int = PRIOR_RESAMPLES, seed: int = 0
) -> Uncertainty:
    """How sure the prior's pick of ``k`` layers is, from ``table`` (layers × held-out rows of
    per-row losses, each layer skipped alone), by resampling the rows with replacement (a paired
    bootstrap: every resample scores every layer on the same rows).

    ``boundary`` compares the k-th most redundant layer (the last one picked) with the (k+1)-th
    (the first one kept): their mean loss gap and its 95 % interval. The pick is ``decided`` when
    that interval lies above 0, i.e. the held-out rows separate what is skipped from what is kept.
    ``pick_frequency``: the share of resamples whose k lowest-loss layers are the pick."""
    n_layers, rows = table.shape
    order = rank_by((-table.mean(1)).tolist())
    if not 0 < k < n_layers:
        return Uncertainty(rows, resamples, k, decided=True, pick_frequency=1.0)
    generator = torch.Generator().manual_seed(seed + 3)
    counts = torch.stack(
        [
            torch.bincount(torch.randint(rows, (rows,), generator=generator), minlength=rows)
            for _ in range(resamples)
        ]
    ).double()
    means = counts @ table.double().T / rows  # resamples × layers
    last, first_kept = order[k - 1], order[k]
    gaps = means[:, first_kept] - means[:, last]
    low, high = torch.quantile(gaps, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    picked = set(order[:k])
    ranks = torch.argsort(means + torch.arange(n_layers, dtype=torch.float64) * 1e-12, dim=1)[:, :k]
    frequency = sum(set(r.tolist()) == picked for r in ranks) / resamples
    boundary = Boundary(last, first_kept, float(gaps.mean()), (low, high))
    return Uncertainty(rows, resamples, k, decided=low > 0, pick_frequency=frequency, boundary=boundary)


def prior_losses(rounds: Sequence[dict[str, Any]], n_layers: int) -> list[float]:
    """Each layer's held-out loss when skipped alone in the prior round (after the warm-up)."""
    prior = _prior(rounds)
    if prior is None:
        raise ValueError("no prior round in this search (it ran with prior_rows = 0)")
    loss = {c[0]: v for c, v in zip(prior["candidates"], prior["losses"], strict=True)}
    if sorted(loss) != list(range(n_layers)):
        raise ValueError(f"the prior round scored layers {sorted(loss)}, not all {n_layers}")
    return [loss[i] for i in range(n_layers)]


def prior_base_loss(rounds: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """The held-out loss with no layer skipped on the prior round's rows, and its standard error."""
    prior = _prior(rounds)
    if prior is None or "base_loss" not in prior:
        raise ValueError("no prior round with a base loss in this search")
    return float(prior["base_loss"]), float(prior["base_loss_se"])


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
) -> SearchRecord:
    """Run the DAS search on ``model`` (adapters inserted, frozen); see the module docstring.

    With ``checkpoint_dir``, state is saved every ``checkpoint_every`` steps and when
    ``should_stop()`` turns true (then :class:`Interrupted` is raised); an existing checkpoint
    there is resumed.
    """
    search = _Search(family, model, train_data, val_data, k, config, train_config, placement)
    checkpointer = None
    if checkpoint_dir is not None:
        checkpointer = Checkpointer(
            checkpoint_dir, every=checkpoint_every, should_stop=should_stop, extra=search.state_dict
        )
        restored = checkpointer.restore(search.loop)
        if restored is not None:
            search.load_state_dict(restored)

    def after_step(loop: TrainLoop) -> None:
        search.after_step(loop)
        if checkpointer is not None:
            checkpointer.after_step(loop)
        elif placement.any(should_stop()):
            raise Interrupted(f"search interrupted at step {loop.step}/{loop.last_step}")

    search.loop.run(
        before_step=search.before_step, after_step=after_step, progress=progress, description="DAS search"
    )
    return search.result()


class _Search:
    """One DAS search: the training loop, the bandit, the held-out rows that score candidates, and
    what the search has recorded so far (``rounds``, per-step ``losses``), which its checkpoint saves."""

    def __init__(self, family, model, train_data, val_data, k, config, train_config, placement) -> None:
        self.family, self.model, self.k, self.config, self.placement = family, model, k, config, placement
        self.n_layers = len(family.layers(model))
        self.train_rows, self.seed, self.loss_name = len(train_data), train_config.seed, train_config.loss
        # a round cannot score more distinct sets than exist (few layers, e.g. a small image tower)
        das_step = (
            min(config.das_step, math.comb(self.n_layers, k)) if 0 < k < self.n_layers else config.das_step
        )
        self.bandit = GateBandit(
            self.n_layers, k, das_step=das_step, gate_lr=config.gate_lr, seed=train_config.seed + 1
        )
        steps_per_epoch = math.ceil(len(train_data) / train_config.batch_size)
        # the search has its own length and LR schedule, as in the authors' search scripts; the
        # prior estimator stops after the warm-up (and its prior round) but keeps that schedule, so
        # its warm-up trains exactly as the gates' and effects' searches do
        stop_after = config.warmup_epochs * steps_per_epoch if config.stops_after_warmup else None
        total = config.epochs * steps_per_epoch
        self.loop = TrainLoop(
            family,
            model,
            train_data,
            train_config,
            total_steps=total,
            stop_after=stop_after,
            placement=placement,
        )
        self.val_data = val_data.to(placement.device)
        self.val_generator = torch.Generator().manual_seed(train_config.seed + 2)
        self.fixed_val = self.held_out(config.val_batch_size)
        self.count = 0
        self.rounds: list[dict[str, Any]] = []
        self.losses: list[float] = []
        self.prior_done = not config.prior_rows

    # -- checkpointed state -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "bandit": self.bandit.state_dict(),
            "val_generator": self.val_generator.get_state(),
            "count": self.count,
            "rounds": self.rounds,
            "prior_done": self.prior_done,
            "losses": self.losses,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bandit.load_state_dict(state["bandit"])
        self.val_generator.set_state(state["val_generator"])
        self.count, self.rounds = state["count"], state["rounds"]
        self.prior_done, self.losses = state.get("prior_done", True), state.get("losses", [])

    # -- scoring on held-out rows -----------------------------------------------------------
    def held_out(self, rows: int) -> dict[str, torch.Tensor]:
        """This rank's share of ``rows`` random held-out rows (the same rows on every rank)."""
        index = torch.randperm(len(self.val_data), generator=self.val_generator)[:rows]
        return self.val_data.trimmed_batch(self.placement.shard(index))

    def mean_loss(self, batch: dict[str, torch.Tensor], skip_set: Sequence[int]) -> float:
        """The held-out loss of ``skip_set`` over every rank's rows of ``batch``."""
        self.family.set_skipped(self.model, skip_set)
        rows, total = len(batch["labels"]), 0.0
        if rows:  # a rank may hold none of a few held-out rows
            with torch.no_grad(), self.placement.autocast():
                total = (
                    float(self.loop.loss_fn(self.family.forward(self.model, batch), batch["labels"])) * rows
                )
        return self.placement.mean(total, rows)

    def row_losses(self, batch: dict[str, torch.Tensor], rows: int, skip_set: Sequence[int]) -> torch.Tensor:
        """Per-row held-out losses of ``skip_set`` on all ``rows`` rows of ``batch`` (every rank's)."""
        self.family.set_skipped(self.model, skip_set)
        mine = torch.zeros(0, dtype=torch.float64)
        if len(batch["labels"]):
            with torch.no_grad(), self.placement.autocast():
                logits = self.family.forward(self.model, batch)
                mine = row_losses(self.loss_name)(logits, batch["labels"]).double().cpu()
        return self.placement.gather_rows(mine, rows)

    # -- the two kinds of round ----------------------------------------------------------------
    def prior_round(self, step: int) -> dict[str, Any]:
        """Each layer skipped alone on the same held-out rows, once, after the warm-up."""
        rows = min(self.config.prior_rows, len(self.val_data))
        batch = self.held_out(rows)
        table = torch.stack([self.row_losses(batch, rows, (i,)) for i in range(self.n_layers)])
        base = self.row_losses(batch, rows, ())
        return {
            "kind": "prior",
            "candidates": [[i] for i in range(self.n_layers)],
            "step": step,
            "losses": table.mean(1).tolist(),
            # nothing skipped, same rows: what the compute plan adds each layer's increase to, and
            # the standard error of that mean (what the plan takes as its noise)
            "base_loss": float(base.mean()),
            "base_loss_se": float(base.std() / math.sqrt(rows)) if rows > 1 else 0.0,
            "rows": rows,
            "uncertainty": to_json(prior_uncertainty(table, self.k, seed=self.seed)),
        }

    def bandit_round(self, step: int, epoch: int) -> dict[str, Any]:
        if self.config.mode == "paper":
            batch = self.fixed_val  # the same held-out batch every round, train mode (dropout on)
            self.model.train()
        else:
            batch = self.held_out(self.config.val_batch_size)
            self.model.eval()
        record = self.bandit.round(lambda skip_set: self.mean_loss(batch, skip_set))
        if self.placement.distributed:  # one bandit: the same gates on every rank
            record["gates_agree"] = self.placement.same_everywhere(record["gates"])
        return {**record, "step": step, "epoch": epoch}

    # -- the training loop's hooks ---------------------------------------------------------------
    def before_step(self, loop: TrainLoop) -> None:
        in_warmup = loop.step // loop.steps_per_epoch < self.config.warmup_epochs
        skipping = not in_warmup or self.config.skips_in_warmup
        self.family.set_skipped(self.model, self.bandit.sample() if skipping else [])

    def after_step(self, loop: TrainLoop) -> None:
        self.count += 1
        self.losses.append(loop.recent_losses[-1])
        epoch = (loop.step - 1) // loop.steps_per_epoch
        if not self.prior_done and loop.step >= self.config.warmup_epochs * loop.steps_per_epoch:
            self.prior_done = True
            self.model.eval()
            self.rounds.append(self.prior_round(loop.step))
        if self.count >= self.config.das_turn and epoch >= self.config.warmup_epochs:
            self.count = 0
            self.rounds.append(self.bandit_round(loop.step, epoch))
        self.model.train()

    def result(self) -> SearchRecord:
        """The ranking by the configured estimator and the k most redundant layers."""
        scores = redundancy_scores(self.rounds, self.bandit.gates.tolist())
        redundancy = scores[self.config.estimator]
        ranking = rank_by(redundancy)
        skipped = sorted(ranking[: self.k])
        self.family.set_skipped(self.model, skipped)
        prior = self.config.estimator == "prior"
        return SearchRecord(
            k=self.k,
            skipped=tuple(skipped),
            gates=tuple(self.bandit.gates.tolist()),
            ranking=tuple(ranking),
            rounds=tuple(self.rounds),
            steps=self.loop.step,
            train_rows=self.train_rows,
            val_rows=len(self.val_data),
            effects=tuple(-e for e in scores["effects"]),
            estimator=self.config.estimator,
            redundancy=tuple(redundancy),
            losses=tuple(self.losses),
            uncertainty=_uncertainty(self.rounds) if prior else None,
        )
