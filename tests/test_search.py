"""DAS search: the bandit rule of the authors' code and the search loop on a tiny ViLT."""

from __future__ import annotations

import math

import pytest
import torch

from edge_vl.config import TrainConfig
from edge_vl.training.architectures import family_for
from edge_vl.training.architectures.quiet import quiet_transformers
from edge_vl.training.encoded import EncodedData
from edge_vl.training.search import (
    GateBandit,
    SearchConfig,
    layer_effects,
    prior_losses,
    rank_by,
    redundancy_scores,
    run_search,
)


def test_sample_returns_k_distinct_indices():
    bandit = GateBandit(12, 4, seed=0)
    bandit.gates = torch.linspace(-2, 2, 12, dtype=torch.float64)
    for _ in range(200):
        s = bandit.sample()
        assert len(s) == 4 and len(set(s)) == 4 and all(0 <= i < 12 for i in s)


def test_candidates_in_a_round_are_pairwise_distinct():
    bandit = GateBandit(4, 1, das_step=4, seed=3)  # das_step = C(4, 1): every layer once
    for _ in range(50):
        cands = bandit.candidates()
        assert len(cands) == 4 and len(set(cands)) == 4
    with pytest.raises(ValueError, match="exceeds the 4 distinct skip sets"):
        GateBandit(4, 1, das_step=5)


def test_gate_update_equals_hand_computation():
    """g = 0, k = 1, losses 1, 2, 3: each chosen layer moves by (e^-L − mean) · 0.25; others stay."""
    bandit = GateBandit(5, 1, das_step=3)
    record = bandit.update([(0,), (1,), (2,)], [1.0, 2.0, 3.0])
    rewards = [math.exp(-1), math.exp(-2), math.exp(-3)]
    mean = sum(rewards) / 3
    expected = [(r - mean) * 0.25 for r in rewards] + [0.0, 0.0]
    assert bandit.gates.tolist() == pytest.approx(expected, abs=1e-12)
    assert record["baseline"] == pytest.approx(mean)
    # an layer present in every candidate gets no net change (Σ (R_c − b) = 0)
    both = GateBandit(5, 2, das_step=3)
    both.update([(0, 1), (0, 2), (0, 3)], [1.0, 2.0, 3.0])
    assert float(both.gates[0]) == pytest.approx(0.0, abs=1e-12)


def test_final_set_is_top_k_of_gates():
    bandit = GateBandit(6, 2)
    bandit.gates = torch.tensor([0.1, 0.9, -0.3, 0.5, 0.95, 0.0], dtype=torch.float64)
    assert sorted(bandit.ranking()[:2]) == [1, 4]
    assert bandit.ranking() == [4, 1, 3, 0, 5, 2]


def _toy_search(seed: int, n: int = 12, k: int = 4, rounds: int = 400) -> tuple[list[int], list[int]]:
    """Skipping layer i costs a known penalty c_i (+ noise); the best set is the k smallest c_i.
    Penalties are 0 … 0.5 evenly spaced in a random order; η = 1, 3 candidates per round."""
    g = torch.Generator().manual_seed(1000 + seed)
    penalties = torch.linspace(0.0, 0.5, n)[torch.randperm(n, generator=g)]
    bandit = GateBandit(n, k, das_step=3, gate_lr=1.0, seed=seed)
    for _ in range(rounds):
        bandit.round(lambda s: float(0.3 + penalties[list(s)].sum() + 0.05 * torch.randn(1, generator=g)))
    best = sorted(torch.topk(-penalties, k).indices.tolist())
    return sorted(bandit.ranking()[:k]), best


def test_toy_bandit_recovers_the_cheapest_arms_in_19_of_20_seeds():
    hits = sum(found == best for found, best in (_toy_search(seed) for seed in range(20)))
    assert hits >= 19, f"only {hits}/20 seeds recovered the k cheapest layers"


