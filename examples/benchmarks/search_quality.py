"""How well a DAS search ranks skip sets, scored offline against fine-tuned accuracies.

    python -m examples.benchmarks.search_quality \\
        --truth examples/benchmarks/results/edge-vl-mini/variants.json \\
        --search examples/benchmarks/results/demo-default/manifest.json

``--truth``: a ``variants.py`` result (each row: a skip set and the accuracy its full fine-tune
reached) or a ``seed_spread.py`` result (its fixed and random sets at ``--lr`` and ``--epochs``,
averaged over seeds). ``--search``: bundle manifests or ``edge-vl search --out`` files of the same
model and task. For every search and each of its rankings — the bandit's gates (the paper), the
layers' fitted added loss (``effects``, :func:`edge_vl.training.search.layer_effects`) and, with a prior
round, each layer's loss skipped alone (``prior``, :func:`edge_vl.training.search.prior_losses`) — it scores
each truth set (sum of its layers' gates, or minus the sum of their losses) and reports, per number of skipped
layers k: the rank correlation (Spearman) between score and accuracy, and the accuracy percentile
of the set the search picks among the truth sets of that k. Re-scoring needs no training: the
searches' traces are in their files.

``--importance``: a ``layer_importance.py`` result scored as one more ranking — each layer's added
held-out loss when skipped alone after a PETL fine-tune with nothing skipped (lower: more
redundant), the importance prior a search could take from its warm-up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_vl.demo import FULL_DEMO
from edge_vl.fileio import write_text_atomic
from edge_vl.training.search import redundancy_scores
from examples.benchmarks.recorded import portable, this_command
from examples.benchmarks.seed_spread import run_key, run_setting  # examples/benchmarks/seed_spread.py


def load_search(path: Path) -> dict[str, Any]:
    """The search record of a bundle manifest (``skip_plan.search``) or of ``edge-vl search --out``."""
    data = json.loads(path.read_text(encoding="utf-8"))
    plan = data.get("skip_plan", data)
    if "search" not in plan:
        raise SystemExit(f"{path}: no search record (skip_plan.search)")
    return plan["search"]


def scorers(search: dict[str, Any]) -> dict[str, list[float]]:
    """Per-layer redundancy scores (higher: more redundant) of each ranking a search offers; with
    a single-layer prior round (``--search-prior-rows``), also that round's losses alone (``prior``)."""
    return redundancy_scores(search["rounds"], search["gates"])


