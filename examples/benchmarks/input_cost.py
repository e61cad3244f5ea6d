"""What cheaper inputs buy: batch-1 latency and MACs by image size, skip set and a folded text, on
this machine, every contender of a model timed in one interleaved run (FP32, batch 1).

- ``demo``: the demo bundle's model (edge-vl-mini, adapters freshly initialised: speed and parity
  only, the bundle's own accuracy is not at stake here) at image sizes 128 → 32 with no layer, the
  bundle's skip set, and every layer skipped; and with one easy-vqa question folded into the graph
  (no text tower), whose logits are compared with the unfolded graph's on real eval rows.
- ``vilt``, ``clip``: ViLT-B/32 and the CLIP ViT-B/32 image tower, random weights (speed only), at
  smaller inputs with k = 0 and 4 skipped layers.

For each model the cost model a plan over (image size, skip set) would use is checked: per image
size, latency interpolated by MACs between the two measured endpoints (every layer kept, every layer
skipped), as ``edge-vl build --latency-budget-ms`` does at one size; and, for comparison, one
straight line through MACs fitted on the checkpoint size's endpoints only.

    python -m examples.benchmarks.input_cost edge-vl-demo/bundle-full \\
        --eval edge-vl-demo/data-full/eval.jsonl --out examples/benchmarks/results/input_cost/vnni-epyc.json

About 10 minutes on 2 cores; run it on a quiet machine (other work skews absolute times, though
not much the ratios of one interleaved run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edge_vl.converters import temporary_export

from edge_vl.data import read_examples
from edge_vl.folding import folded_input_specs, text_index, texts_to_fold
from edge_vl.manifest import TensorSpec
from edge_vl.pipeline.prepare import shipped_costs
from edge_vl.runtime.predictor import Predictor
from edge_vl.timing import compile_latency, interleaved, spread
from edge_vl.training.architectures import InputShape
from edge_vl.training.compare import rebuild_torch_model
from examples.benchmarks.recorded import portable, write_timed_results
from examples.benchmarks.results import clip_b32, vilt_b32


def at_size(sample: dict[str, torch.Tensor], size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``sample`` with random pixels of ``size`` × ``size`` (speed does not depend on the values)."""
    pixels = sample["pixel_values"]
    generator = torch.Generator().manual_seed(seed)
    return {**sample, "pixel_values": torch.randn(len(pixels), 3, size, size, generator=generator)}


def specs_at(family, model, shape: InputShape, size: int) -> list[TensorSpec]:
    return family.input_specs(model, InputShape((size, size), shape.text_length))


def time_exports(
    family, model, variants: dict[str, tuple[list[TensorSpec], dict, list[int], Any]], runs: int
) -> dict[str, list[float]]:
    """Export each variant (inputs, sample, skip set, folded texts) and time them all in one
    interleaved run of batch-1 calls."""
    with contextlib.ExitStack() as stack:
        compiled, feeds = {}, {}
        for name, (inputs, sample, skipped, folded) in variants.items():
            print(f"exporting {name}", flush=True)
            xml = stack.enter_context(temporary_export(family, model, inputs, sample, skipped, folded))
            compiled[name] = compile_latency(xml)  # outlives its request
            feeds[name] = {s.name: sample[s.name][:1].numpy() for s in inputs}
        requests = {name: c.create_infer_request() for name, c in compiled.items()}
        contenders = {name: (lambda r=r, f=feeds[name]: r.infer(f)) for name, r in requests.items()}
        print(f"timing {len(contenders)} contenders, {runs} interleaved rounds", flush=True)
        try:
            return interleaved(contenders, runs)
        finally:
            contenders.clear()
            requests.clear()  # before ``compiled`` (see edge_vl.timing.compile_latency)


def size_rows(family, model, shape, sample, sizes, sets: dict[str, list[int]], runs: int) -> list[dict]:
    """Latency and MACs of every (image size, skip set), with the two cost models' predictions."""
    n = len(family.layers(model))
    named = {"none": [], **sets, "all": list(range(n))}
    variants, macs = {}, {}
    for size in sizes:
        costs = family.layer_costs(model, InputShape((size, size), shape.text_length))
        for label, skipped in named.items():
            variants[f"{size}px/{label}"] = (
                specs_at(family, model, shape, size),
                at_size(sample, size),
                skipped,
                None,
            )
            macs[f"{size}px/{label}"] = costs.retained(skipped) if skipped else costs.full()
    times = time_exports(family, model, variants, runs)
    median = {name: float(np.median(t)) for name, t in times.items()}
    big = max(sizes)
    # one line through MACs, fitted on the checkpoint size's endpoints
    (x0, y0), (x1, y1) = ((macs[f"{big}px/{e}"], median[f"{big}px/{e}"]) for e in ("none", "all"))
    slope = (y1 - y0) / (x1 - x0)
    rows = []
    for name, (_, _, skipped, _) in variants.items():
        size, label = name.split("px/")
        kept_ms, skipped_ms = median[f"{size}px/none"], median[f"{size}px/all"]
        kept_macs, skipped_macs = macs[f"{size}px/none"], macs[f"{size}px/all"]
        per_size = kept_ms + (macs[name] - kept_macs) * (skipped_ms - kept_ms) / (skipped_macs - kept_macs)
        line = y0 + slope * (macs[name] - x0)
        rows.append({
            "image_size": int(size), "set": label, "skipped": skipped, "macs": macs[name],
            **spread(times[name]),
            "predicted_per_size_ms": per_size, "predicted_one_line_ms": line,
        })  # fmt: skip
    full = next(r["median"] for r in rows if r["image_size"] == big and r["set"] == "none")
    for row in rows:
        row["speedup_vs_full"] = full / row["median"]
        for model_name in ("per_size", "one_line"):
            row[f"error_{model_name}"] = row[f"predicted_{model_name}_ms"] / row["median"] - 1
    return rows


