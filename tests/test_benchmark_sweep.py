"""The k sweep of ``examples/benchmarks/variants.py``: random baselines and the per-k table."""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import pytest

from edge_vl.demo import FULL_DEMO

ROOT = Path(__file__).resolve().parents[1]


def module(name: str) -> list[str]:
    """The command that runs ``examples/benchmarks/NAME.py`` (a module of the repository's package)."""
    return [sys.executable, "-m", f"examples.benchmarks.{name}"]


@pytest.fixture(scope="module")
def variants():
    from examples.benchmarks import variants

    return variants


def test_random_sets_never_repeat_the_das_set(variants):
    # 12 choose 11 = 12 sets; excluding the DAS set leaves 11, all of which must be found
    sets = variants.random_sets(random.Random(0), 12, 11, 100, exclude=list(range(11)))
    assert len(sets) == 11
    assert list(range(11)) not in sets
    assert len({tuple(s) for s in sets}) == 11


def test_sweep_random_sets_of_a_k_do_not_depend_on_other_ks(variants):
    """A sweep split over runs (--reuse) must draw the same sets for a k as one run would."""
    alone = variants.sweep_random_sets(0, 12, 3, 2, das_set=[1, 2, 3])
    variants.sweep_random_sets(0, 12, 2, 5, das_set=[0, 1])  # another k drawn in between
    assert variants.sweep_random_sets(0, 12, 3, 2, das_set=[1, 2, 3]) == alone
    assert all(len(s) == 3 and s == sorted(s) and s != [1, 2, 3] for s in alone)
    assert variants.sweep_random_sets(1, 12, 3, 2, das_set=[1, 2, 3]) != alone  # the seed counts


def test_sweep_table_groups_rows_by_k(variants):
    def row(name, skipped, acc, macs, ms):
        return {"variant": name, "skipped": skipped, "eval_accuracy": acc,
                "retained_macs_fraction": macs, "latency_ms": ms}  # fmt: skip

    rows = [
        {"variant": "majority answer", "skipped": [], "eval_accuracy": 0.3},
        row("petl-only", [], 0.9, 1.0, 10.0),
        row("das", [1, 2], 0.8, 0.8, 8.0),
        row("random-0", [0, 1], 0.6, 0.8, 8.0),
        row("random-1", [3, 4], 0.7, 0.8, 9.0),
        row("das-k1", [5], 0.85, 0.9, 9.0),
        row("random-k1-0", [6], 0.75, 0.9, 9.5),
    ]
    table = {t["k"]: t for t in variants.sweep_table(rows)}
    assert sorted(table) == [0, 1, 2]
    assert table[0]["das_eval_accuracy"] == table[0]["random_eval_accuracy"] == 0.9
    assert table[2]["das_set"] == [1, 2]
    assert table[2]["random_eval_accuracy"] == pytest.approx(0.65)
    assert table[2]["random_latency_ms"] == pytest.approx(8.5)
    assert table[2]["random_sets"] == 2
    assert table[1]["das_set"] == [5] and table[1]["random_eval_accuracy"] == 0.75


def test_k_list_reads_ranges_and_lists(variants):
    assert variants._k_list("1-6") == [1, 2, 3, 4, 5, 6]
    assert variants._k_list("2,6") == [2, 6]
    with pytest.raises(Exception, match="expected k values"):
        variants._k_list("two")


def _variants_file(path: Path, date: str, command: str, rows: list[dict], **extra) -> Path:
    report = {"date": date, "command": command, "settings": FULL_DEMO.__dict__,
              "model": "edge-vl-mini", "seed": 0, "rows": rows, **extra}  # fmt: skip
    path.write_text(json.dumps(report), encoding="utf-8")
    return path


