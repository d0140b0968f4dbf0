"""The Shapes world: scenes, rendering, language, splits and the judge."""

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from vlgpt.world import language as L
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.judge import JudgeError, compare_scenes, judge
from vlgpt.world.render import render
from vlgpt.world.scene import (
    COLORS,
    SHAPES,
    Scene,
    SceneError,
    SceneSampler,
    ShapeObject,
    compose,
    relation,
    relation_holds,
)
from vlgpt.world.splits import HELD_OUT_PAIRS, SPLITS, mentions_held_out, split_seed


def test_vocabulary_is_large_enough():
    assert len(SHAPES) >= 6 and len(COLORS) >= 8
    assert L.CAPTION_TEMPLATE_COUNT >= 20
    assert len(L.QUESTION_KINDS) >= 6


def test_scene_is_deterministic_and_round_trips_json():
    sampler = SceneSampler()
    a, b = sampler.sample(123), sampler.sample(123)
    assert a == b and a != sampler.sample(124)
    assert Scene.from_json(a.to_json()) == a
    assert Scene.from_dict(json.loads(json.dumps(a.to_dict()))) == a


def test_scenes_have_one_to_four_non_overlapping_objects():
    sampler = SceneSampler()
    counts = set()
    for seed in range(300):
        scene = sampler.sample(seed)
        counts.add(len(scene.objects))
        for i, obj in enumerate(scene.objects):
            assert scene.fits(obj, ignore=i), f"seed {seed}: object {i} overlaps or leaves the canvas"
    assert counts == {1, 2, 3, 4}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kinds=[("hexagon", "red", "small")]), "unknown shape"),
        (dict(kinds=[("circle", "teal", "small")]), "unknown color"),
        (dict(kinds=[("circle", "red", "huge")]), "unknown size"),
        (dict(kinds=[("circle", "red", "large")] * 5), "exceed the maximum"),
        (dict(kinds=[("circle", "red", "small")], width=16, height=64), "outside 32..256"),
    ],
)
def test_bad_scenes_fail_with_a_clear_error(kwargs, message):
    with pytest.raises(SceneError, match=message):
        compose(**kwargs)


def test_impossible_layouts_are_refused():
    crowded = {
        "width": 32,
        "height": 32,
        "objects": [
            {"shape": "circle", "color": "red", "size": "large", "x": 16, "y": 16},
            {"shape": "star", "color": "blue", "size": "large", "x": 18, "y": 16},
        ],
    }
    with pytest.raises(SceneError, match="overlaps"):
        Scene.from_dict(crowded)
    outside = {"objects": [{"shape": "circle", "color": "red", "size": "large", "x": 1, "y": 1}]}
    with pytest.raises(SceneError, match="leaves the 64x64 canvas"):
        Scene.from_dict(outside)
    with pytest.raises(SceneError, match="not a scene"):
        Scene.from_dict({"objects": [{"shape": "circle"}]})


def test_relations_follow_geometry():
    a, b = ShapeObject("circle", "red", "small", 10, 30), ShapeObject("star", "blue", "small", 50, 32)
    assert relation(a, b) == "left of" and relation(b, a) == "right of"
    c = ShapeObject("square", "green", "small", 12, 55)
    assert relation(a, c) == "above" and relation(c, a) == "below"
    assert relation_holds("left of", a, b) and not relation_holds("right of", a, b)


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_render_sizes_and_antialiasing(size):
    scene = SceneSampler(size, size).sample(7)
    image = render(scene)
    assert image.size == (size, size) and image.mode == "RGB"
    assert np.array_equal(np.asarray(image), np.asarray(render(scene)))
    # Anti-aliased edges produce colours that are neither background nor a palette colour.
    assert len(np.unique(np.asarray(image).reshape(-1, 3), axis=0)) > 10


def test_splits_are_disjoint_and_hold_out_pairs():
    seeds = {split: {split_seed(split, i) for i in range(1000)} for split in SPLITS}
    for s1 in SPLITS:
        for s2 in SPLITS:
            if s1 < s2:
                assert not seeds[s1] & seeds[s2]
    for split in ("train", "val", "test"):
        world = ShapesWorld(split)
        for i in range(150):
            row = world[i]
            kinds = {(o["color"], o["shape"]) for o in row["scene"]["objects"]}
            assert not kinds & HELD_OUT_PAIRS
            texts = row["references"] + [q["question"] + " " + q["answer"] for q in row["questions"]]
            if row["edit"]:
                texts.append(row["edit"]["instruction"])
                assert (
                    not {(o["color"], o["shape"]) for o in row["edit"]["target"]["objects"]} & HELD_OUT_PAIRS
                )
            assert not any(mentions_held_out(t) for t in texts), texts
    comp = ShapesWorld("comp-test")
    for i in range(100):
        assert {(o.color, o.shape) for o in comp.scene(i).objects} & HELD_OUT_PAIRS


