"""Task losses for single-answer classification, and the score function each implies at run time.

- ``cross-entropy`` (default): softmax cross-entropy; the bundle's scores are softmax probabilities.
- ``vqa-bce``: the VQA loss of ViLT/METER and of the DAS paper, BCE × num_labels on answer scores
  (one-hot here); scores are per-label sigmoids.
- ``focal``: softmax cross-entropy weighted by ``(1 − p_true)^2`` (Lin et al., 2017, "Focal Loss for
  Dense Object Detection", eq. 5, γ = 2); scores are softmax probabilities. Questions the prior
  already answers weigh little, so a minority answer of a lopsided question kind is not drowned
  out (beyond the paper; an option, not the default). The DAS search's rewards exp(−loss) then use
  it too, on a smaller scale than cross-entropy's; not measured there yet.

Knowing deviation from the paper (whose ViLT/METER VQA loss is BCE × number of answers): edge-vl data have
exactly one answer per row, and with one-hot BCE the rare answers learn far slower than with
softmax cross-entropy. Measured on edge-vl-mini/easy-vqa (4 layers skipped, 750 steps, 2,000 test
questions): colour questions — 8 answers of about 1.7 % of the rows each — stayed at chance (0.13)
with BCE and reached 0.82 with cross-entropy. The loss scale also sets the search's rewards
exp(−loss): cross-entropy (≈ 0.3–1) gives the bandit larger reward differences than BCE × N.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from edge_vl.choices import LOSS_SCORES

LossFn = Callable[..., torch.Tensor]  # (logits, targets, reduction="mean") -> loss


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Softmax cross-entropy on integer class ``targets`` (``reduction="none"``: one value per row)."""
    return F.cross_entropy(logits, targets, reduction=reduction)


def vqa_bce(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """BCE × num_labels on one-hot answer scores (the authors' ViLT/METER VQA loss)."""
    one_hot = F.one_hot(targets, logits.shape[-1]).to(logits.dtype)
    rows = F.binary_cross_entropy_with_logits(logits, one_hot, reduction="none").sum(-1)
    return _reduce(rows, reduction)


def focal(
    logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0, reduction: str = "mean"
) -> torch.Tensor:
    """Focal loss: per-row cross-entropy × ``(1 − p_true) ** gamma``, averaged."""
    ce = F.cross_entropy(logits, targets, reduction="none")
    return _reduce((1 - torch.exp(-ce)) ** gamma * ce, reduction)


def _reduce(rows: torch.Tensor, reduction: str) -> torch.Tensor:
    return rows.mean() if reduction == "mean" else rows


#: loss name (:data:`edge_vl.choices.LOSSES`) → loss function
LOSSES: dict[str, LossFn] = {"cross-entropy": cross_entropy, "vqa-bce": vqa_bce, "focal": focal}


def task_loss(name: str) -> LossFn:
    """The loss function called ``name`` (a key of :data:`LOSSES`)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {name!r}") from None


def row_losses(name: str) -> LossFn:
    """The loss called ``name`` per row (its mean is :func:`task_loss`'s value)."""
    fn = task_loss(name)
    return lambda logits, targets: fn(logits, targets, reduction="none")


def score_kind(name: str) -> str:
    """``softmax`` or ``sigmoid``: the score function that matches the loss ``name``."""
    task_loss(name)
    return LOSS_SCORES[name]
