"""The device runtime: no torch imported, accepted and refused inputs, threads, CPU check."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from PIL import Image

from edge_vl import ClosedError, CPUError, InputError, Predictor
from edge_vl.manifest import RuntimeInfo
from edge_vl.runtime.cpu import check_cpu, machine_info
from edge_vl.runtime.preprocess import preprocess_image
from edge_vl.runtime.tokenize import TextEncoder


@pytest.fixture(scope="module")
def predictor(tiny_bundle):
    return Predictor(tiny_bundle, threads=1)


def test_predict_imports_no_torch_or_transformers(tiny_bundle, sample):
    code = textwrap.dedent(f"""
        import sys
        import edge_vl
        p = edge_vl.Predictor({str(tiny_bundle)!r})
        print(p.predict({str(sample[0])!r}, {sample[1]!r}).label)
        heavy = sorted(m for m in ("torch", "transformers", "nncf") if m in sys.modules)
        assert not heavy, heavy
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in Predictor(tiny_bundle).labels


def test_image_input_kinds_give_the_same_answer(predictor, sample):
    path, text = sample
    im = Image.open(path)
    expected = predictor.logits([path], [text])
    for variant in (str(path), path.read_bytes(), im, np.asarray(im.convert("RGB"))):
        assert np.array_equal(predictor.logits([variant], [text]), expected)


def test_transparent_and_rotated_images_are_normalised(predictor):
    spec = predictor.image_spec
    rgba = Image.new("RGBA", (20, 30), (255, 0, 0, 0))  # fully transparent red → white background
    white = Image.new("RGB", (20, 30), (255, 255, 255))
    assert np.array_equal(preprocess_image(rgba, spec), preprocess_image(white, spec))

    base = Image.new("RGB", (40, 20), (0, 0, 255))
    base.paste((255, 0, 0), (0, 0, 10, 20))  # red band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: the camera was rotated; display = rotate 90° clockwise
    tagged, upright = io.BytesIO(), io.BytesIO()
    base.save(tagged, format="PNG", exif=exif)
    base.transpose(Image.Transpose.ROTATE_270).save(upright, format="PNG")
    got = preprocess_image(tagged.getvalue(), spec)
    assert np.array_equal(got, preprocess_image(upright.getvalue(), spec))
    assert not np.array_equal(got, preprocess_image(base, spec))


@pytest.mark.parametrize(
    ("image", "text", "message"),
    [
        ("/nonexistent/photo.png", "what?", "not found"),
        (b"", "what?", "empty"),
        (b"definitely not an image", "what?", "not an image in an accepted format"),
        (np.zeros((8, 8, 3), dtype=np.float32), "what?", "dtype uint8"),
        (np.zeros((8, 8, 5), dtype=np.uint8), "what?", "shape"),
        (12345, "what?", "unsupported image type"),
        ("IMAGE", "", "empty"),
        ("IMAGE", 42, "must be a str"),
    ],
    ids=["missing", "empty-bytes", "not-image", "float-array", "bad-shape", "int", "empty-text", "int-text"],
)
def test_bad_inputs_raise_input_error_and_predictor_keeps_working(predictor, sample, image, text, message):
    if isinstance(image, str) and image == "IMAGE":
        image = sample[0]
    with pytest.raises(InputError, match=message):
        predictor.predict(image, text)
    assert predictor.predict(*sample).label in predictor.labels


def test_empty_truncated_and_oversized_files_are_refused(predictor, sample, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        predictor.predict(empty, "what?")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InputError, match="truncated"):
        predictor.predict(truncated, "what?")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12_000, 12_000)).save(bomb)  # 144 M pixels in a few kB
    assert bomb.stat().st_size < 100_000
    with pytest.raises(InputError, match="more than the limit of 50,000,000"):
        predictor.predict(bomb, "what?")
    small_limit = Predictor(predictor.bundle, max_image_pixels=100, warmup=False)
    with pytest.raises(InputError, match="more than the limit of 100"):
        small_limit.predict(sample[0], sample[1])
    assert predictor.predict(*sample).label in predictor.labels


def test_bundle_lists_runtime_profiles_and_the_wrong_one_is_refused(tiny_bundle, tmp_path, monkeypatch):
    from dataclasses import replace

    from edge_vl import IncompatibleBundleError, read_bundle
    from edge_vl.runtime import profiles

    manifest = read_bundle(tiny_bundle).data
    # the tiny bundle's IR uses standard opsets up to 16 at most: both runtimes can read it
    assert manifest["runtime"]["profiles"] == ["default", "legacy"]
    assert manifest["runtime"]["max_opset"] <= 16
    newer_ops = tmp_path / "m.xml"
    newer_ops.write_text('<net><layers><layer id="0" type="X" version="opset17"/></layers></net>')
    assert profiles.loadable_profiles([tiny_bundle / "model.xml", newer_ops]) == RuntimeInfo(
        profiles=("default",), max_opset=17
    )
    custom = tmp_path / "c.xml"
    custom.write_text('<net><layers><layer id="0" type="Y" version="extension"/></layers></net>')
    assert profiles.loadable_profiles([custom]).profiles == ("default",)

    typed = read_bundle(tiny_bundle).manifest
    default_only = replace(typed, runtime=RuntimeInfo(profiles=("default",), max_opset=17))
    profiles.check_bundle_runtime(default_only, tiny_bundle)  # this machine runs the default runtime
    monkeypatch.setattr(profiles, "installed_openvino", lambda: "2025.4.1-20426")
    assert profiles.active_profile().name == "legacy"
    profiles.check_bundle_runtime(typed, tiny_bundle)
    with pytest.raises(IncompatibleBundleError, match=r"opset17.*legacy runtime.*pip install edge-vl"):
        profiles.check_bundle_runtime(default_only, tiny_bundle)
    monkeypatch.setattr(profiles, "installed_openvino", lambda: "2024.6.0")
    with pytest.raises(IncompatibleBundleError, match=r"2024\.6\.0 is not a runtime edge-vl supports"):
        profiles.active_profile()


