"""What a run's transformer answers to one kind of question, against the truth: (truth, answer) counts.

    python benchmarks/answer_confusion.py --run runs/demo --kind existence [--n 80]
    python benchmarks/answer_confusion.py --run runs/demo --kind all --n 150   # accuracy by kind
    python benchmarks/answer_confusion.py --run runs/demo --by-objects --n 150  # by kind and objects
    python benchmarks/answer_confusion.py --run runs/demo --kind place --n 300  # where the place is

Each question of that kind of the first `--n` test-split rows is asked alone after its image, as
`vlgpt eval all` asks it. A model that answers one word to every question shows it here at once.
`--kind all` asks every question of those rows and prints the accuracy of each kind, as `vlgpt eval
all` scores it, on more images than its own sample. `--by-objects` splits each kind's accuracy by
the number of objects in the scene (a question about one of several objects must first find the
one it names). `--kind place` also says, for scenes of two or more objects, whether a wrong answer
names the region of another object in the scene or of no object at all.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from vlgpt.inference.pipeline import load
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.language import QUESTION_KINDS
from vlgpt.world.render import render
from vlgpt.world.scene import Scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--kind", default="existence", choices=(*QUESTION_KINDS, "all"))
    parser.add_argument("--n", type=int, default=80)
    parser.add_argument("--by-objects", action="store_true", help="accuracy by kind and number of objects")
    args = parser.parse_args()
    model = load(args.run)
    test = ShapesWorld("test", model.codec.image_size, model.codec.image_size)
    if args.by_objects:
        by_objects(model, test, args.n)
        return
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
    if args.kind == "place":
        print(json.dumps({"scenes of 2+ objects": place_misses(model, test, args.n)}))
    for (truth, said), n in pairs.most_common():
        print(f"{n:4d}  truth {truth!r:12s} said {said!r}")


def by_objects(model, test, n: int) -> None:
    right, asked = Counter(), Counter()
    for i in range(n):
        row = test[i]
        scene = Scene.from_dict(row["scene"])
        image = render(scene)
        for qa in row["questions"]:
            said = model.ask(image, qa["question"], max_new_tokens=6).strip().lower().rstrip(".")
            for key in ((qa["kind"], len(scene.objects)), (qa["kind"], "all")):
                right[key] += said == qa["answer"]
                asked[key] += 1
    columns = (1, 2, 3, 4, "all")
    print(f"images {n}; accuracy (questions) by the number of objects in the scene")
    print("kind".ljust(10) + "".join(f"{c!s:>13}" for c in columns))
    for kind in sorted({k for k, _ in asked}):
        cells = [
            f"{right[(kind, c)] / asked[(kind, c)]:.2f} ({asked[(kind, c)]})" if asked[(kind, c)] else "-"
            for c in columns
        ]
        print(kind.ljust(10) + "".join(f"{cell:>13}" for cell in cells))


def place_misses(model, test, n: int) -> dict:
    """Place answers in scenes of two or more objects: right, another object's region, or no object's."""
    from vlgpt.world.language import region

    counts = Counter()
    for i in range(n):
        row = test[i]
        scene = Scene.from_dict(row["scene"])
        if len(scene.objects) < 2:
            continue
        image = render(scene)
        regions = {region(o, scene, margin=0.0) for o in scene.objects}
        for qa in row["questions"]:
            if qa["kind"] == "place":
                said = model.ask(image, qa["question"], max_new_tokens=6).strip().lower().rstrip(".")
                counts[
                    "right"
                    if said == qa["answer"]
                    else "another object's"
                    if said in regions
                    else "no object's"
                ] += 1
    return dict(counts)


if __name__ == "__main__":
    main()
