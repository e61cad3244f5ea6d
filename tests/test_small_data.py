"""A first build on a few dozen rows of one's own data, with no flags: the schedule adapts to the
data, the search really runs, and the result is sensible."""

from __future__ import annotations

import json
import random
from pathlib import Path

from click.testing import CliRunner
from PIL import Image, ImageDraw

from edge_vl import read_bundle
from edge_vl.cli import cli


def two_shapes(root: Path, n: int, seed: int) -> Path:
    """``n`` rows of 'which shape is it?' over circles and squares of random colour, size, place."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        shape = ("circle", "square")[i % 2]
        im = Image.new("RGB", (96, 96), tuple(rng.randint(200, 255) for _ in range(3)))
        size, x, y = rng.randint(30, 60), rng.randint(4, 30), rng.randint(4, 30)
        colour = tuple(rng.randint(0, 160) for _ in range(3))
        (ImageDraw.Draw(im).ellipse if shape == "circle" else ImageDraw.Draw(im).rectangle)(
            (x, y, x + size, y + size), fill=colour
        )
        im.save(root / "images" / f"{seed}-{i}.png")
        rows.append({"image": f"images/{seed}-{i}.png", "text": "which shape is it?", "label": shape})
    path = root / f"rows-{seed}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eighty_rows_build_with_default_flags_and_say_how_sure_the_search_is(tmp_path):
    """On 80 rows the default search ranks layers on 8 held-out rows: too few to separate the pick
    from the next layer, so the build records and reports it as undecided, with the row count."""
    train, evals = two_shapes(tmp_path, 80, seed=1), two_shapes(tmp_path, 40, seed=2)
    out = tmp_path / "bundle"
    args = ["build", "--data", str(train), "--eval-data", str(evals), "--out", str(out), "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "small data:" in result.output  # the build says what it adapted
    manifest = read_bundle(out).data
    plan = manifest["skip_plan"]
    sureness = plan["search"]["uncertainty"]
    assert plan["search"]["estimator"] == "prior" and sureness["rows"] == 8, sureness
    low, high = sureness["boundary"]["interval"]
    assert low <= sureness["boundary"]["gap"] <= high
    assert (plan["method"] == "das") == (low > 0) == sureness["decided"]  # recorded either way
    assert "the ranking rests on 8 held-out rows" in result.output
    if plan["method"] == "das-undecided":
        assert "not a finding" in result.output
        assert "best guess" in (out / "report.html").read_text()
    assert "how sure the search is" in (out / "report.html").read_text()
    assert manifest["training"]["schedule_changes"] and manifest["training"]["steps"] >= 300
    assert manifest["metrics"]["eval_accuracy"] >= 0.9, manifest["metrics"]


def test_small_data_gives_the_bandit_rounds_but_leaves_the_prior_search_alone(tmp_path, tiny_checkpoint):
    from edge_vl.config import BuildConfig, SearchConfig
    from edge_vl.pipeline.schedule import MIN_SEARCH_ROUNDS, adapt_schedule

    def adapted(estimator: str) -> BuildConfig:
        config = BuildConfig(tiny_checkpoint, tmp_path / "t.jsonl", tmp_path / "e.jsonl", tmp_path / "b",
                             search=SearchConfig(estimator=estimator))  # fmt: skip
        return adapt_schedule(config, 60, echo=lambda _: None)[0]

    gates = adapted("gates")
    per_epoch = 54 // gates.train.batch_size + (54 % gates.train.batch_size > 0)  # 60 rows minus 6 held out
    rounds = (gates.search.epochs - gates.search.warmup_epochs) * per_epoch // gates.search.das_turn
    assert rounds >= MIN_SEARCH_ROUNDS and any(n.startswith("search:") for n in gates.schedule_changes)
    prior = adapted("prior")
    assert prior.search == SearchConfig(estimator="prior")  # no rounds to make room for
    assert not any(n.startswith("search:") for n in prior.schedule_changes)