def test_reused_rows_keep_the_run_that_measured_them(variants, tmp_path):
    """Merging split sweep runs (--reuse of a file that itself reused another) must name, for every
    row, the command that measured it."""
    args = argparse.Namespace(model="edge-vl-mini", seed=0, lr=1e-3)
    settings = variants.FULL_DEMO
    row = {"variant": "petl-only", "eval_accuracy": 0.9, "skipped": []}
    first = _variants_file(tmp_path / "a.json", "T1", "variants.py", [row])
    _, runs = variants.reusable_rows(first, settings, args)
    assert runs == {"T1": "variants.py"}
    second = _variants_file(
        tmp_path / "b.json", "T2", "variants.py --reuse a.json --sweep 2",
        [{**row, "measured": "T1"}, {"variant": "das", "skipped": [1]},
         {"variant": "das-k2", "eval_accuracy": 0.8, "skipped": [3, 6]}],
        runs={"T1": "variants.py", "T2": "variants.py --reuse a.json --sweep 2"},
    )  # fmt: skip
    rows, runs = variants.reusable_rows(second, settings, args)
    assert rows["petl-only"]["measured"] == "T1" and rows["das-k2"]["measured"] == "T2"
    assert "das" not in rows  # the main DAS row is the --das-bundle's, never taken over
    assert runs == {"T1": "variants.py", "T2": "variants.py --reuse a.json --sweep 2"}


def test_reuse_refuses_a_file_measured_with_other_settings(variants, tmp_path):
    args = argparse.Namespace(model="edge-vl-mini", seed=0, lr=1e-3)
    other = _variants_file(tmp_path / "a.json", "T1", "variants.py --seed 3", [], seed=3)
    with pytest.raises(SystemExit, match=r"a\.json was measured with other settings: seed: 3"):
        variants.reusable_rows(other, variants.FULL_DEMO, args)
    other_lr = _variants_file(tmp_path / "b.json", "T2", "variants.py --lr 1e-4", [], lr=1e-4)
    with pytest.raises(SystemExit, match=r"lr: 0\.0001 \(this run: 0\.001\)"):
        variants.reusable_rows(other_lr, variants.FULL_DEMO, args)
    # files from before "lr" was recorded were measured at 1e-3
    assert variants.reusable_rows(_variants_file(tmp_path / "c.json", "T3", "variants.py", []),
                                  variants.FULL_DEMO, args)[0] == {}  # fmt: skip


@pytest.fixture(scope="module")
def results_script():
    from examples.benchmarks import results

    return results


def test_seed_spread_part_lists_runs_and_picks_the_widest_spread_to_cite(results_script):
    spread = {"by_set": {"[1, 2]": {"n": 3, "mean": 0.9, "std": 0.02},
                         "[3, 4]": {"n": 3, "mean": 0.8, "std": 0.05},
                         "[5, 6]": {"n": 1, "mean": 0.7, "std": None},
                         "das at lr 0.0001": {"n": 3, "mean": 0.9, "std": 0.09},
                         "digits: [1, 2] at lr 0.0001": {"n": 3, "mean": 0.9, "std": 0.08}}}  # fmt: skip
    assert results_script.widest_spread(spread)[0] == "[3, 4]"
    assert results_script.widest_spread({"by_set": {"[5, 6]": spread["by_set"]["[5, 6]"]}}) is None
    runs = [
        {"skipped": [3, 4], "seed": s, "eval_accuracy": a, "commit": "abc"}
        for s, a in enumerate((0.75, 0.8, 0.85))
    ]
    section = "\n".join(
        results_script.seed_spread_section({**spread, "runs": runs, "measured": "D", "command": "C"})
    )
    # no "lr" recorded: 1e-3; no "epochs": the demo's 1.7
    assert "| fixed | lr 0.001, 1.7 epochs | 2 | [3, 4] | 0.8500 | abc |" in section
    assert "| [3, 4] | 3 | 0.8000 | 0.0500 |" in section


@pytest.fixture(scope="module")
def seed_spread_script():
    from examples.benchmarks import seed_spread

    return seed_spread


def test_random_draws_keep_their_first_sets_when_more_are_asked(seed_spread_script):
    six, eight = seed_spread_script.random_sets(4, 6), seed_spread_script.random_sets(4, 8)
    assert eight[:6] == six and len({tuple(s) for s in eight}) == 8
    assert all(len(s) == 4 and s == sorted(s) and max(s) < 12 for s in eight)
    assert seed_spread_script.random_sets(6, 6) != seed_spread_script.random_sets(5, 6)


