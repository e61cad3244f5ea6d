"""``Predictor``: load a bundle and answer (image, text) questions on OpenVINO. No torch needed.

What is loaded is what was verified: the IR and the tokenizer are read once into memory, checked
against the manifest's sha256, and handed to OpenVINO and ``tokenizers`` from there; nothing the
manifest does not list, and nothing outside the bundle directory, is ever opened.

Thread safety: one ``Predictor`` may be shared by many threads. Each thread gets its own
OpenVINO infer request (``threading.local``), so calls never share input/output buffers; the
compiled model itself is thread-safe.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_vl.bundle import Bundle, read_bundle
from edge_vl.choices import PERFORMANCE_HINTS
from edge_vl.errors import BundleError, ClosedError, InputError
from edge_vl.folding import text_index
from edge_vl.manifest import Abstention
from edge_vl.runtime.calibration import scores_of
from edge_vl.runtime.cpu import openvino_core
from edge_vl.runtime.monitor import MonitorStore
from edge_vl.runtime.preprocess import MAX_PIXELS, ImageInput, load_image, pixels_of
from edge_vl.runtime.profiles import check_bundle_runtime
from edge_vl.runtime.signals import InputStats, Signals, image_stats
from edge_vl.runtime.tokenize import TEXT_INPUTS, TextEncoder
from edge_vl.signing import TrustPolicy

# OpenVINO runs float ops in bf16 by itself on CPUs with AVX512_BF16/AMX. A bundle built and
# checked at fp32 asks for f32 so that it gives the numbers it was checked with on every CPU.
_INFERENCE_PRECISION = {"fp32": "f32", "fp16": "f32", "int8": "f32"}


@dataclass(frozen=True)
class Prediction:
    """The answer for one input: best ``label``, its ``score``, and ``scores`` for every label —
    calibrated when the bundle carries a calibration (temperature scaling). ``abstained``: the
    score is below the abstain threshold, so the bundle is not sure; ``label`` is then its best
    guess, for a person to check."""

    label: str
    score: float
    scores: dict[str, float] = field(repr=False)
    abstained: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, "abstained": self.abstained, "scores": self.scores}


class Predictor:
    """Run a bundle on the CPU with OpenVINO.

    Args:
        bundle: bundle directory (verified on load: format, manifest, every file's sha256).
        threads: OpenVINO inference threads (default: OpenVINO's choice, all physical cores).
        performance_hint: ``"latency"`` (default, one request at a time) or ``"throughput"``.
        cache_dir: OpenVINO model cache directory, to make later loads faster: a directory of
            yours, not writable by other users. OpenVINO loads a compiled blob from it without
            checking it against the bundle, so it cannot be combined with signature checks
            (``InputError``): a signed bundle is always compiled from its verified IR.
        warmup: run one inference at load so the first real call is not slow.
        max_image_pixels: images with more pixels are refused before decoding (default 50 M).
        text_buckets: run each batch on the bundle's shortest text length that holds its longest
            text (bundles built with ``--text-buckets``); False always uses the full length.
        trusted_keys: Ed25519 public keys (PEM paths or bytes; one path alone is accepted too):
            refuse bundles not signed by one of them. Default: the keys in ``EDGE_VL_TRUSTED_KEYS``,
            if set (see :mod:`edge_vl.signing`).
        min_release: refuse signed bundles with a lower release number (default:
            ``EDGE_VL_MIN_RELEASE``). Needs trusted keys.
        release_state: a JSON file where this device records the newest release it loaded per key
            and refuses older ones (anti-rollback; default: ``EDGE_VL_RELEASE_STATE``). Needs
            trusted keys.
        abstain_below: answers whose (calibrated) score is below this are marked ``abstained``.
            Default: the threshold the build chose for its target precision, if it chose one; 0
            never abstains.
        monitor: a SQLite file (or :class:`~edge_vl.runtime.monitor.MonitorStore`) where every
            prediction's signals are recorded for drift monitoring (``edge-vl monitor``); no image
            or text is stored.
    """

    def __init__(
        self,
        bundle: str | Path | Bundle,
        *,
        threads: int | None = None,
        performance_hint: str = "latency",
        cache_dir: str | Path | None = None,
        warmup: bool = True,
        max_image_pixels: int = MAX_PIXELS,
        text_buckets: bool = True,
        trusted_keys: Sequence[Any] | str | Path | None = None,
        min_release: int | None = None,
        release_state: str | Path | None = None,
        abstain_below: float | None = None,
        monitor: str | Path | MonitorStore | None = None,
    ):
        if performance_hint not in PERFORMANCE_HINTS:
            raise InputError(f"performance_hint must be one of {PERFORMANCE_HINTS}, got {performance_hint!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads must be a whole number >= 1 (or None: all cores), got {threads!r}")
        trust = TrustPolicy.resolve(trusted_keys, min_release=min_release, release_state=release_state)
        if cache_dir is not None:
            if trust.checks:
                raise InputError(
                    "cache_dir cannot be used with signature checks: OpenVINO would load a compiled "
                    "blob from it that no signature covers, so whoever can write the cache could swap "
                    "the model. Leave cache_dir out (signed bundles compile from their verified IR)"
                )
            _check_cache_dir(Path(cache_dir))
        if not isinstance(bundle, Bundle):
            bundle = read_bundle(bundle, verify=False, trust=trust)
        self.bundle = bundle
        manifest = bundle.manifest
        bundle.verify_files(skip=manifest.loaded_files())  # the rest is verified as it is read, below
        self.max_image_pixels = int(max_image_pixels)
        self.labels = bundle.labels
        self.head_kind = manifest.head.kind
        self.image_spec = manifest.preprocessing.image
        self.text_encoder = self._text_encoder()
        self.input_names = [spec.name for spec in manifest.model.inputs]
        check_bundle_runtime(manifest, bundle.path)
        config = compile_config(performance_hint, threads, _INFERENCE_PRECISION[manifest.model.precision])
        if cache_dir:  # per compile: the Core is shared by every model of the process
            config["CACHE_DIR"] = str(cache_dir)
        self._compile_models(config, text_buckets)
        self._local = threading.local()
        self.temperature = manifest.calibration.temperature if manifest.calibration else 1.0
        self.abstain_below = _threshold(abstain_below, manifest.abstention)
        self.monitor = MonitorStore(monitor) if isinstance(monitor, (str, Path)) else monitor
        self._owns_monitor = isinstance(monitor, (str, Path))  # a store the caller passed is theirs
        #: called with every batch's signals and its latency (ms): the monitor store, metrics
        self.observers: list[Callable[[list[Signals], float], None]] = []
        if self.monitor is not None:
            store, name = self.monitor, str(bundle.path)
            self.observers.append(lambda signals, _ms: store.record(signals, bundle=name))
        if warmup:
            for length, _ in self.buckets or [(0, None)]:
                self.run(self.dummy_inputs(text_length=length or None))
        trust.record(bundle.signature)  # loaded: an older release of this key is refused from now on

    def _text_encoder(self) -> TextEncoder | None:
        """The bundle's tokenizer, from its verified bytes (None for image-only models)."""
        spec = self.bundle.manifest.preprocessing.text
        if spec is None:
            return None
        tokenizer = _utf8(self.bundle.read_verified(spec.tokenizer), spec.tokenizer)
        return TextEncoder(tokenizer, spec, source=f"{self.bundle.path}/{spec.tokenizer}")

    def _compile_models(self, config: dict[str, Any], text_buckets: bool) -> None:
        """Compile the verified IR (and its text buckets) and check its output width."""
        manifest, where = self.bundle.manifest, self.bundle.path
        core = openvino_core()  # checks the CPU before OpenVINO loads any CPU kernel
        #: the verified IR weights: OpenVINO computes from this memory, which must outlive the models
        self._weights: list[np.ndarray] = []
        self.model = self._read_model(core, manifest.model.xml, manifest.model.bin)
        self.compiled = _compile(core, self.model, config, where / manifest.model.xml)
        width = self.compiled.outputs[0].get_partial_shape()[-1]
        if not width.is_static or width.get_length() != len(self.labels):
            raise BundleError(
                f"{where}: the model outputs {width} scores, but the manifest has {len(self.labels)} labels"
            )
        #: (text length, compiled model), shortest first; the full-length model is last
        self.buckets: list[tuple[int, Any]] = []
        if text_buckets and self.text_encoder is not None:
            for bucket in manifest.model.text_buckets:
                model = self._read_model(core, bucket.xml, bucket.bin)
                self.buckets.append((bucket.length, _compile(core, model, config, where / bucket.xml)))
            self.buckets.sort(key=lambda b: b[0])
        if self.text_encoder is not None:
            self.buckets.append((self.text_encoder.max_length, self.compiled))

    # -- public API -----------------------------------------------------------------------
    @property
    def takes_text(self) -> bool:
        """Whether the bundle's model takes a text with each image."""
        return self.text_encoder is not None

    def inputs_of(self, rows: Iterable[Any]) -> Iterator[tuple[ImageInput, str | None]]:
        """``(image, text)`` of each row (anything with ``image`` and ``text``, such as
        :class:`~edge_vl.data.Example`), the text left out when the bundle takes none."""
        return ((row.image, row.text if self.takes_text else None) for row in rows)

    def predict(self, image: ImageInput, text: str | None = None) -> Prediction:
        """Answer one (image, text) pair."""
        return self.predict_batch([image], None if text is None else [text])[0]

    def predict_batch(
        self, images: Sequence[ImageInput], texts: Sequence[str] | None = None
    ) -> list[Prediction]:
        """Answer several pairs in one inference call."""
        feed, stats = self.prepare_with_stats(images, texts)
        started = time.perf_counter()
        logits = self.run(feed)
        return self.finish(logits, feed, stats, (time.perf_counter() - started) * 1e3)

    def logits(self, images: Sequence[ImageInput], texts: Sequence[str] | None = None) -> np.ndarray:
        """Raw model outputs, shape ``(N, num_labels)``: for parity checks and custom heads."""
        return self.run(self.prepare(images, texts))

    def scores(self, images: Sequence[ImageInput], texts: Sequence[str] | None = None) -> np.ndarray:
        """Per-label scores (sigmoid or softmax of the logits, as the head was trained), calibrated
        when the bundle carries a temperature."""
        return self.scores_of(self.logits(images, texts))

    def scores_of(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated per-label scores of raw ``logits``."""
        if self.head_kind not in ("sigmoid", "softmax"):
            raise BundleError(
                f"unknown head kind {self.head_kind!r} in manifest; expected 'sigmoid' or 'softmax'"
            )
        return scores_of(logits, self.head_kind, self.temperature).astype(np.float32)

    def prepare(
        self, images: Sequence[ImageInput], texts: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Preprocess inputs into the named arrays the model takes."""
        return self.prepare_with_stats(images, texts)[0]

    def prepare_with_stats(
        self, images: Sequence[ImageInput], texts: Sequence[str] | None = None
    ) -> tuple[dict[str, np.ndarray], list[InputStats]]:
        """:meth:`prepare`, and each row's (width, height, brightness, contrast) of its image as
        decoded and (tokens, unknown-token share) of its text (None without one)."""
        if isinstance(images, (str, Path, bytes)) or not isinstance(images, Sequence):
            raise InputError("images must be a list of images; use predict() for a single image")
        if not images:
            raise InputError("no images given")
        if self.text_encoder is not None:
            if texts is None:
                raise InputError("this model needs a text for every image")
            if isinstance(texts, str) or len(texts) != len(images):
                raise InputError(f"got {len(images)} images but texts is not a list of {len(images)} strings")
        decoded = [
            load_image(im, self.image_spec.background, max_pixels=self.max_image_pixels) for im in images
        ]
        feed = {"pixel_values": np.stack([pixels_of(im, self.image_spec) for im in decoded])}
        text: list[tuple[int | None, float | None]] = [(None, None)] * len(decoded)
        if self.text_encoder is not None and texts is not None:
            feed.update(self.text_encoder.encode(texts))
            # from the tokens, before a folded graph's lookup replaces them
            text = [
                self.text_encoder.stats(*row)
                for row in zip(feed["input_ids"], feed["attention_mask"], strict=True)
            ]
            folded = self.bundle.manifest.model.folded_texts
            if folded is not None:  # the graph holds these texts' tower output: look each text up
                feed["text_index"] = text_index(folded, feed["input_ids"], feed["attention_mask"])
        stats = [(*image_stats(im), *t) for im, t in zip(decoded, text, strict=True)]
        return {name: feed[name] for name in self.input_names}, stats

    def finish(
        self,
        logits: np.ndarray,
        feed: Mapping[str, np.ndarray],
        stats: Sequence[InputStats],
        latency_ms: float = 0.0,
    ) -> list[Prediction]:
        """Predictions from a batch's logits; the batch's signals (from ``stats``, see
        :meth:`prepare_with_stats`) go to every observer. ``feed`` is what the model ran on."""
        predictions = [self._to_prediction(row) for row in self.scores_of(logits)]
        if self.observers:
            batch = [
                Signals(p.label, p.score, p.abstained, *s) for p, s in zip(predictions, stats, strict=True)
            ]
            for observe in self.observers:
                try:
                    observe(batch, latency_ms)
                except Exception as e:  # monitoring must never stop the answers
                    warnings.warn(
                        f"edge-vl monitoring failed and was skipped for this batch: {e}", stacklevel=2
                    )
        return predictions

    def close(self) -> None:
        """Release the OpenVINO infer requests, then the compiled models; the Predictor cannot
        run afterwards. Also done when it is garbage-collected or leaves a ``with`` block."""
        self._local = threading.local()  # every thread's requests go before their compiled models
        if getattr(self, "_owns_monitor", False) and self.monitor is not None:
            self.monitor.close()
        self.buckets = []
        self.compiled = None
        self.model = None
        self._weights = []

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if "_local" in self.__dict__:  # not if __init__ failed before compiling
            self.close()

    # -- internals ------------------------------------------------------------------------
    def _read_model(self, core, xml: str, weights: str):
        """An ``ov.Model`` from the verified bytes of ``xml`` and ``weights`` (nothing else is read).
        OpenVINO shares the weights' memory instead of copying it; ``self._weights`` keeps it alive."""
        import openvino as ov

        text = _utf8(self.bundle.read_verified(xml), xml)
        data = self.bundle.read_verified(weights)
        try:
            model = core.read_model(text, ov.Tensor(data, shared_memory=True))
        except RuntimeError as e:
            raise BundleError(f"{self.bundle.path / xml}: OpenVINO cannot read this IR ({e})") from e
        self._weights.append(data)
        return model

    def _request(self, compiled):
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        request = requests.get(id(compiled))
        if request is None:
            request = requests[id(compiled)] = compiled.create_infer_request()
        return request

    def run(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        """One inference on already prepared inputs (see :meth:`prepare`); returns the logits.
        With text buckets, the text inputs are cut to the shortest bucket that holds every text of
        the batch (only padding is cut, so the answer is the full-length model's)."""
        feed = dict(feed)
        compiled = self.compiled
        if compiled is None:
            raise ClosedError("this Predictor was closed; create a new one to predict again")
        if len(self.buckets) > 1 and "attention_mask" in feed:
            mask = feed["attention_mask"]
            used = int(mask.shape[1] - np.argmax(mask[:, ::-1].any(axis=0))) if mask.any() else 1
            length, compiled = next((b for b in self.buckets if b[0] >= used), self.buckets[-1])
            if length < mask.shape[1]:
                for name in TEXT_INPUTS & feed.keys():
                    feed[name] = np.ascontiguousarray(feed[name][:, :length])
        request = self._request(compiled)
        request.infer(feed)
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def dummy_inputs(self, batch: int = 1, *, text_length: int | None = None) -> dict[str, np.ndarray]:
        """Deterministic inputs of the bundle's input spec (all ones; text inputs ``text_length``
        long, default the full length), for warm-up and benchmarks."""
        feed = {}
        for spec in self.bundle.manifest.model.inputs:
            shape = [batch if d < 0 else d for d in spec.shape]
            # ones, but text_index 0 (the first folded text; 1 may be out of range)
            array = np.full(shape, spec.name != "text_index", dtype=np.dtype(spec.dtype))
            if text_length and spec.name in TEXT_INPUTS:
                array[:, text_length:] = 0
            feed[spec.name] = array
        return feed

    def _to_prediction(self, row: np.ndarray) -> Prediction:
        best = int(np.argmax(row))
        return Prediction(
            label=self.labels[best],
            score=float(row[best]),
            scores={label: float(s) for label, s in zip(self.labels, row, strict=False)},
            abstained=bool(row[best] < self.abstain_below),
        )


def _compile(core, model, config: Mapping[str, Any], where: Path):
    try:
        return core.compile_model(model, "CPU", dict(config))
    except RuntimeError as e:
        raise BundleError(f"{where}: OpenVINO could not compile the model ({e})") from e


def _utf8(data: np.ndarray, name: str) -> str:
    try:
        return data.tobytes().decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"{name}: not UTF-8 text") from None


def _check_cache_dir(path: Path) -> None:
    """Refuse an OpenVINO cache directory that cannot be used, with what is wrong (OpenVINO itself
    reports a failed cache write as a failure to load the model), or that another user could fill
    with a blob of another model (OpenVINO trusts what it finds there)."""
    import os
    import stat

    if path.exists() and not path.is_dir():
        raise InputError(f"cache_dir {path} is a file; give a directory")
    target = path if path.exists() else next((p for p in path.parents if p.exists()), Path("."))
    if not os.access(target, os.W_OK | os.X_OK):
        raise InputError(f"cache_dir {path} is not writable (OpenVINO stores compiled models there)")
    if path.exists() and hasattr(os, "getuid"):
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise InputError(
                f"cache_dir {path} is writable by other users or owned by another: a compiled model "
                "placed there would be loaded unchecked; use a directory only you can write (chmod 700)"
            )


def compile_config(
    performance_hint: str = "latency", threads: int | None = None, precision: str = "f32"
) -> dict:
    """OpenVINO CPU compile settings used everywhere edge-vl runs or times a model."""
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": performance_hint.upper(),
        "INFERENCE_PRECISION_HINT": precision,
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def _threshold(given: float | None, abstention: Abstention | None) -> float:
    """The abstain threshold: the one given, else the build's, else none (0)."""
    if given is None:
        return abstention.threshold if abstention is not None else 0.0
    if isinstance(given, bool) or not isinstance(given, (int, float)) or not 0 <= given <= 1:
        raise InputError(f"abstain_below must be a score between 0 and 1, got {given!r}")
    return float(given)
