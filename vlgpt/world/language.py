"""Language of the Shapes world: captions, questions, edits, documents and in-context episodes.

Everything is generated from a scene and a numpy Generator, so a row is reproducible from its seed.
Captions always mention every object (so caption recall is meaningful), come from 22 templates, and
are parsed back by `parse_caption` for scoring. Answers are short and exact (VQA style: "red", "2",
"yes"). Texts respect the compositional split: `excluded` pairs are never named.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .scene import (
    COLORS,
    SHAPES,
    SIZES,
    Scene,
    SceneError,
    ShapeObject,
    compose,
    place,
    relation,
    relation_holds,
)

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
RELATION_PHRASES = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}
RELATION_ANSWERS = {"left of": "left", "right of": "right", "above": "above", "below": "below"}
REGIONS = {
    "top left corner": (0.2, 0.2),
    "top middle": (0.5, 0.2),
    "top right corner": (0.8, 0.2),
    "left side": (0.2, 0.5),
    "center": (0.5, 0.5),
    "right side": (0.8, 0.5),
    "bottom left corner": (0.2, 0.8),
    "bottom middle": (0.5, 0.8),
    "bottom right corner": (0.8, 0.8),
}
_REGION_NAMES = (  # [row][column] of the thirds
    ("top left corner", "top middle", "top right corner"),
    ("left side", "center", "right side"),
    ("bottom left corner", "bottom middle", "bottom right corner"),
)
_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
MADE_UP_WORDS = (
    "dax",
    "blicket",
    "wug",
    "fep",
    "toma",
    "zup",
    "kiki",
    "bouba",
    "gazzer",
    "tufa",
    "modi",
    "lorp",
)
EDIT_KINDS = ("recolor", "reshape", "move", "add", "remove")
QUESTION_KINDS = ("color", "shape", "count", "existence", "relation", "size", "place")

Pair = tuple[str, str]  # (color, shape)


# --- phrases -----------------------------------------------------------------------------------


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(count: int, size: str | None, color: str | None, shape: str) -> str:
    """ "a small red circle", "two large blue stars", "an orange cross"."""
    words = [w for w in (size, color) if w]
    noun = shape if count == 1 else plural(shape)
    head = " ".join(words + [noun])
    return f"{article(head)} {head}" if count == 1 else f"{NUMBER_WORDS[count]} {head}"


def join_list(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'; '' for nothing (an empty canvas describes as nothing)."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def groups(objects, with_size: bool = True) -> list[tuple[int, str | None, str, str]]:
    """Identical objects grouped: [(count, size, color, shape)] in first-appearance order."""
    keys = [(o.size if with_size else None, o.color, o.shape) for o in objects]
    counts = Counter(keys)
    return [(counts[k], *k) for k in dict.fromkeys(keys)]


def describe(objects, with_size: bool = True) -> str:
    return join_list([noun_phrase(*group) for group in groups(objects, with_size)])


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


# --- captions ----------------------------------------------------------------------------------

_LIST_TEMPLATES = (
    "{Objs}.",
    "There {be} {objs}.",
    "An image of {objs}.",
    "A picture showing {objs}.",
    "This scene contains {objs}.",
    "{Objs} on a {bg} background.",
    "We can see {objs}.",
    "The canvas holds {objs}.",
    "A {bg} background with {objs}.",
    "In this image: {objs}.",
    "Shapes: {objs}.",
    "{Total} {shapes_word}: {objs}.",
    "Here {be} {objs}.",
    "A drawing of {objs}.",
    "Visible {be} {objs}.",
    "The picture has {objs}.",
    "Only {objs}.",
    # Sizeless phrasings, as people (and GenEval's prompts) often leave size out.
    "An image of {objs_plain}.",
    "A picture with {objs_plain}.",
    "{Objs_plain}.",
)
_RELATION_TEMPLATES = (
    "{A} {rel} {B}.",
    "There is {a} {rel} {b}.",
    "{A} sits {rel} {b}.",
)
_ORDER_TEMPLATES = ("From left to right: {objs}.", "From top to bottom: {objs}.")
CAPTION_TEMPLATE_COUNT = len(_LIST_TEMPLATES) + len(_RELATION_TEMPLATES) + len(_ORDER_TEMPLATES)


def _clear_pair(a: ShapeObject, b: ShapeObject, scene: Scene) -> str | None:
    """The relation of a to b if it is unambiguous (dominant axis by a clear margin), else None."""
    dx, dy = abs(a.x - b.x), abs(a.y - b.y)
    if max(dx, dy) < 1.5 * min(dx, dy) or max(dx, dy) < 0.1 * min(scene.width, scene.height):
        return None
    return relation(a, b)


def _ordered(scene: Scene, axis: str) -> list[ShapeObject] | None:
    """Objects sorted along an axis if neighbours are clearly apart on it, else None."""
    key = (lambda o: o.x) if axis == "x" else (lambda o: o.y)
    objects = sorted(scene.objects, key=key)
    gap = 0.08 * min(scene.width, scene.height)
    if any(key(b) - key(a) < gap for a, b in zip(objects, objects[1:])):
        return None
    return objects


LAYOUT_GRID = 16  # layout coordinates are cells of a 16 x 16 grid over the canvas


def layout(scene: Scene) -> str:
    """Every object and where its centre is, left to right: "Layout: small red circle at 3 10, ...".

    VL-GPT regresses image embeddings with a deterministic head, so a drawing prompt that leaves
    the positions open ("a red circle left of a blue star") would be answered with the average of
    all layouts: a blur. The model therefore writes this plan first, as text that it samples, then
    draws the image the plan pins down (an interleaved answer; see docs/architecture.md).
    """
    cell = lambda v, side: min(int(v / side * LAYOUT_GRID), LAYOUT_GRID - 1)
    parts = [
        f"{o.size} {o.color} {o.shape} at {cell(o.x, scene.width)} {cell(o.y, scene.height)}"
        for o in sorted(scene.objects, key=lambda o: (o.x, o.y))
    ]
    return "Layout: " + ", ".join(parts) + "."


def captions(scene: Scene, rng: np.random.Generator, n: int = 1) -> list[str]:
    """`n` distinct captions of `scene` (fewer if the scene has fewer applicable templates)."""
    options = applicable_captions(scene)
    picks = rng.permutation(len(options))[:n]
    return [options[i] for i in picks]


def canonical_caption(scene: Scene) -> str:
    """One caption per scene, decided by what the picture shows: every object, left to right, in one
    template ("An image of a small red circle and a large blue star."). A regression target that is
    the text of this caption has one right answer per image, where a template drawn at random makes
    the best prediction a blend of all of them."""
    objects = sorted(scene.objects, key=lambda o: (o.x, o.y))
    return f"An image of {describe(objects)}." if objects else "An empty canvas."


_LOOSE_TEMPLATES = ("An image of {}.", "An image of {}.", "A picture of {}.", "{}.", "A drawing of {}.")


def loose_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption at a random level of detail, as people write prompts: some of the scene's shapes,
    each with its full count (a shape named is never undercounted), colours half the time and sizes
    half of those; two lone objects of different shapes are related when their relation is clear
    ("An image of a cross to the right of a triangle."). Every word stays true of the scene."""
    if not scene.objects:
        return captions(scene, rng)[0]
    shapes = list(dict.fromkeys(o.shape for o in scene.objects))
    chosen = [
        shapes[i] for i in sorted(rng.permutation(len(shapes))[: int(rng.integers(1, len(shapes) + 1))])
    ]
    with_color = bool(rng.random() < 0.5)
    with_size = with_color and bool(rng.random() < 0.5)
    objects = [o for o in scene.objects if o.shape in chosen]
    template = _LOOSE_TEMPLATES[int(rng.integers(len(_LOOSE_TEMPLATES)))]
    words = lambda o: noun_phrase(1, o.size if with_size else None, o.color if with_color else None, o.shape)
    if len(objects) == 2 and len(chosen) == 2 and rng.random() < 0.5:
        a, b = objects
        rel = _clear_pair(a, b, scene)
        if rel is not None:
            return capitalize(template.format(f"{words(a)} {RELATION_PHRASES[rel]} {words(b)}"))
    if with_color:
        text = describe(objects, with_size)
    else:
        counts = Counter(o.shape for o in objects)
        text = join_list([noun_phrase(counts[shape], None, None, shape) for shape in chosen])
    return capitalize(template.format(text))


