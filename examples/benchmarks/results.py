"""Regenerate ``examples/benchmarks/RESULTS.md``: what edge-vl saves, measured on this machine.

    edge-vl build --demo                        # the demo bundle (edge-vl-demo/bundle-full)
    python -m examples.benchmarks.results       # about 10 minutes on 2 cores

Four parts, each in one process, every ratio from one interleaved run:

a) Speed on the full-size ViLT-B/32 architecture (the config of the public dandelin/vilt-b32
   checkpoints, 384×384 pixels + 40 tokens, 3,129 answers) with RANDOM weights — weights do not
   change the amount of work, and no pretrained ViLT installs offline. Contenders at batch 1: torch
   eager (full model), OpenVINO FP32 and NNCF INT8 of the full model (what optimum-intel + NNCF
   would give a user), and edge-vl's exported retained model with k = 2, 4, 6 layers skipped
   (the last k: every ViLT layer costs the same), FP32 and INT8, and k = 4 with a 16-token text
   bucket. Latency: medians over interleaved rounds (random order each round, a pause before each
   call). Throughput: OpenVINO's THROUGHPUT hint with its optimal number of async requests, one
   contender at a time.
   All exports go through the same converter as bundles (parity-checked against torch).
b) The demo bundle (edge-vl-mini on easy-vqa): its speed-up over torch eager and over OpenVINO FP32
   of the full model (``edge-vl bench --compare torch``), next to its accuracy on the test split.
c) FLOPs: the analytic per-layer MAC counts against torch's FlopCounterMode with eager attention.
d) Speed of the CLIP ViT-B/32 image tower (random weights, prompt head: what a prompt-head bundle
   runs): torch eager, OpenVINO FP32 and INT8 with k = 0, 2, 4 image layers skipped.
k) Accuracy vs MACs vs latency on the demo task for k = 0…6 skipped arms, DAS and random sets:
   accuracy and MACs from the sweep of ``variants.py`` (``--variants``, each set fine-tuned with the
   same budget), batch-1 latency of every set timed here, interleaved (FP32 exports of the demo
   model with each skip set; adapter values do not change the work).
p) The demo build with 1 process × 2 threads against 2 processes × 1 thread (torch.distributed),
   read from ``--processes``, which ``examples/benchmarks/processes.py`` writes (the builds take an
   hour, so they are not run here).
s) The fine-tune's seed spread on the demo (one skip set, several seeds), read from
   ``--seed-spread`` (``seed_spread.py``); part k then cites it under its single-seed rows.
t) Transfer: PETL against full fine-tuning of edge-vl-mini checkpoints and PETL recipes, on
   easy-vqa and a second task, read from ``--transfer`` (``transfer.py``).
i) Cheaper inputs: latency and MACs by image size, skip set and folded question, read from
   ``--input-cost`` (``input_cost.py``, which times them).
l) The compute plan on the demo (input size and skip set under one budget), read from
   ``--compute-plan`` (``compute_plan.py``, which builds and times it), against PETL-only builds
   (``--petl-only``, ``seed_spread.py --sets none``).
r) Image tokens pruned inside the CLIP image tower against a smaller input, read from
   ``--token-reduction`` (``token_reduction.py``, which times them).

``--parts a,b,c,d,k,p,s,t`` runs a subset (the others keep their previous results from ``RESULTS.json``);
the header names the machine of the last timed run (a, b, c, d, k), not the one that re-read p, s or t.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import platform
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edge_vl.converters import export, temporary_export
from edge_vl.converters.precision import quantize_int8

from edge_vl.bundle import read_bundle
from edge_vl.config import resolve_model_dir
from edge_vl.fileio import write_text_atomic
from edge_vl.pipeline import package_versions
from edge_vl.runtime.cpu import has_int8_dot_product, machine_info
from edge_vl.runtime.predictor import Predictor
from edge_vl.runtime.tokenize import TEXT_INPUTS
from edge_vl.timing import compile_latency, interleaved, spread, throughput
from edge_vl.training.architectures import InputShape, family_for
from edge_vl.training.architectures.quiet import quiet_transformers
from edge_vl.training.compare import compare_with_torch, rebuild_torch_model
from edge_vl.training.flops import counted_macs, with_eager_attention
from examples.benchmarks.recorded import portable
from examples.benchmarks.seed_spread import MIN_PICKS, run_key  # examples/benchmarks/seed_spread.py
from examples.benchmarks.transfer import recipe_label  # examples/benchmarks/transfer.py
from examples.benchmarks.variants import sweep_table  # examples/benchmarks/variants.py

HERE = Path(__file__).parent
VILT_ANSWERS = 3129  # the VQAv2 answer set of the public checkpoint
VILT_VOCAB = 30522  # bert-base-uncased
#: the parts of RESULTS.md this script writes, by letter (the module docstring says what each holds)
PARTS = tuple("abcdfikloprst")


def vilt_b32(work: Path, seed: int = 0):
    """A random-weight ViLT-B/32 checkpoint with edge-vl adapters inserted, its input specs and a
    random 2-row sample."""
    family = family_for("vilt")
    words = [f"w{i}" for i in range(VILT_VOCAB - 5)]  # + 5 special tokens
    labels = [f"answer{i}" for i in range(VILT_ANSWERS)]
    with quiet_transformers():
        family.random_checkpoint(work / "vilt-b32", vocab=words, labels=labels, preset="b32", seed=seed)
        model = family.load(work / "vilt-b32", labels)
    family.insert_adapters(model)
    family.freeze(model)
    model.eval()
    shape = family.input_shape(work / "vilt-b32", model)
    inputs = family.input_specs(model, shape)
    generator = torch.Generator().manual_seed(seed)
    length = shape.text_length
    h, w = shape.image
    sample = {
        "input_ids": torch.randint(5, VILT_VOCAB, (2, length), generator=generator),
        "attention_mask": torch.ones(2, length, dtype=torch.long),
        "pixel_values": torch.randn(2, 3, h, w, generator=generator),
    }
    return family, model, inputs, sample, shape


def random_feeds(inputs, n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``n`` random batch-1 feeds of the input specs (INT8 calibration for random weights)."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(n):
        feed = {}
        for spec in inputs:
            shape = (1, *spec.shape[1:])
            if spec.name == "input_ids":
                feed[spec.name] = rng.integers(5, VILT_VOCAB, shape).astype(np.int64)
            elif spec.name in TEXT_INPUTS:
                feed[spec.name] = np.ones(shape, np.int64)
            else:
                feed[spec.name] = rng.standard_normal(shape).astype(np.float32)
        feeds.append(feed)
    return feeds


def export_variants(family, model, inputs, sample, work: Path, ks, layers: list[int], shape, name):
    """FP32 and NNCF INT8 exports of ``model`` with the last ``k`` of ``layers`` skipped, for each k;
    returns ``(xmls, rows)`` keyed by contender name."""
    costs = family.layer_costs(model, shape)
    calibration = random_feeds(inputs, 32)
    xmls: dict[str, Path] = {}
    rows: dict[str, dict[str, Any]] = {}
    for k in ks:
        skipped = layers[len(layers) - k :] if k else []
        family.set_skipped(model, skipped)
        out = work / f"{name}-k{k}"
        out.mkdir()
        print(f"{name}: exporting k={k} FP32 and quantizing INT8", flush=True)
        fp32 = export(family, model, inputs, sample, out).xml
        int8 = quantize_int8(fp32, calibration, out, vnni=has_int8_dot_product(), size=len(calibration))
        label = "OpenVINO full model" if k == 0 else f"edge-vl k={k}"
        for precision, xml in (("FP32", fp32), ("INT8", int8)):
            xmls[f"{label} {precision}"] = xml
            macs = costs.full() if k == 0 else costs.retained(skipped)
            rows[f"{label} {precision}"] = {"k": k, "precision": precision, "macs": macs}
    family.set_skipped(model, [])
    return xmls, rows


def time_contenders(
    family, model, sample, xmls, feeds, rows, runs: int, throughput_seconds: float, full_macs: float
) -> dict[str, dict[str, Any]]:
    """Interleaved batch-1 latency of torch eager (full model) and every IR, then each IR's
    throughput; speed-ups against OpenVINO FP32 and torch eager of the full model."""
    compiled = {key: compile_latency(xml) for key, xml in xmls.items()}  # outlive the requests
    requests = {key: c.create_infer_request() for key, c in compiled.items()}
    family.set_skipped(model, [])
    torch_feed = {n: v[:1] for n, v in sample.items()}

    def torch_full() -> None:
        with torch.inference_mode():
            family.forward(model, torch_feed)

    contenders = {"torch eager full model FP32": torch_full}
    contenders.update({key: (lambda r=requests[key], f=feeds[key]: r.infer(f)) for key in xmls})
    rows = {"torch eager full model FP32": {"k": 0, "precision": "FP32", "macs": full_macs}, **rows}
    print(f"timing {len(contenders)} contenders, {runs} interleaved rounds", flush=True)
    times = interleaved(contenders, runs)
    contenders.clear()
    requests.clear()  # before ``compiled`` (see edge_vl.timing.compile_latency)
    for key in xmls:
        print(f"throughput of {key}", flush=True)
        rows[key]["throughput_per_s"] = throughput(xmls[key], feeds[key], duration=throughput_seconds)[
            "inferences_per_s"
        ]
    base = float(np.median(times["OpenVINO full model FP32"]))
    eager = float(np.median(times["torch eager full model FP32"]))
    for key, row in rows.items():
        row.update(spread(times[key]))
        row["speedup_vs_openvino_fp32_full"] = base / row["median"]
        row["speedup_vs_torch_eager_full"] = eager / row["median"]
    return rows


def speed_vilt_b32(runs: int, throughput_seconds: float) -> dict[str, Any]:
    """Part a."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        family, model, inputs, sample, shape = vilt_b32(work)
        arms = list(range(len(family.layers(model))))
        xmls, rows = export_variants(family, model, inputs, sample, work, (0, 2, 4, 6), arms, shape, "a")
        for row in rows.values():
            row["text_tokens"] = 40
        family.set_skipped(model, arms[-4:])
        out = work / "k4-t16"
        out.mkdir()
        specs = [
            type(s)(s.name, (s.shape[0], 16), s.dtype) if s.name in TEXT_INPUTS else s for s in inputs
        ]  # fmt: skip
        cut = {k: (v[:, :16] if k in TEXT_INPUTS else v) for k, v in sample.items()}
        key = "edge-vl k=4 FP32, 16-token bucket"
        xmls[key] = export(family, model, specs, cut, out).xml
        rows[key] = {"k": 4, "precision": "FP32", "text_tokens": 16, "macs": None}
        feeds = {
            key: {n: v[:1].numpy() for n, v in (cut if "bucket" in key else sample).items()} for key in xmls
        }
        full = family.layer_costs(model, shape).full()
        rows = time_contenders(family, model, sample, xmls, feeds, rows, runs, throughput_seconds, full)
        rows["torch eager full model FP32"]["text_tokens"] = 40
    return {"runs": runs, "int8_overflow_fix": not has_int8_dot_product(), "rows": rows}