def test_memory_is_flat_over_2000_predictions(tiny_bundle, sample):
    code = textwrap.dedent(f"""
        import edge_vl
        def rss_kb():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS"):
                    return int(line.split()[1])
        p = edge_vl.Predictor({str(tiny_bundle)!r}, threads=1)
        for _ in range(100):
            p.predict({str(sample[0])!r}, {sample[1]!r})
        after_100 = rss_kb()
        for _ in range(1900):
            p.predict({str(sample[0])!r}, {sample[1]!r})
        print(after_100, rss_kb())
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    after_100, after_2000 = map(int, result.stdout.split())
    assert after_2000 <= after_100 * 1.05, (after_100, after_2000)


def test_long_text_is_truncated_to_the_model_length(predictor):
    encoded = predictor.text_encoder.encode(["what color " * 50])
    assert encoded["input_ids"].shape == (1, predictor.text_encoder.max_length)
    assert encoded["attention_mask"].all()


def test_tokenizer_matches_transformers(tiny_checkpoint, tiny_bundle):
    from transformers import AutoTokenizer

    from edge_vl import read_bundle

    spec = read_bundle(tiny_bundle).manifest.preprocessing.text
    ours = TextEncoder.from_spec(tiny_bundle, spec)
    hf = AutoTokenizer.from_pretrained(tiny_checkpoint, local_files_only=True)
    texts = [
        "What color is the shape?",
        "which SHAPE does the image contain",
        "zebra " * 30,
        "Ünïcode café — naïve façade?",
        "emoji 😀 and 中文 and numbers 12345.67",
        "  leading and trailing spaces  ",
        "tabs\tand\nnewlines",
    ]
    ref = hf(texts, padding="max_length", truncation=True, max_length=spec.max_length, return_tensors="np")
    got = ours.encode(texts)
    assert np.array_equal(got["input_ids"], ref["input_ids"])
    assert np.array_equal(got["attention_mask"], ref["attention_mask"])


def test_predict_batch_equals_single_predictions(predictor, sample):
    images = [sample[0]] * 3
    texts = ["what color is the shape?", "which shape does the image contain?", "what color?"]
    batch = predictor.predict_batch(images, texts)
    singles = [predictor.predict(i, t) for i, t in zip(images, texts, strict=True)]
    for b, s in zip(batch, singles, strict=True):
        assert b.label == s.label and abs(b.score - s.score) < 1e-5


def test_8_threads_x_50_predictions_give_the_sequential_results(predictor, shapes_data):
    rows = [json.loads(line) for line in shapes_data[1].read_text().splitlines()]
    inputs = [(shapes_data[1].parent / r["image"], r["text"]) for r in rows]
    inputs = (inputs * 50)[:50]
    expected = [predictor.predict(*x).scores for x in inputs]
    results: dict[int, list] = {}

    def worker(k: int) -> None:
        results[k] = [predictor.predict(*x).scores for x in inputs[k:] + inputs[:k]]  # each its own order

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(8):
        assert results[k] == expected[k:] + expected[:k]


def test_cpu_without_avx2_is_refused_with_advice():
    from edge_vl.runtime.profiles import PROFILES

    default, legacy = PROFILES["default"], PROFILES["legacy"]
    westmere = {"SSE42": True, "AVX": False, "AVX2": False}
    with pytest.raises(CPUError, match=r"lacks AVX2.*default runtime.*it has: SSE42.*edge-vl\[legacy\]"):
        check_cpu(westmere, default)
    check_cpu(westmere, legacy)  # the legacy runtime needs SSE4.2 only
    check_cpu({"SSE42": True, "AVX2": True}, default)
    with pytest.raises(CPUError, match=r"lacks SSE42.*No OpenVINO release"):
        check_cpu({"SSE42": False}, legacy)


def test_options_cache_dir_and_throughput_hint(tiny_bundle, sample, tmp_path):
    cache = tmp_path / "ov-cache"
    p = Predictor(tiny_bundle, threads=1, performance_hint="throughput", cache_dir=cache)
    assert any(cache.iterdir())  # OpenVINO wrote its compiled-model cache
    assert p.predict(*sample).label in p.labels
    with pytest.raises(InputError, match="performance_hint"):
        Predictor(tiny_bundle, performance_hint="fastest")


def test_closed_predictor_releases_its_requests_and_refuses_to_run(tiny_bundle, sample):
    with Predictor(tiny_bundle, threads=1) as p:
        answer = p.predict(*sample)
        worker = threading.Thread(target=p.predict, args=sample)  # a request in another thread too
        worker.start()
        worker.join()
    assert answer.label in p.labels
    with pytest.raises(ClosedError, match="closed"):
        p.predict(*sample)
    p.close()  # closing twice is harmless


def test_machine_info_names_the_cpu_its_usable_cores_and_isa():
    info = machine_info()
    assert info["cpu"] and 1 <= info["cores"] <= (os.cpu_count() or 1)
    flags = info["flags"]
    assert set(flags) >= {"AVX2", "AVX512VNNI"} and all(isinstance(v, bool) for v in flags.values())
