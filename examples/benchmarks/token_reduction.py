"""Image-token reduction inside the network against a smaller input (issue #33): the CLIP ViT-B/32
image tower (random weights: speed only) at 224 px keeping, after layer L, [CLS] and the k patches
[CLS] attends to most, timed in one interleaved run with the same tower fed a smaller image that
gives it k patches from the start (160 px: 25, 128 px: 16).

The pruning is static (``TopK`` + ``Gather`` with a fixed k), so OpenVINO compiles it like any
graph. At equal kept tokens the smaller input does less work in every layer before L and in the
patch embedding; token reduction could only pay if it kept more accuracy at equal cost, which
random weights cannot show. The script reports latency and MACs of each contender and the
smaller input whose cost each pruned variant matches.

    python -m examples.benchmarks.token_reduction \\
        --out examples/benchmarks/results/token_reduction/vnni-epyc.json
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from edge_vl.converters import temporary_export
from edge_vl.converters.export import save_model
from torch import nn

from edge_vl.timing import compile_latency, interleaved_ir_latency, spread
from edge_vl.training.architectures import InputShape
from examples.benchmarks.input_cost import at_size, specs_at
from examples.benchmarks.recorded import write_timed_results
from examples.benchmarks.results import clip_b32


class KeepTopPatches(nn.Module):
    """A prompt-head CLIP image tower that keeps [CLS] and the ``keep`` patches [CLS] attends to
    most (mean over heads, as layer ``after`` would attend) after its first ``after`` layers."""

    def __init__(self, model: nn.Module, after: int, keep: int):
        super().__init__()
        self.model, self.after, self.keep = model, after, keep

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tower = self.model.vision_model
        hidden = tower.pre_layrnorm(tower.embeddings(pixel_values))
        layers = tower.encoder.layers
        for layer in layers[: self.after]:
            hidden = layer(hidden, None)
        hidden = torch.cat([hidden[:, :1], self.top_patches(layers[self.after].layer, hidden)], dim=1)
        for layer in layers[self.after :]:
            hidden = layer(hidden, None)
        pooled = tower.post_layernorm(hidden[:, 0])
        image = F.normalize(self.model.visual_projection(pooled), dim=-1)
        return self.model.logit_scale.exp() * image @ self.model.label_embeddings.T

    def top_patches(self, layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """The ``keep`` patch tokens with the highest [CLS] attention under ``layer``'s query/key."""
        attention = layer.self_attn
        normed = layer.layer_norm1(hidden)
        heads, width = attention.num_heads, attention.head_dim
        query = attention.q_proj(normed[:, :1]).view(-1, 1, heads, width).transpose(1, 2)
        keys = attention.k_proj(normed[:, 1:]).view(hidden.shape[0], -1, heads, width).transpose(1, 2)
        share = torch.softmax(query @ keys.transpose(-1, -2) * width**-0.5, dim=-1).mean(dim=1)[:, 0]
        index = share.topk(self.keep, dim=-1).indices
        return hidden[:, 1:].gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


def pruned_macs(costs: Any, smaller: Any, after: int) -> int:
    """MACs of the tower at the checkpoint size up to layer ``after`` and at ``smaller``'s token
    count from there (the [CLS] scoring, two small projections, left out)."""
    kept = range(after, costs.n_layers)
    return costs.full() - sum(costs.layer[i] for i in kept) + sum(smaller.layer[i] for i in kept)


def measure(sizes: list[int], afters: list[int], runs: int, preset: str = "b32") -> dict[str, Any]:
    """Latency and MACs of the tower at every size, and pruned after every layer in ``afters`` to
    every smaller size's patch count, in one interleaved run (``preset``: the random CLIP's size)."""
    import openvino as ov

    ov_parity = 0.0  # OpenVINO's pruned graphs against torch's, the largest |difference|
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        family, model, _, sample, shape = clip_b32(Path(tmp), preset=preset)
        patch = model.config.vision_config.patch_size
        costs = {s: family.layer_costs(model, InputShape((s, s), shape.text_length)) for s in sizes}
        xmls, feeds, macs = {}, {}, {}
        for size in sizes:
            name = f"{size} px"
            inputs, data = specs_at(family, model, shape, size), at_size(sample, size)
            xmls[name] = stack.enter_context(temporary_export(family, model, inputs, data, [], None))
            feeds[name], macs[name] = {"pixel_values": data["pixel_values"][:1].numpy()}, costs[size].full()
        big, full_pixels = sizes[0], at_size(sample, sizes[0])["pixel_values"][:1]
        with torch.no_grad():
            reference = family.forward(model, {"pixel_values": full_pixels})
            everything = KeepTopPatches(model, afters[0], (big // patch) ** 2)(full_pixels)
        parity = float((everything - reference).abs().max())
        for after in afters:
            for size in sizes[1:]:
                name = f"{big} px, {(size // patch) ** 2} patches after layer {after}"
                pruned = KeepTopPatches(model, after, (size // patch) ** 2).eval()
                xmls[name] = Path(tmp) / f"pruned-{after}-{size}.xml"
                save_model(ov.convert_model(pruned, example_input=(full_pixels,)), xmls[name])
                with torch.no_grad():
                    expected = pruned(full_pixels).numpy()
                got = compile_latency(xmls[name], threads=2)([full_pixels.numpy()])[0]  # f32, as timed
                ov_parity = max(ov_parity, float(np.abs(got - expected).max()))
                feeds[name], macs[name] = (
                    {"pixel_values": full_pixels.numpy()},
                    pruned_macs(costs[big], costs[size], after),
                )
        print(f"timing {len(xmls)} graphs, {runs} interleaved rounds", flush=True)
        times = interleaved_ir_latency(xmls, feeds, runs, threads=2)
    full = float(np.median(times[f"{big} px"]))
    rows = [
        {
            "graph": n,
            "macs": macs[n],
            **spread(times[n]),
            "speedup_vs_full": full / float(np.median(times[n])),
        }
        for n in xmls
    ]
    return {
        "rows": rows,
        "parity_keep_every_patch": parity,
        "parity_openvino_pruned": ov_parity,
        "note": "random weights: speed only",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument(
        "--sizes", default="224,160,128", help="the checkpoint size first, then smaller inputs"
    )
    parser.add_argument("--after", default="3,6", help="layers after which the patches are pruned")
    parser.add_argument("--runs", type=int, default=30, help="interleaved rounds")
    args = parser.parse_args()
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # the export traces HF's checks
    results = measure(
        [int(s) for s in args.sizes.split(",")], [int(a) for a in args.after.split(",")], args.runs
    )
    write_timed_results(args.out, results, args.runs)
    for row in results["rows"]:
        gmacs, ms, speedup = row["macs"] / 1e9, row["median"], row["speedup_vs_full"]
        print(f"{row['graph']}: {gmacs:.2f} GMACs, {ms:.2f} ms, {speedup:.2f}×")


if __name__ == "__main__":
    main()
