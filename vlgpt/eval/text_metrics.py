"""Text metrics for VL-GPT evaluation: VQA accuracy, caption scores, bootstrap CIs.

Why these choices
-----------------
* **VQA accuracy** follows the official VQA v2 evaluation script (``vqaEval.py``
  from the VQA API, Antol et al. 2015 / Goyal et al. 2017) so that numbers are
  comparable with published results: the same answer normalization
  (``processPunctuation`` + ``processDigitArticle`` with the official
  contractions table, number words and articles) and the same consensus score
  ``min(1, #humans that agree / 3)`` averaged over the 10 leave-one-out subsets
  of the human answers.  One deliberate difference: the official script
  normalizes only when the ten human answers disagree, and applies only the
  punctuation step to the ground truth, because the released annotations are
  already normalized.  We always apply the full normalization to both sides, so
  raw (un-normalized) ground truth and a unanimous ``"yes"`` vs. ``"Yes."``
  behave sensibly.
* **Caption metrics** (BLEU-4, CIDEr-D, ROUGE-L) are pycocoevalcap's scorers, the pip package of
  the MS-COCO caption evaluation code (coco-caption, Chen et al. 2015), because published
  captioning numbers are computed with exactly that code. Captions are tokenized, as coco-caption
  does, with its Stanford PTBTokenizer (Java); where Java is missing or fails, a plain word
  tokenizer (lowercased words, punctuation dropped) stands in and the ``"backend"`` field says so.
  Note that CIDEr's idf is computed over the evaluated corpus, so CIDEr of a single image is 0.
* **Intervals** are percentile bootstraps by ``scipy.stats.bootstrap`` with a seeded generator, of
  the statistic they sit beside: corpus BLEU is bootstrapped by resampling captions and scoring
  each resample as a corpus.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "VQA_CONTRACTIONS",
    "bootstrap_ci",
    "caption_scores",
    "normalize_vqa_answer",
    "word_tokenize",
    "summarize",
    "summarize_groups",
    "vqa_accuracy",
]

# ---------------------------------------------------------------------------
# VQA answer normalization (official vqaEval.py algorithm)
# ---------------------------------------------------------------------------

#: The official VQA contractions table, kept verbatim in content (including its
#: quirks, e.g. the capitalized "Im" keys that never match after lowercasing and
#: the inverted "somebody'd" entry) so scores match the official evaluation.
VQA_CONTRACTIONS: dict[str, str] = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}

#: Number words mapped to digits ("none" counts as zero, as in the official map).
VQA_NUMBER_WORDS: dict[str, str] = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}

VQA_ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

#: Punctuation handled by processPunctuation (note: no apostrophe, colon or period).
VQA_PUNCTUATION: tuple[str, ...] = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)

# The official periodStrip pattern is "(?!<=\d)(\.)(?!\d)"; its first group is a
# mistyped lookbehind that never fires, so in effect it removes every period
# that is not followed by a digit ("2.5" survives, "yes." loses its period).
_PERIOD_STRIP = re.compile(r"\.(?!\d)")
# commaStrip: a comma between two digits ("1,000"); its presence anywhere in
# the answer switches punctuation from "replace by space" to "delete".
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# The official script passes re.UNICODE (== 32) positionally as `count`, so at
# most 32 periods are removed; reproduced for exactness.
_OFFICIAL_PERIOD_SUB_LIMIT = 32


def _process_punctuation(text: str) -> str:
    """Delete or space out punctuation exactly as ``processPunctuation`` does."""
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for p in VQA_PUNCTUATION:
        # Decisions look at the *original* text, like the official code.
        if (p + " " in text) or (" " + p in text) or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_OFFICIAL_PERIOD_SUB_LIMIT)


def _process_digit_article(text: str) -> str:
    """Lowercase, map number words, drop articles, expand contractions."""
    words = [VQA_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in VQA_ARTICLES]
    return " ".join(VQA_CONTRACTIONS.get(w, w) for w in words)


def normalize_vqa_answer(answer: str) -> str:
    """Normalize an answer string like the official VQA v2 evaluation."""
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(text))


def _vqa_consensus_score(prediction: str, human_answers: Sequence[str]) -> float:
    """min(1, matches/3) averaged over the leave-one-out subsets of the humans."""
    if len(human_answers) == 0:
        raise ValueError("a VQA ground-truth answer list is empty")
    pred = normalize_vqa_answer(prediction)
    matches = [normalize_vqa_answer(a) == pred for a in human_answers]
    total = sum(matches)
    subset_scores = [min(1.0, (total - int(left_out)) / 3.0) for left_out in matches]
    return sum(subset_scores) / len(subset_scores)


def vqa_accuracy(predictions: Sequence[str], answers: Sequence[str] | Sequence[Sequence[str]]) -> list[float]:
    """Per-item VQA accuracy.

    An item whose ground truth is a list of human answers gets the official
    leave-one-out consensus score; a single-string ground truth gets exact match
    (after normalization) as 1.0/0.0.
    """
    if len(predictions) != len(answers):
        raise ValueError(f"predictions ({len(predictions)}) and answers ({len(answers)}) differ in length")
    scores: list[float] = []
    for pred, gt in zip(predictions, answers):
        if isinstance(gt, str):
            scores.append(float(normalize_vqa_answer(pred) == normalize_vqa_answer(gt)))
        else:
            scores.append(_vqa_consensus_score(pred, list(gt)))
    return scores


# ---------------------------------------------------------------------------
# Captions: pycocoevalcap's tokenizer and scorers
# ---------------------------------------------------------------------------

#: Tokens that coco-caption removes after PTB tokenization (pycocoevalcap's list).
PTB_PUNCTUATION: frozenset[str] = frozenset(
    {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
)
_WORDS = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")

BACKEND_PTB = "pycocoevalcap+ptb"
BACKEND_NO_JAVA = "pycocoevalcap+word-tokenizer (java missing)"
BACKEND_PTB_FAILED = "pycocoevalcap+word-tokenizer (ptb failed)"


def word_tokenize(text: str) -> str:
    """Lowercased words and numbers, punctuation dropped: what PTB tokenization leaves of plain captions.
    Used only where Java (which pycocoevalcap's PTBTokenizer runs) is missing or fails; the
    `backend` field of `caption_scores` says so."""
    return " ".join(_WORDS.findall(text.lower()))


def _ptb_tokenize(captions: Mapping[Any, list[str]]) -> dict[Any, list[str]]:
    """pycocoevalcap's PTBTokenizer, checked: it zips keys with Java's output lines, so a failure there
    silently drops or empties captions; that raises here instead."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # Collapse all whitespace (incl. \r, \u2028...) so one caption == one line.
    request = {k: [{"caption": " ".join(c.split())} for c in v] for k, v in captions.items()}
    result = PTBTokenizer().tokenize(request)
    for key, originals in captions.items():
        tokenized = result.get(key)
        if tokenized is None or len(tokenized) != len(originals):
            raise RuntimeError(f"PTBTokenizer returned incomplete output for {key!r}")
        for original, tok in zip(originals, tokenized):
            if not tok and any(ch.isalnum() for ch in original):
                raise RuntimeError("PTBTokenizer returned an empty line for a non-empty caption")
    return {k: list(result[k]) for k in captions}


def _tokenize(hyps: list[str], refs: list[list[str]]) -> tuple[list[str], list[list[str]], str]:
    """PTB tokenization in one JVM call, as coco-caption does; the word tokenizer without Java."""
    captions: dict[tuple[str, int], list[str]] = {}
    for i, (hyp, ref_list) in enumerate(zip(hyps, refs)):
        captions[("hyp", i)] = [hyp]
        captions[("ref", i)] = ref_list
    backend = BACKEND_NO_JAVA
    if shutil.which("java") is not None:
        try:
            tokenized = _ptb_tokenize(captions)
            return (
                [tokenized[("hyp", i)][0] for i in range(len(hyps))],
                [tokenized[("ref", i)] for i in range(len(hyps))],
                BACKEND_PTB,
            )
        except Exception as exc:
            logger.debug("PTBTokenizer failed (%s); using the word tokenizer", exc)
            backend = BACKEND_PTB_FAILED
    return [word_tokenize(h) for h in hyps], [[word_tokenize(r) for r in rs] for rs in refs], backend


def _as_ordered_pairs(
    predictions: Mapping[str, str] | Sequence[str],
    references: Mapping[str, Sequence[str]] | Sequence[Sequence[str]],
) -> tuple[list[str], list[list[str]]]:
    """Validate inputs and return (hyps, refs) aligned in the predictions' order."""
    if isinstance(predictions, Mapping) != isinstance(references, Mapping):
        raise ValueError("predictions and references must both be dicts or both be lists")
    if isinstance(predictions, Mapping):
        if set(predictions) != set(references):
            unmatched = sorted(map(str, set(predictions) ^ set(references)))[:5]
            raise ValueError(f"predictions and references have different keys, e.g. {unmatched}")
        keys = list(predictions)
        hyps, raw_refs = [predictions[k] for k in keys], [references[k] for k in keys]
    else:
        if len(predictions) != len(references):
            raise ValueError(
                f"predictions ({len(predictions)}) and references ({len(references)}) differ in length"
            )
        keys, hyps, raw_refs = list(range(len(predictions))), list(predictions), list(references)
    if not hyps:
        raise ValueError("no captions to score")
    refs: list[list[str]] = []
    for key, hyp, ref_list in zip(keys, hyps, raw_refs):
        if not isinstance(hyp, str):
            raise TypeError(f"prediction for {key!r} must be a str, got {type(hyp).__name__}")
        if isinstance(ref_list, str) or not all(isinstance(r, str) for r in ref_list):
            raise TypeError(f"references for {key!r} must be a list of str")
        if len(ref_list) == 0:
            raise ValueError(f"reference list for {key!r} is empty")
        refs.append(list(ref_list))
    return hyps, refs


def caption_scores(
    predictions: Mapping[str, str] | Sequence[str],
    references: Mapping[str, Sequence[str]] | Sequence[Sequence[str]],
    **bootstrap: Any,
) -> dict[str, Any]:
    """BLEU-4, CIDEr-D and ROUGE-L of predicted captions by pycocoevalcap, coco-caption style.

    ``predictions``/``references`` are dicts keyed by image id (same key sets) or parallel lists.
    Each score is ``{mean, ci_low, ci_high, n}``: ``mean`` is the corpus score coco-caption reports
    and the interval a bootstrap of that same statistic over resampled captions (corpus BLEU is not
    the mean of per-caption BLEU; CIDEr-D and ROUGE-L are, with CIDEr's idf from the whole set).
    ``per_item`` holds the per-caption scores in the predictions' order; keyword arguments go to
    :func:`summarize`.
    """
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    hyps, refs = _as_ordered_pairs(predictions, references)
    hyps, refs, backend = _tokenize(hyps, refs)
    gts = {i: list(r) for i, r in enumerate(refs)}  # the scorers keep this insertion order
    res = {i: [h] for i, h in enumerate(hyps)}
    bleu = BleuScorer(n=4)
    for hyp, ref_list in zip(hyps, refs):
        bleu += (hyp, ref_list)
    # option="closest" is what pycocoevalcap's Bleu passes.
    bleu_items = bleu.compute_score(option="closest", verbose=0)[1][3]

    def corpus_bleu(index: np.ndarray) -> float:
        part = BleuScorer(n=4)
        part.crefs = [bleu.crefs[i] for i in index]
        part.ctest = [bleu.ctest[i] for i in index]
        return part.compute_score(option="closest", verbose=0)[0][3]

    cider_items = Cider().compute_score(gts, res)[1]
    rouge_items = Rouge().compute_score(gts, res)[1]
    per_item = {"bleu4": bleu_items, "cider": cider_items, "rougeL": rouge_items}
    return {
        "bleu4": summarize(np.arange(len(hyps)), statistic=corpus_bleu, **bootstrap),
        "cider": summarize(cider_items, **bootstrap),
        "rougeL": summarize(rouge_items, **bootstrap),
        "per_item": {name: [float(x) for x in items] for name, items in per_item.items()},
        "backend": backend,
    }


# ---------------------------------------------------------------------------
# Bootstrap confidence intervals
# ---------------------------------------------------------------------------


def bootstrap_ci(
    values: Sequence[float],
    *,
    statistic: Callable[[np.ndarray], float] | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(point, low, high): the statistic of ``values`` (their mean by default) and its percentile
    bootstrap interval (``scipy.stats.bootstrap``), reproducible by ``seed``. A custom ``statistic``
    is called on a resample of ``values`` (pass indices to resample items of a corpus)."""
    data = np.asarray(values, dtype=np.float64 if statistic is None else None).ravel()
    if data.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if statistic is None and not np.all(np.isfinite(data)):
        raise ValueError("bootstrap_ci got non-finite values")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    point = float(data.mean() if statistic is None else statistic(data))
    if data.size == 1 or (statistic is None and np.all(data == data[0])):
        return point, point, point
    low, high = _percentile_interval(
        (data,), np.mean if statistic is None else statistic, statistic is None, n_resamples, confidence, seed
    )
    return point, low, high


def _percentile_interval(
    samples: tuple[np.ndarray, ...],
    statistic: Callable,
    vectorized: bool,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """``scipy.stats.bootstrap``'s percentile interval, each sample resampled on its own, seeded."""
    from scipy.stats import bootstrap

    result = bootstrap(
        samples,
        statistic,
        vectorized=vectorized,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def summarize(values: Sequence[float], **kw: Any) -> dict[str, float | int]:
    """``{"mean", "ci_low", "ci_high", "n"}`` (``mean`` is the statistic's value, the mean unless a
    ``statistic`` is passed); keyword arguments go to :func:`bootstrap_ci`."""
    point, low, high = bootstrap_ci(values, **kw)
    return {"mean": point, "ci_low": low, "ci_high": high, "n": len(values)}


def summarize_groups(groups: Sequence[Sequence[float]], n_resamples: int = 1000, seed: int = 0) -> dict:
    """The mean of group means (every group weighs the same, as GenEval's overall score) with a
    stratified percentile bootstrap: ``scipy.stats.bootstrap`` resamples within each group."""
    arrays = [np.asarray(g, dtype=np.float64) for g in groups]
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError("summarize_groups needs at least one value in every group")

    # A group of one value (or of equal values) resamples to itself: it enters as a constant.
    varies = [a.size > 1 and not np.all(a == a[0]) for a in arrays]
    varying = [a for a, v in zip(arrays, varies) if v]
    fixed = sum(float(a.mean()) for a, v in zip(arrays, varies) if not v)

    def mean_of_means(*samples, axis=-1):
        return (sum(x.mean(axis=axis) for x in samples) + fixed) / len(arrays)

    point = float(mean_of_means(*varying))
    low, high = (
        _percentile_interval(tuple(varying), mean_of_means, True, n_resamples, seed=seed)
        if varying
        else (point, point)
    )
    return {"mean": point, "ci_low": low, "ci_high": high, "n": int(sum(a.size for a in arrays))}
