"""What text buckets save: batch-1 latency of a bundle with and without them on real questions.

    edge-vl build ... --text-buckets 8,12 --out BUNDLE
    python -m examples.benchmarks.token_buckets BUNDLE EVAL.jsonl

Both predictors are loaded from the same bundle (``text_buckets=False`` forces the full text
length); each question is timed alternately on both (interleaved, so machine drift hits both
alike). Preprocessing is done once outside the timing. Also checks that the answers are
identical.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edge_vl import Predictor
from edge_vl.data import read_examples
from edge_vl.fileio import write_text_atomic
from edge_vl.runtime.cpu import cpu_name


def run(bundle: Path, eval_data: Path, limit: int, threads: int | None) -> dict:
    bucketed = Predictor(bundle, threads=threads)
    full = Predictor(bundle, threads=threads, text_buckets=False)
    rows = read_examples(eval_data)[:limit]
    times = {"buckets": [], "full": []}
    same, used = 0, Counter()
    for row in rows:
        feed = bucketed.prepare([row.image], [row.text])
        n = int(feed["attention_mask"].sum())
        used[next(length for length, _ in bucketed.buckets if length >= n)] += 1
        answers = {}
        for name, predictor in (("buckets", bucketed), ("full", full)):
            t0 = time.perf_counter()
            answers[name] = int(np.argmax(predictor.run(feed)))
            times[name].append((time.perf_counter() - t0) * 1e3)
        same += answers["buckets"] == answers["full"]
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bundle": str(bundle), "eval_data": str(eval_data), "questions": len(rows), "cpu": cpu_name(),
        "threads": threads, "buckets": [length for length, _ in bucketed.buckets],
        "questions_per_bucket": {str(k): v for k, v in sorted(used.items())},
        "median_ms": med,
        "p90_ms": {k: float(np.percentile(v, 90)) for k, v in times.items()},
        "saving": 1 - med["buckets"] / med["full"], "identical_answers": same / len(rows),
    }  # fmt: skip


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "token_buckets.json", json.dumps(report, indent=2) + "\n")
    m, p = report["median_ms"], report["p90_ms"]
    lines = [
        "# Text buckets: batch-1 latency with and without",
        "",
        f"Generated {report['date']} by `examples/benchmarks/token_buckets.py` on {report['cpu']}; "
        f"{report['questions']} questions of `{report['eval_data']}`, interleaved.",
        "",
        "| | median ms | p90 ms |",
        "|---|---|---|",
        f"| full text length ({report['buckets'][-1]} tokens) | {m['full']:.2f} | {p['full']:.2f} |",
        f"| buckets {report['buckets']} | {m['buckets']:.2f} | {p['buckets']:.2f} |",
        "",
        f"Saving {report['saving']:.1%}; identical answers {report['identical_answers']:.2%}; "
        f"questions per bucket length: {report['questions_per_bucket']}.",
    ]
    write_text_atomic(out / "token_buckets.md", "\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("eval_data", type=Path)
    p.add_argument("--limit", type=int, default=1000, help="questions to time")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "token_buckets")
    args = p.parse_args()
    report = run(args.bundle, args.eval_data, args.limit, args.threads)
    write(report, args.out)
    print(json.dumps({k: report[k] for k in ("median_ms", "saving", "identical_answers")}))


if __name__ == "__main__":
    main()