def applicable_captions(scene: Scene) -> list[str]:
    """Every template's caption for this scene; all mention every object."""
    if not scene.objects:
        return ["An empty canvas.", "Nothing but the background.", "A blank picture."]
    objs = describe(scene.objects)
    first_count = groups(scene.objects)[0][0]
    total = len(scene.objects)
    fields = {
        "objs": objs,
        "Objs": capitalize(objs),
        "objs_plain": describe(scene.objects, with_size=False),
        "Objs_plain": capitalize(describe(scene.objects, with_size=False)),
        "be": "is" if first_count == 1 else "are",
        "bg": scene.background,
        "Total": capitalize(NUMBER_WORDS[total]),
        "shapes_word": "shape" if total == 1 else "shapes",
    }
    out = [t.format(**fields) for t in _LIST_TEMPLATES]
    if len(scene.objects) == 2 and len(groups(scene.objects)) == 2:
        a, b = scene.objects
        rel = _clear_pair(a, b, scene)
        if rel is not None:
            pa, pb = describe([a]), describe([b])
            for t in _RELATION_TEMPLATES:
                out.append(t.format(A=capitalize(pa), a=pa, B=pb, b=pb, rel=RELATION_PHRASES[rel]))
    if len(scene.objects) >= 2:
        for axis, template in zip("xy", _ORDER_TEMPLATES):
            ordered = _ordered(scene, axis)
            if ordered is not None:
                out.append(template.format(objs=join_list([describe([o]) for o in ordered])))
    return out