def clip_b32(work: Path, seed: int = 0, n_labels: int = 10, preset: str = "b32"):
    """A random-weight CLIP ViT-B/32 checkpoint (or another ``preset``) with a prompt head over
    ``n_labels`` prompts (adapters inserted): the image tower alone, as a prompt-head bundle runs it."""
    family = family_for("clip")
    labels = [f"label{i}" for i in range(n_labels)]
    with quiet_transformers():
        family.random_checkpoint(work / "clip-b32", vocab=["a", "photo", "of", *labels], labels=labels,
                                 preset=preset, seed=seed)  # fmt: skip
        model = family.load(work / "clip-b32", labels, prompts={x: f"a photo of a {x}" for x in labels})
    family.insert_adapters(model)
    family.freeze(model)
    model.eval()
    shape = family.input_shape(work / "clip-b32", model)
    inputs = family.input_specs(model, shape)
    h, w = shape.image
    sample = {"pixel_values": torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(seed))}
    return family, model, inputs, sample, shape


def speed_clip_b32(runs: int, throughput_seconds: float) -> dict[str, Any]:
    """Part d: the CLIP ViT-B/32 image tower (prompt head), k = 0, 2, 4 image layers skipped."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        family, model, inputs, sample, shape = clip_b32(work)
        arms = list(range(len(family.layers(model))))
        xmls, rows = export_variants(family, model, inputs, sample, work, (0, 2, 4), arms, shape, "d")
        feeds = {key: {n: v[:1].numpy() for n, v in sample.items()} for key in xmls}
        full = family.layer_costs(model, shape).full()
        rows = time_contenders(family, model, sample, xmls, feeds, rows, runs, throughput_seconds, full)
    return {"runs": runs, "int8_overflow_fix": not has_int8_dot_product(), "rows": rows}


def demo_bundle(bundle: Path, runs: int, model: str | None) -> dict[str, Any]:
    """Part b."""
    manifest = read_bundle(bundle).manifest
    where = portable(str(Path(bundle).resolve()))
    compare = {**compare_with_torch(bundle, runs=runs, source=model), "bundle": where}  # no machine's folders
    return {
        "bundle": where,
        "eval_accuracy": manifest.metrics.eval_accuracy,
        "eval_examples": manifest.metrics.eval_examples,
        "skipped": list(manifest.architecture.skipped),
        "arms": len(manifest.architecture.layers),
        "retained_macs_fraction": manifest.cost.retained_fraction,
        "compare": compare,
    }


SWEEP_VARIANTS = ("petl-only", "das", "das-k", "random")  # name prefixes of the sweep's rows


def sweep_by_k(variants: Path, bundle: Path, runs: int, model: str | None) -> dict[str, Any]:
    """Part k: the sweep of ``variants.json`` (accuracy, MACs) with the batch-1 latency of every
    skip set in it, timed interleaved on FP32 exports of the demo bundle's model."""
    report = json.loads(variants.read_text(encoding="utf-8"))
    if not report.get("sweep"):
        raise SystemExit(f"{variants} has no sweep: run variants.py with --sweep 1-6 first")
    rows = [dict(r) for r in report["rows"] if r["variant"].startswith(SWEEP_VARIANTS)]
    sets = sorted({tuple(r["skipped"]) for r in rows}, key=lambda s: (len(s), s))
    with Predictor(bundle, warmup=False) as predictor, contextlib.ExitStack() as exports:
        family, torch_model = rebuild_torch_model(predictor.bundle, model)
        inputs = family.input_specs(torch_model, InputShape.of(predictor.bundle.manifest.preprocessing))
        sample = {n: torch.from_numpy(a) for n, a in predictor.dummy_inputs(2).items()}
        feed = predictor.dummy_inputs(1)
        compiled = {}
        for skipped in sets:
            print(f"k: exporting skip set {list(skipped)}", flush=True)
            xml = exports.enter_context(temporary_export(family, torch_model, inputs, sample, skipped))
            compiled[skipped] = compile_latency(xml)  # outlives its request
        requests = {skipped: c.create_infer_request() for skipped, c in compiled.items()}
        contenders = {skipped: (lambda r=r: r.infer(feed)) for skipped, r in requests.items()}
        print(f"timing {len(contenders)} skip sets, {runs} interleaved rounds", flush=True)
        times = interleaved(contenders, runs)
        contenders.clear()
        requests.clear()  # before ``compiled`` (see edge_vl.timing.compile_latency)
    for row in rows:
        row["latency"] = spread(times[tuple(row["skipped"])])
        row["latency_ms"] = row["latency"]["median"]  # this run's, not the build's
    others = {
        r["variant"]: r["eval_accuracy"]
        for r in report["rows"]
        if not r["variant"].startswith(SWEEP_VARIANTS)
    }
    return {
        "variants": str(variants), "variants_date": report["date"], "variants_command": report["command"],
        "variants_runs": report.get("runs") or {report["date"]: report["command"]},
        "arms": report["arms"], "eval_examples": report["eval_examples"], "runs": runs,
        "text_tokens": next((int(a.shape[1]) for n, a in feed.items() if n in TEXT_INPUTS), None),
        "rows": rows, "table": sweep_table(rows), "references": others,
    }  # fmt: skip


