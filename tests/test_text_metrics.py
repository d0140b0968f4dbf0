"""Tests for vlgpt.eval.text_metrics (VQA accuracy, caption scores, bootstrap CIs)."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from vlgpt.eval import text_metrics as tm
from vlgpt.eval.text_metrics import (
    bootstrap_ci,
    caption_scores,
    normalize_vqa_answer,
    summarize,
    vqa_accuracy,
)

needs_java = pytest.mark.skipif(
    not shutil.which("java"), reason="java missing (pycocoevalcap's PTB tokenizer)"
)

# Four distinct scenes, so CIDEr's idf (computed over the corpus) is informative.
REFS = [
    ["a red car parked on the street", "a red car is parked near the curb"],
    ["a black dog running in the grass", "a black dog runs across a green field"],
    ["a white cat sleeping on a sofa", "a white cat is asleep on the couch"],
    ["a yellow bus driving down the road", "a yellow bus on a city road"],
]
PERFECT = [r[0] for r in REFS]
WRONG_COLOR = [
    "a blue car parked on the street",
    "a brown dog running in the grass",
    "a grey cat sleeping on a sofa",
    "a green bus driving down the road",
]


# ----------------------------------------------------------------- VQA ------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Two.", "2"),
        ("the red circle", "red circle"),
        ("isnt", "isn't"),
        ("yes!", "yes"),
        ("  Yes\n", "yes"),
        ("None", "0"),
        ("An apple", "apple"),
        ("dont", "don't"),
        ("2.5", "2.5"),  # a period followed by a digit survives
        ("1,000", "1000"),  # digit-comma-digit: punctuation is deleted, not spaced
        ("hot-dog", "hot dog"),  # otherwise punctuation becomes a space
        ("red , blue", "red blue"),
        ("Ten\tbooks", "10 books"),
    ],
)
def test_normalize_vqa_answer(raw: str, expected: str) -> None:
    assert normalize_vqa_answer(raw) == expected


def test_contractions_table_is_complete_enough() -> None:
    assert len(tm.VQA_CONTRACTIONS) >= 100
    assert tm.VQA_CONTRACTIONS["wont"] == "won't"


def _humans(n_match: int, answer: str = "yes", other: str = "no") -> list[str]:
    return [answer] * n_match + [other] * (10 - n_match)


@pytest.mark.parametrize(
    ("n_match", "expected"),
    [
        # Leave-one-out: each of the 10 subsets drops one human.  With m matches,
        # m subsets see m-1 matches and 10-m subsets see m matches.
        (0, 0.0),
        (1, (1 * 0.0 + 9 * (1 / 3)) / 10),  # = 0.3
        (2, (2 * (1 / 3) + 8 * (2 / 3)) / 10),  # = 0.6
        (3, (3 * (2 / 3) + 7 * 1.0) / 10),  # = 0.9, not 1.0
        (4, 1.0),
        (10, 1.0),
    ],
)
def test_vqa_accuracy_leave_one_out(n_match: int, expected: float) -> None:
    [score] = vqa_accuracy(["Yes."], [_humans(n_match)])
    assert score == pytest.approx(expected, abs=1e-12)


def test_vqa_accuracy_exact_values() -> None:
    scores = vqa_accuracy(["yes", "yes"], [_humans(1), _humans(3)])
    assert scores == pytest.approx([0.3, 0.9])


def test_vqa_accuracy_single_string_ground_truth() -> None:
    assert vqa_accuracy(["Two", "three dogs", "cat"], ["2", "3 dogs", "dog"]) == [1.0, 1.0, 0.0]


def test_vqa_accuracy_errors() -> None:
    with pytest.raises(ValueError):
        vqa_accuracy(["yes", "no"], ["yes"])
    with pytest.raises(ValueError):
        vqa_accuracy(["yes"], [[]])


# ------------------------------------------------------------- captions -----


def test_perfect_captions_score_high_and_beat_wrong_colors() -> None:
    perfect = caption_scores(PERFECT, REFS)
    wrong = caption_scores(WRONG_COLOR, REFS)
    assert perfect["bleu4"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["rougeL"]["mean"] == pytest.approx(1.0, abs=1e-9)
    assert perfect["cider"]["mean"] > wrong["cider"]["mean"] > 0.0
    assert perfect["bleu4"]["mean"] > wrong["bleu4"]["mean"]
    for result in (perfect, wrong):
        assert set(result["per_item"]) == {"cider", "bleu4", "rougeL"}
        assert all(len(v) == 4 for v in result["per_item"].values())
        for key in ("bleu4", "cider", "rougeL"):
            figure = result[key]
            assert figure["n"] == 4 and all(math.isfinite(figure[k]) for k in ("mean", "ci_low", "ci_high"))
    assert perfect["backend"] in {tm.BACKEND_PTB, tm.BACKEND_NO_JAVA, tm.BACKEND_PTB_FAILED}


def test_each_caption_score_is_the_corpus_score_inside_its_own_interval() -> None:
    """The interval is of the statistic beside it: corpus BLEU is not the mean of per-caption BLEU
    (a demo once printed BLEU 2.0e-14 with an interval of 9.6e-14 to 1.4e-13)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    hyps = (WRONG_COLOR + PERFECT[:2] + ["a bus", "a red car on the street"]) * 5
    refs = (REFS + REFS[:2] + REFS[:2]) * 5
    result = caption_scores(hyps, refs)
    tokenized = {i: [tm.word_tokenize(r) for r in rs] for i, rs in enumerate(refs)}
    said = {i: [tm.word_tokenize(h)] for i, h in enumerate(hyps)}
    assert result["bleu4"]["mean"] == pytest.approx(Bleu(4).compute_score(tokenized, said, verbose=0)[0][3])
    assert result["cider"]["mean"] == pytest.approx(Cider().compute_score(tokenized, said)[0])
    per_caption = sum(result["per_item"]["bleu4"]) / len(hyps)
    assert abs(per_caption - result["bleu4"]["mean"]) > 0.01  # two different statistics
    for key in ("bleu4", "cider", "rougeL"):
        figure = result[key]
        assert figure["ci_low"] <= figure["mean"] <= figure["ci_high"] and figure["n"] == len(hyps)
        assert figure["ci_low"] < figure["ci_high"]


