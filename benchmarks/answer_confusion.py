"""What a run's transformer answers to one kind of question, against the truth: (truth, answer) counts.

    python benchmarks/answer_confusion.py --run runs/demo --kind existence [--n 80]
    python benchmarks/answer_confusion.py --run runs/demo --kind all --n 150   # accuracy by kind

Each question of that kind of the first `--n` test-split rows is asked alone after its image, as
`vlgpt eval all` asks it. A model that answers one word to every question shows it here at once.
`--kind all` asks every question of those rows and prints the accuracy of each kind, as `vlgpt eval
all` scores it, on more images than its own sample.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from vlgpt.pipeline import load
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.language import QUESTION_KINDS
from vlgpt.world.render import render
from vlgpt.world.scene import Scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--kind", default="existence", choices=(*QUESTION_KINDS, "all"))
    parser.add_argument("--n", type=int, default=80)
    args = parser.parse_args()
    model = load(args.run)
    test = ShapesWorld("test", model.codec.image_size, model.codec.image_size)
    if args.kind == "all":
        from vlgpt.eval.world_eval import evaluate_vqa

        scores = evaluate_vqa(
            lambda image, question: model.ask(image, question, max_new_tokens=6),
            [test[i] for i in range(args.n)],
        )
        mean = lambda x: x["mean"] if isinstance(x, dict) else x  # noqa: E731
        print(json.dumps({"images": args.n, **{kind: round(mean(x), 3) for kind, x in scores.items()}}))
        return
    pairs = Counter()
    for i in range(args.n):
        row = test[i]
        image = render(Scene.from_dict(row["scene"]))
        for qa in row["questions"]:
            if qa["kind"] == args.kind:
                said = model.ask(image, qa["question"], max_new_tokens=6).strip().lower().rstrip(".")
                pairs[(qa["answer"], said)] += 1
    total = sum(pairs.values())
    right = sum(n for (truth, said), n in pairs.items() if truth == said)
    print(json.dumps({"kind": args.kind, "questions": total, "accuracy": round(right / max(total, 1), 3)}))
    for (truth, said), n in pairs.most_common():
        print(f"{n:4d}  truth {truth!r:12s} said {said!r}")


if __name__ == "__main__":
    main()
