"""Examples encoded as tensors for training: per-row text and labels, and each unique image once.

Datasets like easy-vqa ask about ten questions per image; storing pixels per row would multiply
memory by ten, so rows point into a table of unique images with ``image_index``. Families whose
image encoder is frozen replace that table by cached features (exactly what the encoder computes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from edge_vl.data import Example
from edge_vl.errors import DataError
from edge_vl.manifest import ImageSpec
from edge_vl.runtime.preprocess import preprocess_image
from edge_vl.runtime.tokenize import TEXT_INPUTS, TextEncoder


@dataclass(frozen=True)
class EncodedData:
    """``rows``: per-example tensors (``labels``, ``image_index``, text inputs); ``images``: per
    unique image tensors (``pixel_values`` and/or cached features)."""

    rows: dict[str, torch.Tensor]
    images: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.rows["labels"])

    @property
    def labels(self) -> torch.Tensor:
        return self.rows["labels"]

    def batch(self, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
        """Named tensors of rows ``index``, images gathered in."""
        out = {k: v[index] for k, v in self.rows.items() if k != "image_index"}
        image_index = self.rows["image_index"][index]
        out.update({k: v[image_index] for k, v in self.images.items()})
        return out

    def trimmed_batch(self, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
        """:meth:`batch` without the text padding that every row of it has (right padding, masked
        out by ``attention_mask``): the same outputs for less compute, for training and evaluation
        in torch. Exports need :meth:`batch`, whose shapes are the model's fixed input shapes."""
        out = self.batch(index)
        mask = out.get("attention_mask")
        if mask is None or mask.ndim != 2 or not bool(mask.any()):
            return out
        length = int(mask.any(dim=0).nonzero().max()) + 1
        return {k: (v[:, :length] if k in TEXT_INPUTS else v) for k, v in out.items()}

    def subset(self, index: torch.Tensor) -> EncodedData:
        """The rows ``index`` (the image table is shared)."""
        return EncodedData({k: v[index] for k, v in self.rows.items()}, self.images)

    def with_images(self, images: dict[str, torch.Tensor]) -> EncodedData:
        return EncodedData(self.rows, images)

    def to(self, device: torch.device | str) -> EncodedData:
        """The same data on ``device`` (itself if it is there already)."""
        if self.labels.device == torch.device(device):
            return self
        move = lambda tensors: {k: v.to(device) for k, v in tensors.items()}  # noqa: E731
        return EncodedData(move(self.rows), move(self.images))


def encode_examples(
    examples: Sequence[Example],
    image: ImageSpec,
    text_encoder: TextEncoder | None,
    labels: Sequence[str],
) -> EncodedData:
    """Preprocess with the runtime's own code (each distinct image file once) and tokenize."""
    index = {label: i for i, label in enumerate(labels)}
    for ex in examples:
        if ex.label not in index:
            raise DataError(
                f"label {ex.label!r} does not occur in the training data (known labels: {sorted(index)})",
                path=ex.manifest or None,
                line=ex.line or None,
            )
    unique: dict[Path, int] = {}
    for ex in examples:
        unique.setdefault(ex.image.resolve(), len(unique))
    pixels = torch.stack([torch.from_numpy(preprocess_image(p, image)) for p in unique])
    rows = {
        "labels": torch.tensor([index[ex.label] for ex in examples], dtype=torch.long),
        "image_index": torch.tensor([unique[ex.image.resolve()] for ex in examples], dtype=torch.long),
    }
    if text_encoder is not None:
        encoded = text_encoder.encode([ex.text for ex in examples])
        rows.update({k: torch.from_numpy(v) for k, v in encoded.items()})
    return EncodedData(rows, {"pixel_values": pixels})
