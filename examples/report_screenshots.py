"""Screenshots of a bundle's ``report.html`` as a browser shows it (Debian's ``chromium``, headless).

    python examples/report_screenshots.py BUNDLE --out report.png

Reports are checked the way people see them: a PNG of the whole page (``--width`` × ``--height``
pixels). Chromium is started with no network, no first-run tasks and a throw-away profile.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str | None:
    """The headless-capable browser on PATH, if any."""
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def screenshot(html: Path, png: Path, *, width: int = 1100, height: int = 2600, timeout: float = 120) -> Path:
    """Render ``html`` to ``png`` with headless Chromium; raises if no browser is installed."""
    exe = browser()
    if exe is None:
        raise SystemExit(
            f"no headless browser found ({', '.join(BROWSERS)}); on Debian: apt-get install chromium"
        )
    with tempfile.TemporaryDirectory(prefix="edge-vl-chromium-") as profile:
        subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "--hide-scrollbars",
             f"--screenshot={png.resolve()}", html.resolve().as_uri()],
            check=True, capture_output=True, timeout=timeout,
        )  # fmt: skip
    return png


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--out", type=Path, default=Path("report.png"))
    p.add_argument("--width", type=int, default=1100)
    p.add_argument("--height", type=int, default=2600)
    args = p.parse_args()
    print(f"wrote {screenshot(args.bundle / 'report.html', args.out, width=args.width, height=args.height)}")


if __name__ == "__main__":
    main()
