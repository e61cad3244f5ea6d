"""Builds on several processes (torchrun, torch.distributed, gloo on the CPU): one bandit across the
ranks, the same result as one process with the same global batch, and resumption after a kill."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_vl import read_bundle
from edge_vl.cli import cli
from tests.conftest import build_args

ROOT = Path(__file__).resolve().parents[1]
#: the paper's bandit, one round per step: the rounds must agree across ranks
SEARCH = ("--skip-count", "1", "--search-epochs", "12", "--das-turn", "1", "--checkpoint-every", "1",
          "--device", "cpu", "--search-estimator", "gates")  # fmt: skip


def torchrun(args: list[str], *, port: int) -> subprocess.Popen:
    """``torchrun --nproc-per-node 2 -m edge_vl …`` in its own process group, one thread per rank."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command = [*launcher, "--master-port", str(port), "-m", "edge_vl", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it (torchrun starts its workers in their own groups)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo = [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        with contextlib.suppress(ProcessLookupError):
            os.kill(current, signal.SIGKILL)


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


@pytest.fixture(scope="module")
def two_process_bundle(tmp_path_factory, tiny_checkpoint, shapes_data) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "bundle"
    args = [a for a in build_args(tiny_checkpoint, shapes_data, out, *SEARCH) if a != "--quiet"]
    output = finish(torchrun(args, port=29511))  # with its progress lines
    (out.parent / "torchrun.log").write_text(output)
    return out


def test_two_processes_choose_what_one_process_chooses(
    tmp_path, two_process_bundle, tiny_checkpoint, shapes_data
):
    out = tmp_path / "one"
    result = CliRunner().invoke(cli, build_args(tiny_checkpoint, shapes_data, out, *SEARCH))
    assert result.exit_code == 0, result.output
    assert "1 process" in result.output
    one, two = read_bundle(out).data, read_bundle(two_process_bundle).data
    rounds = two["skip_plan"]["search"]["rounds"]
    assert rounds and all(r["gates_agree"] for r in rounds)  # one bandit: the same gates on every rank
    assert two["architecture"]["skipped"] == one["architecture"]["skipped"]
    assert abs(two["metrics"]["eval_accuracy"] - one["metrics"]["eval_accuracy"]) <= 0.01
    assert two["training"]["steps"] == one["training"]["steps"]
    # no dropout in the tiny ViLT: the ranks' averaged gradients are one process's, up to rounding
    assert two["training"]["final_loss"] == pytest.approx(one["training"]["final_loss"], rel=1e-4)
    # rank 0 speaks for the build: every progress line once
    output = (two_process_bundle.parent / "torchrun.log").read_text()
    progress = re.findall(r"(?:DAS search|fine-tune): step \d+/\d+", output)
    assert progress and len(progress) == len(set(progress)), output[-3000:]
    assert output.count("2 processes (torch.distributed)") == 1


def test_a_killed_two_process_build_resumes_to_the_same_skip_set(
    tmp_path, two_process_bundle, tiny_checkpoint, shapes_data
):
    out = tmp_path / "bundle"
    args = build_args(tiny_checkpoint, shapes_data, out, *SEARCH)
    process = torchrun(args, port=29512)
    state = tmp_path / ".bundle.work" / "search" / "state.pt"
    deadline = time.monotonic() + 300
    while not state.is_file():  # the search has saved its first checkpoint: kill it mid-search
        assert process.poll() is None and time.monotonic() < deadline, (
            "the build ended before it could be killed"
        )
        time.sleep(0.05)
    kill_tree(process.pid)
    process.wait()
    assert not out.exists()
    output = finish(torchrun(args, port=29513))
    assert "resuming the unfinished build" in output
    resumed = read_bundle(out).data
    assert (
        resumed["architecture"]["skipped"] == read_bundle(two_process_bundle).data["architecture"]["skipped"]
    )
    assert json.dumps(resumed["skip_plan"]["search"]["gates"]) == json.dumps(
        read_bundle(two_process_bundle).data["skip_plan"]["search"]["gates"]
    )


def test_two_processes_take_one_process_steps_with_an_uneven_last_batch(tmp_path, tiny_checkpoint):
    """The search trains on 25 rows in batches of 8: the last batch of each epoch has one row, which
    one of the two ranks gets. Every warm-up step's loss matches one process's, and both runs skip
    the same layers (or both say the pick is undecided)."""
    from tests.conftest import make_shapes_dataset

    data = make_shapes_dataset(tmp_path / "data", n_images=19, seed=7)  # 28 training rows
    extra = ("--skip-count", "2", "--device", "cpu")
    one_out, two_out = tmp_path / "one", tmp_path / "two"
    result = CliRunner().invoke(cli, build_args(tiny_checkpoint, data, one_out, *extra))
    assert result.exit_code == 0, result.output
    finish(torchrun(build_args(tiny_checkpoint, data, two_out, *extra), port=29514))
    one, two = (read_bundle(out).data["skip_plan"] for out in (one_out, two_out))
    assert one["search"]["train_rows"] == 25 and one["search"]["steps"] == 4  # 8 + 8 + 8 + 1 rows
    assert two["search"]["losses"] == pytest.approx(one["search"]["losses"], rel=1e-4)
    assert len(one["search"]["losses"]) == 4
    assert (one["skipped"], one["method"]) == (two["skipped"], two["method"]) or (
        one["method"] == two["method"] == "das-undecided"
    )
