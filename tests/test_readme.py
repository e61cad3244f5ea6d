"""The README cannot drift from the CLI: every command in its code blocks (after the set-up
commands, which CI runs) is run here, in order, on the tiny test bundle — except the ones marked
``# not run by the README test: <reason>`` — and its Python and JSON examples are run and read."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from edge_vl.cli import cli
from edge_vl.data import read_examples

ROOT = Path(__file__).resolve().parents[1]
SKIP_MARK = "# not run by the README test:"


def readme_blocks() -> list[tuple[str, str]]:
    """(language, code) of the README's code blocks after the set-up section."""
    text = ROOT.joinpath("README.md").read_text(encoding="utf-8")
    after_setup = text.split("## Install profiles", 1)[1]
    return re.findall(r"```(\w+)\n(.*?)\n```", after_setup, flags=re.S)


@pytest.fixture
def sandbox(tmp_path, tiny_bundle, shapes_data, monkeypatch):
    """The files the README's examples name: my-bundle, photo.jpg, pilot-rows.jsonl."""
    shutil.copytree(tiny_bundle, tmp_path / "my-bundle")
    rows = [json.loads(line) for line in shapes_data[1].read_text().splitlines()]
    Image.open(shapes_data[1].parent / rows[0]["image"]).convert("RGB").save(tmp_path / "photo.jpg")
    pilot = "".join(json.dumps({**r, "image": str(shapes_data[1].parent / r["image"])}) + "\n" for r in rows)
    (tmp_path / "pilot-rows.jsonl").write_text(pilot)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_readme_command_runs_or_says_why_not(sandbox):
    commands = [
        line.strip()
        for language, code in readme_blocks()
        if language == "bash"
        for line in code.splitlines()
        if line.strip().startswith("edge-vl ")
    ]
    assert len(commands) >= 8, commands
    ran, skipped = 0, []
    for command in commands:
        if SKIP_MARK in command:
            skipped.append(command.split(SKIP_MARK, 1)[1].strip())
            continue
        args = shlex.split(command.split(" #", 1)[0])[1:]
        result = CliRunner().invoke(cli, args)
        gated = "--min-accuracy" in args and result.exit_code == 3  # the gate itself worked
        assert result.exit_code == 0 or gated, (command, result.output)
        ran += 1
    assert ran >= 6 and all(skipped), (ran, skipped)
    assert (sandbox / "answers.jsonl").is_file() and (sandbox / "buildkey.pub").is_file()


def test_the_readme_python_and_data_examples_run(sandbox):
    blocks = readme_blocks()
    row = next(code for language, code in blocks if language == "json")
    (sandbox / "images").mkdir()
    shutil.copy(sandbox / "photo.jpg", sandbox / "images" / "0001.png")
    (sandbox / "rows.jsonl").write_text(row + "\n")
    assert read_examples(sandbox / "rows.jsonl", check_images=False)[0].label
    code = next(code for language, code in blocks if language == "python")
    exec(compile(code, "README.md", "exec"), {})
    assert (sandbox / "monitor.db").is_file()
