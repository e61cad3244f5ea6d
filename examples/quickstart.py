"""The edge-vl flow from Python: build a bundle from your own data, then predict with it.

    python examples/quickstart.py --data train.jsonl --eval-data val.jsonl [--model DIR]

The model defaults to the shipped edge-vl-mini. Without data it uses a small easy-vqa subset
(needs the 'demo' extra) and runs in a few minutes. Data rows look like
``{"image": "images/0001.png", "text": "what color is the shape?", "label": "red"}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_vl import Predictor
from edge_vl.config import BuildConfig, TrainConfig
from edge_vl.data import read_examples
from edge_vl.pipeline import build


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="edge-vl-mini", help="checkpoint directory or shipped model name")
    p.add_argument("--data", type=Path)
    p.add_argument("--eval-data", type=Path)
    p.add_argument("--out", type=Path, default=Path("quickstart-bundle"))
    p.add_argument("--skip", type=int, default=None, help="layers to skip (default: a third, found by DAS)")
    args = p.parse_args()

    if args.data is None or args.eval_data is None:
        from edge_vl.demo import write_easy_vqa_manifests

        args.data, args.eval_data = write_easy_vqa_manifests(
            "quickstart-data", train_size=2000, eval_size=500
        )

    # 1. build: DAS search → adapter fine-tune → OpenVINO export → bundle (on a workstation)
    result = build(
        BuildConfig(model_dir=args.model, train_data=args.data, eval_data=args.eval_data, out=args.out,
                    skip_count=args.skip, train=TrainConfig(epochs=1), overwrite=True)
    )  # fmt: skip
    assert result.manifest is not None  # None only on ranks other than 0 under torchrun
    print("skipped layers:", list(result.manifest.architecture.skipped))
    print("eval accuracy:", result.manifest.metrics.eval_accuracy)

    # 2. predict: only openvino, numpy, pillow and tokenizers are needed (on the device)
    predictor = Predictor(args.out)
    example = read_examples(args.eval_data)[0]
    answer = predictor.predict(example.image, example.text)
    print(f"{example.text!r} → {answer.label} ({answer.score:.3f}); expected {example.label}")


if __name__ == "__main__":
    main()