def test_per_item_scores_follow_dict_input_order() -> None:
    keys = ["img3", "img1", "img2", "img0"]
    preds = {k: (WRONG_COLOR if k == "img1" else PERFECT)[int(k[-1])] for k in keys}
    refs = {k: REFS[int(k[-1])] for k in sorted(keys)}  # different insertion order
    result = caption_scores(preds, refs)
    bleu = result["per_item"]["bleu4"]
    assert bleu[1] < 0.9  # "img1" is second in the predictions dict
    assert [b for i, b in enumerate(bleu) if i != 1] == pytest.approx([1.0] * 3, abs=1e-6)
    as_list = caption_scores([preds[k] for k in keys], [refs[k] for k in keys])
    assert as_list["per_item"] == result["per_item"]


def test_caption_input_validation() -> None:
    with pytest.raises(ValueError):
        caption_scores(["a", "b"], [["a"]])
    with pytest.raises(ValueError):
        caption_scores({"x": "a"}, {"y": ["a"]})
    with pytest.raises(ValueError):
        caption_scores(["a dog"], [[]])
    with pytest.raises(ValueError):
        caption_scores({"x": "a"}, [["a"]])
    with pytest.raises(ValueError):
        caption_scores([], [])


@needs_java
def test_word_tokenizer_matches_ptb_on_plain_captions() -> None:
    sentences = [s for refs in REFS for s in refs] + [
        "A red car, parked on the street.",
        "Two dogs: 3.5 m apart",
    ]
    ptb = tm._ptb_tokenize({i: [s] for i, s in enumerate(sentences)})
    for i, sentence in enumerate(sentences):
        assert tm.word_tokenize(sentence) == ptb[i][0], sentence


@needs_java
def test_ptb_backend_detected_with_java() -> None:
    assert caption_scores(PERFECT, REFS)["backend"] == tm.BACKEND_PTB


def test_word_tokenizer_without_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tm.shutil, "which", lambda name: None)
    result = caption_scores(["A red car, parked on the street."], [["a red car parked on the street"]])
    assert result["backend"] == tm.BACKEND_NO_JAVA
    assert result["rougeL"]["mean"] == pytest.approx(1.0)


