"""Metrics of the Shapes world can fail: broken systems score 0, the ground truth scores 1."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from vlgpt.eval.geneval import CATEGORIES, evaluate_t2i, make_prompts, noise_floor, score_prompt
from vlgpt.eval.world_eval import evaluate_captions, evaluate_edits, evaluate_vqa, judge_accuracy
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.judge import compare_scenes, judge
from vlgpt.world.render import render
from vlgpt.world.scene import Scene, compose


@pytest.fixture(scope="module")
def prompts():
    return make_prompts(n_per_category=8)


def oracle(prompt):
    return render(Scene.from_dict(prompt.scene))


def test_ground_truth_renderer_scores_one_in_every_category(prompts):
    result = evaluate_t2i(oracle, judge, prompts)
    for category in CATEGORIES + ("overall",):
        assert result[category]["mean"] == 1.0, category
        assert result[category]["n"] > 0


def test_empty_judge_scores_zero_in_every_category(prompts):
    result = evaluate_t2i(oracle, lambda image: Scene(64, 64, ()), prompts)
    for category in CATEGORIES + ("overall",):
        assert result[category]["mean"] == 0.0, category


def test_compositional_prompts_name_held_out_pairs():
    comp = make_prompts(n_per_category=5, compositional=True)
    colored = [p for p in comp if p.category in ("colors", "color_attr")]
    from vlgpt.world.splits import mentions_held_out

    assert all(mentions_held_out(p.prompt) for p in colored)
    assert not any(mentions_held_out(p.prompt) for p in make_prompts(n_per_category=5))
    assert evaluate_t2i(oracle, judge, comp)["overall"]["mean"] == 1.0


def test_caption_metrics_reward_truth_and_punish_a_wrong_color():
    rows = [ShapesWorld("val")[i] for i in range(12)]
    truth = {render(Scene.from_dict(r["scene"])).tobytes(): r["caption"] for r in rows}
    good = evaluate_captions(lambda image: truth[image.tobytes()], rows)
    bad = evaluate_captions(lambda image: _recolor(truth[image.tobytes()]), rows)
    assert good["attribute_f1"]["mean"] == 1.0
    assert bad["attribute_f1"]["mean"] < 0.9
    assert good["cider"]["mean"] > bad["cider"]["mean"]


def _recolor(caption: str) -> str:
    for color in ("red", "blue", "green", "yellow", "purple", "orange", "cyan", "pink", "brown", "gray"):
        if color in caption:
            return caption.replace(color, "cyan" if color != "cyan" else "red", 1)
    return caption


def test_vqa_accuracy_is_one_for_truth_and_low_for_always_yes():
    rows = [ShapesWorld("val")[i] for i in range(20)]
    answers = {
        (render(Scene.from_dict(r["scene"])).tobytes(), q["question"]): q["answer"]
        for r in rows
        for q in r["questions"]
    }
    assert evaluate_vqa(lambda im, q: answers[(im.tobytes(), q)], rows)["overall"]["mean"] == 1.0
    assert evaluate_vqa(lambda im, q: "Yes.", rows)["overall"]["mean"] < 0.3


def test_edit_accuracy_is_one_for_truth_and_zero_for_no_change():
    rows = [ShapesWorld("val")[i] for i in range(20)]
    targets = {r["edit"]["instruction"]: r["edit"]["target"] for r in rows if r["edit"]}
    truth = evaluate_edits(lambda image, instruction: render(Scene.from_dict(targets[instruction])), rows)
    unchanged = evaluate_edits(lambda image, instruction: image, rows)
    assert truth["overall"]["mean"] == 1.0
    assert unchanged["overall"]["mean"] == 0.0


def test_judge_accuracy_report_covers_corruptions():
    world = ShapesWorld("test")
    result = judge_accuracy([world.scene(i) for i in range(30)])
    assert set(result) == {"clean", "blur", "noise"}
    assert result["clean"]["mean"] == 1.0


# --- the meter gives noise nothing -------------------------------------------------------------


@pytest.mark.parametrize("spread", [0.05, 0.1, 0.25, 0.5, 1.0])
def test_random_noise_earns_nothing_on_the_t2i_meter(prompts, spread):
    rng = np.random.default_rng(0)
    noise = lambda _: Image.fromarray(
        (np.clip(rng.normal(0.5, spread, (64, 64, 3)), 0, 1) * 255).astype(np.uint8)
    )
    result = evaluate_t2i(noise, judge, prompts)
    assert result["overall"]["mean"] <= 0.05 and result["strict_overall"]["mean"] <= 0.05


def test_a_flat_grey_image_earns_nothing_and_the_floor_is_reported(prompts):
    grey = lambda _: Image.new("RGB", (64, 64), (128, 128, 128))
    assert evaluate_t2i(grey, judge, prompts)["overall"]["mean"] == 0.0
    floor = noise_floor(judge, prompts)
    assert floor["mean"] <= 0.05 and floor["n"] == len(prompts) and floor["spread"] in (0.25, 0.5, 1.0)


def test_judge_refuses_noise_but_stays_exact_on_blurred_and_resampled_renders():
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    judged = judge(noise)
    assert judged.objects == () and judged.unreadable and "background" in judged.unreadable[0]
    boxed = np.full((64, 64, 3), (236, 234, 228), np.uint8)  # a plain canvas with a block of noise
    boxed[12:52, 12:52] = np.random.default_rng(2).integers(0, 256, (40, 40, 3))
    judged = judge(boxed)
    assert judged.objects == () and len(judged.unreadable) == 1
    world = ShapesWorld("test")
    variants = {
        "blur": lambda im: im.filter(ImageFilter.GaussianBlur(1)),
        "resample": lambda im: im.resize((32, 32), Image.BILINEAR).resize((64, 64), Image.BILINEAR),
    }
    for name, change in variants.items():
        exact = [
            compare_scenes(judge(change(render(world.scene(i)))), world.scene(i))["exact"] for i in range(60)
        ]
        assert np.mean(exact) == 1.0, name


def test_an_unreadable_blob_counts_against_a_reconstruction_and_the_strict_score():
    scene = compose([("circle", "red", "large")], seed=3)
    image = np.asarray(render(scene)).copy()
    corner = (slice(2, 14), slice(2, 14)) if scene.objects[0].x > 32 else (slice(2, 14), slice(50, 62))
    image[corner] = np.random.default_rng(0).integers(0, 256, (12, 12, 3))
    judged = judge(image)
    assert [o.shape for o in judged.objects] == ["circle"] and len(judged.unreadable) == 1
    assert not compare_scenes(judged, scene)["count"]
    prompt = make_prompts(n_per_category=1)[0]  # "an image of a <shape>"
    drawn = judge(render(Scene.from_dict(prompt.scene)))
    two = Scene(64, 64, drawn.objects * 2)
    assert score_prompt(prompt, two) == 1.0 and score_prompt(prompt, two, strict=True) == 0.0