def test_every_caption_parses_back_to_the_scene():
    world = ShapesWorld("train")
    for i in range(100):
        scene = world.scene(i)
        for caption in L.applicable_captions(scene):
            assert L.caption_attribute_scores(caption, scene)["f1"] == 1.0, caption


def test_a_wrong_color_lowers_caption_f1():
    scene = compose([("circle", "red", "small"), ("star", "blue", "large")], seed=1)
    right = "A small red circle and a large blue star."
    wrong = "A small green circle and a large blue star."
    assert L.caption_attribute_scores(right, scene)["f1"] == 1.0
    assert L.caption_attribute_scores(wrong, scene)["f1"] == pytest.approx(0.5)
    assert (
        L.caption_attribute_scores("Two red circles.", compose([("circle", "red", "small")] * 2, seed=2))[
            "f1"
        ]
        == 1.0
    )


def test_answers_are_true_of_the_scene():
    world = ShapesWorld("train")
    kinds = set()
    for i in range(200):
        row = world[i]
        scene = Scene.from_dict(row["scene"])
        for qa in row["questions"]:
            kinds.add(qa["kind"])
            q, a = qa["question"], qa["answer"]
            if q == "How many shapes are there?":
                assert a == str(len(scene.objects))
            elif q.startswith("Is there"):
                color, shape = q[:-1].split()[-2:]
                assert a == ("yes" if (color, shape) in {o.kind for o in scene.objects} else "no")
            elif qa["kind"] == "color":
                assert a in COLORS and a in {o.color for o in scene.objects}
    assert kinds == set(L.QUESTION_KINDS)


def _referent(scene: Scene, ref: str):
    """The one object a referring expression ("the red one", "the large star") picks out."""
    words = set(ref.split()[1:])
    found = [o for o in scene.objects if words - {"one", "object"} <= {o.shape, o.color, o.size}]
    assert len(found) == 1, (ref, scene)
    return found[0]


def test_place_and_relation_questions_never_hang_on_a_pixel():
    """Place answers name the ninth of the canvas holding the object, asked only clear of the lines
    between thirds; yes/no relations are asked along the axis on which the pair is clearly apart."""
    world, asked = ShapesWorld("train"), Counter()
    for i in range(300):
        row = world[i]
        scene = Scene.from_dict(row["scene"])
        for qa in row["questions"]:
            q, a = qa["question"], qa["answer"]
            if qa["kind"] == "place":
                obj = _referent(scene, q[len("Where is ") : -len(" in the picture?")])
                fx, fy = obj.x / scene.width, obj.y / scene.height
                assert all(min(abs(f - 1 / 3), abs(f - 2 / 3)) >= 0.05 for f in (fx, fy))
                assert a == L.region(obj, scene) and a in L.REGIONS
                ex, ey = L.REGIONS[a]
                assert abs(fx - ex) < 1 / 6 + 0.14 and abs(fy - ey) < 1 / 6 + 0.14
            elif qa["kind"] == "relation" and q.startswith("Is "):
                phrase = next(p for p in L.RELATION_PHRASES.values() if f" {p} " in q)
                ref_a, ref_b = q[3:-1].split(f" {phrase} ")
                first, second = _referent(scene, ref_a), _referent(scene, ref_b)
                dx, dy = abs(first.x - second.x), abs(first.y - second.y)
                along_x = phrase.endswith(("left of", "right of"))
                assert (dx if along_x else dy) >= 1.5 * (dy if along_x else dx)
                asked[a] += 1
    assert asked["yes"] > 20 and asked["no"] > 20
    assert L.region(ShapeObject("circle", "red", "small", 64 / 3 + 1, 10), Scene(64, 64, ())) is None