@needs_java
def test_word_tokenizer_when_ptb_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    monkeypatch.setattr(PTBTokenizer, "tokenize", lambda self, captions: {})  # incomplete output
    result = caption_scores(WRONG_COLOR, REFS)
    assert result["backend"] == tm.BACKEND_PTB_FAILED
    assert result["cider"]["mean"] == pytest.approx(caption_scores(WRONG_COLOR, REFS)["cider"]["mean"])


# ------------------------------------------------------------ bootstrap -----


def test_bootstrap_ci_contains_mean_and_narrows() -> None:
    small = [0.0, 1.0] * 10
    large = [0.0, 1.0] * 1000
    mean_s, low_s, high_s = bootstrap_ci(small)
    mean_l, low_l, high_l = bootstrap_ci(large)
    assert low_s <= mean_s <= high_s and low_l <= mean_l <= high_l
    assert mean_s == mean_l == 0.5
    assert (high_l - low_l) < (high_s - low_s) / 3


def test_bootstrap_ci_is_seeded_and_validates() -> None:
    values = [0.1, 0.4, 0.35, 0.8, 0.9, 0.2]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci([0.7]) == (0.7, 0.7, 0.7)
    narrow = bootstrap_ci(values, confidence=0.5)
    wide = bootstrap_ci(values, confidence=0.99)
    assert wide[1] <= narrow[1] <= narrow[2] <= wide[2]
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci(values, confidence=1.5)


def test_summarize_groups_weighs_groups_equally_and_resamples_within_them() -> None:
    from vlgpt.eval.text_metrics import summarize_groups

    out = summarize_groups([[1.0] * 3 + [0.0], [0.0, 0.0, 1.0], [1.0]])
    assert out["mean"] == pytest.approx((0.75 + 1 / 3 + 1.0) / 3) and out["n"] == 8
    assert out["ci_low"] <= out["mean"] <= out["ci_high"] and out["ci_low"] < out["ci_high"]
    assert summarize_groups([[0.5, 0.5], [1.0]]) == {"mean": 0.75, "ci_low": 0.75, "ci_high": 0.75, "n": 3}
    with pytest.raises(ValueError):
        summarize_groups([[1.0], []])


def test_summarize() -> None:
    out = summarize([1.0, 0.0, 1.0, 1.0], n_resamples=200, seed=1)
    assert set(out) == {"mean", "ci_low", "ci_high", "n"}
    assert out["n"] == 4 and out["mean"] == 0.75
    assert out["ci_low"] <= out["mean"] <= out["ci_high"]


def test_eval_data_scores_captions_and_answers_and_can_fail(tmp_path):
    """`vlgpt eval data` on a captions folder and a LLaVA JSON: a model that says the truth scores 1,
    one that says something else scores 0 (the figures can fail)."""
    from PIL import Image

    from vlgpt.data.formats import DatasetError
    from vlgpt.eval.data_eval import evaluate_data, headline
    from vlgpt.inference.generate import PromptTooLong

    (tmp_path / "caps").mkdir()
    rows, entries, truth = [], [], {}
    for i, (colour, word) in enumerate([((255, 0, 0), "red"), ((0, 0, 255), "blue")] * 3):
        Image.new("RGB", (16, 16), colour).save(tmp_path / "caps" / f"{i}.png")
        rows.append(
            json.dumps(
                {
                    "file_name": f"{i}.png",
                    "text": f"a small photo of one {word} square on a plain background.",
                }
            )
        )
        entries.append(
            {
                "id": str(i),
                "image": f"caps/{i}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat colour is it?"},
                    {"from": "gpt", "value": word},
                ],
            }
        )
        truth[Image.new("RGB", (16, 16), colour).tobytes()] = word
    (tmp_path / "caps" / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "chat.json").write_text(json.dumps(entries))

    class Stub:
        def __init__(self, honest):
            self.honest = honest

        def _word(self, image):
            return truth[image.convert("RGB").tobytes()] if self.honest else "green"

        def caption(self, image, **_):
            return f"a small photo of one {self._word(image)} square on a plain background."

        def chat(self, messages, **_):
            image = next(p["image"] for m in messages for p in m["content"] if p["type"] == "image")
            return type("Out", (), {"text": self._word(image).capitalize() + "."})()

    good, bad = (evaluate_data(Stub(h), tmp_path / "caps") for h in (True, False))
    assert (
        good["captions"]["n"] == 6
        and good["captions"]["bleu4"]["mean"] > 0.9 > bad["captions"]["bleu4"]["mean"]
    )
    assert good["captions"]["cider"]["n"] == 6
    good, bad = (evaluate_data(Stub(h), tmp_path / "chat.json") for h in (True, False))
    assert good["answers"]["exact_match"]["mean"] == 1.0 and bad["answers"]["exact_match"]["mean"] == 0.0
    assert evaluate_data(Stub(True), tmp_path / "chat.json", limit=2)["answers"]["exact_match"]["n"] == 2

    class Cramped(Stub):  # a context too short for the blue images' prompts: those are counted, not scored
        def _word(self, image):
            if truth[image.convert("RGB").tobytes()] == "blue":
                raise PromptTooLong("the prompt takes 170 positions; ... the context of 160")
            return super()._word(image)

    for data, kind in (("caps", "captions"), ("chat.json", "answers")):
        result = evaluate_data(Cramped(True), tmp_path / data)
        figure = result[kind]["bleu4"] if kind == "captions" else result[kind]["exact_match"]
        assert result[kind]["too_long"] == 3 and figure["n"] == 3 and figure["mean"] > 0.9
        assert headline(result)[f"{kind} left out: too long for the context"] == 3
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "metadata.jsonl").write_text(json.dumps({"file_name": "0.png"}) + "\n")
    Image.new("RGB", (16, 16)).save(tmp_path / "bare" / "0.png")
    with pytest.raises(DatasetError, match="no example has a caption, a conversation or questions"):
        evaluate_data(Stub(True), tmp_path / "bare")


