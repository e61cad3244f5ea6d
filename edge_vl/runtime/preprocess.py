"""Image preprocessing in Pillow + numpy, driven by the manifest's ``preprocessing.image``
(:class:`edge_vl.bundle.ImageSpec`).

The same function runs at build time (to make training tensors) and on the device, so the model
sees identical pixels in both places.

Only the formats cameras and people produce are decoded: JPEG (and its multi-picture variant MPO),
PNG, BMP, TIFF, WebP and GIF (first frame). Pillow tries no other decoder, so an EPS, PDF, PSD, ICO…
file is refused from its header whatever its name, and no external program (Ghostscript for EPS)
can ever be started by an untrusted image.

Images are decoded, EXIF-rotated, converted to RGB (transparent pixels composited on
``background``), resized to exactly ``size`` (aspect ratio not kept: a fixed size keeps the
exported graph static), rescaled and normalised, and returned as float32 NCHW.

With ``"shortest_edge": N`` in the spec (CLIP's policy), the image is instead resized so that its
shorter side is N (aspect ratio kept, the longer side truncated to an integer as transformers
does) and the centre ``size`` is cropped out: the output is still exactly ``size``.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edge_vl.errors import InputError
from edge_vl.manifest import ImageSpec

ImageInput = str | Path | bytes | bytearray | Image.Image | np.ndarray

#: images with more pixels than this are refused before they are decoded (decompression bombs);
#: override per call with ``max_pixels`` or per Predictor with ``max_image_pixels``
MAX_PIXELS = 50_000_000

#: the Pillow formats edge-vl decodes (``Image.open(formats=...)``); MPO comes with JPEG
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF")
_OPENED_AS = frozenset(IMAGE_FORMATS) | {"MPO"}

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def default_image_spec(
    size: int | Sequence[int],
    *,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    resample: str = "bicubic",
    rescale_factor: float = 1 / 255,
    shortest_edge: int | None = None,
) -> ImageSpec:
    """A spec with a fixed square (or ``[H, W]``) size; with ``shortest_edge``, a shortest-edge
    resize followed by a centre crop to that size."""
    hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if shortest_edge is not None and shortest_edge < max(hw):
        raise ValueError(f"shortest_edge {shortest_edge} is smaller than the crop size {list(hw)}")
    return ImageSpec(
        size=hw,
        shortest_edge=None if shortest_edge is None else int(shortest_edge),
        resample=resample,
        rescale_factor=float(rescale_factor),
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
        background=(255, 255, 255),
    )


def load_image(
    image: ImageInput,
    background: Sequence[int] = (255, 255, 255),
    *,
    max_pixels: int = MAX_PIXELS,
    name: str = "image bytes",
) -> Image.Image:
    """Decode any accepted input into an RGB ``PIL.Image`` (EXIF orientation applied).

    Raises:
        InputError: the file is missing, empty, truncated, not an image or in a format edge-vl
            does not decode (:data:`IMAGE_FORMATS`); it has more than ``max_pixels`` pixels or
            none; or an array has the wrong shape or dtype.
    """
    if isinstance(image, Image.Image):
        if image.format is not None and image.format not in _OPENED_AS:
            raise InputError(
                f"{image.format} images are not accepted; expected one of {', '.join(IMAGE_FORMATS)}"
            )
        im = image
    elif isinstance(image, np.ndarray):
        im = _from_array(image)
    elif isinstance(image, (bytes, bytearray)):
        if not image:
            raise InputError(f"{name}: empty (0 bytes)")
        im = _open(io.BytesIO(bytes(image)), name, max_pixels)
    elif isinstance(image, (str, Path)):
        path = Path(image)
        if path.is_dir():
            raise InputError(f"{path} is a directory, not an image file")
        if not path.is_file():
            if path.exists():  # a FIFO, socket or device: reading it could block or never end
                raise InputError(f"{path} is not a regular file (a pipe, socket or device); give an image")
            raise InputError(f"image file not found: {path}")
        if path.stat().st_size == 0:
            raise InputError(f"image file is empty (0 bytes): {path}")
        im = _open(path, str(path), max_pixels)
    else:
        raise InputError(
            f"unsupported image type {type(image).__name__}; expected a path, bytes, PIL.Image or "
            "an HxWx3 uint8 numpy array"
        )
    if im.width < 1 or im.height < 1:
        raise InputError(f"image has no pixels ({im.width}x{im.height})")
    return to_rgb(im, background)


def to_rgb(im: Image.Image, background: Sequence[int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to RGB as training did: EXIF rotation, alpha composited on ``background``."""
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        scale = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        im = Image.fromarray(np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (*[int(c) for c in background], 255))
        bg.alpha_composite(rgba)
        return bg.convert("RGB")
    return im.convert("RGB")


def preprocess_image(image: ImageInput, spec: ImageSpec, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One image → float32 array of shape ``(3, H, W)`` following ``spec``."""
    return pixels_of(load_image(image, spec.background, max_pixels=max_pixels), spec)


def pixels_of(im: Image.Image, spec: ImageSpec) -> np.ndarray:
    """A decoded RGB image (:func:`load_image`) → float32 ``(3, H, W)`` following ``spec``."""
    h, w = spec.size
    resample = RESAMPLE[spec.resample]
    if spec.shortest_edge is not None:
        im = _resize_shortest_edge(im, spec.shortest_edge, resample)
        left, top = (im.width - w) // 2, (im.height - h) // 2
        im = im.crop((left, top, left + w, top + h))
    elif im.size != (w, h):
        im = im.resize((w, h), resample)
    arr = np.asarray(im, dtype=np.float32) * np.float32(spec.rescale_factor)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    arr = (arr - mean) / std
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _resize_shortest_edge(im: Image.Image, edge: int, resample) -> Image.Image:
    """Shorter side → ``edge``, the longer one scaled and truncated (as transformers computes it)."""
    width, height = im.size
    short, long = min(width, height), max(width, height)
    new_long = int(edge * long / short)
    size = (edge, new_long) if width <= height else (new_long, edge)
    return im if size == im.size else im.resize(size, resample)


def preprocess_images(
    images: Sequence[ImageInput], spec: ImageSpec, *, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Several images → float32 ``(N, 3, H, W)``."""
    return np.stack([preprocess_image(im, spec, max_pixels=max_pixels) for im in images])


def _open(source, name: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():  # edge-vl enforces its own limit just below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(source, formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as e:
        raise InputError(f"{name}: image too large ({e})") from e
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an image in an accepted format ({', '.join(IMAGE_FORMATS)})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{name}: not a readable image ({e})") from e
    width, height = im.size
    if width * height > max_pixels:  # checked from the header, before decoding
        raise InputError(f"{name}: image has {width}x{height} pixels, more than the limit of {max_pixels:,}")
    try:
        im.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{name}: cannot decode image, the file may be truncated or corrupt ({e})") from e
    return im


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.dtype != np.uint8:
        raise InputError(f"image array must have dtype uint8, got {arr.dtype}")
    if arr.ndim == 2:
        return Image.fromarray(arr, "L")
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(arr), "RGB" if arr.shape[2] == 3 else "RGBA")
    raise InputError(f"image array must have shape HxW, HxWx3 or HxWx4, got {arr.shape}")
