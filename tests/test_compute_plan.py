"""The compute plan (``--image-sizes``): input size and skip set chosen together under a budget,
from held-out losses after a warm-up at each size."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edge_vl import Predictor
from edge_vl.budget import BudgetError
from edge_vl.build_records import SizeCandidate, SizePlan, SkipPlan
from edge_vl.cli import cli
from edge_vl.config import BuildConfig, TrainConfig
from edge_vl.pipeline import read_data
from edge_vl.pipeline.compute_plan import choose_size, compute_plan
from edge_vl.pipeline.workdir import WorkDir
from edge_vl.schema import parse, to_json
from tests.conftest import build_args


def make_task(root: Path, kind: str, n: int = 200, size: int = 128, seed: int = 0) -> tuple[Path, Path]:
    """One fixed question over ``size``-pixel images. ``colour``: red or blue with noise, which
    survives downscaling. ``stripes``: 1-pixel rows or columns of the same mean grey, which become
    the same flat grey once 2 × 2 pixels are averaged (at half the size)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        if kind == "colour":
            label = ("red", "blue")[i % 2]
            rgb = np.array([200, 40, 40] if label == "red" else [40, 40, 200])
            pixels = np.clip(rgb + rng.normal(0, 20, (size, size, 3)), 0, 255)
        else:
            label = ("rows", "columns")[i % 2]
            line = (np.arange(size) % 2) * 200 + 28
            grid = np.tile(line[:, None], (1, size)) if label == "rows" else np.tile(line[None, :], (size, 1))
            pixels = np.repeat(grid[:, :, None], 3, axis=2)
        Image.fromarray(pixels.astype(np.uint8)).save(root / "images" / f"{i}.png")
        rows.append({"image": f"images/{i}.png", "text": "what is in the image?", "label": label})
    order = rng.permutation(n)
    cut = int(0.75 * n)
    files = root / "train.jsonl", root / "eval.jsonl"
    for file, part in zip(files, (order[:cut], order[cut:]), strict=True):
        file.write_text("".join(json.dumps(rows[i]) + "\n" for i in part))
    return files


def plan_for(kind: str, tmp_path: Path) -> SkipPlan:
    """The compute plan of edge-vl-mini on ``kind`` at 64 or 128 px under half the full model's MACs
    (at 128 px that needs layers skipped; at 64 px it does not)."""
    train, evals = make_task(tmp_path / kind, kind)
    config = BuildConfig(
        model_dir=Path("edge-vl-mini"),
        train_data=train,
        eval_data=evals,
        out=tmp_path / f"{kind}-bundle",
        flops_budget=0.5,
        image_sizes=(64, 128),
        train=TrainConfig(batch_size=4, seed=0),
        progress=False,
    )
    data = read_data(config)
    work = WorkDir.open(config, data, lambda _: None)
    return compute_plan(config, data, work, lambda: False, lambda _: None)


@pytest.mark.parametrize(("kind", "size"), [("colour", 64), ("stripes", 128)])
def test_the_plan_takes_the_smaller_size_only_when_the_signal_survives_it(kind, size, tmp_path):
    plan = plan_for(kind, tmp_path)
    assert plan.sizes is not None and plan.sizes.chosen == size
    by_size = {c.size: c for c in plan.sizes.candidates}
    assert by_size[128].skipped and not by_size[64].skipped  # the budget needs skipping at 128 px only
    small, large = by_size[64].estimated_loss, by_size[128].estimated_loss
    assert small is not None and large is not None
    if kind == "stripes":  # averaged away at 64 px (but for the image's edges)
        assert large < small
    assert plan.skipped == by_size[size].skipped
    assert parse(SkipPlan, json.loads(json.dumps(to_json(plan)))) == plan  # the manifest round trip


def test_the_choice_is_the_lowest_estimated_loss():
    cheap = SizeCandidate(64, True, (), cost=1.0, base_loss=0.30, loss_se=0.01, estimated_loss=0.30)
    good = SizeCandidate(128, True, (1, 2), cost=2.0, base_loss=0.10, loss_se=0.01, estimated_loss=0.20)
    close = SizeCandidate(96, True, (1,), cost=1.5, base_loss=0.2, loss_se=0.01, estimated_loss=0.21)
    assert choose_size([cheap, good]) == good
    assert choose_size([cheap, good, close]) == good  # within noise of the best is not as good
    assert choose_size([replace(close, estimated_loss=0.20), good]).size == 96  # a tie: the cheaper
    assert choose_size([cheap, SizeCandidate(160, False)]) == cheap
    with pytest.raises(BudgetError, match="no input size of 160 px"):
        choose_size([SizeCandidate(160, False)])