def demo_part(
    bundle: Path, eval_data: Path, runs: int, rows_checked: int, sizes: list[int]
) -> dict[str, Any]:
    """The demo model by image size and skip set, and with one question folded."""
    with Predictor(bundle, warmup=False) as predictor:
        manifest = predictor.bundle.manifest
        family, model = rebuild_torch_model(predictor.bundle)
        examples = read_examples(eval_data, check_images=False)
        question = Counter(e.text for e in examples).most_common(1)[0][0]
        asked = [e for e in examples if e.text == question][:rows_checked]
        feed = predictor.prepare([e.image for e in asked], [e.text for e in asked])
    shape = InputShape.of(manifest.preprocessing)
    sample = {k: torch.from_numpy(v) for k, v in feed.items()}
    skip = list(manifest.architecture.skipped)
    rows = size_rows(family, model, shape, sample, sizes, {"bundle": skip}, runs)
    folded = texts_to_fold([question], feed["input_ids"][:1], feed["attention_mask"][:1])
    assert folded is not None
    index = torch.from_numpy(text_index(folded, feed["input_ids"], feed["attention_mask"]))
    native = shape.image[0]  # the bundle's input size: the eval rows' own pixels
    variants = {f"{native}px/none": (specs_at(family, model, shape, native), sample, [], None)}
    for size in dict.fromkeys((native, 64)):
        tokens = specs_at(family, model, shape, size)
        folded_specs = folded_input_specs(tokens)
        both = {**(sample if size == native else at_size(sample, size)), "text_index": index}
        variants[f"{size}px/bundle"] = (tokens, both, skip, None)
        variants[f"{size}px/bundle+folded"] = (folded_specs, both, skip, folded)
    times = time_exports(family, model, variants, runs)
    parity = folded_parity(family, model, shape, sample, index, skip, folded)
    full = float(np.median(times[f"{native}px/none"]))
    fold_rows = []
    for name, (_, _, skipped, fold_texts) in variants.items():
        size = int(name.split("px/")[0])
        costs = shipped_costs(family, model, InputShape((size, size), shape.text_length), fold_texts)
        macs = costs.retained(skipped) if skipped else costs.full()
        fold_rows.append({"variant": name, "macs": macs, **spread(times[name]),
                          "speedup_vs_full": full / float(np.median(times[name]))})  # fmt: skip
    return {
        "bundle": portable(str(bundle.resolve())), "skipped": skip, "question": question,
        "question_tokens": len(folded.token_ids[0]), "text_length": shape.text_length,
        "size_rows": rows, "fold_rows": fold_rows, "fold_parity": parity,
        "note": "adapters freshly initialised (seeded): speed and parity, not accuracy",
    }  # fmt: skip


def folded_parity(family, model, shape, sample, index, skip, folded) -> dict[str, Any]:
    """Max |logits| difference between the folded and the unfolded graph (OpenVINO FP32) on the
    eval rows of ``sample``, both exported with the bundle's skip set."""
    from edge_vl.runtime.cpu import openvino_core

    tokens = specs_at(family, model, shape, shape.image[0])
    folded_specs = folded_input_specs(tokens)
    both = {**sample, "text_index": index}
    outputs = []
    for specs, fold_texts in ((tokens, None), (folded_specs, folded)):
        with temporary_export(family, model, specs, both, skip, fold_texts) as xml:
            compiled = openvino_core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            outputs.append(compiled({s.name: both[s.name].numpy() for s in specs})[0])
            del compiled
    diff = np.abs(outputs[0] - outputs[1])
    same = int((outputs[0].argmax(-1) == outputs[1].argmax(-1)).sum())
    return {"rows": len(diff), "max_abs": float(diff.max()), "logit_scale": float(np.abs(outputs[0]).max()),
            "same_answers": same}  # fmt: skip


def random_part(make, sizes: list[int], k: int, runs: int) -> dict[str, Any]:
    """A random-weight architecture at ``sizes`` with no layer, its last ``k`` and every layer skipped."""
    with tempfile.TemporaryDirectory() as tmp:
        family, model, _, sample, shape = make(Path(tmp))
        n = len(family.layers(model))
        rows = size_rows(family, model, shape, sample, sizes, {f"k={k}": list(range(n - k, n))}, runs)
    return {"size_rows": rows, "note": "random weights: speed only"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="the demo bundle (edge-vl build --demo)")
    parser.add_argument("--eval", type=Path, required=True, help="its eval manifest (real rows for parity)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--parts", default="demo,vilt,clip", help="comma-separated: demo, vilt, clip")
    parser.add_argument("--runs", type=int, default=30, help="interleaved rounds")
    parser.add_argument("--rows", type=int, default=200, help="eval rows for the folded parity check")
    parser.add_argument("--sizes", default="128,96,64,32", help="the demo model's image sizes (pixels)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    parts = set(args.parts.split(","))
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if "demo" in parts:
        sizes = [int(s) for s in args.sizes.split(",")]
        results["demo"] = demo_part(args.bundle, args.eval, args.runs, args.rows, sizes)
    if "vilt" in parts:
        results["vilt"] = random_part(vilt_b32, [384, 288, 224, 160], 4, args.runs)
    if "clip" in parts:
        results["clip"] = random_part(clip_b32, [224, 160, 128, 96], 4, args.runs)
    write_timed_results(args.out, results, args.runs)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
