"""The architecture-family contract, run for every registered family on its tiny random config:
layers, adapters, freezing, analytic MACs vs a FLOP counter, and build → export parity."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from edge_vl import Predictor
from edge_vl.cli import cli
from edge_vl.config import AdapterConfig
from edge_vl.data import read_examples
from edge_vl.training.adapters import PREFIX, LowRankUpdate
from edge_vl.training.architectures import family_for
from edge_vl.training.architectures.quiet import quiet_transformers
from edge_vl.training.encoded import EncodedData
from edge_vl.training.flops import counted_macs, with_eager_attention
from tests.conftest import VOCAB, build_args

FAMILIES = {"vilt": "vilt", "meter": "edge_vl_mini", "clip": "clip"}  # family name → a model_type it handles


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def checkpoint(request, tmp_path_factory):
    family = family_for(FAMILIES[request.param])
    out = tmp_path_factory.mktemp(f"tiny-{request.param}")
    with quiet_transformers():
        family.random_checkpoint(out, vocab=VOCAB, labels=["x", "y"], preset="tiny", seed=0)
    return family, out


def _load(family, directory, labels=("a", "b", "c")):
    torch.manual_seed(0)
    with quiet_transformers():
        model = family.load(directory, list(labels))
    family.insert_adapters(model)
    family.freeze(model)
    return model


def test_arms_adapters_and_freezing(checkpoint):
    family, directory = checkpoint
    model = _load(family, directory)
    names = family.layer_names(model)
    assert len(names) == len(family.layers(model)) >= 2
    assert len(set(names)) == len(names)
    for name, param in model.named_parameters():
        assert param.requires_grad == (PREFIX in name or any(p in name for p in family.trainable_patterns)), (
            name
        )
    family.set_skipped(model, [1])
    assert family.skipped(model) == [1]


def test_analytic_macs_match_the_flop_counter(checkpoint, tmp_path):
    family, directory = checkpoint
    eager = with_eager_attention(directory, tmp_path / "eager")  # the counter misses SDPA on CPU
    model = _load(family, eager).eval()
    shape = family.input_shape(eager, model)
    length = shape.text_length
    h, w = shape.image
    inputs = {
        "input_ids": torch.randint(5, len(VOCAB), (1, length)),
        "attention_mask": torch.ones(1, length, dtype=torch.long),
        "pixel_values": torch.randn(1, 3, h, w),
    }
    costs = family.layer_costs(model, shape)
    for skipped in ([], [1], [0, len(costs.layer) - 1]):
        family.set_skipped(model, skipped)
        counted = counted_macs(lambda: family.forward(model, inputs))
        assert abs(costs.retained(skipped) - counted) / counted < 0.02, (
            skipped,
            costs.retained(skipped),
            counted,
        )


def test_trimmed_text_padding_gives_the_same_logits(checkpoint):
    family, directory = checkpoint
    model = _load(family, directory).eval()
    shape = family.input_shape(directory, model)
    length = shape.text_length
    h, w = shape.image
    mask = torch.zeros(3, length, dtype=torch.long)
    mask[0, :3], mask[1, :2], mask[2, :4] = 1, 1, 1  # every row padded beyond 4 tokens
    rows = {"input_ids": torch.randint(5, len(VOCAB), (3, length)) * mask, "attention_mask": mask,
            "labels": torch.zeros(3, dtype=torch.long), "image_index": torch.arange(3)}  # fmt: skip
    data = EncodedData(rows, {"pixel_values": torch.randn(3, 3, h, w)})
    trimmed = data.trimmed_batch(slice(0, 3))
    assert trimmed["input_ids"].shape[1] == 4 < length
    with torch.no_grad():
        full_logits = family.forward(model, data.batch(slice(0, 3)))
        trimmed_logits = family.forward(model, trimmed)
    torch.testing.assert_close(trimmed_logits, full_logits, atol=1e-5, rtol=1e-5)


def test_build_export_and_predict(checkpoint, shapes_data, tmp_path):
    family, directory = checkpoint
    out = tmp_path / "bundle"
    result = CliRunner().invoke(cli, build_args(directory, shapes_data, out, "--skip-layers", "1"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["architecture"]["family"] == family.name
    assert manifest["architecture"]["skipped"] == [1]
    assert manifest["metrics"]["parity_max_abs"] <= 1e-4
    # no --lr: the family's default adapter learning rate, recorded as a number
    assert manifest["training"]["lr"] == {"vilt": 1e-3, "meter": 1e-4, "clip": 1e-3}[family.name]
    example = read_examples(shapes_data[1])[0]
    assert Predictor(out).predict(example.image, example.text).label in manifest["head"]["labels"]


def test_low_rank_updates_start_as_the_layer_they_wrap_and_are_counted(tmp_path):
    """METER-style layers with low-rank updates of attention and FFN: before training the logits are
    the plain adapted model's, the trainable count grows by r·(in + out) per updated projection, and
    the analytic MACs still match the FLOP counter."""
    family = family_for("edge_vl_mini")
    with quiet_transformers():
        family.random_checkpoint(tmp_path / "tiny", vocab=VOCAB, labels=["x", "y"], preset="tiny", seed=0)
    eager = with_eager_attention(tmp_path / "tiny", tmp_path / "eager")
    rank = 3
    config = AdapterConfig(**{**family.default_adapters.to_dict(), "attention_rank": rank, "ffn_rank": rank})
    models = []
    for adapters in (family.default_adapters, config):
        torch.manual_seed(0)
        with quiet_transformers():
            model = family.load(eager, ["a", "b"])
        family.insert_adapters(model, adapters)
        family.freeze(model)
        models.append(model.eval())
    plain, updated = models
    updates = [m for m in updated.modules() if isinstance(m, LowRankUpdate)]
    assert len(updates) == 4 * len(family.layers(updated))  # query, value and the FFN's two projections
    added = sum(rank * (u.base.in_features + u.base.out_features) for u in updates)
    assert family.active_trainable_parameters(updated) - family.active_trainable_parameters(plain) == added

    updated.load_state_dict(plain.state_dict(), strict=False)  # same base weights and adapters
    shape = family.input_shape(eager, updated)
    h, w = shape.image
    inputs = {"input_ids": torch.randint(5, len(VOCAB), (2, shape.text_length)),
              "attention_mask": torch.ones(2, shape.text_length, dtype=torch.long),
              "pixel_values": torch.randn(2, 3, h, w)}  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(family.forward(updated, inputs), family.forward(plain, inputs))
    costs = family.layer_costs(updated, shape)
    one = {k: v[:1] for k, v in inputs.items()}
    counted = counted_macs(lambda: family.forward(updated, one))
    assert abs(costs.retained([]) - counted) / counted < 0.02


def test_another_image_size_builds_exports_and_predicts_at_that_size(checkpoint, shapes_data, tmp_path):
    """``--image-size``: the bundle takes the new size (recorded, preprocessed at it), the export
    matches torch at it (the build's parity check), and more pixels cost more MACs."""
    _, directory = checkpoint

    def build(name: str, *extra: str) -> dict:
        args = build_args(directory, shapes_data, tmp_path / name, "--skip-layers", "1", "--max-steps", "2")
        result = CliRunner().invoke(cli, [*args, *extra])
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / name / "manifest.json").read_text())

    small = build("default")
    size = 2 * small["preprocessing"]["image"]["size"][0]
    large = build("double", "--image-size", str(size))
    assert large["preprocessing"]["image"]["size"] == [size, size]
    assert large["metrics"]["parity_max_abs"] <= 1e-4
    assert large["cost"]["retained_model"] > small["cost"]["retained_model"]  # 4x the pixels: more tokens
    # the baseline a user would otherwise run, in the MACs and the build's timing: the checkpoint's size
    assert large["cost"]["full_model"] == small["cost"]["full_model"]
    half = size // 2
    assert large["metrics"]["latency_ms"]["full_image_size"] == [half, half]
    info = CliRunner().invoke(cli, ["info", str(tmp_path / "double")])
    assert f"for the full model (no layer skipped, {half}×{half} px)" in info.output
    example = read_examples(shapes_data[1])[0]
    assert (
        Predictor(tmp_path / "double").predict(example.image, example.text).label in large["head"]["labels"]
    )
    # the baseline a user would otherwise run: the checkpoint at its own size
    args = [
        "bench",
        str(tmp_path / "double"),
        "--duration",
        "0.2",
        "--compare",
        "torch",
        "--runs",
        "3",
        "--json",
    ]
    bench = CliRunner().invoke(cli, args)
    assert bench.exit_code == 0, bench.output
    note = json.loads(bench.output)["compare"]["note"]
    assert f"the full model runs at the checkpoint's {size // 2} px" in note
    bad = CliRunner().invoke(cli, build_args(directory, shapes_data, tmp_path / "bad", "--image-size", "33"))
    assert bad.exit_code == 2 and "multiples of" in bad.output
