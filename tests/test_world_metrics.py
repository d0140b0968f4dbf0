"""Metrics of the Shapes world can fail: broken systems score 0, the ground truth scores 1."""

import pytest

from vlgpt.eval.geneval import CATEGORIES, evaluate_t2i, make_prompts
from vlgpt.eval.world_eval import evaluate_captions, evaluate_edits, evaluate_vqa, judge_accuracy
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.judge import judge
from vlgpt.world.render import render
from vlgpt.world.scene import Scene


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
