"""Adapters, skipping and freezing on a tiny ViLT (the adapter and skip adapter of the authors' code)."""

from __future__ import annotations

import pytest
import torch

from edge_vl.config import AdapterConfig, TrainConfig
from edge_vl.errors import ModelError
from edge_vl.training.adapters import PREFIX, BottleneckAdapter
from edge_vl.training.architectures import family_for
from edge_vl.training.architectures.quiet import quiet_transformers
from edge_vl.training.encoded import EncodedData
from edge_vl.training.finetune import train
from edge_vl.training.losses import cross_entropy

LABELS = ["a", "b", "c"]


@pytest.fixture
def family():
    return family_for("vilt")


@pytest.fixture
def model(family, tiny_checkpoint):
    torch.manual_seed(0)
    with quiet_transformers():
        return family.load(tiny_checkpoint, LABELS)


def _inputs(model, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    length = cfg.max_position_embeddings
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length // 2 :] = 0
    return {
        "input_ids": torch.randint(5, cfg.vocab_size, (batch, length), generator=g),
        "attention_mask": mask,
        "pixel_values": torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=g),
    }


def test_bottleneck_adapter_formula_and_init():
    torch.manual_seed(0)
    adapter = BottleneckAdapter(16, 4, init_std=0.02)
    assert torch.all(adapter.down.bias == 0) and torch.all(adapter.up.bias == 0)
    assert torch.all(adapter.norm.weight == 1) and torch.all(adapter.norm.bias == 0)
    assert adapter.up.weight.abs().max() > 0  # W_up is not zero-initialised (as in the authors' code)
    x = torch.randn(2, 5, 16)
    ln = torch.nn.functional.layer_norm(x, (16,), eps=1e-5)
    expected = (
        torch.relu(ln @ adapter.down.weight.T + adapter.down.bias) @ adapter.up.weight.T + adapter.up.bias
    )
    assert torch.allclose(adapter(x), expected, atol=1e-6)


def test_deterministic_forward_matches_hugging_face(family, model):
    """Patches in order + all-ones pixel mask gives HF's pooled output (HF permutes patches)."""
    model.eval()
    inputs = _inputs(model)
    pixel_mask = torch.ones(3, model.config.image_size, model.config.image_size, dtype=torch.long)
    with torch.no_grad():
        hf = model(**inputs, pixel_mask=pixel_mask).logits
        ours = family.forward(model, inputs)
    assert torch.max(torch.abs(hf - ours)) < 1e-5


def test_skipped_layer_is_h_plus_skip_adapter(family, model):
    layers = family.insert_adapters(model)
    family.set_skipped(model, [2])
    h = torch.randn(2, 7, model.config.hidden_size)
    out = layers[2](h, None)[0]
    assert torch.equal(out, h + layers[2].skip_adapter(h))
    assert not torch.allclose(layers[1](h, None)[0], h + layers[1].skip_adapter(h))


def test_set_skipped_rejects_bad_index(family, model):
    family.insert_adapters(model)
    with pytest.raises(ModelError, match=r"out of range.*0\.\.3"):
        family.set_skipped(model, [4])
    with pytest.raises(ModelError, match="already inserted"):
        family.insert_adapters(model)


def test_only_adapters_head_pooler_and_token_types_train(family, model):
    family.insert_adapters(model)
    trainable = family.freeze(model)
    assert trainable
    for name in trainable:
        assert PREFIX in name or any(p in name for p in ("classifier", "pooler", "token_type_embeddings")), (
            name
        )
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any(".layer.attention.attention.query" in n for n in frozen)
    assert any("patch_embeddings" in n for n in frozen)


def test_active_trainable_parameters_match_spec_arithmetic(family, model):
    """An adapter with bottleneck r has 2·d·r + r + d weights plus 2·d for its LN; only the
    adapters in use count (PETL adapters of kept layers, skip adapters of skipped layers)."""
    cfg = AdapterConfig()
    family.insert_adapters(model, cfg)
    family.set_skipped(model, [1, 3])
    family.freeze(model)
    d = model.config.hidden_size

    def adapter(r):
        return 2 * d * r + r + d + 2 * d

    others = sum(
        p.numel() for n, p in model.named_parameters() if p.requires_grad and PREFIX not in n
    )  # head, pooler, token-type embeddings
    expected = others + 2 * 2 * adapter(cfg.petl_rank(d)) + 2 * adapter(cfg.skip_rank(d))
    assert family.active_trainable_parameters(model) == expected


def test_training_changes_only_trainable_weights_and_skipped_layers_get_no_gradient(family, model):
    family.insert_adapters(model)
    family.set_skipped(model, [1])
    family.freeze(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    inputs = _inputs(model, batch=4)
    data = {**inputs, "labels": torch.tensor([0, 1, 2, 0])}

    # gradients of one step: a skipped block and its PETL adapters receive none
    loss = cross_entropy(family.forward(model, data), data["labels"])
    loss.backward()
    arm1 = family.layers(model)[1]
    assert all(p.grad is None for p in arm1.layer.parameters())
    assert all(p.grad is None for n, p in arm1.named_parameters() if n.startswith(PREFIX + "attn"))
    assert all(p.grad is not None for p in arm1.skip_adapter.parameters())
    assert all(p.grad is None for p in family.layers(model)[0].skip_adapter.parameters())
    model.zero_grad(set_to_none=True)

    rows = {k: v for k, v in data.items() if k != "pixel_values"}
    encoded = EncodedData({**rows, "image_index": torch.arange(4)}, {"pixel_values": data["pixel_values"]})
    train(family, model, encoded, TrainConfig(max_steps=3, batch_size=4), progress=False)
    after = dict(model.named_parameters())
    for name, old in before.items():
        if after[name].requires_grad:
            continue
        assert torch.equal(old, after[name]), f"frozen weight {name} changed"
    changed = [n for n, old in before.items() if after[n].requires_grad and not torch.equal(old, after[n])]
    assert any("classifier" in n for n in changed)
    assert any(f"1.{PREFIX}skip" in n for n in changed)
