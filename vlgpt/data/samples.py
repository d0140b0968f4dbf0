"""Training samples of the VL-GPT stages, as segment lists (`data/sequences.py`) and the images they
place: image-caption pairs in either direction (pre-training, VL-GPT §3.2), the Shapes world's
pre-training samples (pairs with a layout plan, interleaved documents) and its instruction
conversations (look, draw, edit, few-shot episodes).

A sample is `(segments, images)`: each image segment's value is an index into `images` until the
stage encodes the images and puts their N embeddings in its place.
"""

from __future__ import annotations

from ..core.prompts import DESCRIBE, draw_prompt, t2i_prompt
from ..world import language
from ..world.dataset import ShapesWorld
from ..world.scene import Scene
from . import sequences as S


def unconditional() -> list[S.Segment]:
    """[BOS] [IMG] e_1 ... e_N [/IMG] [EOS]: a text-to-image pair with its text dropped."""
    return [S.Segment("image", 0, True), S.eos()]


def pair_sample(source, index: int, rng, uncond_prob: float = 0.0) -> tuple[list[S.Segment], list]:
    """An image-caption pair of a dataset, in either direction at random (VL-GPT §3.2's pre-training).
    A share `uncond_prob` of the text-to-image ones drop their text: the unconditional draw that
    classifier-free guidance steers away from (`SamplingConfig.head_guidance`)."""
    pixels, caption, _ = source.get(index)
    if rng.random() < 0.5:  # image then caption
        return [S.Segment("image", 0, False), S.text(caption, True), S.eos()], [pixels]
    if uncond_prob > 0 and rng.random() < uncond_prob:
        return unconditional(), [pixels]
    return [S.text(t2i_prompt(caption), True), S.Segment("image", 0, True), S.eos()], [pixels]


def world_pretrain_sample(
    world: ShapesWorld, index: int, rng, uncond_prob: float = 0.0, layout_plan: bool = True
) -> tuple[list[S.Segment], list[Scene]]:
    scene = world.scene(index)
    caption = language.captions(scene, rng)[0]
    kind = rng.random()
    if kind < 0.4:  # image then caption
        return [S.Segment("image", 0, False), S.text(caption, True), S.eos()], [scene]
    if kind < 0.85:  # caption then layout then image: "An image of <caption>. Layout: ... [IMG] ... [/IMG]"
        if uncond_prob > 0 and rng.random() < uncond_prob:
            return unconditional(), [scene]
        plan = [S.text(" " + language.layout(scene), True)] if layout_plan else []
        return [S.text(t2i_prompt(caption), True), *plan, S.Segment("image", 0, True), S.eos()], [scene]
    doc = world.document(index)  # interleaved: a scene changed step by step
    segments, scenes = [], []
    for part in doc:
        if part["type"] == "text":
            segments.append(S.text(part["text"], True))
        else:
            segments.append(S.Segment("image", len(scenes), True))
            scenes.append(Scene.from_dict(part["scene"]))
    return segments + [S.eos()], scenes


# Instruction kinds and their shares: a look at one image (its caption and questions about it, as
# turns of one conversation), a drawing, an edit, a few-shot episode, and an edit that cannot be made
# (the object named is not there, or it already is what is asked), answered by a sentence saying why.
INSTRUCT_KINDS = {"look": 0.43, "draw": 0.19, "edit": 0.19, "episode": 0.14, "refuse": 0.05}


def look_turns(row: dict, rng) -> list[dict]:
    """A random one to all of a world row's readings of its image, in random order: the caption
    ("Describe the image.") and one question of each kind, each a {question, answer} turn.

    One image serves several turns, as LLaVA's conversations do: the image costs the transformer its
    N positions once, and each turn adds a dozen, so a conversation teaches three or four readings
    for the price of two single ones. (The row lists its questions in a fixed order; taking the
    first ones left relation and size questions untrained.)"""
    turns = [{"kind": "describe", "question": DESCRIBE, "answer": row["caption"]}, *row["questions"]]
    order = rng.permutation(len(turns))[: int(rng.integers(1, len(turns) + 1))]
    return [turns[int(i)] for i in order]


def world_instruct_sample(
    world: ShapesWorld, index: int, rng, kinds: dict[str, float], layout_plan: bool = True
) -> tuple[list[S.Segment], list[Scene]]:
    """One instruction conversation about world row `index`, of a kind drawn from `kinds` (shares,
    as `INSTRUCT_KINDS`): look (caption and questions), draw (with its layout plan), edit, or a
    few-shot episode. Assistant turns carry the loss."""
    row = world[index]
    scene = Scene.from_dict(row["scene"])
    kind = str(rng.choice(list(kinds), p=list(kinds.values())))
    user = lambda *parts: {"role": "user", "content": list(parts)}
    bot = lambda *parts: {"role": "assistant", "content": list(parts)}
    txt = lambda t: {"type": "text", "text": t}
    img = {"type": "image"}
    scenes = [scene]
    if kind == "look":
        turns = look_turns(row, rng)
        messages = [user(img, txt(turns[0]["question"])), bot(txt(turns[0]["answer"]))]
        for turn in turns[1:]:
            messages += [user(txt(turn["question"])), bot(txt(turn["answer"]))]
    elif (
        kind == "draw"
        or (kind == "edit" and row["edit"] is None)
        or (kind == "refuse" and not row.get("impossible_edit"))
    ):
        plan = [txt(language.layout(scene))] if layout_plan else []
        messages = [user(txt(draw_prompt(row["references"][-1]))), bot(*plan, img)]
    elif kind == "edit":
        messages = [user(img, txt(row["edit"]["instruction"])), bot(img)]
        scenes.append(Scene.from_dict(row["edit"]["target"]))
    elif kind == "refuse" and row.get("impossible_edit"):
        impossible = row["impossible_edit"]
        messages = [user(img, txt(impossible["instruction"])), bot(txt(impossible["reply"]))]
    else:
        episode = world.episode(index, int(rng.integers(0, 5)))
        messages, scenes = [], []
        for demo in episode["demos"]:
            messages += [user(img, txt(episode["prompt"])), bot(txt(demo["answer"]))]
            scenes.append(Scene.from_dict(demo["scene"]))
        messages += [user(img, txt(episode["prompt"])), bot(txt(episode["answer"]))]
        scenes.append(Scene.from_dict(episode["query"]))
    segments = S.chat_segments(messages, list(range(len(scenes))))  # image values: scene indices for now
    return segments, scenes