def test_search_picks_are_scored_against_random_sets_and_the_fine_tune_spread(seed_spread_script,
                                                                              results_script):  # fmt: skip
    def run(skipped, seed, accuracy, label, lr=1e-4):
        return {"skipped": skipped, "seed": seed, "eval_accuracy": accuracy, "set": label, "lr": lr,
                "commit": "c"}  # fmt: skip

    accuracies = (0.80, 0.85, 0.90, 0.91, 0.92, 0.94)
    runs = [run([0, 1], 0, 0.95, "das:2"), run([0, 2], 1, 0.93, "das:2"), run([0, 1], 2, 0.94, "das:2"),
            *(run([i, i + 1], 0, a, "random:2") for i, a in zip(range(2, 8), accuracies, strict=True)),
            run([2, 3], 1, 0.81, "random:2"),  # that set's mean: 0.805
            run([9, 10], 0, 0.90, "9,10"), run([9, 10], 1, 0.92, "9,10"),  # widest seed std: 0.0141
            run([0, 1], 0, 0.99, "das:2", lr=1e-3),  # other lr: not mixed in
            {**run([0, 1], 0, 0.99, "das:2"), "epochs": 3.0},  # other fine-tune length: not mixed in
            {**run([4, 5], 0, 0.70, "das:2"), "search_estimator": "prior"}]  # another search  # fmt: skip
    rows = json.loads(json.dumps(seed_spread_script.search_against_chance(runs)))  # as the file holds it
    (row, prior) = sorted(rows, key=lambda r: r["search"])
    assert (row["k"], row["setting"], row["random_sets"]) == (2, "lr 0.0001, 1.7 epochs", 6)
    assert (prior["search"], prior["picks"], prior["random_mean"]) == ("prior", [0.70], row["random_mean"])
    assert row["picks_mean"] == pytest.approx(0.94)
    assert row["random_mean"] == pytest.approx((0.805 + 0.85 + 0.90 + 0.91 + 0.92 + 0.94) / 6)
    assert row["percentile_rank"] == pytest.approx(100 * 5 / 6)  # 0.94 is not below itself
    assert row["random_p80"] == pytest.approx(0.92)
    assert row["finetune_spread"] == pytest.approx(0.0141, abs=1e-4)
    assert row["beats_p80_and_spread"]  # margin 0.0517 > spread, 0.94 >= 0.92
    # the best set measured: the picked [0, 1] (0.95, 0.94), above the best random set (0.94)
    assert row["best_set_margin"] == pytest.approx(0.945 - row["random_mean"])
    against = [row, prior]
    spread = {"runs": runs, "by_set": {}, "measured": "D", "command": "C", "search_against_chance": against}
    section = "\n".join(results_script.seed_spread_section(spread))
    assert "| random | lr 0.0001, 1.7 epochs | 1 | [2, 3] | 0.8100 | c |" in section
    assert "| das:2+prior | lr 0.0001, 1.7 epochs | 0 | [4, 5] | 0.7000 | c |" in section
    assert "| easy-vqa | 2 | lr 0.0001, 1.7 epochs | gates | 0.9500, 0.9300, 0.9400 | 0.9400 | 6 |" in section
    assert "| no (1 of 3 search seeds) |" in section  # one search seed: no verdict yet
    assert f"| {row['margin']:+.4f} | {row['best_set_margin']:+.4f} | yes |" in section
    without_spread = [r for r in runs if r["set"] != "9,10" and r["skipped"] != [2, 3]]
    assert not seed_spread_script.search_against_chance(without_spread)[0]["beats_p80_and_spread"]


def test_rows_name_the_answers_a_variant_gets_wrong(variants, results_script):
    import torch

    labels = torch.tensor([0, 0, 1, 1, 1])
    logits = torch.tensor([[1.0, 0], [0, 1], [0, 1], [0, 1], [1, 0]])
    by_answer = variants.accuracy_by_answer(logits, labels, ["yes", "no", "red"])
    assert by_answer == {"yes": 0.5, "no": 0.6667}  # "red" has no test question
    row = {"task": "t", "model": "m", "spec": "s", "mode": "petl", "eval_accuracy": 0.6,
           "trainable_parameters": 10, "trainable_fraction": 0.1, "date": "D", "command": "C",
           "accuracy_by_answer": by_answer}  # fmt: skip
    section = "\n".join(results_script.transfer_section({"command": "C", "date": "D", "rows": [row]}))
    assert "| yes 0.50, no 0.67 |" in section