def test_edits_change_exactly_what_they_say():
    rng = np.random.default_rng(0)
    scene = compose([("circle", "red", "small"), ("star", "blue", "large")], seed=3)
    for kind in L.EDIT_KINDS:
        change = L.edit(scene, rng, kinds=(kind,))
        assert change is not None, kind
        before, after = scene.objects, change.target.objects
        if kind == "recolor":
            assert sum(a.color != b.color for a, b in zip(before, after)) == 1
        elif kind == "reshape":
            assert sum(a.shape != b.shape for a, b in zip(before, after)) == 1
        elif kind == "move":
            assert sum((a.x, a.y) != (b.x, b.y) for a, b in zip(before, after)) == 1
        elif kind == "add":
            assert len(after) == len(before) + 1
        elif kind == "remove":
            assert len(after) == len(before) - 1


def test_documents_interleave_text_and_images():
    doc = ShapesWorld("train").document(5)
    assert [s["type"] for s in doc[:2]] == ["text", "image"]
    assert sum(s["type"] == "image" for s in doc) >= 2


def test_episode_labels_exist_only_in_demonstrations():
    for seed in range(20):
        ep = L.episode(seed, 4)
        assert ep["answer"] in {d["answer"] for d in ep["demos"]}
        assert ep["answer"] in L.MADE_UP_WORDS and ep["answer"] not in COLORS
        assert {d["answer"] for d in ep["demos"]} == set(ep["words"])
        assert L.episode(seed, 0)["demos"] == []


def test_judge_is_exact_on_clean_test_renders():
    world = ShapesWorld("test")
    scenes = [world.scene(i) for i in range(200)]
    exact = [compare_scenes(judge(render(s)), s)["exact"] for s in scenes]
    assert np.mean(exact) >= 0.995


def test_judge_notices_a_wrong_scene():
    scene = compose([("circle", "red", "small"), ("star", "blue", "large")], seed=4)
    other = compose([("circle", "green", "small"), ("star", "blue", "large")], seed=4)
    result = compare_scenes(judge(render(other)), scene)
    assert not result["exact"] and not result["colors"] and result["shapes"] and result["count"]


def test_judge_rejects_what_is_not_an_image():
    with pytest.raises(JudgeError):
        judge("not an image")
    with pytest.raises(JudgeError):
        judge(np.zeros((4, 4, 3)))
    assert judge(Image.new("RGB", (64, 64), (236, 234, 228))).objects == ()


def test_layout_names_every_object_left_to_right_on_a_16_grid():
    world = ShapesWorld("train")
    for i in range(20):
        scene = world.scene(i)
        text = L.layout(scene)
        assert text.startswith("Layout: ") and text.endswith(".")
        parts = text[len("Layout: ") : -1].split(", ")
        assert len(parts) == len(scene.objects)
        cols = []
        for part, obj in zip(parts, sorted(scene.objects, key=lambda o: (o.x, o.y))):
            size, color, shape, at, col, row = part.split()
            assert (size, color, shape, at) == (obj.size, obj.color, obj.shape, "at")
            assert 0 <= int(col) < 16 and 0 <= int(row) < 16
            cols.append(int(col))
        assert cols == sorted(cols)


def test_instruction_tuning_asks_every_kind_of_question():
    """The rows list one question per kind in a fixed order; training must not see only the first."""
    from vlgpt.data.samples import look_turns

    world = ShapesWorld("train", 64)
    kinds, lengths = Counter(), Counter()
    for index in range(300):
        rng = np.random.default_rng(index)
        row = world[index]
        picked = look_turns(row, rng)
        assert 1 <= len(picked) <= 1 + len(row["questions"])
        assert len({turn["question"] for turn in picked}) == len(picked)
        kinds.update(turn["kind"] for turn in picked)
        lengths[len(picked)] += 1
    assert set(kinds) == set(L.QUESTION_KINDS) | {"describe"}, kinds
    assert min(kinds.values()) > 0.4 * max(kinds.values()), kinds
    assert lengths[1] > 0 and max(lengths) >= 5, lengths


def test_the_instruct_mix_is_parsed_normalised_and_refused_when_wrong():
    """--world-mix sets the share of each conversation kind; a typo or a bad number is named."""
    from vlgpt.core.config import ConfigError
    from vlgpt.data.samples import INSTRUCT_KINDS
    from vlgpt.train.stages.instruct import parse_mix

    assert parse_mix("") == INSTRUCT_KINDS
    assert parse_mix("look=3, episode=1") == {"look": 0.75, "episode": 0.25}
    refused = {"looks=1": "unknown kind 'looks'", "look=x": "needs a number", "look=0": "add up to 0"}
    for bad, said in refused.items():
        with pytest.raises(ConfigError, match=said):
            parse_mix(bad)