# --- parsing captions back -------------------------------------------------------------------

_COUNT_WORDS = {w: i for i, w in enumerate(NUMBER_WORDS)} | {"a": 1, "an": 1}
_OBJECT_RE = re.compile(
    r"\b(a|an|one|two|three|four|five|six|seven|eight|nine|ten|\d+)\s+"
    r"(?:(" + "|".join(SIZES) + r")\s+)?"
    r"(?:(" + "|".join(COLORS) + r")\s+)?"
    r"(" + "|".join(SHAPES) + r")(?:e?s)?\b"
)


@dataclass(frozen=True)
class ParsedObject:
    size: str | None
    color: str | None
    shape: str


def parse_caption(text: str) -> list[ParsedObject]:
    """The objects a caption names, one entry per object ("two red stars" -> two entries)."""
    out = []
    for match in _OBJECT_RE.finditer(text.lower()):
        count_word, size, color, shape = match.groups()
        count = int(count_word) if count_word.isdigit() else _COUNT_WORDS[count_word]
        out += [ParsedObject(size, color, shape)] * min(count, 16)
    return out


def caption_attribute_scores(text: str, scene: Scene) -> dict[str, float]:
    """Precision, recall and F1 of the objects a caption names against the scene's objects.

    An object counts as correct when its shape and colour match a scene object and its size does
    too when the caption gives one; matching is one-to-one (so counts matter).
    """
    predicted = parse_caption(text)
    truth = list(scene.objects)
    # Most specific mentions first, so a sizeless mention cannot steal a sized one's match.
    predicted.sort(key=lambda p: (p.size is None, p.color is None))
    used = [False] * len(truth)
    correct = 0
    for p in predicted:
        for j, t in enumerate(truth):
            if not used[j] and t.shape == p.shape and p.color == t.color and p.size in (None, t.size):
                used[j] = True
                correct += 1
                break
    precision = correct / len(predicted) if predicted else float(not truth)
    recall = correct / len(truth) if truth else float(not predicted)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