def test_question_templates_show_questions_answered_from_the_prior(variants):
    import torch

    names = ["no", "red", "yes"]
    texts = ["is there a red shape?", "is there a red shape?", "is there a red shape?", "what color?"]
    labels = torch.tensor([0, 0, 2, 1])
    logits = torch.tensor([[1.0, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0]])  # always "no" to the template
    by_question = variants.accuracy_by_question(logits, labels, names, texts)
    assert by_question["is there a <answer> shape?"] == {"n": 3, "accuracy": 0.6667, "majority_share": 0.6667}
    assert by_question["what color?"] == {"n": 1, "accuracy": 1.0, "majority_share": 1.0}


def test_question_templates_script_scores_a_bundle_per_template(tiny_bundle, shapes_data, tmp_path):
    """The script's accuracies agree with the Predictor's own answers, row by row."""
    import subprocess

    from edge_vl import Predictor

    out = tmp_path / "templates.json"
    command = [*module("question_templates"), "--eval", str(shapes_data[1]),
               "--bundle", f"tiny={tiny_bundle}", "--out", str(out)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    report = json.loads(out.read_text())
    rows = [json.loads(line) for line in shapes_data[1].read_text().splitlines()]
    assert report["eval_rows"] == len(rows)
    with Predictor(tiny_bundle) as predictor:
        answers = [predictor.predict(shapes_data[1].parent / r["image"], r["text"]).label for r in rows]
    right = [answer == r["label"] for answer, r in zip(answers, rows, strict=True)]
    result = report["bundles"]["tiny"]
    assert result["accuracy"] == pytest.approx(sum(right) / len(rows))
    templates = result["templates"]
    assert set(templates) == {r["text"] for r in rows}  # no answer word occurs in these questions
    for text, t in templates.items():
        mine = [ok for ok, r in zip(right, rows, strict=True) if r["text"] == text]
        assert t["n"] == len(mine)
        assert t["accuracy"] == pytest.approx(sum(mine) / len(mine), abs=1e-4)


def test_template_and_precision_scripts_refuse_eval_labels_the_bundle_cannot_answer(
    tiny_bundle, tiny_fp32_bundle, shapes_data, tmp_path
):
    import subprocess

    rows = [json.loads(line) for line in shapes_data[1].read_text().splitlines()]
    rows[1]["label"] = "octagon"
    for r in rows:  # absolute image paths: the manifest lives outside the shared data folder
        r["image"] = str(shapes_data[1].parent / r["image"])
    evals = tmp_path / "eval-unknown.jsonl"
    evals.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.json"
    for command in (
        [*module("question_templates"), "--eval", evals, "--bundle", f"tiny={tiny_bundle}"],
        [*module("precision_here"), tiny_fp32_bundle, "--train", shapes_data[0], "--eval", evals,
         "--calibration", "4", "--runs", "1", "--threads", "1"],
    ):  # fmt: skip
        command = [*map(str, command), "--out", str(out)]
        run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        assert run.returncode != 0
        assert f"{evals}: labels ['octagon'] are not among the bundle's answers" in run.stderr
        assert not out.exists()


def test_seed_spread_keeps_every_finished_run_when_a_build_fails(seed_spread_script, tmp_path, monkeypatch):
    """The results file is written as runs finish, so a cut-off sweep resumes with --reuse."""
    built = []

    def fake_build(name, work, command, env):
        built.append(name)
        if "seed1" in name:
            raise RuntimeError("killed")
        epochs = float(command[command.index("--epochs") + 1]) if "--epochs" in command else FULL_DEMO.epochs
        return {"run": name, "command": " ".join(command), "skipped": [0, 3], "eval_accuracy": 0.9,
                "lr": 1e-4, "epochs": epochs, "commit": "c"}  # fmt: skip

    monkeypatch.setattr(seed_spread_script, "run_build", fake_build)
    out = tmp_path / "spread.json"
    argv = [
        "seed_spread.py",
        "--work",
        str(tmp_path / "w"),
        "--sets",
        "0,3",
        "--seeds",
        "0,1,2",
        "--out",
        str(out),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match="skip0-3-seed1"):
        seed_spread_script.main()
    assert sorted(r["seed"] for r in json.loads(out.read_text())["runs"]) == [0, 2]
    built.clear()
    monkeypatch.setattr(sys, "argv", [*argv[:-1], str(tmp_path / "again.json"), "--reuse", str(out)])
    with pytest.raises(SystemExit):
        seed_spread_script.main()
    assert built == ["skip0-3-seed1"]  # only the missing run is rebuilt
    built.clear()
    monkeypatch.setattr(sys, "argv", [*argv[:-1], str(tmp_path / "longer.json"), "--reuse", str(out),
                                      "--seeds", "0", "--epochs", "3.5"])  # fmt: skip
    seed_spread_script.main()
    assert built == ["skip0-3-seed0-3.5ep"]  # another fine-tune length: built in its own folder
    assert list(json.loads((tmp_path / "longer.json").read_text())["by_set"]) == [
        f"[0, 3] at lr 0.0001, {FULL_DEMO.epochs:g} epochs", "[0, 3] at lr 0.0001, 3.5 epochs"]  # fmt: skip


def test_a_random_draw_can_be_split_over_two_jobs(seed_spread_script, tmp_path, monkeypatch):
    built = []

    def fake_build(name, work, command, env):
        built.append(command[command.index("--skip-layers") + 1])
        skipped = [int(i) for i in built[-1].split(",")]
        return {
            "run": name,
            "command": "c",
            "skipped": skipped,
            "eval_accuracy": 0.9,
            "lr": 1e-4,
            "epochs": FULL_DEMO.epochs,
            "commit": "c",
        }

    monkeypatch.setattr(seed_spread_script, "run_build", fake_build)
    draw = [",".join(map(str, s)) for s in seed_spread_script.random_sets(4, 3)]
    for spec, out in (("4:3@2", "second.json"), ("4:1", "first.json")):
        monkeypatch.setattr(sys, "argv", ["seed_spread.py", "--work", str(tmp_path / "w"), "--random", spec,
                                          "--seeds", "0", "--out", str(tmp_path / out)])  # fmt: skip
        seed_spread_script.main()
    assert built == [draw[1], draw[2], draw[0]]  # the two jobs together ran the draw once
    runs = json.loads((tmp_path / "second.json").read_text())["runs"]
    assert {r["set"] for r in runs} == {"random:4"}
    # a drawn set measured before by name is reused, and counted as the draw's
    by_name = {"run": "r", "command": "c", "skipped": [int(i) for i in draw[0].split(",")], "seed": 0,
               "eval_accuracy": 0.8, "lr": 1e-4, "epochs": FULL_DEMO.epochs, "commit": "c",
               "set": draw[0]}  # fmt: skip
    (tmp_path / "named.json").write_text(json.dumps({"runs": [by_name]}))
    monkeypatch.setattr(sys, "argv", ["seed_spread.py", "--work", str(tmp_path / "w"), "--random", "4:1",
                                      "--seeds", "0", "--reuse", str(tmp_path / "named.json"),
                                      "--out", str(tmp_path / "all.json")])  # fmt: skip
    seed_spread_script.main()
    (run,) = json.loads((tmp_path / "all.json").read_text())["runs"]
    assert len(built) == 3 and (run["set"], run["eval_accuracy"]) == ("random:4", 0.8)


def test_rerunning_a_part_that_reads_a_file_keeps_the_machine_of_the_timed_parts(results_script, tmp_path,
                                                                                 monkeypatch):  # fmt: skip
    spread = tmp_path / "spread.json"
    runs = [{"skipped": [0], "seed": s, "eval_accuracy": a, "lr": 1e-4, "commit": "c", "set": "0"}
            for s, a in ((0, 0.9), (1, 0.92))]  # fmt: skip
    spread.write_text(json.dumps({"runs": runs, "by_set": {}, "measured": "D", "command": "C"}))
    old = {"cpu": "Old CPU", "cores": 2, "flags": {"AVX512F": True}, "python": "3.11.0"}
    (tmp_path / "RESULTS.json").write_text(
        json.dumps({"machine": old, "versions": {"torch": "1"}, "date": "D0"})
    )
    monkeypatch.setattr(sys, "argv", ["results.py", "--out", str(tmp_path), "--parts", "s",
                                      "--seed-spread", str(spread)])  # fmt: skip
    results_script.main()
    saved = json.loads((tmp_path / "RESULTS.json").read_text())
    assert saved["machine"] == old and saved["versions"] == {"torch": "1"} and saved["date"] != "D0"
    text = (tmp_path / "RESULTS.md").read_text()
    assert "the timed parts (a, b, c, d, k) ran on **Old CPU** (2 cores; ISA: AVX512F)" in text
    assert "| fixed | lr 0.0001, 1.7 epochs | 1 | [0] | 0.9200 | c |" in text


def test_precision_here_scores_fp32_fp16_weights_and_int8_of_a_bundle(
    tiny_bundle, tiny_fp32_bundle, shapes_data, tmp_path
):
    import subprocess

    from edge_vl import Predictor

    refused = subprocess.run([*module("precision_here"), str(tiny_bundle), "--train", str(shapes_data[0]),
                              "--eval", str(shapes_data[1]), "--out", str(tmp_path / "no.json")],
                             capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert refused.returncode != 0 and "--precision fp32" in refused.stderr  # an fp16 bundle: says how
    out, work = tmp_path / "precision.json", tmp_path / "int8"
    command = [*module("precision_here"), str(tiny_fp32_bundle),
               "--train", str(shapes_data[0]), "--eval", str(shapes_data[1]), "--calibration", "8",
               "--runs", "3", "--threads", "1", "--cold-starts", "1", "--work", str(work),
               "--out", str(out)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    report = json.loads(out.read_text())
    rows = [json.loads(line) for line in shapes_data[1].read_text().splitlines()]
    with Predictor(tiny_fp32_bundle) as predictor:
        answers = [predictor.predict(shapes_data[1].parent / r["image"], r["text"]).label for r in rows]
    assert report["accuracy"]["fp32"] == pytest.approx(
        sum(a == r["label"] for a, r in zip(answers, rows, strict=True)) / len(rows)
    )
    assert 0 <= report["accuracy"]["int8"] <= 1 and 0 <= report["int8_agreement_with_fp32"] <= 1
    assert (report["calibration_rows"], report["eval_rows"]) == (8, len(rows))
    assert report["int8_speedup"] > 0 and report["reference_graph"]["int8_layers"] > 0
    weights = report["weights_bytes"]  # FP16 weights: half the file, the same graph
    assert 0.4 < weights["fp16"] / weights["fp32"] < 0.6 and 0 <= report["fp16_agreement_with_fp32"] <= 1
    cold = report["cold_start_ms"]
    assert set(cold) == {"fp32", "fp16", "int8"} and min(cold.values()) > 0
    assert (work / "model-int8.xml").is_file()  # kept for a rerun

    def quantizes(calibration: str) -> bool:
        at = command.index("--calibration") + 1
        again = [*command[:at], calibration, *command[at + 1 :]]
        return "quantizing" in subprocess.run(again, check=True, capture_output=True, text=True).stdout

    assert not quantizes("8")  # same FP32 weights and calibration rows: the kept INT8 IR is reused
    assert quantizes("6")  # a kept IR made from other calibration rows is not


def test_a_benchmark_build_that_stopped_keeps_its_progress_for_the_rerun(tmp_path):
    """``run_build`` reruns an unfinished build in place: its work directory (the build's
    checkpoints) and log are kept, not wiped, so the build resumes."""
    import subprocess

    from examples.benchmarks.processes import run_build

    work = tmp_path / "runs" / "seed0" / ".bundle.work"
    work.mkdir(parents=True)
    (work / "state.pt").write_bytes(b"checkpoint")
    (work.parent / "build.log").write_text("first part\n")
    fails = [sys.executable, "-c", "print('second part'); raise SystemExit(1)"]
    with pytest.raises(subprocess.CalledProcessError):
        run_build("seed0", tmp_path / "runs", fails, {})
    assert (work / "state.pt").read_bytes() == b"checkpoint"
    assert (work.parent / "build.log").read_text() == "first part\nsecond part\n"


def test_the_compute_plan_benchmark_keeps_finished_seeds_and_builds_with_the_plan(
    tmp_path, monkeypatch, capsys
):
    from examples.benchmarks import compute_plan as script

    commands = []

    def fake_build(name, work, command, env):
        commands.append(command)
        return {"run": name, "skipped": [1, 2], "eval_accuracy": 0.98}

    def fake_measured(bundle, runs):
        return {"plan": {"chosen": 64}, "compare": {"speedup_of_bundle": {"openvino_full": 1.7}}}

    monkeypatch.setattr(script, "run_build", fake_build)
    monkeypatch.setattr(script, "measured", fake_measured)
    out = tmp_path / "plan.json"
    for seeds in ("0", "0,1"):
        argv = ["compute_plan.py", "--work", str(tmp_path / "w"), "--out", str(out), "--seeds", seeds]
        monkeypatch.setattr(sys, "argv", argv)
        script.main()
    assert len(commands) == 2  # seed 0 was not built again
    assert "--image-sizes" in commands[0] and "--flops-budget" in commands[0]
    assert [r["seed"] for r in json.loads(out.read_text())["runs"]] == [0, 1]
    assert "| 1 | 64 px | [1, 2] | 0.9800 | 1.70× |" in capsys.readouterr().out


def test_the_compute_plan_benchmark_runs_another_task_and_times_finished_bundles_again(
    tmp_path, monkeypatch, capsys
):
    from examples.benchmarks import compute_plan as script

    commands, timed = [], []
    monkeypatch.setattr(script, "run_build", lambda name, work, command, env: commands.append(command) or {
        "run": name, "skipped": [], "eval_accuracy": 0.9})  # fmt: skip
    monkeypatch.setattr(script, "measured", lambda bundle, runs: timed.append(bundle) or {
        "plan": None, "compare": {"speedup_of_bundle": {"openvino_full": 1.0 + len(timed)}}})  # fmt: skip
    out, work = tmp_path / "plan.json", tmp_path / "w"
    argv = ["compute_plan.py", "--work", str(work), "--out", str(out), "--task", "digits-fixed"]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    command = commands[0]
    assert "--demo" not in command and Path(command[command.index("--data") + 1]).is_file()
    assert json.loads(out.read_text())["task"] == "digits-fixed"
    monkeypatch.setattr(sys, "argv", [*argv[:-1], "easy-vqa"])
    with pytest.raises(SystemExit):  # a results file of another task is not mixed into
        script.main()
    monkeypatch.setattr(sys, "argv", [*argv, "--measure-only", "--work", str(tmp_path / "elsewhere")])
    with pytest.raises(SystemExit):  # a --work without the bundles: says where it looked
        script.main()
    assert f"no bundle in {tmp_path / 'elsewhere' / 'plan-seed0' / 'bundle'}" in capsys.readouterr().err
    (work / "plan-seed0" / "bundle").mkdir(parents=True)
    (work / "plan-seed0" / "bundle" / "manifest.json").write_text("{}")
    monkeypatch.setattr(sys, "argv", [*argv, "--measure-only"])
    script.main()
    assert len(commands) == 1 and timed == [work / "plan-seed0" / "bundle"] * 2
    assert json.loads(out.read_text())["runs"][0]["compare"]["speedup_of_bundle"]["openvino_full"] == 3.0


def test_token_reduction_keeps_the_patches_cls_attends_to_and_times_them_against_smaller_inputs(
    results_script,
):
    from examples.benchmarks.token_reduction import measure

    result = measure([32, 24, 16], [1], runs=2, preset="tiny")  # 16 patches; 9 and 4 kept
    assert result["parity_keep_every_patch"] < 1e-5  # keeping every patch is the tower itself
    assert result["parity_openvino_pruned"] < 1e-4  # the exported pruned graphs compute what torch does
    rows = {r["graph"]: r for r in result["rows"]}
    assert list(rows) == ["32 px", "24 px", "16 px", "32 px, 9 patches after layer 1",
                          "32 px, 4 patches after layer 1"]  # fmt: skip
    assert rows["16 px"]["macs"] < rows["32 px, 4 patches after layer 1"]["macs"] < rows["32 px"]["macs"]
    assert all(r["median"] > 0 for r in rows.values())
    result.update(runs=2, command="c", measured="m", machine={"cpu": "CPU"})
    text = "\n".join(results_script.token_reduction_section(result))
    assert "| 32 px, 4 patches after layer 1 |" in text and "random weights: speed only" in text
    assert "OpenVINO's pruned graphs (f32, as timed) compute what torch's do" in text


def test_the_plan_part_compares_means_over_seeds_with_petl_only_at_full_size(results_script):
    candidate = {"size": 64, "feasible": True, "skipped": [1], "cost": 2e8, "base_loss": 0.2, "loss_se": 0.01,
                 "estimated_loss": 0.25, "frontier": [[2.5e8, 0.2], [2e8, 0.25]]}  # fmt: skip
    full = {**candidate, "size": 128, "skipped": [1, 2], "frontier": [[4e8, 0.1]]}
    plan = {
        "chosen": 64,
        "kind": "flops",
        "limit": 0.5,
        "full_model_macs": 4e8,
        "candidates": [candidate, full],
    }

    def run(seed: int, accuracy: float, speedup: float, skipped: list[int]) -> dict:
        latency = {"openvino_retained": {"median": 10 / speedup}, "openvino_full": {"median": 10.0}}
        compare = {"latency_ms": latency, "speedup_of_bundle": {"openvino_full": speedup}}
        return {"seed": seed, "plan": plan, "skipped": skipped, "eval_accuracy": accuracy, "eval_examples": 9,
                "compare": compare}  # fmt: skip

    petl = [{"seed": s, "skipped": [], "eval_accuracy": a} for s, a in enumerate([0.99, 0.98, 0.97])]
    petl.append({"seed": 0, "skipped": [], "eval_accuracy": 0.5, "image_size": 64})  # not full size
    petl.append({"seed": 0, "skipped": [], "eval_accuracy": 0.5, "task": "digits"})  # another task
    plans = {"command": "c", "measured": "m", "runs": [run(0, 0.97, 1.6, [1]), run(1, 0.95, 1.8, [2])]}
    stored = {"plans": [plans], "petl_only": [{"command": "p", "runs": petl}]}
    text = "\n".join(results_script.compute_plan_section(stored))
    assert "### The demo, `--flops-budget 0.5`" in text
    assert "PETL-only 0.9800 ± 0.0100 (3 seeds), the plan 0.9600 ± 0.0141 (2 seeds)" in text
    assert "**-2.00 points**" in text and "**1.70×**" in text
    assert "Fewer than 3 seeds a side" in text
    # next to the fixed configurations of its task, each at the plan's own cost of that size
    assert "| 64 px, nothing skipped | 0.5000 (1 seed) | 0.250 |" in text
    assert "| 128 px, nothing skipped | 0.9800 ± 0.0100 (3 seeds) | 0.400 |" in text
    # seeds whose picks differ but cost the same are one configuration
    assert "| the plan: 64 px, skip [1] / [2] | 0.9600 ± 0.0141 (2 seeds) | 0.200 |" in text
    # which rule made the choices, read from the candidates each run recorded
    assert "Each choice is the size with the lowest estimated loss" in text
    lower = {**plan, "candidates": [candidate, {**full, "estimated_loss": 0.24}]}  # 64 px is not the lowest
    older = {**plans, "runs": [{**r, "plan": lower} for r in plans["runs"]]}
    text = "\n".join(results_script.compute_plan_section({"plans": [older]}))
    assert "2 of 2 choices are a cheaper size" in text


def test_a_build_from_a_snapshot_records_the_commit_its_commit_file_names(tmp_path):
    from examples.benchmarks.processes import revision

    assert revision(tmp_path) == ""  # no git checkout, no COMMIT file: nothing made up
    (tmp_path / "COMMIT").write_text("0123456789abcdef\n")
    assert revision(tmp_path) == "0123456 (snapshot)"
    assert not revision(ROOT).endswith("(snapshot)")  # a checkout: git's answer