@pytest.mark.parametrize("fmt", ["imagefolder", "llava", "wds"])
def test_eval_data_scores_captions_and_questions_in_every_format(fmt, tmp_path):
    """The same Shapes rows in each format: captions (a row's text, or a 'Describe the image.' turn)
    scored as captions, questions (a row's `questions`, or the other turns) as answers; a model that
    says wrong things scores lower on both."""
    from PIL import Image

    from vlgpt.data.formats import read_examples
    from vlgpt.data.world_files import write_world
    from vlgpt.eval.data_eval import _asked, evaluate_data, is_caption_request, scored_items

    data = write_world(tmp_path / fmt, 6, split="val", fmt=fmt, size=32, progress=False, shard_size=3)
    truth = {}
    for example in read_examples(data):
        captions, questions = scored_items(example)
        for source, reference in captions:
            image = source if isinstance(source, Image.Image) else source[0]["content"][0]["image"]
            truth[(image.tobytes(), "caption")] = reference
        for messages, answer in questions:
            image = next(p["image"] for m in messages for p in m["content"] if p["type"] == "image")
            truth[(image.tobytes(), _asked(messages))] = answer

    class Stub:
        def __init__(self, honest):
            self.honest = honest

        def caption(self, image, **_):
            return truth[(image.tobytes(), "caption")] if self.honest else "a tiny gray cross."

        def chat(self, messages, **_):
            image = next(p["image"] for m in messages for p in m["content"] if p["type"] == "image")
            asked = _asked(messages)
            key = "caption" if is_caption_request(asked) else asked
            said = truth[(image.tobytes(), key)] if self.honest else "purple"
            return type("Out", (), {"text": said})()

    good, bad = evaluate_data(Stub(True), data), evaluate_data(Stub(False), data)
    assert good["captions"]["n"] == bad["captions"]["n"] == 6  # one caption a row, however stored
    assert good["answers"]["exact_match"]["n"] >= 6 * 5  # every question of every row
    assert good["captions"]["cider"]["mean"] > 1.0 > bad["captions"]["cider"]["mean"]
    assert good["captions"]["bleu4"]["mean"] > 0.9 > bad["captions"]["bleu4"]["mean"]
    assert good["answers"]["exact_match"]["mean"] == 1.0 > bad["answers"]["exact_match"]["mean"]
    for figure in (
        *(good["captions"][k] for k in ("bleu4", "cider", "rougeL")),
        bad["answers"]["exact_match"],
    ):
        assert figure["ci_low"] <= figure["mean"] <= figure["ci_high"]
