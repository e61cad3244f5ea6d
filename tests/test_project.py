"""Promises of the project itself: README commands = CI, a runtime-only install that works, data parsing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edge_vl import DataError
from edge_vl.data import read_examples

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    section = ROOT.joinpath("README.md").read_text().split("## Set-up on a fresh machine", 1)[1]
    return re.findall(r"```bash\n(.+?)\n```", section.split("\n## ", 1)[0])


def test_ci_runs_the_readme_test_command():
    commands = readme_commands()
    assert len(commands) == 2, commands
    assert "edge-vl build" in commands[0] and "pytest" in commands[1]
    assert commands[1] in ROOT.joinpath(".ci/run").read_text()


RUNTIME_SITE_PACKAGES_LIMIT_MB = 300


def test_offline_wheelhouse_install_predicts_without_torch(tmp_path, tiny_bundle, shapes_data):
    """The README's factory install: a wheelhouse made on a connected machine (`pip wheel`), then
    `pip install --no-index --find-links` into a fresh venv. No torch, transformers or nncf; the
    venv's site-packages stay under the limit; the installed `edge-vl predict` works."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("edge_vl", "converters"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    wheelhouse = tmp_path / "wheelhouse"
    made = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheelhouse), str(src)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    assert not any(wheel.name.startswith(("torch-", "transformers-")) for wheel in wheelhouse.iterdir())
    [ours] = wheelhouse.glob("edge_vl-*.whl")
    with zipfile.ZipFile(ours) as wheel:  # training weights stay out of the device wheel
        assert not [name for name in wheel.namelist() if name.endswith(".safetensors")]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-index",
         "--find-links", str(wheelhouse), "edge-vl"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-2000:]
    for heavy in ("torch", "transformers", "nncf", "tokenizers"):
        probe = subprocess.run([python, "-c", f"import {heavy}"], capture_output=True)
        assert probe.returncode != 0, f"{heavy} got installed by the runtime-only install"
    [site_packages] = venv.glob("lib/python*/site-packages")
    size_mb = sum(f.stat().st_size for f in site_packages.rglob("*") if f.is_file()) / 1e6
    assert size_mb <= RUNTIME_SITE_PACKAGES_LIMIT_MB, f"runtime install is {size_mb:.0f} MB"

    row = json.loads(shapes_data[1].read_text().splitlines()[0])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(venv / "bin" / "edge-vl"), "predict", str(tiny_bundle),
         str(shapes_data[1].parent / row["image"]), row["text"], "--json"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["label"]
    build = subprocess.run(
        [str(venv / "bin" / "edge-vl"), "build", "--demo", "--out", str(tmp_path / "b")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert build.returncode != 0 and 'pip install "edge-vl[build]"' in build.stderr, build.stderr


def test_csv_manifest_and_relative_paths(tmp_path, shapes_data):
    image = next((shapes_data[0].parent / "images").iterdir())
    (tmp_path / "img.png").write_bytes(image.read_bytes())
    (tmp_path / "d.csv").write_text('image,text,label\nimg.png,"what, exactly?",red\n')
    [example] = read_examples(tmp_path / "d.csv")
    assert example.image == tmp_path / "img.png" and example.text == "what, exactly?" and example.line == 2


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ('{"image": "a.png", "text": "t"}\n', "d.jsonl", ":1: missing field 'label'"),
        ('{"image": "a.png", "text": "t", "label": "x"}\n{oops\n', "d.jsonl", ":2: invalid JSON"),
        ('["a.png", "t", "x"]\n', "d.jsonl", ":1: row must be an object"),
        ('{"image": "a.png", "text": " ", "label": "x"}\n', "d.jsonl", ":1: field 'text' is empty"),
        ("image,text\na.png,t\n", "d.csv", ":1: CSV header lacks column(s) ['label']"),
        ("", "d.jsonl", "manifest has no rows"),
        ("x", "d.txt", "unsupported manifest type"),
    ],
)
def test_bad_manifests_name_file_line_and_field(tmp_path, content, name, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as err:
        read_examples(path, check_images=False)
    assert str(path) in str(err.value) and message in str(err.value)


def import_graph() -> dict[str, set[str]]:
    """Module → the edge_vl/converters modules it imports (at module level or inside functions)."""
    import ast

    modules = {}
    for package, directory in (("edge_vl", "edge_vl"), ("edge_vl.converters", "converters")):
        for path in (ROOT / directory).rglob("*.py"):
            parts = [package, *path.relative_to(ROOT / directory).with_suffix("").parts]
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {resolve(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {resolve(f"{node.module}.{a.name}") or resolve(node.module) for a in node.names}
        graph[name] = {t for t in targets if t and t != name}
    return graph


def test_every_package_is_installed_under_edge_vl():
    """pyproject.toml lists the packages by hand (converters/ maps to edge_vl.converters): a new
    sub-package missing from the list would be absent from the wheel."""
    import tomllib

    setuptools = tomllib.loads(ROOT.joinpath("pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(("edge_vl", *init.parent.relative_to(ROOT / "edge_vl").parts))
        for init in (ROOT / "edge_vl").rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == found | {"edge_vl.converters"}
    assert setuptools["package-dir"] == {"edge_vl.converters": "converters"}


def test_no_import_cycles_between_modules():
    graph = import_graph()
    assert "edge_vl.pipeline.plan" in graph["edge_vl.pipeline"]  # the graph sees the imports
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " → ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_the_runtime_cannot_import_training_libraries():
    """A lint rule (edge_vl/runtime/ruff.toml) refuses torch, transformers and nncf in edge_vl/runtime/."""
    for library in ("torch", "transformers", "nncf"):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--no-cache", "--stdin-filename",
             str(ROOT / "edge_vl" / "runtime" / "probe.py"), "-"],
            input=f"import {library}\n", capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        assert result.returncode == 1 and "TID251" in result.stdout, (library, result.stdout)


def test_readme_tables_render():
    """Every Markdown table in the README has a header, a separator and rows of the same width (a
    blank line inside a table turns the rest into a paragraph of pipes)."""
    lines = ROOT.joinpath("README.md").read_text(encoding="utf-8").splitlines()
    in_code = False
    for i, line in enumerate(lines):
        in_code = in_code != line.startswith("```")
        if in_code or not line.startswith("|") or (i and lines[i - 1].startswith("|")):
            continue
        end = next((n for n, row in enumerate(lines[i:]) if not row.startswith("|")), len(lines) - i)
        block = lines[i : i + end]
        separator = len(block) >= 2 and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", block[1])
        assert separator, f"README line {i + 1}: {line}"
        widths = {row.count("|") - row.count("\\|") for row in block}
        assert len(widths) == 1, f"README line {i + 1}: rows of different widths {widths}"
