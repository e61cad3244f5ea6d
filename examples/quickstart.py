"""The edge-vl flow from Python: build a bundle from your own data, then predict with it.

    python examples/quickstart.py --model path/to/vilt-checkpoint --data train.jsonl --eval-data val.jsonl

Without arguments it uses the easy-vqa demo data (needs the 'demo' extra) and a random-weight
ViLT stand-in, exactly like ``edge-vl build --demo``. Data rows look like
``{"image": "images/0001.png", "text": "what color is the shape?", "label": "red"}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_vl import Predictor
from edge_vl.build import BuildConfig, build
from edge_vl.data import read_examples
from edge_vl.finetune import TrainConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path)
    p.add_argument("--data", type=Path)
    p.add_argument("--eval-data", type=Path)
    p.add_argument("--out", type=Path, default=Path("quickstart-bundle"))
    p.add_argument("--skip", type=int, default=None, help="layers to skip (default: a third, found by DAS)")
    args = p.parse_args()

    if args.model is None or args.data is None or args.eval_data is None:
        from edge_vl.architectures import family_for
        from edge_vl.demo import easy_vqa_vocabulary, write_easy_vqa_manifests

        work = Path("quickstart-data")
        args.data, args.eval_data = write_easy_vqa_manifests(work, train_size=2000, eval_size=500)
        args.model = family_for("vilt").random_checkpoint(
            work / "vilt-random", vocab=easy_vqa_vocabulary(), labels=["?"], preset="small"
        )

    # 1. build: DAS search → adapter fine-tune → OpenVINO export → bundle (on a workstation)
    result = build(
        BuildConfig(model_dir=args.model, train_data=args.data, eval_data=args.eval_data, out=args.out,
                    skip=args.skip, train=TrainConfig(epochs=2), overwrite=True)
    )  # fmt: skip
    print("skipped layers:", result.manifest["architecture"]["skipped"])
    print("eval accuracy:", result.manifest["metrics"]["eval_accuracy"])

    # 2. predict: only openvino, numpy, pillow and tokenizers are needed (on the device)
    predictor = Predictor(args.out)
    example = read_examples(args.eval_data)[0]
    answer = predictor.predict(example.image, example.text)
    print(f"{example.text!r} → {answer.label} ({answer.score:.3f}); expected {example.label}")


if __name__ == "__main__":
    main()