def flops_check() -> dict[str, Any]:
    """Part c: analytic MACs against the counter (eager attention), full and with arms skipped."""
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        vilt_b32(work)  # writes work/vilt-b32
        for name, source in (
            ("ViLT-B/32", work / "vilt-b32"),
            ("edge-vl-mini", resolve_model_dir("edge-vl-mini")),
        ):
            checks += flops_of(name, source, work / f"eager-{len(checks)}")
    return {"checks": checks}


def flops_of(name: str, checkpoint: Path, work: Path) -> list[dict[str, Any]]:
    """Analytic against counted MACs of one checkpoint: no arm, the last four, every other one skipped."""
    eager = with_eager_attention(checkpoint, work)
    family = family_for(json.loads((eager / "config.json").read_text())["model_type"])
    with quiet_transformers():
        model = family.load(eager, ["a", "b"]).eval()
    family.insert_adapters(model)
    shape = family.input_shape(eager, model)
    length = shape.text_length
    h, w = shape.image
    feed = {
        "input_ids": torch.full((1, length), 7, dtype=torch.long),
        "attention_mask": torch.ones(1, length, dtype=torch.long),
        "pixel_values": torch.zeros(1, 3, h, w),
    }
    costs = family.layer_costs(model, shape)
    n, checks = costs.n_layers, []
    for skipped in ([], list(range(n - 4, n)), list(range(0, n, 2))):
        family.set_skipped(model, skipped)
        counted = counted_macs(lambda: family.forward(model, feed))
        analytic = costs.retained(skipped)
        checks.append({"model": name, "skipped": skipped, "analytic_macs": analytic, "counted_macs": counted,
                       "relative_error": analytic / counted - 1})  # fmt: skip
    return checks


def speed_table(rows: dict[str, dict[str, Any]], *, text_tokens: bool) -> list[str]:
    """The Markdown table of a speed part (a, d): one row per contender."""
    tokens = " text tokens |" if text_tokens else ""
    lines = [
        f"| model | precision |{tokens} GMACs | latency ms (p10–p90) | vs OpenVINO FP32 full "
        "| vs torch eager full | throughput /s |",
        "|---|---|" + "---|" * (6 if text_tokens else 5),
    ]
    for name, r in rows.items():
        macs = f"{r['macs'] / 1e9:.2f}" if r["macs"] else "—"
        thr = f"{r['throughput_per_s']:.1f}" if "throughput_per_s" in r else "—"
        cells = [
            name,
            r["precision"],
            *([str(r["text_tokens"])] if text_tokens else []),
            macs,
            f"{r['median']:.1f} ({r['p10']:.1f}–{r['p90']:.1f})",
            f"{r['speedup_vs_openvino_fp32_full']:.2f}×",
            f"{r['speedup_vs_torch_eager_full']:.2f}×",
            thr,
        ]
        lines.append(_table_row(cells))
    return lines


#: the demo's current fine-tune setting (lr and epochs, as seed_spread.py keys runs)
CURRENT_DEMO_SETTING = "lr 0.0001, 2.5 epochs"


