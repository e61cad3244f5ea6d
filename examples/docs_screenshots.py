"""Screenshots of the documentation site as a browser shows it: the home page, a guide and the API
reference, built with ``mkdocs build --strict`` into a temporary folder and drawn by headless
Chromium (:mod:`examples.report_screenshots`).

    python -m examples.docs_screenshots --out docs/screenshots
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from examples.report_screenshots import screenshot

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"home": "index.html", "guide-operations": "guides/operations/index.html",
         "api-reference": "reference/api/index.html"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-vl-site-") as site:
        subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", site], cwd=ROOT, check=True
        )
        for name, page in PAGES.items():
            print(f"wrote {screenshot(Path(site) / page, args.out / f'{name}.png', width=1200, height=1400)}")


if __name__ == "__main__":
    main()
