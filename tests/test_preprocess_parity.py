"""The torch-free preprocessing reproduces Hugging Face's PIL-backend image processor.

edge-vl's ViLT policy is a fixed-size resize (bicubic, aspect ratio not kept, so the exported
graph stays static), rescale by 1/255 and normalise. That is exactly what transformers'
``ViTImageProcessorPil(size={"height": S, "width": S}, resample=BICUBIC, ...)`` does; for square
inputs it is also what ``ViltImageProcessorPil`` does (its shortest-edge resize keeps them square).
Inputs are real photos shipped with scikit-image, real emoji PNGs (Noto and Twemoji, RGBA), emoji-like
palette/LA images, CMYK, odd sizes and an EXIF-rotated JPEG. HF gets the image upright, as its
``load_image`` would make it.
"""

from __future__ import annotations

import importlib.resources
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from edge_vl.runtime.preprocess import default_image_spec, preprocess_image

SKIMAGE_PHOTOS = [
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
    "gravel.png", "horse.png", "hubble_deep_field.jpg", "moon.png", "motorcycle_left.png", "page.png",
    "retina.jpg", "rocket.jpg", "text.png", "logo.png", "color.png",
]  # fmt: skip


def _skimage_dir() -> Path:
    pytest.importorskip("skimage", reason="the 'test' extra installs scikit-image for its sample photos")
    return Path(str(importlib.resources.files("skimage") / "data"))


def _emoji_like(size: int, mode: str) -> Image.Image:
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    d.ellipse((size // 8, size // 8, size - size // 8, size - size // 8), fill=(250, 200, 30, 255))
    d.ellipse((size // 3, size // 3, size // 3 + size // 10, size // 3 + size // 10), fill=(40, 20, 0, 255))
    d.rectangle((0, 0, size // 5, size // 5), fill=(200, 30, 30, 120))  # half-transparent corner
    return im if mode == "RGBA" else (im.convert("P") if mode == "P" else im.convert(mode))


def _generated() -> dict[str, bytes]:
    out = {}
    for size, mode in ((64, "RGBA"), (72, "RGBA"), (136, "RGBA"), (64, "LA"), (96, "P")):
        buf = io.BytesIO()
        im = _emoji_like(size, mode)
        if mode == "P":  # palette image with a transparent index
            im.info["transparency"] = 0
        im.save(buf, format="PNG")
        out[f"emoji-{mode}-{size}.png"] = buf.getvalue()
    rng = np.random.default_rng(0)
    for h, w in ((37, 101), (333, 17), (500, 499), (31, 31)):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
        out[f"noise-{h}x{w}.png"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).convert("CMYK").save(
        buf, format="JPEG"
    )
    out["cmyk.jpg"] = buf.getvalue()
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90° counter-clockwise to display
    Image.fromarray(rng.integers(0, 256, (40, 90, 3), dtype=np.uint8)).save(buf, format="JPEG", exif=exif)
    out["exif-rotated.jpg"] = buf.getvalue()
    return out


EMOJI_DIR = Path(__file__).parent / "data" / "emoji"  # real Noto and Twemoji PNGs, see its README


def _cases() -> list[tuple[str, bytes]]:
    photos = [(name, (_skimage_dir() / name).read_bytes()) for name in SKIMAGE_PHOTOS]
    emoji = [(p.name, p.read_bytes()) for p in sorted(EMOJI_DIR.glob("*.png"))]
    return photos + emoji + sorted(_generated().items())


@pytest.fixture(scope="module")
def hf_processor():
    from transformers import ViTImageProcessorPil
    from transformers.image_utils import PILImageResampling

    return ViTImageProcessorPil(
        size={"height": 64, "width": 64}, resample=PILImageResampling.BICUBIC, do_convert_rgb=True,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], rescale_factor=1 / 255,
    )  # fmt: skip


def test_parity_with_the_hf_pil_processor_on_real_and_odd_images(hf_processor):
    spec = default_image_spec(64)
    cases = _cases()
    assert len(cases) >= 40
    for name, data in cases:
        ours = preprocess_image(data, spec)
        upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        theirs = hf_processor(images=upright, return_tensors="np")["pixel_values"][0]
        assert ours.shape == theirs.shape == (3, 64, 64), name
        assert np.max(np.abs(ours - theirs)) <= 1e-5, name


def test_square_images_match_the_vilt_processor():
    from transformers import ViltImageProcessorPil

    processor = ViltImageProcessorPil(size={"shortest_edge": 64}, do_convert_rgb=True)
    spec = default_image_spec(64)
    for name, data in _generated().items():
        if "emoji" not in name:
            continue
        theirs = processor(images=Image.open(io.BytesIO(data)), return_tensors="np")["pixel_values"][0]
        assert np.max(np.abs(preprocess_image(data, spec) - theirs)) <= 1e-5, name


def test_sixteen_bit_grey_is_scaled_not_clipped():
    """PIL's own I;16 → RGB conversion clips at 255 (a 16-bit camera frame turns white); edge-vl
    scales 0…65535 to 0…255 instead. This is a deliberate difference from transformers."""
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    spec = default_image_spec(64, mean=(0, 0, 0), std=(1, 1, 1))
    out = preprocess_image(buf.getvalue(), spec)
    assert out.min() == 0.0 and out.max() == 1.0
    assert 0.45 < float(np.median(out)) < 0.55  # mid-grey in the middle, not saturated


def test_shortest_edge_and_centre_crop_match_the_clip_processor():
    """CLIP's policy: shorter side to 64 (aspect kept), centre 56×56 crop, CLIP's mean/std."""
    from transformers import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56})
    spec = default_image_spec(56, shortest_edge=64, mean=processor.image_mean, std=processor.image_std)
    for name, data in _cases():
        ours = preprocess_image(data, spec)
        upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        theirs = processor(images=upright, return_tensors="np")["pixel_values"][0]
        assert ours.shape == theirs.shape == (3, 56, 56), name
        assert np.max(np.abs(ours - theirs)) <= 1e-5, name
    with pytest.raises(ValueError, match="smaller than the crop"):
        default_image_spec(56, shortest_edge=48)
