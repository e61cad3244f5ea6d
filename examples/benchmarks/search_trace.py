"""How much the DAS search's candidate skip sets differ in held-out loss, early and late in a search.

Reads the search trace a build records in its manifest (``skip_plan.search.rounds``: the loss of
every candidate set of every round) and prints, for the first and the last ``--window`` rounds, the
median within-round spread (largest minus smallest candidate loss). When the late spread is tiny,
every set scores alike and the gates stop learning; the first rounds' noise then decides the set.
The figures quoted in ``edge_vl/training/search.py`` and the README come from:

    python -m examples.benchmarks.search_trace \\
        examples/benchmarks/results/demo-precision-auto/manifest.json \\
        examples/benchmarks/results/demo-default/manifest.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from edge_vl.config import SearchConfig


def loss_spreads(manifest: dict[str, Any]) -> list[float]:
    """Per round: largest minus smallest candidate loss."""
    try:
        rounds = [r for r in manifest["skip_plan"]["search"]["rounds"] if r.get("kind") != "prior"]
    except (KeyError, TypeError):
        raise ValueError("no search trace (skip_plan.search.rounds): not built with a DAS search") from None
    return [max(r["losses"]) - min(r["losses"]) for r in rounds if len(r["losses"]) > 1]


def summary(manifest: dict[str, Any], window: int) -> dict[str, Any]:
    spreads = loss_spreads(manifest)
    if not spreads:
        raise ValueError("the search trace has no round with two or more candidates")
    plan = manifest["skip_plan"]
    config = plan.get("search_config", {})
    # built before the option existed: the warm-up always skipped
    warmup = SearchConfig(**config).skips_in_warmup if "warmup_skipping" in config else True
    return {
        "rounds": len(spreads),
        "search_mode": config.get("mode"),
        "warmup_skipping": warmup,
        "skipped": plan["search"]["skipped"],
        "window": min(window, len(spreads)),
        "median_spread_first": statistics.median(spreads[:window]),
        "median_spread_last": statistics.median(spreads[-window:]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("manifests", type=Path, nargs="+", help="bundle manifest.json files")
    p.add_argument("--window", type=int, default=25, help="rounds at the start and at the end")
    p.add_argument("--json", action="store_true", help="print JSON instead of lines")
    args = p.parse_args()
    if args.window < 1:
        p.error("--window must be at least 1")
    results = {}
    for path in args.manifests:
        try:
            results[str(path)] = summary(json.loads(path.read_text(encoding="utf-8")), args.window)
        except json.JSONDecodeError as e:
            sys.exit(f"{path}: not a JSON manifest ({e})")
        except (OSError, ValueError) as e:
            sys.exit(f"{path}: {e}")
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for path, s in results.items():
        warmup = "layers skipped" if s["warmup_skipping"] else "no layer skipped"
        print(
            f"{path}: {s['rounds']} rounds (mode {s['search_mode']}, warm-up with {warmup}), "
            f"skipped {s['skipped']}; median candidate-loss spread {s['median_spread_first']:.4f} "
            f"in the first {s['window']} rounds, {s['median_spread_last']:.4f} in the last {s['window']}"
        )


if __name__ == "__main__":
    main()
