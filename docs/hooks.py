"""MkDocs hooks: ``{% include "PATH" %}`` in a page is replaced by that file of the repository (the
generated RESULTS.md, the CHANGELOG), so the site shows the files the commands write, never a copy;
the plots RESULTS.md links are added to the site beside it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
_INCLUDE = re.compile(r'\{% include "([^"]+)" %\}')
#: plots made by examples/benchmarks/results.py, linked from RESULTS.md
PLOTS = ROOT / "examples" / "benchmarks"


def on_files(files: Files, config: Any) -> Files:
    for svg in sorted(PLOTS.glob("*.svg")):
        files.append(File.generated(config, svg.name, abs_src_path=str(svg)))
    return files


def on_page_markdown(markdown: str, **_: object) -> str:
    def include(match: re.Match[str]) -> str:
        path = (ROOT / match.group(1)).resolve()
        if ROOT not in path.parents:
            raise ValueError(f"include outside the repository: {match.group(1)}")
        text = re.sub(r"^# .*\n", "", path.read_text(encoding="utf-8"), count=1)  # the page has its title
        text = text.replace("](docs/", "](")  # links from the repository root into the site
        return text.replace("] [", "] \\[")  # "[4] [0]" is two skip sets, not a reference link

    return _INCLUDE.sub(include, markdown)