def test_fitted_effects_recover_known_layer_costs_from_fewer_rounds():
    """The effects estimator reads every scored candidate at full size: with a tenth of the rounds
    the gates need, and losses drifting down as training goes on, it finds the k cheapest layers."""
    n, k = 12, 4
    for seed in range(20):
        g = torch.Generator().manual_seed(1000 + seed)
        penalties = torch.linspace(0.0, 0.5, n)[torch.randperm(n, generator=g)]
        bandit = GateBandit(n, k, das_step=3, gate_lr=1.0, seed=seed)
        rounds = []
        for r in range(40):

            def loss(skip_set, drift=1.0 / (1 + r), penalties=penalties, g=g):
                noise = 0.05 * torch.randn(1, generator=g)
                return float(0.3 + drift + penalties[list(skip_set)].sum() + noise)

            rounds.append(bandit.round(loss))
        effects = layer_effects(rounds, n)
        cheapest = sorted(torch.topk(-penalties, k).indices.tolist())
        assert sorted(sorted(range(n), key=lambda i: effects[i])[:k]) == cheapest, seed
        truth = {(i,): -float(penalties[i]) for i in range(n)}
        assert quality_of([-e for e in effects], truth, 1)["spearman"] > 0.9, seed


def search_quality_script():
    from examples.benchmarks import search_quality

    return search_quality


def quality_of(scores, truth, k):
    return search_quality_script().quality(scores, truth, k)


def test_search_quality_measure_on_a_case_with_a_known_answer():
    """Skip sets whose fine-tuned accuracy falls with the sum of known layer costs: a ranking by the
    true costs scores Spearman 1 and picks the best set; the reversed ranking scores −1 and the worst."""
    import itertools

    costs = [0.01, 0.08, 0.02, 0.32, 0.04, 0.16]  # every pair sums to a different total
    truth = {s: 0.95 - sum(costs[i] for i in s) for s in itertools.combinations(range(6), 2)}
    good = quality_of([-c for c in costs], truth, 2)
    assert (
        good["spearman"] == pytest.approx(1.0) and good["pick"] == [0, 2] and good["pick_percentile"] == 100
    )
    bad = quality_of(costs, truth, 2)
    assert bad["spearman"] == pytest.approx(-1.0) and bad["pick_percentile"] == pytest.approx(100 / 15)


@pytest.fixture
def search_setup(tiny_checkpoint):
    family = family_for("vilt")
    torch.manual_seed(0)
    with quiet_transformers():
        model = family.load(tiny_checkpoint, ["a", "b", "c"])
    family.insert_adapters(model)
    family.freeze(model)
    g = torch.Generator().manual_seed(0)
    cfg = model.config

    def data(n: int) -> EncodedData:
        rows = {
            "input_ids": torch.randint(5, cfg.vocab_size, (n, cfg.max_position_embeddings), generator=g),
            "attention_mask": torch.ones(n, cfg.max_position_embeddings, dtype=torch.long),
            "labels": torch.randint(0, 3, (n,), generator=g),
            "image_index": torch.arange(n) % 7,
        }
        return EncodedData(
            rows, {"pixel_values": torch.randn(7, 3, cfg.image_size, cfg.image_size, generator=g)}
        )

    return family, model, data(40), data(16)


def test_search_loop_warm_up_rounds_and_frozen_weights(search_setup):
    family, model, train_data, val_data = search_setup
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    config = SearchConfig(epochs=3, das_turn=2, das_step=3, val_batch_size=8, estimator="gates")
    result = run_search(
        family, model, train_data, val_data, 2, config, TrainConfig(batch_size=8), progress=False
    )
    steps_per_epoch = 5
    assert result.steps == 3 * steps_per_epoch
    # no round in the warm-up epoch; the first fires on the first step of epoch 1
    assert result.rounds and all(r["epoch"] >= 1 for r in result.rounds)
    assert result.rounds[0]["step"] == steps_per_epoch + 1
    assert len(result.rounds) == 5  # 10 update-epoch steps / das_turn 2
    for r in result.rounds:
        assert len({tuple(c) for c in r["candidates"]}) == 3
    assert list(result.skipped) == sorted(torch.topk(torch.tensor(result.gates), 2).indices.tolist())
    assert family.skipped(model) == list(result.skipped)
    for name, value in model.named_parameters():
        if name in frozen:
            assert torch.equal(value, frozen[name]), name


