"""What a trivial answer earns on the Shapes test rows, the floor beside each reading figure.

VQA: each question kind answered with that kind's most frequent answer in the training split.
Captions: the one training caption that scores best (attribute F1) on training scenes, said of
every test image. A figure means something only well above these.

python benchmarks/trivial_floors.py [--train 3000] [--test 300]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict

import numpy as np

from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.language import QUESTION_KINDS, caption_attribute_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=3000, help="training rows the answers are counted on")
    parser.add_argument("--test", type=int, default=300, help="test rows scored")
    args = parser.parse_args()
    train_world, test_world = ShapesWorld("train"), ShapesWorld("test")
    train = [train_world[i] for i in range(args.train)]
    test = [test_world[i] for i in range(args.test)]

    common = {}
    for kind in QUESTION_KINDS:
        answers = Counter(qa["answer"] for row in train for qa in row["questions"] if qa["kind"] == kind)
        common[kind] = answers.most_common(1)[0][0]
    right = defaultdict(list)
    for row in test:
        for qa in row["questions"]:
            right[qa["kind"]].append(qa["answer"] == common[qa["kind"]])
    vqa = {kind: round(float(np.mean(v)), 3) for kind, v in sorted(right.items())}
    vqa["overall"] = round(float(np.mean([x for v in right.values() for x in v])), 3)

    def f1(caption: str, world: ShapesWorld, n: int) -> float:
        return float(np.mean([caption_attribute_scores(caption, world.scene(i))["f1"] for i in range(n)]))

    best = max((row["caption"] for row in train[:150]), key=lambda c: f1(c, train_world, 100))
    result = {
        "benchmark": "trivial_floors",
        "vqa_most_frequent_answer": vqa,
        "answers": common,
        "caption_constant": best,
        "caption_constant_f1": round(f1(best, test_world, args.test), 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