# --- referring expressions -------------------------------------------------------------------


def refer(scene: Scene, index: int, rng: np.random.Generator, without: str | None = None) -> str | None:
    """The shortest description that picks out object `index` alone ("the red circle").

    `without` names an attribute that must not appear (asking "what color is the red circle" is no
    question). Returns None when no description is unique.
    """
    obj = scene.objects[index]
    options = [("shape",), ("color", "shape"), ("size", "shape"), ("size", "color", "shape")]
    if without == "shape":
        options = [("color",), ("size", "color")]
    for attrs in options:
        if without in attrs:
            continue
        matches = [o for o in scene.objects if all(getattr(o, a) == getattr(obj, a) for a in attrs)]
        if len(matches) == 1:
            words = [getattr(obj, a) for a in attrs]
            if "shape" not in attrs:
                words.append("one" if rng.random() < 0.5 else "object")
            return "the " + " ".join(words)
    return None


# --- questions -------------------------------------------------------------------------------


def questions(scene: Scene, rng: np.random.Generator, excluded: frozenset[Pair] = frozenset()) -> list[dict]:
    """One question of every kind that the scene supports: [{kind, question, answer}]."""
    out = []
    for kind in QUESTION_KINDS:
        qa = _ASKERS[kind](scene, rng, excluded)
        if qa is not None:
            out.append({"kind": kind, "question": qa[0], "answer": qa[1]})
    return out


def _ask_attribute(attribute: str):
    """ "What <attribute> is <the object>?", referring to the object without naming that attribute."""

    def ask(scene, rng, excluded):
        for i in rng.permutation(len(scene.objects)):
            ref = refer(scene, int(i), rng, without=attribute)
            if ref:
                return f"What {attribute} is {ref}?", getattr(scene.objects[i], attribute)
        return None

    return ask


def _ask_count(scene, rng, excluded):
    style = rng.integers(3)
    if style == 0 or not scene.objects:
        shape = SHAPES[rng.integers(len(SHAPES))]
        n = sum(o.shape == shape for o in scene.objects)
        return f"How many {plural(shape)} are there?", str(n)
    if style == 1:
        color = scene.objects[rng.integers(len(scene.objects))].color
        n = sum(o.color == color for o in scene.objects)
        return f"How many {color} shapes are there?", str(n)
    return "How many shapes are there?", str(len(scene.objects))


def _ask_existence(scene, rng, excluded):
    present = {o.kind for o in scene.objects}
    if present and rng.random() < 0.5:
        color, shape = sorted(present)[rng.integers(len(present))]
        return f"Is there {article(color)} {color} {shape}?", "yes"
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present and (c, s) not in excluded]
    color, shape = absent[rng.integers(len(absent))]
    return f"Is there {article(color)} {color} {shape}?", "no"


def _ask_relation(scene, rng, excluded):
    n = len(scene.objects)
    pairs = [(int(i), int(j)) for i in range(n) for j in range(n) if i != j]
    for k in rng.permutation(len(pairs)):
        i, j = pairs[k]
        rel = _clear_pair(scene.objects[i], scene.objects[j], scene)
        ref_a, ref_b = refer(scene, i, rng), refer(scene, j, rng)
        if rel is None or not ref_a or not ref_b:
            continue
        if rng.random() < 0.5:
            return f"Where is {ref_a} relative to {ref_b}?", RELATION_ANSWERS[rel]
        # Asked along the axis on which the pair is clearly apart: "is the circle above the star?"
        # of two objects side by side would hang on a pixel of height.
        asked = rel if rng.random() < 0.5 else _OPPOSITE[rel]
        answer = "yes" if relation_holds(asked, scene.objects[i], scene.objects[j]) else "no"
        return f"Is {ref_a} {RELATION_PHRASES[asked]} {ref_b}?", answer
    return None