@pytest.mark.parametrize("mode", ["clean", "paper"])
def test_warm_up_skips_layers_only_in_paper_mode(search_setup, monkeypatch, mode):
    family, model, train_data, val_data = search_setup
    calls = []
    original = family.set_skipped
    monkeypatch.setattr(family, "set_skipped", lambda m, s: (calls.append(list(s)), original(m, s)))
    config = SearchConfig(epochs=2, das_turn=100, val_batch_size=8, mode=mode, estimator="gates")
    result = run_search(
        family, model, train_data, val_data, 2, config, TrainConfig(batch_size=8), progress=False
    )
    assert result.rounds == ()  # das_turn 100: only training steps called set_skipped (+ the final set)
    warm_up, update_epoch = calls[:5], calls[5:10]
    assert all(s == [] for s in warm_up) if mode == "clean" else all(len(s) == 2 for s in warm_up)
    assert all(len(s) == 2 for s in update_epoch)
    assert SearchConfig(mode="clean", warmup_skipping=True).skips_in_warmup


def test_paper_mode_uses_one_fixed_batch(search_setup):
    family, model, train_data, val_data = search_setup
    config = SearchConfig(epochs=2, das_turn=1, das_step=2, val_batch_size=8, mode="paper")
    result = run_search(
        family, model, train_data, val_data, 1, config, TrainConfig(batch_size=8), progress=False
    )
    assert len(result.rounds) == 5
    with pytest.raises(ValueError, match="search mode"):
        SearchConfig(mode="fast")


def test_single_layer_removal_costs_rank_the_cheapest_layers_as_most_redundant(tmp_path):
    import json

    module = search_quality_script()
    losses = [0.50, 0.90, 0.55, 2.00]  # added loss when skipped alone: 0.05, 0.45, 0.10, 1.55
    rows = [{"skipped": [], "loss": 0.45}, *({"skipped": [i], "loss": v} for i, v in enumerate(losses))]
    (tmp_path / "importance.json").write_text(json.dumps({"rows": [*rows, {"skipped": [0, 2], "loss": 1.0}]}))
    scores = module.importance_scores(tmp_path / "importance.json")
    assert scores == pytest.approx([-0.05, -0.45, -0.10, -1.55])
    assert module.quality(scores, {(0, 2): 0.9, (1, 3): 0.5, (0, 1): 0.7}, 2)["pick"] == [0, 2]
    partial = [rows[0], rows[1], rows[3]]  # layer 1 never skipped alone
    (tmp_path / "partial.json").write_text(json.dumps({"rows": partial}))
    with pytest.raises(SystemExit, match="every layer alone"):
        module.importance_scores(tmp_path / "partial.json")


def test_a_search_with_a_prior_round_offers_its_single_layer_losses_as_a_ranking():
    module = search_quality_script()
    prior = {"kind": "prior", "candidates": [[2], [0], [1]], "losses": [0.9, 0.5, 0.7], "step": 10}
    bandit = {"candidates": [[0, 1], [1, 2]], "losses": [0.6, 0.8], "step": 20}
    search = {"gates": [0.1, 0.0, -0.1], "rounds": [prior, bandit]}
    assert module.scorers(search)["prior"] == [-0.5, -0.7, -0.9]  # layer 0 costs least alone
    assert "prior" not in module.scorers({"gates": [0.1, 0.0, -0.1], "rounds": [bandit]})
    assert rank_by(redundancy_scores([bandit, prior], [0.0] * 3)["prior"]) == [0, 1, 2]  # order-free
    with pytest.raises(ValueError, match="no prior round"):
        prior_losses([bandit], 3)
    with pytest.raises(ValueError, match=r"scored layers \[0, 1, 2\], not all 4"):
        prior_losses([prior], 4)


