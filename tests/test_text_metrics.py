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
    python_ptb_tokenize,
    summarize,
    vqa_accuracy,
)

HAS_PYCOCO = tm._pycocoevalcap_available()
needs_pycoco = pytest.mark.skipif(not HAS_PYCOCO, reason="pycocoevalcap not importable")
needs_java = pytest.mark.skipif(
    not (HAS_PYCOCO and shutil.which("java")), reason="java or pycocoevalcap missing"
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
    assert perfect["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["rougeL"] == pytest.approx(1.0, abs=1e-9)
    assert perfect["cider"] > wrong["cider"] > 0.0
    assert perfect["bleu4"] > wrong["bleu4"]
    assert perfect["n"] == wrong["n"] == 4
    for result in (perfect, wrong):
        assert set(result["per_item"]) == {"cider", "bleu4", "rougeL"}
        assert all(len(v) == 4 for v in result["per_item"].values())
        assert all(math.isfinite(result[k]) for k in ("bleu4", "cider", "rougeL"))
    assert perfect["backend"] in {
        tm.BACKEND_PTB,
        tm.BACKEND_NO_JAVA,
        tm.BACKEND_PTB_FAILED,
        tm.BACKEND_NO_PYCOCO,
    }


def test_rouge_l_of_identical_strings_is_one() -> None:
    result = caption_scores(["a dog on a red sofa"], [["a dog on a red sofa"]])
    assert result["rougeL"] == pytest.approx(1.0)
    assert tm._rouge_l_single("a dog on a red sofa", ["a dog on a red sofa"]) == 1.0


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
    with pytest.raises(ValueError):
        caption_scores(["a"], [["a"]], backend="nope")  # type: ignore[arg-type]


def test_pure_python_bleu_and_rouge_hand_values() -> None:
    bleu, [item] = tm._bleu_python(["a b c d e"], [["a b c d f"]])
    expected = (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert bleu == pytest.approx(expected, rel=1e-9)
    assert item == pytest.approx(expected, rel=1e-9)
    p, r = 2 / 3, 2 / 4  # LCS("a b c", "a c d e") = 2
    assert tm._rouge_l_single("a b c", ["a c d e"]) == pytest.approx((1 + 1.44) * p * r / (r + 1.44 * p))
    # Brevity penalty: hypothesis shorter than the closest reference.
    bleu_short, _ = tm._bleu_python(["a b c d"], [["a b c d e f"]])
    assert bleu_short == pytest.approx(math.exp(1 - 6 / 4), rel=1e-6)


def test_pure_python_cider_single_image_is_zero() -> None:
    # idf = log(N_images) - log(df) vanishes when the corpus has one image.
    cider, items = tm._cider_d_python(["a dog"], [["a dog"]])
    assert cider == 0.0 and items == [0.0]


@needs_pycoco
def test_pure_python_scorers_agree_with_pycocoevalcap() -> None:
    hyps = [python_ptb_tokenize(h) for h in WRONG_COLOR[:3] + ["a bus"]]
    refs = [[python_ptb_tokenize(r) for r in rs] for rs in REFS]
    hyps[2] = ""  # an empty prediction must not break either implementation
    ours, theirs = tm._score_python(hyps, refs), tm._score_pycocoevalcap(hyps, refs)
    assert ours["bleu4"] == pytest.approx(theirs["bleu4"], abs=1e-6)
    assert ours["cider"] == pytest.approx(theirs["cider"], abs=1e-4)
    assert ours["rougeL"] == pytest.approx(theirs["rougeL"], abs=1e-9)
    for key, tol in (("bleu4", 1e-6), ("cider", 1e-4), ("rougeL", 1e-9)):
        assert ours["per_item"][key] == pytest.approx(theirs["per_item"][key], abs=tol)


@needs_pycoco
def test_forced_python_backend_matches_pycocoevalcap_on_clean_text() -> None:
    # Lowercase, punctuation-free text tokenizes identically under both tokenizers.
    py = caption_scores(WRONG_COLOR, REFS, backend="python")
    coco = caption_scores(WRONG_COLOR, REFS, backend="pycocoevalcap")
    assert py["backend"] == tm.BACKEND_PYTHON_REQUESTED
    assert coco["backend"].startswith("pycocoevalcap")
    for key, tol in (("bleu4", 1e-6), ("cider", 1e-4), ("rougeL", 1e-9)):
        assert py[key] == pytest.approx(coco[key], abs=tol)


@needs_java
def test_python_tokenizer_mimics_ptb() -> None:
    sentences = [
        "A man's dog (brown) runs.",
        "Don't stop [now]!",
        'He said "hello" -- then left...',
        "It's 100% $5 & 3.5 u.s. 1,000 3:00 black-and-white",
        "A close-up of a pizza; it's got pepperoni!",
        "The kids' toys are on the floor, aren't they?",
        "I can't see: a cat sitting on a laptop's keyboard",
    ]
    ptb = tm._ptb_tokenize_java({i: [s] for i, s in enumerate(sentences)})
    for i, sentence in enumerate(sentences):
        assert python_ptb_tokenize(sentence) == ptb[i][0], sentence


@needs_java
def test_ptb_backend_detected_with_java() -> None:
    assert caption_scores(PERFECT, REFS)["backend"] == tm.BACKEND_PTB


@needs_pycoco
def test_fallback_when_java_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tm, "_java_available", lambda: False)
    result = caption_scores(["A red car, parked on the street."], [["a red car parked on the street"]])
    assert result["backend"] == tm.BACKEND_NO_JAVA
    assert result["rougeL"] == pytest.approx(1.0)


@needs_pycoco
def test_fallback_when_ptb_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    monkeypatch.setattr(tm, "_java_available", lambda: True)
    monkeypatch.setattr(PTBTokenizer, "tokenize", lambda self, captions: {})  # incomplete output
    result = caption_scores(WRONG_COLOR, REFS)
    assert result["backend"] == tm.BACKEND_PTB_FAILED
    expected = caption_scores(WRONG_COLOR, REFS, backend="python")
    assert result["cider"] == pytest.approx(expected["cider"], abs=1e-4)


def test_fallback_when_pycocoevalcap_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tm, "_pycocoevalcap_available", lambda: False)
    result = caption_scores(PERFECT, REFS)
    assert result["backend"] == tm.BACKEND_NO_PYCOCO
    assert result["bleu4"] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ImportError):
        caption_scores(PERFECT, REFS, backend="pycocoevalcap")


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
    from vlgpt.eval.data_eval import evaluate_data

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
    assert good["captions"]["n"] == 6 and good["captions"]["bleu4"] > 0.9 > bad["captions"]["bleu4"]
    assert good["captions"]["cider_per_caption"]["n"] == 6
    good, bad = (evaluate_data(Stub(h), tmp_path / "chat.json") for h in (True, False))
    assert good["answers"]["exact_match"]["mean"] == 1.0 and bad["answers"]["exact_match"]["mean"] == 0.0
    assert evaluate_data(Stub(True), tmp_path / "chat.json", limit=2)["answers"]["exact_match"]["n"] == 2
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "metadata.jsonl").write_text(json.dumps({"file_name": "0.png"}) + "\n")
    Image.new("RGB", (16, 16)).save(tmp_path / "bare" / "0.png")
    with pytest.raises(DatasetError, match="no example has a caption or a conversation"):
        evaluate_data(Stub(True), tmp_path / "bare")