def region(obj: ShapeObject, scene: Scene, margin: float = 0.05) -> str | None:
    """Which ninth of the canvas (a `REGIONS` name) holds the centre of `obj`, or None when the
    centre lies within `margin` (a fraction of the side) of a line between thirds."""
    parts = []
    for value, side in ((obj.x, scene.width), (obj.y, scene.height)):
        t = value / side
        if min(abs(t - 1 / 3), abs(t - 2 / 3)) < margin:
            return None
        parts.append(min(int(t * 3), 2))
    return _REGION_NAMES[parts[1]][parts[0]]


def _ask_place(scene, rng, excluded):
    """ "Where is <the object>?" in the canvas: one object's own place, the step before relations."""
    for i in rng.permutation(len(scene.objects)):
        where = region(scene.objects[i], scene)
        ref = refer(scene, int(i), rng) if where else None
        if ref:
            return f"Where is {ref} in the picture?", where
    return None


def _ask_size(scene, rng, excluded):
    for i in rng.permutation(len(scene.objects)):
        ref = refer(scene, int(i), rng, without="size")
        if ref:
            if rng.random() < 0.5:
                return f"Is {ref} small or large?", scene.objects[i].size
            return f"What size is {ref}?", scene.objects[i].size
    return None


_ASKERS = {
    "color": _ask_attribute("color"),
    "shape": _ask_attribute("shape"),
    "count": _ask_count,
    "existence": _ask_existence,
    "relation": _ask_relation,
    "size": _ask_size,
    "place": _ask_place,
}


# --- edits -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    kind: str
    instruction: str
    source: Scene
    target: Scene

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "instruction": self.instruction,
            "source": self.source.to_dict(),
            "target": self.target.to_dict(),
        }


def edit(
    scene: Scene,
    rng: np.random.Generator,
    excluded: frozenset[Pair] = frozenset(),
    kinds: tuple[str, ...] = EDIT_KINDS,
) -> Edit | None:
    """A random applicable edit of `scene`, or None. Targets never contain `excluded` pairs."""
    for k in rng.permutation(len(kinds)):
        result = _EDITORS[kinds[k]](scene, rng, excluded)
        if result is not None:
            instruction, target = result
            return Edit(kinds[k], instruction, scene, target)
    return None


def _swap(scene: Scene, index: int, obj: ShapeObject) -> Scene:
    objects = list(scene.objects)
    objects[index] = obj
    return scene.replace(objects=tuple(objects))


def _edit_recolor(scene, rng, excluded):
    for i in rng.permutation(len(scene.objects)):
        obj, ref = scene.objects[i], refer(scene, int(i), rng)
        choices = [c for c in COLORS if c != obj.color and (c, obj.shape) not in excluded]
        if ref and choices:
            color = choices[rng.integers(len(choices))]
            template = ("Make {ref} {c}.", "Change the color of {ref} to {c}.", "Paint {ref} {c}.")
            text = template[rng.integers(3)].format(ref=ref, c=color)
            return capitalize(text), _swap(
                scene, int(i), ShapeObject(obj.shape, color, obj.size, obj.x, obj.y)
            )
    return None


def _edit_reshape(scene, rng, excluded):
    for i in rng.permutation(len(scene.objects)):
        obj, ref = scene.objects[i], refer(scene, int(i), rng)
        choices = [s for s in SHAPES if s != obj.shape and (obj.color, s) not in excluded]
        if ref and choices:
            shape = choices[rng.integers(len(choices))]
            new = (
                noun_phrase(1, None, None, shape)
                if rng.random() < 0.7
                else noun_phrase(1, None, obj.color, shape)
            )
            template = ("Turn {ref} into {new}.", "Change {ref} into {new}.", "Replace {ref} with {new}.")
            text = template[rng.integers(3)].format(ref=ref, new=new)
            return capitalize(text), _swap(
                scene, int(i), ShapeObject(shape, obj.color, obj.size, obj.x, obj.y)
            )
    return None


