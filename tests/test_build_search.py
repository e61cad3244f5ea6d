"""`edge-vl build` with the DAS search: budgets, FLOPs accounting, the search trace, resume."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from edge_vl.budget import BudgetError, LayerCosts, min_layers_for, select_within
from edge_vl.cli import cli
from edge_vl.training.architectures import InputShape, family_for
from edge_vl.training.architectures.quiet import quiet_transformers
from edge_vl.training.flops import counted_macs
from tests.conftest import build_args

#: the paper's bandit (its gates rank the layers), with rounds every step
SEARCH = ["--search-epochs", "3", "--das-turn", "1", "--batch-size", "8", "--search-estimator", "gates"]


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def test_analytic_macs_match_a_flop_counter(tiny_checkpoint):
    """The per-layer count agrees with torch's FlopCounterMode (ViLT attention is explicit matmuls,
    which the counter sees; SDPA would be missed) for the full model and several skip sets."""
    family = family_for("vilt")
    with quiet_transformers():
        model = family.load(tiny_checkpoint, ["a", "b", "c"]).eval()
    cfg = model.config
    size = cfg.image_size
    shape = InputShape((size, size), cfg.max_position_embeddings)
    inputs = {
        "input_ids": torch.randint(5, cfg.vocab_size, (1, cfg.max_position_embeddings)),
        "attention_mask": torch.ones(1, cfg.max_position_embeddings, dtype=torch.long),
        "pixel_values": torch.randn(1, 3, size, size),
    }

    full = counted_macs(lambda: model(**inputs, pixel_mask=torch.ones(1, size, size, dtype=torch.long)))
    family.insert_adapters(model)
    costs = family.layer_costs(model, shape)
    assert abs(costs.full() - full) / full < 0.02
    for skipped in ([], [1, 3], [0, 1, 2]):
        family.set_skipped(model, skipped)
        retained = counted_macs(lambda: family.forward(model, inputs))
        assert abs(costs.retained(skipped) - retained) / retained < 0.02, skipped


def test_budget_helpers():
    costs = LayerCosts(base=10, layer=(100, 100, 40), petl=(5, 5, 5), skip=(2, 2, 2))
    assert costs.full() == 250 and costs.retained([]) == 265 and costs.retained([0]) == 162
    assert min_layers_for(170, costs.retained, [costs.saving(i) for i in range(3)], "FLOPs") == 1
    with pytest.raises(BudgetError, match="cannot be met"):
        min_layers_for(10, costs.retained, [costs.saving(i) for i in range(3)], "FLOPs")
    # ranking says layer 2 is most redundant, but it saves little: extend until the budget holds
    assert select_within([2, 0, 1], 1, 170, costs.retained) == [0, 2]


def test_build_searches_by_default_with_the_prior(tmp_path, tiny_checkpoint, shapes_data):
    """The default search: the warm-up, one round of each layer skipped alone, no bandit rounds."""
    out = tmp_path / "b"
    args = build_args(tiny_checkpoint, shapes_data, out, "--skip-count", "2", "--batch-size", "8")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    plan = _manifest(out)["skip_plan"]
    search = plan["search"]
    decided = search["uncertainty"]["decided"]  # on the 4 rows held out of 36, either may happen
    assert (plan["method"], search["estimator"]) == ("das" if decided else "das-undecided", "prior")
    assert plan["search_config"]["prior_rows"] == 1000
    (prior,) = search["rounds"]
    assert prior["kind"] == "prior" and [c for (c,) in prior["candidates"]] == [0, 1, 2, 3]
    losses = prior["losses"]
    assert plan["skipped"] == sorted(sorted(range(4), key=lambda i: (losses[i], i))[:2])


def test_the_paper_estimator_records_every_round(tmp_path, tiny_checkpoint, shapes_data):
    out = tmp_path / "b"
    result = CliRunner().invoke(
        cli, build_args(tiny_checkpoint, shapes_data, out, "--skip-count", "2", *SEARCH)
    )
    assert result.exit_code == 0, result.output
    m = _manifest(out)
    plan = m["skip_plan"]
    assert plan["method"] == "das" and len(plan["skipped"]) == 2
    assert m["architecture"]["skipped"] == plan["skipped"]
    search = plan["search"]
    assert len(search["gates"]) == 4 and search["rounds"]
    assert all(len(r["gates"]) == 4 and len(r["rewards"]) == 3 for r in search["rounds"])
    assert plan["skipped"] == sorted(search["ranking"][:2])
    assert m["cost"]["retained_model"] < m["cost"]["full_model"]
    assert 0 < m["training"]["trainable_parameters"] < m["training"]["total_parameters"]
    assert not (tmp_path / ".b.work").exists()  # the work directory is removed once the bundle exists


def test_search_rows_bound_the_search_training_data(tmp_path, tiny_checkpoint, shapes_data):
    out = tmp_path / "b"
    args = build_args(tiny_checkpoint, shapes_data, out, "--skip-count", "1", *SEARCH, "--search-rows", "10")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    plan = _manifest(out)["skip_plan"]
    assert plan["search"]["train_rows"] == 10 and plan["search_config"]["max_rows"] == 10
    assert plan["search"]["steps"] == 3 * 2  # 3 epochs of ceil(10 / 8) steps
    assert plan["search"]["val_rows"] >= 1


def test_flops_budget_is_met(tmp_path, tiny_checkpoint, shapes_data):
    out = tmp_path / "b"
    result = CliRunner().invoke(
        cli, build_args(tiny_checkpoint, shapes_data, out, "--flops-budget", "0.6", *SEARCH)
    )
    assert result.exit_code == 0, result.output
    cost = _manifest(out)["cost"]
    assert cost["retained_model"] <= 0.6 * cost["full_model"]
    costs = LayerCosts(**{k: tuple(v) if isinstance(v, list) else v for k, v in cost["per_layer"].items()})
    skipped = _manifest(out)["architecture"]["skipped"]
    # the fewest layers that meet the budget: one layer fewer would not
    assert costs.retained(skipped[:-1]) > 0.6 * cost["full_model"]


def test_search_command_prints_and_saves_gates(tmp_path, tiny_checkpoint, shapes_data):
    gates = tmp_path / "gates.json"
    args = ["search", "--model", str(tiny_checkpoint), "--data", str(shapes_data[0]),
            "--eval-data", str(shapes_data[1]), "--skip-count", "1", "--out", str(gates),
            "--quiet", *SEARCH]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    saved = json.loads(gates.read_text())
    assert len(saved["search"]["gates"]) == 4 and len(saved["skipped"]) == 1
    assert "vilt.encoder.layer." in result.output and "skip" in result.output
    top = saved["search"]["ranking"][0]  # the paper's estimator: its score is the gate
    assert "gates score" in result.output and f"{saved['search']['gates'][top]:+.5f}" in result.output


def test_conflicting_plan_options_are_a_usage_error(tmp_path, tiny_checkpoint, shapes_data):
    out = tmp_path / "b"
    result = CliRunner().invoke(
        cli, build_args(tiny_checkpoint, shapes_data, out, "--skip-count", "1", "--flops-budget", "0.5")
    )
    assert result.exit_code == 2 and "at most one of" in result.output


def _run_build(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "edge_vl", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, **kwargs)  # fmt: skip


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_interrupted_build_resumes_to_the_same_result(tmp_path, tiny_checkpoint, shapes_data):
    common = ["--skip-count", "1", "--search-epochs", "30", "--das-turn", "2", "--batch-size", "4",
              "--max-steps", "10", "--checkpoint-every", "5", "--quiet"]  # fmt: skip
    reference = tmp_path / "reference"
    done = _run_build(build_args(tiny_checkpoint, shapes_data, reference, *common))
    assert done.wait(timeout=300) == 0, done.stdout.read()

    out = tmp_path / "resumed"
    checkpoint = tmp_path / ".resumed.work" / "search" / "state.pt"
    first = _run_build(build_args(tiny_checkpoint, shapes_data, out, *common))
    deadline = time.time() + 120
    while not checkpoint.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert first.poll() is None, "the build finished before it could be interrupted"
    first.send_signal(signal.SIGINT)
    output = first.communicate(timeout=120)[0]
    assert first.returncode == 130, output
    assert "rerun the same command to resume" in output
    assert not out.exists() and checkpoint.exists()

    second = _run_build(build_args(tiny_checkpoint, shapes_data, out, *common))
    output = second.communicate(timeout=300)[0]
    assert second.returncode == 0, output
    assert "resuming" in output
    ref, res = _manifest(reference), _manifest(out)
    assert res["skip_plan"]["search"]["gates"] == ref["skip_plan"]["search"]["gates"]
    assert res["skip_plan"]["search"]["rounds"] == ref["skip_plan"]["search"]["rounds"]
    assert res["architecture"]["skipped"] == ref["architecture"]["skipped"]
    assert _sha(out / "model.bin") == _sha(reference / "model.bin")
    assert not (tmp_path / ".resumed.work").exists()


def test_changed_settings_refuse_to_resume(tmp_path, tiny_checkpoint, shapes_data):
    out = tmp_path / "b"
    work = tmp_path / ".b.work"
    work.mkdir()
    (work / "build.json").write_text(json.dumps({"fingerprint": "something else"}))
    result = CliRunner().invoke(cli, build_args(tiny_checkpoint, shapes_data, out, "--skip-layers", "1"))
    assert result.exit_code == 2 and "--restart" in result.output
    result = CliRunner().invoke(
        cli, build_args(tiny_checkpoint, shapes_data, out, "--skip-layers", "1", "--restart")
    )
    assert result.exit_code == 0, result.output


def test_latency_budget_is_measured_on_the_exported_graph(tmp_path, tiny_checkpoint, shapes_data):
    loose = tmp_path / "loose"
    result = CliRunner().invoke(
        cli, build_args(tiny_checkpoint, shapes_data, loose, "--latency-budget-ms", "1e6")
    )
    assert result.exit_code == 0, result.output
    assert "with every layer kept" in result.output
    plan = _manifest(loose)["skip_plan"]
    assert plan["skipped"] == [] and plan["budget"]["kind"] == "latency"
    assert plan["budget"]["all_kept_ms"] > 0 and plan["budget"]["all_skipped_ms"] > 0

    impossible = tmp_path / "impossible"
    result = CliRunner().invoke(
        cli, build_args(tiny_checkpoint, shapes_data, impossible, "--latency-budget-ms", "1e-6")
    )
    assert result.exit_code == 2 and "latency budget cannot be met" in result.output
    assert not impossible.exists()


def test_latency_budget_for_a_target_profile_is_scaled_to_its_speed(tmp_path, tiny_checkpoint, shapes_data):
    from edge_vl.timing import precision_probe

    probe = precision_probe()
    slow = {"runtime_profile": "default", "machine": {"cpu": "slow box", "flags": {"AVX2": True}},
            "precision_probe": {**probe, "fp32_ms": probe["fp32_ms"] * 1000}}  # fmt: skip
    target = tmp_path / "slow.json"
    target.write_text(json.dumps(slow))
    here, there = tmp_path / "here", tmp_path / "there"
    for out, extra in ((here, ()), (there, ("--target-profile", str(target)))):
        args = build_args(tiny_checkpoint, shapes_data, out, "--latency-budget-ms", "1e9", *extra)
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
    budget_here = _manifest(here)["skip_plan"]["budget"]
    budget_there = _manifest(there)["skip_plan"]["budget"]
    assert budget_here["on"] == "this machine" and budget_there["on"] == "slow box"
    # the slow box runs the reference graph 1000x slower: so, predicted, does the model. Each build
    # times the model itself, so the two builds' own measurements are compared only loosely (a busy
    # machine slows one build's timing more than the other's)
    assert budget_here["scale"] == 1.0 and 300 < budget_there["scale"] < 3000, budget_there
    measured_there = budget_there["all_kept_ms"] / budget_there["scale"]
    assert budget_here["all_kept_ms"] / 3 < measured_there < budget_here["all_kept_ms"] * 3