def current_defaults_section(results: dict[str, Any]) -> list[str]:
    """What the current defaults give (the default search, the demo's fine-tune length), before the
    parts that also keep former settings."""
    spread = results.get("seed_spread") or {}
    rows = [
        c for c in spread.get("search_against_chance", [])
        if c["search"] == "prior" and (c["task"] != "easy-vqa" or c["setting"] == CURRENT_DEMO_SETTING)
    ]  # fmt: skip
    if not rows:
        return []
    lines = [
        "## At the current defaults",
        "",
        "The default search (the single-layer prior after a warm-up epoch) against random skip sets of the "
        "same size, each fine-tuned at the build's defaults (easy-vqa: the demo's 2.5 epochs; other tasks: "
        "3 epochs, raised by the small-data schedule where the data are small). Picks: one per search "
        "seed; random sets: six, each averaged over its seeds. A margin smaller than the fine-tune spread is "
        "not a finding. Part s below has every run.",
        "",
        "| task | k | setting | picks | picks' mean | random mean | percentile rank | fine-tune spread "
        "| margin |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in sorted(rows, key=lambda c: (c["task"], c["k"])):
        picks = ", ".join(f"{v:.4f}" for v in c["picks"])
        lines.append(
            f"| {c['task']} | {c['k']} | {c['setting']} | {picks} | {c['picks_mean']:.4f} | "
            f"{c['random_mean']:.4f} | {c['percentile_rank']:.0f} | {c['finetune_spread']:.4f} | "
            f"{c['margin']:+.4f} |"
        )
    return [*lines, ""]


def render(results: dict[str, Any]) -> str:
    """RESULTS.md from the results (plots are SVG files next to it)."""
    m = results["machine"]
    flags = " ".join(k for k, v in m["flags"].items() if v) or "none"
    lines = [
        "# edge-vl benchmark results",
        "",
        f"Generated {results['date']} by `examples/benchmarks/results.py`; the timed parts (a, b, c, "
        f"d, k) ran on **{m['cpu']}** ({m['cores']} cores; ISA: {flags}); Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items())
        + ". Latencies are batch-1 medians (ms) with the 10th–90th percentile range; every ratio "
        "comes from one interleaved run (contenders timed in a fresh random order each round, with a "
        "20 ms pause before each call so that no one inherits another's busy threads).",
        "",
        *current_defaults_section(results),
        "# Every part, former settings included",
        "",
    ]
    a = results.get("vilt_b32")
    if a:
        lines += [
            "## a) ViLT-B/32 architecture, random weights: speed",
            "",
            "The config of the public dandelin/vilt-b32 checkpoints (12 layers, 768 wide, 384×384 "
            "pixels, 40 text tokens, 3,129 answers) with **random weights**: speed does not depend on "
            "weight values; accuracy is not measured here. edge-vl rows are the exported retained "
            "model (kept layers with adapters, skip adapters in place of the k skipped layers). "
            f"INT8: NNCF post-training quantization, transformer model type, overflow fix "
            f"{'on' if a['int8_overflow_fix'] else 'off (CPU has VNNI)'}, calibrated on 32 random inputs. "
            f"{a['runs']} interleaved rounds. {_measured(a)}",
            "",
        ]
        lines += speed_table(a["rows"], text_tokens=True)
        lines += ["", "![ViLT-B/32 batch-1 latency](vilt_b32_latency.svg)", ""]
    b = results.get("demo")
    if b:
        c = b["compare"]
        lat, up = c["latency_ms"], c["speedup_of_bundle"]
        lines += [
            "## b) The demo bundle: edge-vl-mini on easy-vqa",
            "",
            f"`{b['bundle']}`: accuracy **{b['eval_accuracy']:.2%}** on {b['eval_examples']:,} easy-vqa "
            f"test questions, {len(b['skipped'])} of {b['arms']} arms skipped ({b['skipped']}), "
            f"{b['retained_macs_fraction']:.1%} of the full model's MACs. Same inputs, batch 1, "
            f"{c['runs']} interleaved rounds (`edge-vl bench BUNDLE --compare torch`); {c['note']}. "
            f"{_measured(b)}",
            "",
            "| contender | latency ms (p10–p90) | bundle speed-up |",
            "|---|---|---|",
        ]
        for name, r in lat.items():
            ratio = f"{up[name]:.2f}×" if name in up else "—"
            lines.append(
                f"| {name.replace('_', ' ')} | {r['median']:.2f} ({r['p10']:.2f}–{r['p90']:.2f}) | {ratio} |"
            )
        lines += ["", "![demo bundle batch-1 latency](demo_latency.svg)", ""]
    if results.get("sweep"):
        lines += sweep_section(results["sweep"], results.get("seed_spread"))
    if results.get("seed_spread"):
        lines += seed_spread_section(results["seed_spread"])
    if results.get("transfer"):
        lines += transfer_section(results["transfer"])
    d = results.get("clip_b32")
    if d:
        lines += [
            "## d) CLIP ViT-B/32 image tower, random weights: speed",
            "",
            "The CLIP ViT-B/32 architecture (image tower: 12 layers, 768 wide, 224×224 pixels, 50 "
            "tokens) with **random weights** and a prompt head over 10 label prompts: what a "
            "prompt-head bundle runs on the device (the text tower ran once, at build time). edge-vl "
            "rows skip the last k image layers. INT8 as in part a "
            f"(overflow fix {'on' if d['int8_overflow_fix'] else 'off'}). {d['runs']} interleaved rounds. "
            f"{_measured(d)}",
            "",
        ]
        lines += speed_table(d["rows"], text_tokens=False)
        lines += ["", "![CLIP ViT-B/32 image tower batch-1 latency](clip_b32_latency.svg)", ""]
    if results.get("input_cost"):
        lines += input_cost_section(results["input_cost"])
    if results.get("compute_plan"):
        lines += compute_plan_section(results["compute_plan"])
    if results.get("fixed_question"):
        lines += fixed_question_section(results["fixed_question"])
    if results.get("token_reduction"):
        lines += token_reduction_section(results["token_reduction"])
    if results.get("operations"):
        lines += operations_section(results["operations"])
    if results.get("processes"):
        lines += processes_section(results["processes"])
    c = results.get("flops")
    if c:
        lines += [
            "## c) FLOPs: analytic count against torch's counter",
            "",
            "MACs at batch 1 from each family's per-arm formula, against `torch.utils.flop_counter` "
            "(half its FLOPs) on the same model loaded with eager attention (the counter misses SDPA). "
            + _measured(c),
            "",
            "| model | skipped arms | analytic GMACs | counted GMACs | difference |",
            "|---|---|---|---|---|",
        ]
        for r in c["checks"]:
            lines.append(
                f"| {r['model']} | {r['skipped'] or 'none (adapters in every layer)'} | "
                f"{r['analytic_macs'] / 1e9:.3f} | "
                f"{r['counted_macs'] / 1e9:.3f} | {r['relative_error']:+.2%} |"
            )
        lines.append("")
    return "\n".join(lines)


def compute_plan_section(stored: dict[str, Any]) -> list[str]:
    """Part l of RESULTS.md: builds whose input size and skip set the compute plan chose, one table
    per results file, against PETL-only builds of the same task where there are some."""
    plans = stored.get("plans", [stored])  # RESULTS.json of before several files: one plan
    lines = ["## l) The compute plan: input size and skipped layers under one budget", ""]
    for plan in plans:
        lines += one_plan(plan, stored.get("petl_only") or [])
    return lines


def one_plan(plan: dict[str, Any], petl_only: list[dict[str, Any]]) -> list[str]:
    """Part l's table of one ``compute_plan.py`` results file, each build against OpenVINO FP32 of
    the full model at the checkpoint's size."""
    task = plan.get("task", "easy-vqa")
    first = plan["runs"][0]["plan"]
    budget = f"`{'--flops-budget' if first['kind'] == 'flops' else '--latency-budget-ms'} {first['limit']:g}`"
    rule = which_rule(plan["runs"])
    lines = [
        f"### {'The demo' if task == 'easy-vqa' else task}, {budget}"
        + ("" if rule.startswith("Each") else ", the plan's earlier rule"),
        "",
        f"`{plan['command']}` ({plan['measured']}); each build's command is in the results file. Latency: "
        "batch 1, 2 threads, the bundle and the full model (no layer skipped, 128 px) in one interleaved "
        "run (`bench --compare torch`). " + rule,
        "",
        "| seed | chosen | skipped | eval accuracy | bundle ms | full model ms | × full |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in plan["runs"]:
        lat, speedup = r["compare"]["latency_ms"], r["compare"]["speedup_of_bundle"]["openvino_full"]
        lines.append(_table_row([
            str(r["seed"]), f"{r['plan']['chosen']} px", str(r["skipped"]),
            f"{r['eval_accuracy']:.4f} ({r['eval_examples']} rows)",
            f"{lat['openvino_retained']['median']:.2f}", f"{lat['openvino_full']['median']:.2f}",
            f"{speedup:.2f}×",
        ]))  # fmt: skip
    lines += plan_against_petl(plan, petl_only)
    first = plan["runs"][0]
    budget = first["plan"]["limit"] * first["plan"]["full_model_macs"] / 1e9
    lines += ["", f"What the plan saw (seed {first['seed']}; budget {budget:.3f} GMACs):", "",
              "| size | skipped | GMACs | held-out loss, nothing skipped | estimated loss |",
              "|---|---|---|---|---|"]  # fmt: skip
    for c in first["plan"]["candidates"]:
        if c["feasible"]:
            lines.append(_table_row([
                f"{c['size']} px", str(c["skipped"]), f"{c['cost'] / 1e9:.3f}",
                f"{c['base_loss']:.4f} ± {c['loss_se']:.4f}", f"{c['estimated_loss']:.4f}",
            ]))  # fmt: skip
    return [*lines, ""]


def which_rule(runs: list[dict[str, Any]]) -> str:
    """Which of the plan's two rules each run's choice fits, read from its recorded candidates."""
    from edge_vl.build_records import SizeCandidate
    from edge_vl.pipeline.compute_plan import choose_size
    from edge_vl.schema import parse

    lowest = 0
    for r in runs:
        candidates = [parse(SizeCandidate, c) for c in r["plan"]["candidates"]]
        lowest += choose_size(candidates).size == r["plan"]["chosen"]
    if lowest == len(runs):
        return "Each choice is the size with the lowest estimated loss, the plan's rule since e20b75e."
    return (
        f"{len(runs) - lowest} of {len(runs)} choices are a cheaper size within two standard errors of the "
        "lowest estimated loss: the plan's rule before e20b75e."
    )


def plan_against_petl(plan: dict[str, Any], petl_only: list[dict[str, Any]]) -> list[str]:
    """Issue #33's acceptance 1 (or 2 on another task): the plan's builds against PETL-only builds
    (adapters, nothing skipped, the checkpoint's size), means over seeds, with the bars it sets."""
    task = plan.get("task", "easy-vqa")
    full_size = [
        (f["command"], r)
        for f in petl_only
        for r in f["runs"]
        if not r["skipped"] and not r.get("image_size")
    ]
    petl = [r for _, r in full_size if r.get("task", "easy-vqa") == task]
    commands = sorted({command for command, r in full_size if r in petl})
    if not petl:
        return []
    ours = [r["eval_accuracy"] for r in plan["runs"]]
    theirs = [r["eval_accuracy"] for r in petl]
    speedups = [r["compare"]["speedup_of_bundle"]["openvino_full"] for r in plan["runs"]]
    gap = 100 * (statistics.fmean(ours) - statistics.fmean(theirs))

    few = min(len(ours), len(theirs)) < 3
    speedup = statistics.fmean(speedups)
    return [
        "",
        "Against PETL-only (adapters, no layer skipped, the checkpoint's size; "
        f"{', '.join(f'`{c}`' for c in commands)}): PETL-only {mean_std(theirs)}, the plan {mean_std(ours)}: "
        f"**{gap:+.2f} points** (bar: no more than 1 point below); the plan's bundles run "
        f"**{speedup:.2f}×** the full model on average (bar: 1.5×)."
        + (" Fewer than 3 seeds a side: not yet the issue's comparison." if few else ""),
        *against_fixed(plan, [r for f in petl_only for r in f["runs"] if r.get("task", "easy-vqa") == task]),
    ]  # fmt: skip


def mean_std(values: list[float]) -> str:
    """``mean ± std (n seeds)`` of accuracies over seeds (no std for one)."""
    std = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.4f}{std} ({len(values)} seed{'s' * (len(values) > 1)})"


def against_fixed(plan: dict[str, Any], fixed: list[dict[str, Any]]) -> list[str]:
    """The plan's picks next to the fixed configurations measured on its task (adapters, nothing
    skipped, by image size), each at its MACs under the plan's own cost model (the first point of
    that size's frontier, seed 0's plan)."""
    first = plan["runs"][0]["plan"]
    cost = {
        c["size"]: c["frontier"][0][0] for c in first["candidates"] if c["feasible"] and c.get("frontier")
    }
    full = max(cost, default=None)
    by_size: dict[int, list[float]] = {}
    for r in fixed:
        if not r["skipped"] and full is not None:
            by_size.setdefault(r.get("image_size") or full, []).append(r["eval_accuracy"])
    if len(by_size) < 2:
        return []
    lines = ["", "| configuration | eval accuracy | GMACs |", "|---|---|---|"]
    for size, accuracies in sorted(by_size.items()):
        if size in cost:
            lines.append(
                _table_row([f"{size} px, nothing skipped", mean_std(accuracies), f"{cost[size] / 1e9:.3f}"])
            )
    picks: dict[tuple[int, int], list[dict[str, Any]]] = {}  # (size, MMACs): seeds whose picks cost the same
    for r in plan["runs"]:
        chosen = next(c for c in r["plan"]["candidates"] if c["size"] == r["plan"]["chosen"])
        picks.setdefault((chosen["size"], round(chosen["cost"] / 1e6)), []).append(r)
    for (size, mmacs), runs in sorted(picks.items()):
        sets = " / ".join(dict.fromkeys(str(r["skipped"]) for r in runs))
        row = [f"the plan: {size} px, skip {sets}", mean_std([r["eval_accuracy"] for r in runs])]
        lines.append(_table_row([*row, f"{mmacs / 1e3:.3f}"]))
    return lines


def input_cost_section(i: dict[str, Any]) -> list[str]:
    """Part i of RESULTS.md: latency and MACs by image size, skip set and folded text
    (``input_cost.py``), with the errors of the cost models a plan would use."""
    lines = [
        "## i) Cheaper inputs: image size, skip set, a folded question",
        "",
        f"On {i['machine']['cpu']}, FP32, batch 1, each model's contenders in one interleaved run of "
        f"{i['runs']} rounds (`{i['command']}`, {i['measured']}). Speed-ups are against the same model "
        "at its checkpoint's input size with no layer skipped. *per size*: latency interpolated by MACs "
        "between the two endpoints measured at that size (every layer kept / skipped); *one line*: one "
        "straight line through MACs fitted on the checkpoint size's endpoints only.",
        "",
    ]
    names = {"demo": "The demo model (edge-vl-mini)", "vilt": "ViLT-B/32", "clip": "CLIP ViT-B/32 image"}
    for key, title in names.items():
        part = i.get(key)
        if not part:
            continue
        lines += [f"**{title}** ({part['note']}).", "",
                  "| size | skipped | GMACs | ms (p10–p90) | × full | error per size | error one line |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in part["size_rows"]:
            lines.append(_table_row([
                f"{r['image_size']} px", r["set"], f"{r['macs'] / 1e9:.3f}",
                f"{r['median']:.2f} ({r['p10']:.2f}–{r['p90']:.2f})", f"{r['speedup_vs_full']:.2f}×",
                f"{r['error_per_size']:+.1%}", f"{r['error_one_line']:+.1%}",
            ]))  # fmt: skip
        interior = [abs(r["error_per_size"]) for r in part["size_rows"] if r["set"] not in ("none", "all")]
        lines += ["", f"Largest error of the per-size model on skip sets between the endpoints: "
                  f"{max(interior):.1%}.", ""]  # fmt: skip
    demo = i.get("demo")
    if demo:
        p = demo["fold_parity"]
        lines += [
            f"**A folded question** on the demo model, skip set {demo['skipped']}: the question "
            f'"{demo["question"]}" ({demo["question_tokens"]} tokens of the {demo["text_length"]}-token '
            f"text input) folded into the graph. On {p['rows']} eval rows asking it, folded against "
            f"unfolded (OpenVINO FP32): max |logit difference| {p['max_abs']:.2e} (logits up to "
            f"{p['logit_scale']:.1f}), {p['same_answers']} of {p['rows']} answers the same.",
            "",
            "| variant | GMACs | ms (p10–p90) | × full |",
            "|---|---|---|---|",
        ]
        for r in demo["fold_rows"]:
            lines.append(_table_row([r["variant"], f"{r['macs'] / 1e9:.3f}",
                                     f"{r['median']:.2f} ({r['p10']:.2f}–{r['p90']:.2f})",
                                     f"{r['speedup_vs_full']:.2f}×"]))  # fmt: skip
        lines.append("")
    return lines


def token_reduction_section(r: dict[str, Any]) -> list[str]:
    """Part r of RESULTS.md: the CLIP tower keeping the patches [CLS] attends to most after a layer,
    against the same tower fed a smaller image (``token_reduction.py``)."""
    lines = [
        "## r) Image tokens pruned inside the network, against a smaller input",
        "",
        f"The CLIP ViT-B/32 image tower ({r['note']}) on {r['machine']['cpu']}, FP32, batch 1, every graph "
        f"in one interleaved run of {r['runs']} rounds (`{r['command']}`, {r['measured']}). *after layer L*: "
        "the tower at 224 px keeps [CLS] and the patches [CLS] attends to most from layer L on (static "
        "`TopK` + `Gather`); keeping every patch reproduces the tower to "
        f"{r['parity_keep_every_patch']:.1e}"
        + (
            f", and OpenVINO's pruned graphs (f32, as timed) compute what torch's do to {ov:.1e}."
            if (ov := r.get("parity_openvino_pruned")) is not None
            else "."
        ),
        "",
        "| graph | GMACs | ms (p10–p90) | × full |",
        "|---|---|---|---|",
    ]
    for row in r["rows"]:
        ms = f"{row['median']:.2f} ({row['p10']:.2f}–{row['p90']:.2f})"
        lines.append(
            _table_row([row["graph"], f"{row['macs'] / 1e9:.2f}", ms, f"{row['speedup_vs_full']:.2f}×"])
        )
    return [*lines, ""]


def fixed_question_section(f: dict[str, Any]) -> list[str]:
    """Part f of RESULTS.md: a fixed-question task built with and without its text tower
    (``fixed_question.py``)."""
    skipped = next(iter(f["precisions"].values()))["builds"]["folded"]["skipped"]
    lines = [
        "## f) A fixed question, built end to end: the text tower folded away",
        "",
        f'`{f["command"]}` ({f["measured"]}): {f["task"]} (every row asks "what digit is this?"), '
        "the demo model (edge-vl-mini) fine-tuned with the same seed and skip set "
        f"{skipped}, as the build does by default (the question folded into the graph) and with "
        "`--no-fold-text`, each pair with FP16 weights (the default) and FP32. Answers and logits "
        "through the Predictor on every eval row; latency at batch 1, each pair's graphs in one "
        "interleaved run.",
        "",
        "| weights | bundle | inputs | eval accuracy | GMACs | ms (p10–p90) | × | MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for precision, p in f["precisions"].items():
        tower_ms = p["variants"]["text tower"]["latency_ms"]["median"]
        for name, v in p["variants"].items():
            lat = v["latency_ms"]
            lines.append(_table_row([
                precision, name, ", ".join(v["inputs"]), f"{v['accuracy']:.4f}", f"{v['macs'] / 1e9:.3f}",
                f"{lat['median']:.2f} ({lat['p10']:.2f}–{lat['p90']:.2f})",
                f"{tower_ms / lat['median']:.2f}×", f"{v['bytes'] / 1e6:.1f}",
            ]))  # fmt: skip
        notes.append(
            f"{precision}: {p['same_answers']} of {p['rows']} answers the same, max |logit difference| "
            f"{p['max_abs_logit_difference']:.2e} (logits up to {p['max_abs_logit']:.1f})"
        )
    return [*lines, "", "Folded against the text tower, " + "; ".join(notes) + ".", ""]


def operations_section(o: dict[str, Any]) -> list[str]:
    """Part o of RESULTS.md: the demo bundle after deployment — batch throughput, memory,
    calibration and abstention, drift triggers."""
    t, c = o["throughput"], o["calibration"]
    fit, abstain = c["calibration"], c["abstention"]
    memory = "; ".join(
        f"{m['rows']:,} rows: {m['rss_loaded_mb']:.0f} MB loaded, {m['rss_after_mb']:.0f} MB after, "
        f"peak {m['peak_rss_mb']:.0f} MB"
        for m in o["memory"]
    )
    lines = [
        "## o) After deployment: batch prediction, calibration, drift",
        "",
        f"`{o['bundle']}` on {o['machine']['cpu']}. {_measured(o)}",
        "",
        f"- **Batch prediction**: {t['rows']:,} eval rows one by one (`Predictor.predict`) at "
        f"{t['one_by_one_rows_per_s']:.0f} rows/s, streamed (`predict_stream`, async infer requests) at "
        f"{t['streamed_rows_per_s']:.0f} rows/s: **{t['speedup']:.2f}×**, answers "
        f"{'identical' if t['identical_answers'] else 'NOT identical'}. Resident memory of a "
        f"fresh process streaming ({memory}).",
    ]
    if fit:
        lines.append(
            f"- **Calibration** (temperature {fit['temperature']:.3f}, fitted on {fit['rows']:,} eval rows): "
            f"expected calibration error {fit['ece_before']:.4f} before, {fit['ece_after']:.4f} after "
            "(cross-fitted: fitted on one half, measured on the other, both ways)."
        )
    if abstain:
        lines.append(
            f"- **Abstention** for precision {abstain['target_precision']:g}: threshold "
            f"{abstain['threshold']:.4f}; cross-fitted, the bundle answers {abstain['coverage']:.1%} of the "
            f"rows, {abstain['precision']:.4f} of them right. On the device, all eval rows at that "
            f"threshold: {c['answered']:.1%} answered, {c['precision_of_answered']:.4f} right (in-sample: "
            f"the threshold was chosen on these rows); accuracy without abstaining {c['accuracy']:.4f}."
        )
    d = o["drift"]
    clean = sum(1 for fired in d["clean_triggers"] if fired)
    lines += [
        f"- **Drift** (windows of {d['window']} predictions against the bundle's reference profile): "
        f"{clean} of {d['clean_windows']} bootstrap windows of clean eval rows fired a trigger.",
        "",
        "| shifted inputs | triggers that fired |",
        "|---|---|",
    ]
    for kind, shift in d["shifts"].items():
        lines.append(_table_row([kind, ", ".join(shift["triggers"]) or "none"]))
    return [*lines, ""]


def processes_section(p: dict[str, Any]) -> list[str]:
    """Part p of RESULTS.md: the demo build's time with one and with several processes."""
    lines = [
        "## p) The demo build: one process or several (torch.distributed)",
        "",
        "`edge-vl build --demo` run to the end, one build after the other on this machine: one process "
        "with 2 threads, `torchrun --nproc-per-node 2` with 1 thread each (gloo; the global batch and "
        "the seed are the same, so both take the same steps), and the same 1-process build at the "
        "commit before multi-process training was added. Wall time of the whole command, and the "
        "build's own time in its manifest (`training.seconds`: search, fine-tune, evaluation and "
        f"export). {_measured(p)}",
        "",
        "| run | commit | wall s | build s | skipped layers | eval accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for r in p["runs"]:
        cells = [r["run"], r["commit"], f"{r['wall_seconds']:.0f}", f"{r['train_seconds']:.0f}"]
        lines.append(_table_row([*cells, str(r["skipped"]), f"{r['eval_accuracy']:.4f}"]))
    return [*lines, ""]


def widest_spread(spread: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The demo's skip set with the largest seed std among those measured with at least 3 seeds (not
    ``das``, whose runs differ in their sets too, nor another task's, named ``task: …``)."""
    sets = [
        (name, s)
        for name, s in spread["by_set"].items()
        if s["n"] >= 3 and s["std"] is not None and not name.startswith("das") and ": " not in name
    ]
    return max(sets, key=lambda item: item[1]["std"]) if sets else None


def verdict_short_of_seeds(picks: int) -> str:
    """The verdict cell of a comparison that did not pass: "no", or why there is no verdict yet."""
    return "no" if picks >= MIN_PICKS else f"no ({picks} of {MIN_PICKS} search seeds)"


def seed_spread_section(spread: dict[str, Any]) -> list[str]:
    """Part s of RESULTS.md: skip sets fine-tuned with several seeds (the fine-tune's noise), the
    whole demo (search and fine-tune) with several seeds, and its picks against random sets."""
    lines = [
        "## s) Seed spread of the demo, and the search against chance",
        "",
        "`edge-vl build --demo --skip-layers SET --seed S --lr LR`: no search, so only the fine-tune's "
        "randomness (batch order, dropout, adapter initialisation) differs between runs of a set "
        "(`fixed`: a set chosen by hand; `random`: a set of `seed_spread.py --random K:N`'s fixed draw). "
        "Set `das` (`das:K`: with `--skip-count K`): the whole demo, whose seed also changes the search, "
        "so the skip set differs too; `+prior` (`+effects`): the search ranked layers by that estimator "
        "instead of the bandit's gates. Setting: the fine-tune's learning rate and length. Rows "
        "`digits: …`: the same on the second task (`seed_spread.py --task digits`: `tasks.py`'s "
        "handwritten-digit questions, `edge-vl build --data … --eval-data …` with edge-vl-mini and the "
        "build's default budget). Accuracy on all test questions. Measured "
        f"{spread['measured']} by `{spread['command']}` (runs "
        "of earlier invocations came in through `--reuse`; each run names its own command and commit; "
        "runs without a recorded lr were built at 1e-3, the default then).",
        "",
        "| set | setting | seed | skipped | accuracy | commit |",
        "|---|---|---|---|---|---|",
    ]

    def kind(run: dict[str, Any]) -> str:
        label, (task, key, _, _) = run.get("set", ""), run_key(run)
        name = "random" if label.startswith("random:") else key if label.startswith("das") else "fixed"
        return name if task == "easy-vqa" else f"{task}: {name}"

    def order(r: dict[str, Any]) -> tuple:
        """Other tasks last; fixed, random, then das runs; das runs by seed (their sets differ)."""
        name = kind(r).split(": ")[-1]
        rank = {"fixed": 0, "random": 1}.get(name, 2)
        skipped = (len(r["skipped"]), str(r["skipped"]))
        by_set = (r["seed"], skipped) if rank == 2 else (skipped, r["seed"])
        task, _, _, setting = run_key(r)
        return task != "easy-vqa", rank, name, setting, by_set

    for r in sorted(spread["runs"], key=order):
        setting, accuracy = run_key(r)[3], f"{r['eval_accuracy']:.4f}"
        lines.append(_table_row([kind(r), setting, str(r["seed"]), str(r["skipped"]), accuracy, r["commit"]]))
    lines += ["", "| set | runs | mean | std |", "|---|---|---|---|"]
    for name, s in spread["by_set"].items():
        std = "–" if s["std"] is None else f"{s['std']:.4f}"
        lines.append(_table_row([name, str(s["n"]), f"{s['mean']:.4f}", std]))
    against = spread.get("search_against_chance", [])
    if against:
        lines += [
            "",
            "The search against chance (issue #17): the mean accuracy of the sets the search picked "
            "(one per search seed) against random sets of the same k and setting (each set averaged over "
            "its seeds). Percentile rank: the share of random sets below the picks' mean. Fine-tune "
            "spread: the widest seed std of any set fine-tuned with several seeds at that k and setting; "
            "a margin (picks' mean − random mean) smaller than it is not a finding. Best set's margin: "
            "the margin the best set measured at that k (random, fixed or picked; its mean over its runs) "
            "would have if a search picked it every time — the most any search can show with the sets "
            "measured so far.",
            "",
            "| task | k | setting | search | picks | picks' mean | random sets | random mean | "
            "random 80th pct | percentile rank | fine-tune spread | margin | best set's margin | "
            "≥ 80th pct and margin > spread |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in against:
            spread_cell = "not measured" if c["finetune_spread"] is None else f"{c['finetune_spread']:.4f}"
            lines.append(_table_row([
                c["task"], str(c["k"]), c["setting"], c["search"],
                ", ".join(f"{a:.4f}" for a in c["picks"]), f"{c['picks_mean']:.4f}",
                str(c["random_sets"]), f"{c['random_mean']:.4f}", f"{c['random_p80']:.4f}",
                f"{c['percentile_rank']:.0f}", spread_cell, f"{c['margin']:+.4f}",
                "–" if "best_set_margin" not in c else f"{c['best_set_margin']:+.4f}",
                "yes" if c["beats_p80_and_spread"] else verdict_short_of_seeds(len(c["picks"])),
            ]))  # fmt: skip
    return [*lines, ""]


def transfer_section(t: dict[str, Any]) -> list[str]:
    """Part t of RESULTS.md: PETL and full fine-tuning of edge-vl-mini checkpoints and PETL recipes."""
    lines = [
        "## t) Transfer: PETL against full fine-tuning, checkpoints and adapter recipes",
        "",
        "Each row trains in torch with the task's budget (easy-vqa: the demo's, all 9,673 test questions; "
        "digits: `examples/benchmarks/tasks.py`) and one seed unless the recipe names another. PETL: "
        "adapters, no layer skipped; full: every fusion-stack weight (no adapters). A recipe changes "
        "only what it names (`transfer.py --recipe`). Weakest answers: the three answers with the "
        "lowest accuracy among the test questions that have them (rows measured since they are "
        "recorded). Final loss: mean training loss of the last steps. The rows were measured by "
        "these runs (a row's date names its run) and merged with "
        f"`--reuse` by `{t['command']}` ({t['date']}):",
        "",
        *sorted({f"- {r['date']}: `{r['command']}`" for r in t["rows"] if r.get("command")}),
        "",
        "| task | model | mode | recipe | accuracy | weakest answers | final loss | trainable | measured |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in t["rows"]:
        loss = f"{r['final_loss']:.3f}" if r.get("final_loss") is not None else "–"
        trainable = f"{r['trainable_parameters']:,} ({r['trainable_fraction']:.1%})"
        weakest = sorted((r.get("accuracy_by_answer") or {}).items(), key=lambda item: item[1])[:3]
        cells = [r["task"], f"{r['model']} (`{r['spec']}`)", r["mode"], recipe_label(r),
                 f"{r['eval_accuracy']:.4f}", ", ".join(f"{a} {v:.2f}" for a, v in weakest) or "–",
                 loss, trainable, r["date"]]  # fmt: skip
        lines.append(_table_row(cells))
    return [*lines, ""]


def sweep_section(k: dict[str, Any], spread: dict[str, Any] | None = None) -> list[str]:
    """Part k of RESULTS.md: one row per k (random: mean over its sets)."""
    refs = ", ".join(f"{name} {acc:.2%}" for name, acc in k["references"].items())
    lines = [
        "## b, continued) Accuracy vs MACs vs latency for k = 0…6 skipped arms",
        "",
        f"edge-vl-mini on easy-vqa, {k['arms']} arms. For each k, the set DAS chose and random sets "
        "(never the DAS set), each fine-tuned with the demo's budget and scored on all "
        f"{k['eval_examples']:,} test questions (torch); k = 0 is PETL-only (adapters, no arm skipped). "
        f"For reference: {refs}. Accuracy and MACs from `{k['variants_command']}` "
        f"({k['variants']}, {k['variants_date']}). Latency: batch 1, FP32 export of the demo model "
        f"with each skip set ({k['text_tokens']} text tokens; adapter values do not change the work), "
        f"all sets timed in one interleaved run of {k['runs']} rounds. {_measured(k)}",
        "",
    ]
    widest = widest_spread(spread) if spread else None
    if widest:
        name, s = widest
        lines += [f"**Every row is one fine-tune seed.** The same skip set {name} fine-tuned with "
                  f"{s['n']} seeds has a std of {s['std']:.2%} (part s): a difference between two "
                  "rows smaller than that is not evidence that one set is better (seeds of other "
                  "settings: part t).", ""]  # fmt: skip
    runs = k.get("variants_runs") or {}
    if len(runs) > 1:  # a sweep split over runs and merged with --reuse: each row's run, by its date
        lines += ["The rows were measured by these runs (a row's `measured` date in the file names its "
                  "run, no date the last one; one run with all the `--sweep` values measures them all):", "",
                  *(f"- {date}: `{command}`" for date, command in sorted(runs.items())), ""]  # fmt: skip
    lines += [
        "| k | DAS set | DAS accuracy | DAS MACs | DAS ms (p10–p90) | random sets "
        "| random accuracy, mean (range) | random MACs | random ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_set = {tuple(r["skipped"]): r for r in k["rows"]}
    for t in k["table"]:
        das = by_set[tuple(t["das_set"] or ())]["latency"]
        randoms = [r for r in k["rows"] if r["variant"].startswith("random") and len(r["skipped"]) == t["k"]]
        accuracies = sorted(r["eval_accuracy"] for r in randoms)
        spread_cell = f" ({accuracies[0]:.2%}–{accuracies[-1]:.2%})" if len(accuracies) > 1 else ""
        random_cells = (
            [" ".join(str(r["skipped"]) for r in randoms), _pct(t["random_eval_accuracy"]) + spread_cell,
             _pct(t["random_retained_macs_fraction"], 1), f"{t['random_latency_ms']:.2f}"]
            if t["k"] else ["—"] * 4
        )  # fmt: skip
        cells = [str(t["k"]), str(t["das_set"]), _pct(t["das_eval_accuracy"]),
                 _pct(t["das_retained_macs_fraction"], 1),
                 f"{das['median']:.2f} ({das['p10']:.2f}–{das['p90']:.2f})", *random_cells]  # fmt: skip
        lines.append(_table_row(cells))
    return [*lines, "", "![accuracy against MACs by k](sweep_accuracy_macs.svg)", "",
            "![accuracy against latency by k](sweep_accuracy_latency.svg)", ""]  # fmt: skip


def _table_row(cells: list[str]) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(cells) + " |"


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}%}"


def bar_chart(values: dict[str, float], xlabel: str) -> str:
    """Horizontal bars, one per entry (label left of the bar, value right of it), as a standalone SVG."""
    from edge_vl.charts import COLOURS

    top = max(values.values()) or 1.0
    label_w, row_h = 300, 22
    width, height = 640 + label_w - 72, 24 + row_h * len(values) + 28
    out = []
    for j, (name, value) in enumerate(values.items()):
        y = 16 + j * row_h
        bar = value / top * (width - label_w - 70)
        colour = COLOURS[j % len(COLOURS)]
        label = html.escape(name)
        out.append(f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end" font-size="12">{label}</text>')
        size = f'width="{bar:.1f}" height="{row_h - 6}"'
        out.append(f'<rect x="{label_w}" y="{y + 3}" {size} fill="{colour}"/>')
        out.append(f'<text x="{label_w + bar + 6:.1f}" y="{y + 14}" font-size="11">{value:.3g}</text>')
    out.append(f'<text x="{label_w}" y="{height - 8}" font-size="12">{html.escape(xlabel)}</text>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">' + "".join(out) + "</svg>"
    )


def plots(results: dict[str, Any], out: Path) -> None:
    from edge_vl.charts import xy_chart

    if results.get("vilt_b32"):
        rows = results["vilt_b32"]["rows"]
        svg = bar_chart(
            {k: r["median"] for k, r in rows.items()}, "ViLT-B/32 batch-1 latency, ms (lower is better)"
        )
        write_text_atomic(out / "vilt_b32_latency.svg", svg)
    if results.get("clip_b32"):
        rows = results["clip_b32"]["rows"]
        svg = bar_chart({k: r["median"] for k, r in rows.items()}, "CLIP ViT-B/32 image tower, batch-1 ms")
        write_text_atomic(out / "clip_b32_latency.svg", svg)
    if results.get("sweep"):
        rows = results["sweep"]["rows"]
        for axis, key, label in (("macs", "retained_macs_fraction", "MACs, fraction of the full model"),
                                 ("latency", "latency_ms", "batch-1 latency, ms")):  # fmt: skip
            das = "DAS (k=0: PETL-only)"
            series: dict[str, list[tuple[float, float, str]]] = {das: [], "random sets": []}
            for r in rows:
                side = "random sets" if r["variant"].startswith("random") else das
                series[side].append((r[key], r["eval_accuracy"], f"k={len(r['skipped'])}"))
            svg = xy_chart(series, label, "eval accuracy", joined=[das])
            write_text_atomic(out / f"sweep_accuracy_{axis}.svg", svg)
    if results.get("demo"):
        lat = results["demo"]["compare"]["latency_ms"]
        svg = bar_chart(
            {k.replace("_", " "): r["median"] for k, r in lat.items()}, "edge-vl-mini batch-1 latency, ms"
        )
        write_text_atomic(out / "demo_latency.svg", svg)


#: parts timed on the machine that runs this script (the others read results files)
TIMED_PARTS = frozenset("abcdk")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _measured(part: dict[str, Any]) -> str:
    """Where a part's numbers come from (parts can be rerun on their own)."""
    return f"Measured {part['date']} by `{part['command']}`." if "command" in part else ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=HERE, help="where RESULTS.md/.json and the plots go")
    p.add_argument("--demo-bundle", type=Path, default=Path("edge-vl-demo/bundle-full"))
    p.add_argument("--demo-model", default=None, help="checkpoint of the demo bundle [its manifest's source]")
    p.add_argument("--variants", type=Path, default=HERE / "results" / "edge-vl-mini" / "variants.json",
                   help="variants.json with the sweep over k (part k)")  # fmt: skip
    p.add_argument("--processes", type=Path, default=HERE / "results" / "processes" / "processes.json",
                   help="processes.json of examples/benchmarks/processes.py (part p)")  # fmt: skip
    p.add_argument("--seed-spread", type=Path, default=HERE / "results" / "seed_spread" / "seed_spread.json",
                   help="seed_spread.json of examples/benchmarks/seed_spread.py (part s)")  # fmt: skip
    p.add_argument("--transfer", type=Path, default=HERE / "results" / "transfer" / "transfer.json",
                   help="transfer.json of examples/benchmarks/transfer.py (part t)")  # fmt: skip
    p.add_argument("--operations", type=Path, default=HERE / "results" / "operations" / "demo.json",
                   help="demo.json of examples/benchmarks/operations.py (part o)")  # fmt: skip
    p.add_argument("--input-cost", type=Path, default=HERE / "results" / "input_cost" / "vnni-epyc.json",
                   help="a JSON file of examples/benchmarks/input_cost.py (part i)")  # fmt: skip
    plans = HERE / "results" / "compute_plan"
    p.add_argument("--compute-plan", type=Path, nargs="+",
                   default=sorted(f for f in plans.glob("*.json") if not f.name.startswith("petl_only")),
                   help="JSON files of examples/benchmarks/compute_plan.py (part l)")  # fmt: skip
    p.add_argument("--petl-only", type=Path, nargs="*", default=sorted(plans.glob("petl_only*.json")),
                   help="seed_spread.py --sets none files at full size: part l's baselines")  # fmt: skip
    p.add_argument("--token-reduction", type=Path,
                   default=HERE / "results" / "token_reduction" / "vnni-epyc.json",
                   help="a JSON file of examples/benchmarks/token_reduction.py (part r)")  # fmt: skip
    p.add_argument("--fixed-question", type=Path,
                   default=HERE / "results" / "fixed_question" / "vnni-epyc.json",
                   help="a JSON file of examples/benchmarks/fixed_question.py (part f)")  # fmt: skip
    p.add_argument("--parts", default="a,b,c,d,k", help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--runs", type=int, default=30, help="interleaved rounds")
    p.add_argument("--throughput-seconds", type=float, default=4.0)
    args = p.parse_args()
    parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    if not parts or parts - set(PARTS):
        p.error(f"--parts takes a comma-separated subset of {','.join(PARTS)}, got {args.parts!r}")
    inputs = {
        "f": (args.fixed_question, "fixed_question.py"),
        "r": (args.token_reduction, "token_reduction.py"),
        "i": (args.input_cost, "input_cost.py"),
        "o": (args.operations, "operations.py"),
        "p": (args.processes, "processes.py"),
        "s": (args.seed_spread, "seed_spread.py"),
        "t": (args.transfer, "transfer.py"),
    }
    for part, (path, script) in inputs.items():
        if part in parts and not path.is_file():
            p.error(f"{path} is not a file: run examples/benchmarks/{script}")
    if "l" in parts and not args.compute_plan:
        p.error("no --compute-plan file: run examples/benchmarks/compute_plan.py")
    for path in args.compute_plan + args.petl_only if "l" in parts else []:
        if not path.is_file():
            p.error(f"{path} is not a file: run examples/benchmarks/compute_plan.py or seed_spread.py")
    if "k" in parts and not args.variants.is_file():
        p.error(f"--variants {args.variants} is not a file: run examples/benchmarks/variants.py --sweep 1-6")
    if parts & {"b", "k"} and not (args.demo_bundle / "manifest.json").is_file():
        p.error(
            f"{args.demo_bundle} is not a bundle: run `edge-vl build --demo` first, or pass --demo-bundle"
        )
    previous = args.out / "RESULTS.json"
    results = json.loads(previous.read_text()) if previous.is_file() else {}
    run = {"command": " ".join(["python -m examples.benchmarks.results", *map(portable, sys.argv[1:])])}
    if "a" in parts:
        results["vilt_b32"] = {**speed_vilt_b32(args.runs, args.throughput_seconds), **run, "date": _now()}
    if "b" in parts:
        results["demo"] = {**demo_bundle(args.demo_bundle, args.runs, args.demo_model), **run, "date": _now()}
    if "k" in parts:
        sweep = sweep_by_k(args.variants, args.demo_bundle, args.runs, args.demo_model)
        results["sweep"] = {**sweep, **run, "date": _now()}
    if "p" in parts:
        measured = json.loads(args.processes.read_text())
        results["processes"] = {**measured, "date": measured["measured"]}
    if "o" in parts:
        results["operations"] = json.loads(args.operations.read_text())
    if "i" in parts:
        results["input_cost"] = json.loads(args.input_cost.read_text())
    if "l" in parts:
        results["compute_plan"] = {
            "plans": [json.loads(path.read_text()) for path in args.compute_plan],
            "petl_only": [json.loads(path.read_text()) for path in args.petl_only],
        }
    if "f" in parts:
        results["fixed_question"] = json.loads(args.fixed_question.read_text())
    if "r" in parts:
        results["token_reduction"] = json.loads(args.token_reduction.read_text())
    if "s" in parts:
        results["seed_spread"] = json.loads(args.seed_spread.read_text())
    if "t" in parts:
        results["transfer"] = json.loads(args.transfer.read_text())
    if "c" in parts:
        results["flops"] = {**flops_check(), **run, "date": _now()}
    if "d" in parts:
        results["clip_b32"] = {**speed_clip_b32(args.runs, args.throughput_seconds), **run, "date": _now()}
    results["date"] = _now()
    if parts & TIMED_PARTS or "machine" not in results:
        # parts p, s and t only read results files measured elsewhere: rerunning them on another
        # machine must not relabel the timings of the others
        results.update(
            machine={**machine_info(), "python": platform.python_version()},
            versions=package_versions(),
        )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(previous, json.dumps(results, indent=2) + "\n")
    plots(results, args.out)
    write_text_atomic(args.out / "RESULTS.md", render(results))
    print(f"wrote {args.out / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