def test_the_prior_estimator_stops_after_the_warm_up_it_shares_with_the_full_search(search_setup):
    """The prior estimator skips the bandit rounds; its warm-up (LR schedule included) and prior
    round are those of a full search with a prior round, so it picks what that search's prior says."""
    import copy

    family, model, train_data, val_data = search_setup
    start = copy.deepcopy(model)
    train = TrainConfig(batch_size=8)
    full_config = SearchConfig(epochs=3, das_turn=2, val_batch_size=8, estimator="gates", prior_rows=12)
    full = run_search(family, model, train_data, val_data, 2, full_config, train, progress=False)
    config = SearchConfig(epochs=3, das_turn=2, val_batch_size=8, estimator="prior", prior_rows=12)
    result = run_search(family, start, train_data, val_data, 2, config, train, progress=False)
    assert result.steps == 5  # one warm-up epoch of 5 steps, then the prior round, then stop
    assert [r.get("kind") for r in result.rounds] == ["prior"]
    assert result.rounds[0]["losses"] == pytest.approx(full.rounds[0]["losses"])
    assert list(result.ranking) == rank_by(redundancy_scores(full.rounds, full.gates)["prior"])
    assert list(result.redundancy) == [-v for v in prior_losses(full.rounds, 4)]
    assert list(result.skipped) == sorted(result.ranking[:2]) and family.skipped(start) == list(
        result.skipped
    )
    assert SearchConfig().prior_rows == 1000 and SearchConfig(estimator="gates").prior_rows == 0
    # the default departs from the paper; paper mode is the authors' method, gates included
    assert (SearchConfig().estimator, SearchConfig(mode="paper").estimator) == ("prior", "gates")
    with pytest.raises(ValueError, match="prior_rows ≥ 1"):
        SearchConfig(estimator="prior", prior_rows=0)


def test_search_quality_cli_writes_its_tables_with_the_command(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    runs = [{"skipped": s, "seed": 0, "lr": 1e-4, "epochs": 2.5, "set": "random:2", "eval_accuracy": a}
            for s, a in (([0, 1], 0.9), ([2, 3], 0.5), ([0, 3], 0.7))]  # fmt: skip
    (tmp_path / "spread.json").write_text(json.dumps({"runs": runs}))
    rows = [
        {"skipped": [], "loss": 0.4},
        *({"skipped": [i], "loss": 0.4 + c} for i, c in enumerate([0.1, 0.2, 0.3, 0.4])),
    ]
    (tmp_path / "importance.json").write_text(json.dumps({"rows": rows}))
    root = Path(__file__).parents[1]
    out = tmp_path / "quality.md"
    command = [sys.executable, "-m", "examples.benchmarks.search_quality",
               "--truth", str(tmp_path / "spread.json"), "--epochs", "2.5",
               "--importance", str(tmp_path / "importance.json"), "--out", str(out)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, cwd=root)
    text = out.read_text()
    assert "--importance <scratch>/" in text  # the command, with no machine's folders
    assert "| alone | 2 | 3 | +1.00 | [0, 1] | 0.9000 (100 %) |" in text
    missing = subprocess.run(
        [*command[:4], str(tmp_path / "none.json"), *command[5:]], capture_output=True, text=True, cwd=root
    )
    assert missing.returncode == 2 and "none.json: no such file" in missing.stderr


def test_search_quality_reads_the_seed_spread_runs_of_one_learning_rate_as_truth(tmp_path):
    import json

    module = search_quality_script()
    runs = [{"skipped": [2, 1], "seed": 0, "lr": 1e-4, "set": "random:2", "eval_accuracy": 0.90},
            {"skipped": [1, 2], "seed": 1, "lr": 1e-4, "set": "random:2", "eval_accuracy": 0.80},
            {"skipped": [3, 4], "seed": 0, "set": "3,4", "eval_accuracy": 0.70},  # lr 1e-3 (not recorded)
            {"skipped": [0, 5], "seed": 0, "lr": 1e-4, "set": "das", "eval_accuracy": 0.99},  # search's pick
            {"skipped": [], "seed": 0, "lr": 1e-4, "set": "none", "eval_accuracy": 0.95}]  # fmt: skip
    (tmp_path / "spread.json").write_text(json.dumps({"runs": runs}))
    # runs that record no fine-tune length were the demo's 1.7 epochs
    assert module.read_truth(tmp_path / "spread.json", 1e-4, 1.7) == {(1, 2): pytest.approx(0.85)}
    assert module.read_truth(tmp_path / "spread.json", 1e-3, 1.7) == {(3, 4): 0.70}
    assert module.read_truth(tmp_path / "spread.json", 1e-4, 2.5) == {}


def test_the_cli_offers_every_estimator():
    """options.py lists the estimators by hand (it imports no torch at start-up)."""
    from edge_vl.choices import ESTIMATORS
    from edge_vl.cli import cli

    for command in ("build", "search"):
        (option,) = [p for p in cli.commands[command].params if p.name == "search_estimator"]
        assert tuple(option.type.choices) == ESTIMATORS, command
