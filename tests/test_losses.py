"""Task losses and the score function each gives the bundle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edge_vl import Predictor, read_bundle
from edge_vl.cli import cli
from edge_vl.data import read_examples
from edge_vl.training.losses import LOSSES, cross_entropy, focal, score_kind, task_loss, vqa_bce
from tests.conftest import build_args


def test_losses_equal_hand_computations():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    target = torch.tensor([0])
    softmax = math.exp(2) / (math.exp(2) + 1 + math.exp(-1))
    assert cross_entropy(logits, target).item() == pytest.approx(-math.log(softmax))
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    bce = -(math.log(sig(2.0)) + math.log(1 - sig(0.0)) + math.log(1 - sig(-1.0))) / 3 * 3
    assert vqa_bce(logits, target).item() == pytest.approx(bce)
    assert task_loss("vqa-bce") is vqa_bce and score_kind("cross-entropy") == "softmax"
    with pytest.raises(ValueError, match="cross-entropy, vqa-bce"):
        task_loss("hinge")


def test_focal_loss_weighs_rows_by_how_wrong_they_are():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]])
    target = torch.tensor([0, 0])  # the first row mostly right, the second badly wrong
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    p = torch.exp(-ce)
    assert focal(logits, target).item() == pytest.approx(((1 - p) ** 2 * ce).mean().item())
    # the well-classified row contributes far less than under cross-entropy
    assert focal(logits[:1], target[:1]) < 0.1 * cross_entropy(logits[:1], target[:1])
    assert focal(logits, target, gamma=0.0).item() == pytest.approx(cross_entropy(logits, target).item())


def test_the_cli_offers_every_loss():
    loss_option = next(p for p in cli.commands["build"].params if p.name == "loss")
    assert list(loss_option.type.choices) == list(LOSSES)


@pytest.mark.parametrize(
    ("loss", "kind"), [("cross-entropy", "softmax"), ("vqa-bce", "sigmoid"), ("focal", "softmax")]
)
def test_bundle_scores_follow_the_training_loss(loss, kind, tmp_path, tiny_checkpoint, shapes_data):
    out = tmp_path / "b"
    result = CliRunner().invoke(
        cli, build_args(tiny_checkpoint, shapes_data, out, "--skip-layers", "1", "--loss", loss)
    )
    assert result.exit_code == 0, result.output
    manifest = read_bundle(out).data
    assert manifest["head"]["kind"] == kind and manifest["training"]["loss"] == loss
    example = read_examples(shapes_data[1])[0]
    scores = np.array(list(Predictor(out).predict(example.image, example.text).scores.values()))
    assert np.all((scores > 0) & (scores < 1))
    assert (abs(scores.sum() - 1) < 1e-5) == (kind == "softmax")


def test_unknown_loss_is_a_usage_error(tmp_path, tiny_checkpoint, shapes_data):
    result = CliRunner().invoke(
        cli, build_args(tiny_checkpoint, shapes_data, tmp_path / "b", "--loss", "hinge")
    )
    assert result.exit_code == 2 and "hinge" in result.output
