"""Measure one bundle under each runtime profile on this machine, and the dispatch on an emulated
CPU without AVX2: the figures behind the README's support table.

    python -m examples.benchmarks.targets BUNDLE [--out examples/benchmarks/results/targets]

For each runtime profile (``default``: the OpenVINO of this environment; ``legacy``: OpenVINO
2025.4 in ``.venv-legacy``, made with ``python -m venv .venv-legacy && .venv-legacy/bin/pip install
-e ".[legacy]"``; the test suite makes it too) it runs ``edge-vl bench BUNDLE --profile`` in that
environment: batch-1 latency, throughput, and FP32 vs INT8 on the reference graph. The runtimes are
run one after the other, ``--rounds`` times alternately, and the medians reported. With
``qemu-x86_64`` (Debian ``qemu-user``) it also runs ``edge-vl predict`` on a Westmere CPU model
(SSE4.2, no AVX/AVX2 in CPUID) under both runtimes and records what happens. qemu still executes
AVX2 instructions and is far slower than hardware, so only the outcome (refused / predicts) counts
there, never a time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edge_vl.fileio import write_text_atomic
from examples.benchmarks.recorded import this_command

REPO = Path(__file__).resolve().parents[2]


def bench(python: Path, bundle: Path, duration: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        profile = Path(tmp) / "profile.json"
        command = [str(python), "-m", "edge_vl", "bench", str(bundle), "--duration", str(duration),
                   "--target-profile", str(profile), "--json"]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, text=True)
        return json.loads(profile.read_text())


def emulated_predict(python: Path, bundle: Path, image: str, text: str) -> dict:
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        return {"outcome": "not run (no qemu-x86_64; Debian: apt-get install qemu-user)"}
    command = [qemu, "-cpu", "Westmere", str(python), "-m", "edge_vl", "predict", str(bundle), image, text]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode == 0:
        return {"outcome": "predicts", "answer": done.stdout.split()[0]}
    return {"outcome": "refused", "message": done.stderr.strip().splitlines()[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--out", type=Path, default=REPO / "examples/benchmarks/results/targets")
    parser.add_argument("--legacy-python", type=Path, default=REPO / ".venv-legacy/bin/python")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--image", help="image for the emulated prediction (default: an easy-vqa test image)")
    parser.add_argument("--text", default="What color is the shape?")
    args = parser.parse_args()
    if not args.legacy_python.exists():
        sys.exit(f"{args.legacy_python} not found: python -m venv .venv-legacy && "
                 '.venv-legacy/bin/pip install -e ".[legacy]"')  # fmt: skip
    runtimes = {"default": Path(sys.executable), "legacy": args.legacy_python}
    runs: dict[str, list[dict]] = {name: [] for name in runtimes}
    for _ in range(args.rounds):
        for name, python in runtimes.items():
            runs[name].append(bench(python, args.bundle, args.duration))
    image = args.image
    if image is None:
        import easy_vqa

        image = easy_vqa.get_test_image_paths()[0]
    rows = {}
    for name, reports in runs.items():
        first = reports[0]
        rows[name] = {
            "openvino": first["machine"]["openvino"],
            "latency_p50_ms": float(np.median([r["latency_ms"]["p50"] for r in reports])),
            "throughput_per_s": float(np.median([r["throughput"]["samples_per_s"] for r in reports])),
            "probe_fp32_ms": float(np.median([r["precision_probe"]["fp32_ms"] for r in reports])),
            "probe_int8_ms": float(np.median([r["precision_probe"]["int8_ms"] for r in reports])),
            "westmere_emulated": emulated_predict(runtimes[name], args.bundle, image, args.text),
        }
        rows[name]["probe_int8_speedup"] = rows[name]["probe_fp32_ms"] / rows[name]["probe_int8_ms"]
    machine = runs["default"][0]["machine"]
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": this_command(),
        "bundle": str(args.bundle),
        "precision": runs["default"][0]["precision"],
        "machine": {
            "cpu": machine["cpu"],
            "cores": machine["cores"],
            "flags": [k for k, v in machine["flags"].items() if v],
        },
        "rounds": args.rounds,
        "runtimes": rows,
    }
    write(report, args.out)
    print((args.out / "TARGETS.md").read_text())


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "targets.json", json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    lines = [
        "# One bundle under each runtime profile",
        "",
        f"`{report['command']}` on {report['date']}: {m['cpu']}, {m['cores']} cores, flags "
        f"{', '.join(m['flags'])}. Bundle `{report['bundle']}` ({report['precision']}). Medians of "
        f"{report['rounds']} alternating rounds. Reference graph: FP32 vs INT8 MLP blocks "
        "(`edge_vl.timing.precision_probe`).",
        "",
        "| runtime | OpenVINO | bundle p50 (ms, batch 1) | throughput (/s) | reference FP32 (ms) "
        "| reference INT8 (ms) | INT8 speed-up | emulated Westmere (no AVX2) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["runtimes"].items():
        emu = r["westmere_emulated"]
        outcome = emu["outcome"] + (f": {emu['message']}" if "message" in emu else "")
        lines.append(
            f"| {name} | {r['openvino'].split('-')[0]} | {r['latency_p50_ms']:.2f} | "
            f"{r['throughput_per_s']:.1f} | {r['probe_fp32_ms']:.2f} | {r['probe_int8_ms']:.2f} | "
            f"{r['probe_int8_speedup']:.2f}× | {outcome} |"
        )
    lines += [
        "",
        "The emulated column is qemu-user's Westmere CPU model: CPUID says SSE4.2 and no AVX/AVX2, "
        "but qemu still executes AVX2 instructions, so it shows edge-vl's dispatch (which runtime "
        "refuses, which runs), not how fast or whether OpenVINO's SSE4.2 kernels run on real hardware.",
    ]
    write_text_atomic(out / "TARGETS.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
