"""Promises of the project itself: README commands = CI, a runtime-only install that works, data parsing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

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


def device_modules() -> list[Path]:
    """The device core: every module of edge_vl/ outside the torch side (training/, pipeline/)."""
    torch_side = {ROOT / "edge_vl" / "training", ROOT / "edge_vl" / "pipeline"}
    return sorted(p for p in (ROOT / "edge_vl").rglob("*.py") if not torch_side & set(p.parents))


def _lint(path: Path, source: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--stdin-filename", str(path), "-"],
        input=source, capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip


@pytest.mark.parametrize("library", ["torch", "transformers", "nncf", "edge_vl.training.search",
                                     "edge_vl.pipeline", "edge_vl.converters"])  # fmt: skip
def test_lint_refuses_torch_side_imports_in_every_device_module(library):
    """The lint rule (edge_vl/ruff.toml) covers every device-side folder: a module-level import of
    the torch side fails ruff there (the CLI may import it inside a command, after checking the
    build extra is installed), and is allowed on the torch side."""
    folders = sorted({p.parent for p in device_modules()})
    assert ROOT / "edge_vl" / "runtime" in folders and ROOT / "edge_vl" / "cli" in folders
    for folder in folders:
        result = _lint(folder / "probe.py", f"import {library}\n")
        assert result.returncode == 1 and "TID25" in result.stdout, (folder, library, result.stdout)
    for torch_side in ("training", "pipeline"):
        result = _lint(ROOT / "edge_vl" / torch_side / "probe.py", f"import {library}\n\nprint({library})\n")
        assert "TID25" not in result.stdout, (torch_side, result.stdout)


def test_the_device_api_imports_no_training_library(tiny_bundle, tmp_path):
    """Importing edge_vl, predicting, reading a bundle and checking its signature load no torch,
    transformers or nncf (in a fresh interpreter)."""
    from edge_vl.signing import generate_key, sign_bundle

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    generate_key(tmp_path / "k", tmp_path / "k.pub")
    sign_bundle(bundle, tmp_path / "k")
    code = textwrap.dedent(f"""
        import sys
        import edge_vl
        from edge_vl import BuildConfig, Predictor, read_bundle
        read_bundle({str(bundle)!r}, trusted_keys=[{str(tmp_path / "k.pub")!r}])
        p = Predictor({str(bundle)!r}, trusted_keys={str(tmp_path / "k.pub")!r})
        p.run(p.dummy_inputs())
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "nncf"))
        print(loaded)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


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


def test_no_function_in_edge_vl_is_over_60_lines_without_a_reason():
    """Long functions are split (or say why not in a ``# long:`` comment on the line above)."""
    import ast

    long = []
    for path in sorted((ROOT / "edge_vl").rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                reason = first >= 2 and lines[first - 2].strip().startswith("# long:")
                if node.end_lineno - node.lineno + 1 > 60 and not reason:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long, long


def test_the_library_is_laid_out_by_the_formatter_alone():
    """No ``# fmt: skip`` in ``edge_vl/`` or ``converters/``: ruff format decides their layout."""
    marked = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("edge_vl", "converters")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if line.rstrip().endswith("# fmt: skip")
    ]
    assert not marked, marked


def test_renaming_a_manifest_field_makes_the_type_checker_name_every_reader(tmp_path):
    """The manifest is typed from build to device: rename ``Metrics.eval_accuracy`` in the schema and
    mypy (not a test run) reports each module that reads or writes it."""
    pytest.importorskip("mypy")
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "edge_vl", copy / "edge_vl", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    records = copy / "edge_vl" / "build_records.py"  # Metrics: the manifest's record of the build
    text = records.read_text(encoding="utf-8")
    assert text.count("    eval_accuracy: float\n") == 1
    records.write_text(text.replace("    eval_accuracy: float\n", "    accuracy: float\n"), encoding="utf-8")
    readers = sorted(
        str(p.relative_to(copy))
        for p in (copy / "edge_vl").rglob("*.py")
        if re.search(r"\.eval_accuracy\b|\beval_accuracy=", p.read_text(encoding="utf-8"))
    )
    assert len(readers) >= 3, readers  # the report, the CLI and the build write or read it
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(copy / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "cache"), "edge_vl"],
        capture_output=True, text=True, cwd=copy, timeout=900,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-2000:]
    flagged = {line.split(":")[0] for line in result.stdout.splitlines() if "eval_accuracy" in line}
    assert flagged == set(readers), (readers, result.stdout[-3000:])