def importance_scores(path: Path) -> list[float]:
    """Per-layer redundancy of a ``layer_importance.json``: minus the held-out loss each layer adds
    when skipped alone."""
    rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    base = next(r["loss"] for r in rows if not r["skipped"])
    alone = {r["skipped"][0]: r["loss"] - base for r in rows if len(r["skipped"]) == 1}
    if sorted(alone) != list(range(len(alone))):
        raise SystemExit(f"{path}: rows must skip every layer alone (found layers {sorted(alone)})")
    return [-alone[i] for i in range(len(alone))]


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None for fewer than 3 points or no spread."""
    if len(xs) < 3:
        return None

    def ranks(values: Sequence[float]) -> list[float]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for m in range(i, j + 1):
                out[order[m]] = (i + j) / 2
            i = j + 1
        return out

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return None if sxx == 0 or syy == 0 else sxy / (sxx * syy) ** 0.5


def percentile(value: float, population: Sequence[float]) -> float:
    """Share of ``population`` at or below ``value``, in percent."""
    return 100.0 * sum(v <= value for v in population) / len(population)


def quality(scores: Sequence[float], truth: dict[tuple[int, ...], float], k: int) -> dict[str, Any]:
    """How ``scores`` (per layer) rank the truth sets of size ``k``: Spearman between set score and
    accuracy, and the accuracy percentile of the best-scored truth set and of the top-k pick."""
    sets = [s for s in truth if len(s) == k]
    set_scores = [sum(scores[i] for i in s) for s in sets]
    accuracies = [truth[s] for s in sets]
    pick = tuple(sorted(sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]))
    best = sets[max(range(len(sets)), key=lambda j: set_scores[j])]
    return {
        "k": k, "sets": len(sets), "spearman": spearman(set_scores, accuracies), "pick": list(pick),
        "pick_accuracy": truth.get(pick),
        "pick_percentile": percentile(truth[pick], accuracies) if pick in truth else None,
        "best_scored_percentile": percentile(truth[best], accuracies),
    }  # fmt: skip


def read_truth(
    path: Path, lr: float | None = None, epochs: float = FULL_DEMO.epochs
) -> dict[tuple[int, ...], float]:
    """Skip set → fine-tuned accuracy from a ``variants.json`` (its rows) or a ``seed_spread.json``
    (the demo's fixed and random sets fine-tuned at ``lr`` for ``epochs``, averaged over seeds)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if "rows" in data:
        return {tuple(sorted(r["skipped"])): r["eval_accuracy"] for r in data["rows"] if r.get("skipped")}
    by_set: dict[tuple[int, ...], list[float]] = {}
    for r in data["runs"]:
        task, key, _, setting = run_key(r)
        wanted = setting == run_setting({"lr": lr, "epochs": epochs})
        if task == "easy-vqa" and not key.startswith("das") and r["skipped"] and wanted:
            by_set.setdefault(tuple(sorted(r["skipped"])), []).append(r["eval_accuracy"])
    return {s: sum(v) / len(v) for s, v in by_set.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--truth",
        type=Path,
        required=True,
        help="variants.json or seed_spread.json with fine-tuned skip sets",
    )
    p.add_argument("--lr", type=float, default=1e-4, help="a seed_spread.json's runs at this lr")  # fmt: skip
    p.add_argument(
        "--epochs", type=float, default=FULL_DEMO.epochs, help="… and fine-tune length (default: the demo's)"
    )
    p.add_argument("--search", type=Path, action="append", default=[], help="a manifest or search file")
    p.add_argument("--importance", type=Path, help="a layer_importance.json (single-layer removal costs)")
    p.add_argument("--out", type=Path, help="also write the tables (Markdown, with this command) here")
    args = p.parse_args()
    if not args.search and not args.importance:
        p.error("give at least one --search or --importance")
    for path in [args.truth, *args.search, *([args.importance] if args.importance else [])]:
        if not path.is_file():
            p.error(f"{path}: no such file")
    truth = read_truth(args.truth, args.lr, args.epochs)
    ks = sorted({len(s) for s in truth})
    lines = ["| truth set | fine-tuned accuracy |", "|---|---|"]
    lines += [
        f"| {list(s)} | {acc:.4f} |" for s, acc in sorted(truth.items(), key=lambda t: (len(t[0]), -t[1]))
    ]
    lines += ["", "| search | ranking | k | truth sets | Spearman | pick | pick accuracy (percentile) |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    rankings = [
        (path, name, scores) for path in args.search for name, scores in scorers(load_search(path)).items()
    ]
    if args.importance:
        rankings.append((args.importance, "alone", importance_scores(args.importance)))
    for path, name, scores in rankings:
        for k in ks:
            q = quality(scores, truth, k)
            rho = "–" if q["spearman"] is None else f"{q['spearman']:+.2f}"
            acc = "not fine-tuned" if q["pick_accuracy"] is None else (
                f"{q['pick_accuracy']:.4f} ({q['pick_percentile']:.0f} %)")  # fmt: skip
            lines.append(
                f"| {portable(str(path))} | {name} | {k} | {q['sets']} | {rho} | {q['pick']} | {acc} |"
            )
    print("\n".join(lines))
    if args.out:
        when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        head = f"# Search quality against fine-tuned skip sets\n\nMeasured {when} by `{this_command()}`.\n\n"
        write_text_atomic(args.out, head + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