def test_a_size_the_held_out_rows_cannot_separate_is_said_to_be_a_bet():
    """The lowest estimate is not a finding when another size is within noise of it: the log, and
    the record of a build that chose otherwise (an earlier rule), say so."""
    from edge_vl.pipeline.compute_plan import say_the_choice

    cheap = SizeCandidate(64, True, (), cost=1.0, base_loss=0.21, loss_se=0.05, estimated_loss=0.21)
    good = SizeCandidate(128, True, (1,), cost=2.0, base_loss=0.10, loss_se=0.05, estimated_loss=0.20)
    plan = dict(candidates=(cheap, good), kind="flops", limit=0.5, full_model_macs=4.0)
    assert choose_size([cheap, good]) == good
    lines: list[str] = []
    say_the_choice(SizePlan(chosen=128, **plan), lines.append)
    assert lines[-1] == (
        "compute plan: WARNING: the held-out rows cannot tell 128 px (estimated loss 0.2000) from 64 px "
        "(0.2100), a difference within two standard errors, so 128 px is a bet, not a finding (compare "
        "with --image-size 64, or give more data)"
    )
    assert not SizePlan(chosen=64, **plan).decided  # the cheaper size, taken over a lower loss
    apart = {**plan, "candidates": (replace(cheap, estimated_loss=0.45), good)}
    lines.clear()
    say_the_choice(SizePlan(chosen=128, **apart), lines.append)
    assert SizePlan(chosen=128, **apart).decided and "WARNING" not in "\n".join(lines)
    assert not SizePlan(chosen=64, **apart).decided


def test_a_planned_bundle_runs_at_the_chosen_size(tiny_checkpoint, shapes_data, tmp_path):
    """Through the CLI on a tiny ViLT: the bundle is preprocessed at the chosen size, records every
    candidate, and answers."""
    out = tmp_path / "planned"
    args = build_args(tiny_checkpoint, shapes_data, out, "--flops-budget", "0.9", "--image-sizes", "32,64")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    sizes = manifest["skip_plan"]["sizes"]
    assert {c["size"] for c in sizes["candidates"]} == {32, 64}
    assert manifest["preprocessing"]["image"]["size"] == [sizes["chosen"]] * 2
    assert f"compute plan: chose {sizes['chosen']} px" in result.output
    report = (out / "report.html").read_text()
    assert (
        "Compute plan" in report
        and f"{sizes['chosen']} px, chosen by the compute plan among 32, 64 px" in report
    )
    predictor = Predictor(out)
    image = shapes_data[1].parent / "images" / "0.png"
    assert predictor.predict(image, "what color is the shape?").label in manifest["head"]["labels"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--image-sizes", "32,64"], "give flops_budget or latency_budget_ms"),
        (["--image-sizes", "64", "--flops-budget", "0.5"], "at least two distinct sizes"),
        (["--image-sizes", "32,64", "--image-size", "32", "--flops-budget", "0.5"], "not both"),
        (
            ["--image-sizes", "32,64", "--flops-budget", "0.5", "--search-estimator", "gates"],
            "prior estimator",
        ),
    ],
)
def test_image_sizes_without_a_budget_or_with_one_size_are_refused(
    tiny_checkpoint, shapes_data, tmp_path, extra, message
):
    result = CliRunner().invoke(cli, build_args(tiny_checkpoint, shapes_data, tmp_path / "x", *extra))
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "x").exists()


def test_a_finished_size_is_not_scored_again_when_the_build_resumes(tiny_checkpoint, shapes_data, tmp_path):
    config = BuildConfig(
        model_dir=tiny_checkpoint,
        train_data=shapes_data[0],
        eval_data=shapes_data[1],
        out=tmp_path / "resumed",
        flops_budget=0.9,
        image_sizes=(32, 64),
        train=TrainConfig(batch_size=8, seed=0, max_steps=2),
        progress=False,
    )
    data = read_data(config)
    first = compute_plan(config, data, WorkDir.open(config, data, print), lambda: False, print)
    said: list[str] = []
    again = compute_plan(config, data, WorkDir.open(config, data, said.append), lambda: False, said.append)
    assert again == first
    assert said[0].startswith("resuming") and not any(" px] " in line for line in said), said


@pytest.mark.parametrize("sizes", ["0,64", "33,64"])
def test_a_size_the_model_cannot_take_is_refused_and_leaves_nothing(
    tiny_checkpoint, shapes_data, tmp_path, sizes
):
    out = tmp_path / "bad"
    args = build_args(tiny_checkpoint, shapes_data, out, "--flops-budget", "0.9", "--image-sizes", sizes)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "multiples of" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []
