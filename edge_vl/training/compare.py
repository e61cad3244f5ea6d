"""``edge-vl bench --compare torch``: the bundle against what a user would otherwise run.

Four contenders on the same batch-1 inputs, timed interleaved (a fresh random order every round,
with a short pause before each call) so that drift of the machine hits them alike: the bundle's
retained model on OpenVINO, the full model (no layer skipped, its text tower, the checkpoint's own
input size: what a user would otherwise run) exported to OpenVINO on the spot, and both in torch
eager. The torch
models are rebuilt from the bundle's source checkpoint with freshly initialised adapters: the
bundle carries no torch weights, and adapter values do not change the amount of work, so timings
are those of the trained model but the torch outputs are not. Needs the ``build`` extra.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_vl.bundle import Bundle
from edge_vl.errors import MissingExtraError, ModelError
from edge_vl.timing import interleaved, spread


def compare_with_torch(
    bundle: str | Path, *, runs: int = 30, threads: int | None = None, source: str | Path | None = None
) -> dict[str, Any]:
    """Median batch-1 latency (ms) of the four contenders over ``runs`` interleaved rounds, and the
    speed-up of the bundle over each of the others. ``source``: the checkpoint to rebuild the torch
    models from (a directory or a shipped model name; default the manifest's
    ``architecture.source``)."""
    try:
        import torch
    except ImportError:
        raise MissingExtraError("bench --compare torch", extra="build") from None
    from edge_vl.config import resolve_model_dir
    from edge_vl.converters import temporary_export
    from edge_vl.runtime.predictor import Predictor
    from edge_vl.training.architectures.base import InputShape

    predictor = Predictor(bundle, threads=threads, warmup=True)
    manifest = predictor.bundle.manifest
    arch = manifest.architecture
    if threads:
        torch.set_num_threads(threads)
    family, model = rebuild_torch_model(predictor.bundle, source)

    full_shape = family.input_shape(resolve_model_dir(source or arch.source), model)
    feed = predictor.dummy_inputs(1)
    full_feed = as_the_checkpoint_takes(predictor, feed, full_shape)
    as_torch = lambda arrays: {name: torch.from_numpy(a) for name, a in arrays.items()}  # noqa: E731
    torch_feed = as_torch(with_tokens(predictor, feed))  # the retained model at the bundle's size
    inputs = family.input_specs(model, full_shape)
    sample = as_torch(as_the_checkpoint_takes(predictor, predictor.dummy_inputs(2), full_shape))

    with temporary_export(family, model, inputs, sample, []) as full_xml:
        from edge_vl.timing import compile_latency

        full_model = compile_latency(full_xml, threads)  # outlives full_request
        full_request = full_model.create_infer_request()

        def full_call(request: Any = full_request) -> Any:  # bound now: full_request is deleted below
            return request.infer(full_feed)

        contenders: dict[str, Callable[[], Any]] = {
            "openvino_retained": lambda: predictor.run(feed),
            "openvino_full": full_call,
            "torch_retained": torch_runner(family, model, list(arch.skipped), torch_feed),
            "torch_full": torch_runner(family, model, [], as_torch(full_feed)),
        }
        times = interleaved(contenders, runs)
        contenders.clear()
        del full_request  # before full_model (see edge_vl.timing.compile_latency)
    note = "torch models carry fresh adapters (same work, other outputs); batch 1"
    note += "; they run the text tower the bundle folded away" if manifest.model.folded_texts else ""
    if full_shape.image != InputShape.of(manifest.preprocessing).image:
        note += f"; the full model runs at the checkpoint's {full_shape.image[0]} px"
    found = {"bundle": str(bundle), "runs": runs, "threads": threads, "skipped": list(arch.skipped)}
    return {**found, **summary(times), "note": note}


def summary(times: dict[str, list[float]]) -> dict[str, Any]:
    """Each contender's latency spread, and the bundle's speed-up over the others."""
    medians = {name: float(np.median(t)) for name, t in times.items()}
    bundle_ms = medians["openvino_retained"]
    return {
        "latency_ms": {name: spread(t) for name, t in times.items()},
        "speedup_of_bundle": {
            name: ms / bundle_ms for name, ms in medians.items() if name != "openvino_retained"
        },
    }


def with_tokens(predictor: Any, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``feed`` as the unfolded model takes it: a folded bundle's ``text_index`` replaced by the
    token ids of that folded text (other feeds unchanged)."""
    folded = predictor.bundle.manifest.model.folded_texts
    if folded is None or "text_index" not in feed:
        return feed
    texts = [folded.texts[int(i)] for i in feed["text_index"]]
    rest = {name: array for name, array in feed.items() if name != "text_index"}
    return {**rest, **predictor.text_encoder.encode(texts)}


def as_the_checkpoint_takes(predictor: Any, feed: dict[str, np.ndarray], shape: Any) -> dict[str, np.ndarray]:
    """``feed`` as the full model takes it: a folded text's token ids (:func:`with_tokens`), and
    images at the checkpoint's own size ``shape.image`` (constant pixels, as the dummy inputs)."""
    height, width = shape.image
    out = with_tokens(predictor, feed)
    pixels = out["pixel_values"]
    return {**out, "pixel_values": np.ones((*pixels.shape[:-2], height, width), pixels.dtype)}


def torch_runner(family: Any, model: Any, skipped: list[int], feed: dict[str, Any]) -> Callable[[], Any]:
    """A call of a copy of ``model`` with ``skipped`` layers bypassed, in torch eager."""
    import torch

    own = copy.deepcopy(model)
    family.set_skipped(own, skipped)

    def call() -> Any:
        with torch.inference_mode():
            return family.forward(own, feed)

    return call


def rebuild_torch_model(bundle: Bundle, source: str | Path | None = None) -> tuple[Any, Any]:
    """``(family, model)``: the torch model of a ``bundle``, rebuilt from its
    source checkpoint (``source``, default the manifest's ``architecture.source``) with freshly
    initialised adapters (seeded) of the bundle's adapter config, frozen, in eval mode, no layer
    skipped. Same work as the bundle's model, other outputs."""
    import torch

    from edge_vl.config import AdapterConfig, resolve_model_dir
    from edge_vl.training.architectures.quiet import quiet_transformers
    from edge_vl.training.architectures.registry import family_for

    manifest = bundle.manifest
    arch = manifest.architecture
    given = source if source is not None else arch.source
    directory = resolve_model_dir(given)
    if not (directory / "config.json").is_file():
        where = "--model" if source is not None else "manifest field architecture.source"
        raise ModelError(
            f"{bundle.path}: timing torch models rebuilds them from the bundle's source "
            f"checkpoint; {where} = {str(given)!r} is not a model directory here (pass --model with "
            "the checkpoint)"
        )
    family = family_for(arch.model_type)
    torch.manual_seed(0)
    with quiet_transformers():
        model = family.load(directory, bundle.labels)
    family.insert_adapters(model, AdapterConfig(**(manifest.training.adapters or {})))
    family.freeze(model)
    model.eval()
    return family, model