def _edit_move(scene, rng, excluded):
    names = list(REGIONS)
    for i in rng.permutation(len(scene.objects)):
        obj, ref = scene.objects[i], refer(scene, int(i), rng)
        if not ref:
            continue
        for r in rng.permutation(len(names)):
            fx, fy = REGIONS[names[r]]
            moved = ShapeObject(obj.shape, obj.color, obj.size, fx * scene.width, fy * scene.height)
            far_enough = abs(moved.x - obj.x) + abs(moved.y - obj.y) > 0.2 * scene.width
            if far_enough and scene.fits(moved, ignore=int(i)):
                verb = ("Move {ref} to the {where}.", "Put {ref} in the {where}.")[rng.integers(2)]
                text = verb.format(ref=ref, where=names[r])
                return capitalize(text), _swap(scene, int(i), moved)
    return None


def _edit_add(scene, rng, excluded):
    if len(scene.objects) >= 4:
        return None
    kinds = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in excluded]
    color, shape = kinds[rng.integers(len(kinds))]
    size = SIZES[rng.integers(2)]
    try:
        obj = place(rng, scene, shape, color, size)
    except SceneError:
        return None
    template = ("Add {np}.", "Draw {np} too.", "Put {np} somewhere free.")
    return template[rng.integers(3)].format(np=noun_phrase(1, size, color, shape)), scene.replace(
        objects=scene.objects + (obj,)
    )


def _edit_remove(scene, rng, excluded):
    if len(scene.objects) < 2:
        return None
    for i in rng.permutation(len(scene.objects)):
        ref = refer(scene, int(i), rng)
        if ref:
            template = ("Remove {ref}.", "Delete {ref}.", "Take away {ref}.")
            objects = scene.objects[:i] + scene.objects[i + 1 :]
            return capitalize(template[rng.integers(3)].format(ref=ref)), scene.replace(objects=objects)
    return None


_EDITORS = {
    "recolor": _edit_recolor,
    "reshape": _edit_reshape,
    "move": _edit_move,
    "add": _edit_add,
    "remove": _edit_remove,
}


# --- edits that cannot be made -----------------------------------------------------------------

IMPOSSIBLE_KINDS = ("absent", "same")


@dataclass(frozen=True)
class ImpossibleEdit:
    """An edit request the scene cannot satisfy, and the short answer that says why."""

    kind: str  # absent: it names an object the image does not hold; same: it asks for what already is
    instruction: str
    reply: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "instruction": self.instruction, "reply": self.reply}


def impossible_edit(
    scene: Scene, rng: np.random.Generator, excluded: frozenset[Pair] = frozenset()
) -> ImpossibleEdit | None:
    """A random edit request that cannot be made to `scene`, worded as the possible ones are, or
    None. `absent` names a colour and shape the scene does not hold (often a shape it has in another
    colour, so that only looking tells); `same` asks an object to become what it already is."""
    for k in rng.permutation(len(IMPOSSIBLE_KINDS)):
        made = _IMPOSSIBLE[IMPOSSIBLE_KINDS[k]](scene, rng, excluded)
        if made is not None:
            return ImpossibleEdit(IMPOSSIBLE_KINDS[k], *made)
    return None


def _impossible_absent(scene, rng, excluded):
    present = {o.kind for o in scene.objects}
    shapes = {o.shape for o in scene.objects}
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present and (c, s) not in excluded]
    near = [kind for kind in absent if kind[1] in shapes]  # a star in another colour than the one asked
    pool = near if near and rng.random() < 0.6 else absent
    if not pool:
        return None
    color, shape = pool[rng.integers(len(pool))]
    ref = f"the {color} {shape}"
    others = [c for c in COLORS if c != color and (c, shape) not in excluded]
    templates = (
        f"Make {ref} {others[rng.integers(len(others))]}." if others else f"Remove {ref}.",
        f"Remove {ref}.",
        f"Delete {ref}.",
        f"Move {ref} to the {list(REGIONS)[rng.integers(len(REGIONS))]}.",
        f"Turn {ref} into {noun_phrase(1, None, None, [s for s in SHAPES if s != shape][rng.integers(5)])}.",
    )
    return templates[rng.integers(len(templates))], f"There is no {color} {shape} in the image."


