"""The five things a trained run does, on Shapes test scenes it never saw: one picture and the text.

    python benchmarks/showcase.py --run runs/demo --out docs/img/showcase.png

Writes the PNG (each input beside what the model made of it, 3x enlarged) and prints the outputs as
markdown, for the README. Greedy decoding throughout, so a rerun on the same run prints the same.
"""

from __future__ import annotations

import argparse

from PIL import Image, ImageDraw

import vlgpt
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.judge import judge
from vlgpt.world.language import describe
from vlgpt.world.scene import Scene

SCALE = 3


def tile(images: list[Image.Image], labels: list[str], width: int = 240) -> Image.Image:
    """A row: the images enlarged, each label under its image (wrapped)."""
    side = images[0].width * SCALE
    row = Image.new("RGB", (len(images) * (side + 12) + 12, side + 52), "white")
    draw = ImageDraw.Draw(row)
    for k, (image, label) in enumerate(zip(images, labels)):
        x = 12 + k * (side + 12)
        row.paste(image.resize((side, side), Image.NEAREST), (x, 6))
        words, line, y = label.split(), "", side + 10
        for word in words:
            if draw.textlength(line + " " + word) > side and line:
                draw.text((x, y), line, fill="black")
                line, y = word, y + 12
            else:
                line = (line + " " + word).strip()
        draw.text((x, y), line, fill="black")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--out", default="docs/img/showcase.png")
    args = parser.parse_args()
    model = vlgpt.load(args.run)
    size = model.codec.image_size
    test = ShapesWorld("test", size, size)
    rows = [test[i] for i in range(40)]
    edit_rows = [r for r in rows if r["edit"]][:2]
    lines, strips = [], []

    images = [test.image(r) for r in rows[:3]]
    captions = [model.caption(im, max_new_tokens=48) for im in images]
    strips.append(tile(images, captions))
    lines += [f"* caption: **{c}** (truth: {r['caption']})" for c, r in zip(captions, rows)]

    qa = [(test.image(r), r["questions"][0]) for r in rows[3:6] if r["questions"]]
    answers = [model.ask(im, q["question"], max_new_tokens=6) for im, q in qa]
    strips.append(tile([im for im, _ in qa], [f"{q['question']} -> {a}" for (_, q), a in zip(qa, answers)]))
    lines += [f"* ask: {q['question']} **{a}** (truth: {q['answer']})" for (_, q), a in zip(qa, answers)]

    prompts = ["a red circle", "a green triangle to the left of a yellow star", "two blue squares"]
    drawn = [model.imagine(p) for p in prompts]
    strips.append(tile(drawn, [f"imagine: {p}" for p in prompts]))
    lines += [
        f"* imagine: {p} -> the judge reads **{describe(judge(im).objects) or 'nothing'}**"
        for p, im in zip(prompts, drawn)
    ]

    before = [test.image(r) for r in edit_rows]
    after = [model.edit(im, r["edit"]["instruction"], refuse=False) for im, r in zip(before, edit_rows)]
    pairs = [im for pair in zip(before, after) for im in pair]
    labels = [t for r in edit_rows for t in ("before", "edit: " + r["edit"]["instruction"])]
    strips.append(tile(pairs, labels))
    lines += [
        f"* edit: {r['edit']['instruction']} -> the judge reads "
        f"**{describe(judge(im).objects) or 'nothing'}**"
        f" (target: {describe(Scene.from_dict(r['edit']['target']).objects)})"
        for r, im in zip(edit_rows, after)
    ]

    answer = model.chat(
        [{"role": "user", "content": [{"type": "text", "text": "Draw: a red circle and a blue star"}]}],
        max_new_tokens=24,
    )
    texts = " ".join(v for k, v in answer.parts if k == "text")
    pictures = [v for k, v in answer.parts if k == "image"]
    if pictures:
        strips.append(tile(pictures, [f"chat: {texts}"]))
    lines.append(
        f"* chat (interleaved): Draw: a red circle and a blue star -> {texts!r} + {len(pictures)} image(s)"
    )

    width = max(s.width for s in strips)
    sheet = Image.new("RGB", (width, sum(s.height for s in strips)), "white")
    y = 0
    for strip in strips:
        sheet.paste(strip, (0, y))
        y += strip.height
    sheet.save(args.out)
    print("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
