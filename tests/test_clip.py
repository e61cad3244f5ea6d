"""CLIP through the shared interface: the fused image+text head with the DAS search, and the prompt
head whose bundle holds the image tower only (tiny random CLIP checkpoints; the family contract
suite in ``test_families.py`` covers layers, MACs, padding and export parity as well)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edge_vl import Predictor
from edge_vl.cli import cli
from edge_vl.data import read_examples
from edge_vl.runtime.cpu import openvino_core
from edge_vl.training.architectures import family_for
from edge_vl.training.architectures.quiet import quiet_transformers
from tests.conftest import VOCAB, build_args

SEARCH = ["--search-epochs", "2", "--das-turn", "1"]


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-clip")
    with quiet_transformers():
        family_for("clip").random_checkpoint(out, vocab=[*VOCAB, "photo", "of"], labels=["x"], preset="tiny")
    return out


@pytest.fixture(scope="module")
def image_only_data(shapes_data, tmp_path_factory) -> tuple[Path, Path]:
    """The shapes data as image → shape rows without a text field."""
    out = tmp_path_factory.mktemp("image-only")
    paths = []
    for source, name in zip(shapes_data, ("train.jsonl", "eval.jsonl"), strict=True):
        rows = [
            {"image": str(ex.image), "label": ex.label}
            for ex in read_examples(source)
            if ex.label in ("circle", "rectangle")
        ]
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(out / name)
    return paths[0], paths[1]


def test_fused_head_searches_both_towers(clip_checkpoint, shapes_data, tmp_path):
    out = tmp_path / "fused"
    result = CliRunner().invoke(
        cli, build_args(clip_checkpoint, shapes_data, out, "--skip-count", "1", *SEARCH)
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    layers = manifest["architecture"]["layers"]
    assert [a.split(".")[0] for a in layers] == ["text_model"] * 2 + ["vision_model"] * 2
    assert manifest["skip_plan"]["method"].startswith("das") and len(manifest["skip_plan"]["skipped"]) == 1
    assert manifest["metrics"]["parity_max_abs"] <= 1e-4
    assert [i["name"] for i in manifest["model"]["inputs"]] == ["input_ids", "attention_mask", "pixel_values"]
    example = read_examples(shapes_data[1])[0]
    assert Predictor(out).predict(example.image, example.text).label in manifest["head"]["labels"]


def test_prompt_head_bundle_runs_the_image_tower_only(clip_checkpoint, image_only_data, tmp_path):
    prompts = tmp_path / "prompts.tsv"
    prompts.write_text("circle\ta photo of a circle\ntriangle\ta photo of a triangle\n")
    out = tmp_path / "prompt"
    args = build_args(clip_checkpoint, image_only_data, out, "--skip-count", "1", *SEARCH,
                      "--prompts", str(prompts), "--prompt-template", "a {} shape")  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    # labels: the training labels plus the prompt-only "triangle"; file entries win over the template
    assert manifest["head"]["labels"] == ["circle", "rectangle", "triangle"]
    assert manifest["head"]["prompts"] == {
        "circle": "a photo of a circle",
        "rectangle": "a rectangle shape",
        "triangle": "a photo of a triangle",
    }
    # the search only knows the image tower: skipping a text layer would save nothing on the device
    assert all(a.startswith("vision_model.") for a in manifest["architecture"]["layers"])
    assert [i["name"] for i in manifest["model"]["inputs"]] == ["pixel_values"]
    assert "text" not in manifest["preprocessing"] and "tokenizer.json" not in manifest["files"]
    assert manifest["metrics"]["parity_max_abs"] <= 1e-4
    names = [op.get_friendly_name() for op in openvino_core().read_model(str(out / "model.xml")).get_ops()]
    assert not any("text_model" in n or "text_projection" in n for n in names)
    assert any("vision_model" in n for n in names)

    predictor = Predictor(out)
    images = [json.loads(line)["image"] for line in image_only_data[1].read_text().splitlines()]
    scores = predictor.scores(images)  # images only, no text
    assert scores.shape == (len(images), 3)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    assert predictor.predict(images[0]).label in manifest["head"]["labels"]


def test_label_prompts_are_refused_for_families_without_a_prompt_head(tiny_checkpoint, shapes_data, tmp_path):
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"red": "red", "blue": "blue", "green": "green", "circle": "c",
                                   "rectangle": "r"}))  # fmt: skip
    result = CliRunner().invoke(
        cli,
        build_args(
            tiny_checkpoint, shapes_data, tmp_path / "b", "--skip-layers", "1", "--prompts", str(prompts)
        ),
    )
    assert result.exit_code == 2 and "no prompt head" in result.output and "CLIP" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(["not", "an", "object"]))
    result = CliRunner().invoke(
        cli, build_args(tiny_checkpoint, shapes_data, tmp_path / "c", "--prompts", str(bad))
    )
    assert result.exit_code == 2 and "bad.json" in result.output and "label → prompt" in result.output