def _impossible_same(scene, rng, excluded):
    for i in rng.permutation(len(scene.objects)):
        obj, ref = scene.objects[i], refer(scene, int(i), rng)
        if not ref:
            continue
        if rng.random() < 0.5:
            text = ("Make {ref} {c}.", "Change the color of {ref} to {c}.", "Paint {ref} {c}.")[
                rng.integers(3)
            ]
            return capitalize(text.format(ref=ref, c=obj.color)), capitalize(f"{ref} is {obj.color} already.")
        text = ("Turn {ref} into {new}.", "Change {ref} into {new}.")[rng.integers(2)]
        new = noun_phrase(1, None, None, obj.shape)
        return capitalize(text.format(ref=ref, new=new)), capitalize(f"{ref} is {new} already.")
    return None


_IMPOSSIBLE = {"absent": _impossible_absent, "same": _impossible_same}


# --- interleaved documents and in-context episodes -------------------------------------------


def document(
    scene: Scene, rng: np.random.Generator, excluded: frozenset[Pair] = frozenset(), max_images: int = 4
) -> list[dict]:
    """An interleaved text-and-image document: a scene changed step by step.

    Returns segments [{"type": "text", "text"} | {"type": "image", "scene": dict}].
    """
    segments = [
        {"type": "text", "text": capitalize(captions(scene, rng)[0])},
        {"type": "image", "scene": scene.to_dict()},
    ]
    steps = int(rng.integers(1, max_images))
    for step in range(steps):
        change = edit(scene, rng, excluded)
        if change is None:
            break
        lead = ("Then: ", "Next: ", "After that: ")[min(step, 2)]
        segments += [
            {"type": "text", "text": lead + change.instruction[0].lower() + change.instruction[1:]},
            {"type": "image", "scene": change.target.to_dict()},
        ]
        scene = change.target
    return segments


def episode(
    seed: int,
    k: int,
    *,
    width: int = 64,
    height: int = 64,
    task: str = "color-words",
    excluded: frozenset[Pair] = frozenset(),
) -> dict:
    """A few-shot episode: k labelled demonstrations, then a query.

    The labels are made-up words bound to colours (or shapes) in this episode alone, so the answer
    can only be learnt from the demonstrations: at k=0 it is a guess.
    """
    if task not in ("color-words", "shape-words"):
        raise SceneError(f"unknown episode task {task!r}; choose color-words or shape-words")
    rng = np.random.default_rng(seed)
    attribute = "color" if task == "color-words" else "shape"
    values = list(COLORS) if attribute == "color" else list(SHAPES)
    classes = [values[i] for i in rng.permutation(len(values))[:2]]
    words = [MADE_UP_WORDS[i] for i in rng.permutation(len(MADE_UP_WORDS))[:2]]

    def single(value: str, sub_seed: int) -> Scene:
        sub = np.random.default_rng(sub_seed)
        while True:
            other = (
                SHAPES[sub.integers(len(SHAPES))]
                if attribute == "color"
                else list(COLORS)[sub.integers(len(COLORS))]
            )
            color, shape = (value, other) if attribute == "color" else (other, value)
            if (color, shape) not in excluded:
                return compose(
                    [(shape, color, SIZES[sub.integers(2)])], width=width, height=height, seed=sub_seed
                )

    # Demonstrations alternate classes so that each class is shown when k >= 2.
    demo_classes = [(i + int(rng.integers(2))) % 2 for i in range(k)] if k else []
    if k >= 2:
        demo_classes = [i % 2 for i in range(k)]
        rng.shuffle(demo_classes)
    demos = [
        {"scene": single(classes[c], seed * 31 + i + 1).to_dict(), "answer": words[c]}
        for i, c in enumerate(demo_classes)
    ]
    query_class = int(rng.integers(2))
    return {
        "task": task,
        "k": k,
        "prompt": "What is this?",
        "demos": demos,
        "query": single(classes[query_class], seed * 31 + 1000).to_dict(),
        "answer": words[query_class],
        "words": dict(zip(words, classes)),
    }
