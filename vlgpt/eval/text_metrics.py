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
* **Caption metrics** (BLEU-4, CIDEr-D, ROUGE-L) use the scorers of
  ``pycocoevalcap``, the pip package of the MS-COCO caption evaluation code
  (coco-caption, Chen et al. 2015), because published captioning numbers are
  computed with exactly that code.  Captions are tokenized, as coco-caption
  does, with the Stanford PTBTokenizer (Java) followed by removal of its
  punctuation tokens.  When ``java`` is not on ``PATH`` or the tokenizer call
  fails (it writes a temporary file into the package directory, which may be
  read-only), a pure-Python tokenizer that mimics it is used and the fact is
  recorded in the ``"backend"`` field.  When ``pycocoevalcap`` itself cannot be
  imported, this module falls back to its own re-implementations of the same
  three scorers, written to reproduce coco-caption's numbers (including its
  smoothing constants, the "closest" BLEU reference length, CIDEr-D's
  bigram-count length penalty and ROUGE-L's beta=1.2).  Note that CIDEr's idf
  is computed over the evaluated corpus, so CIDEr of a single image is always 0.
* **Bootstrap CIs** use the percentile bootstrap with a seeded
  ``numpy.random.default_rng`` so reports are reproducible.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "VQA_CONTRACTIONS",
    "bootstrap_ci",
    "caption_scores",
    "normalize_vqa_answer",
    "python_ptb_tokenize",
    "summarize",
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
# Caption tokenization
# ---------------------------------------------------------------------------

#: Tokens that coco-caption removes after PTB tokenization.
PTB_PUNCTUATION: frozenset[str] = frozenset(
    {
        "''",
        "'",
        "``",
        "`",
        "-LRB-",
        "-RRB-",
        "-LCB-",
        "-RCB-",
        ".",
        "?",
        "!",
        ",",
        ":",
        "-",
        "--",
        "...",
        ";",
    }
)

# PTBTokenizer (-lowerCase) turns brackets into these *lowercase* tokens, which
# coco-caption's uppercase punctuation list therefore does not remove.
_BRACKET_TOKENS: dict[str, str] = {
    "(": " -lrb- ",
    ")": " -rrb- ",
    "[": " -lsb- ",
    "]": " -rsb- ",
    "{": " -lcb- ",
    "}": " -rcb- ",
}
_BRACKET_TOKEN_SET = frozenset(t.strip() for t in _BRACKET_TOKENS.values())
_SPLIT_SYMBOLS = re.compile(r"([*+~=|^%$&])")  # split off, kept as tokens
_DROP_CHARS = re.compile(r"[\"!?;]|--+|\.\.+")  # become removed punctuation
_NON_NUMERIC_SEPARATOR = re.compile(r"(?<!\d)[,:]|[,:](?!\d)")  # "1,000" / "3:00" stay
_EDGE_PUNCT = ".,:'`-"
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
_SPECIAL_SPLITS: dict[str, tuple[str, ...]] = {
    "cannot": ("can", "not"),
    "gonna": ("gon", "na"),
    "wanna": ("wan", "na"),
    "gotta": ("got", "ta"),
}
_DOTTED_ABBREVIATION = re.compile(r"^(?:[a-z]\.)+$")  # "u.s.", "a.m."
_TITLE_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "vs."})


def _strip_edges(chunk: str, keep_final_period: bool) -> str:
    """Remove leading/trailing punctuation that PTB would emit as separate tokens."""
    if chunk in _BRACKET_TOKEN_SET:
        return chunk
    chunk = chunk.lstrip(_EDGE_PUNCT)
    if keep_final_period and (_DOTTED_ABBREVIATION.match(chunk) or chunk in _TITLE_ABBREVIATIONS):
        return chunk
    return chunk.rstrip(_EDGE_PUNCT)


def _split_clitics(word: str) -> list[str]:
    """Split English clitics the way PTB does ("don't" -> "do n't")."""
    if word in _SPECIAL_SPLITS:
        return list(_SPECIAL_SPLITS[word])
    match = _CLITIC.match(word)
    if match is None:
        return [word]
    return [match.group(1), match.group(2)]


def python_ptb_tokenize(text: str) -> str:
    """Pure-Python approximation of coco-caption's PTB tokenization.

    Lowercases, splits off clitics and symbols, maps brackets to PTB's
    ``-lrb-`` style tokens, removes the punctuation coco-caption drops, and
    joins the tokens with single spaces.
    """
    text = text.lower()
    for bracket, token in _BRACKET_TOKENS.items():  # after lower(): tokens stay as PTB emits them
        text = text.replace(bracket, token)
    text = _DROP_CHARS.sub(" ", text)
    text = _SPLIT_SYMBOLS.sub(r" \1 ", text)
    text = _NON_NUMERIC_SEPARATOR.sub(" ", text)
    chunks = text.split()
    tokens: list[str] = []
    for i, chunk in enumerate(chunks):
        core = _strip_edges(chunk, keep_final_period=i < len(chunks) - 1)
        if core:
            tokens.extend(_split_clitics(core))
    return " ".join(t for t in tokens if t and t not in PTB_PUNCTUATION)


def _java_available() -> bool:
    return shutil.which("java") is not None


def _ptb_tokenize_java(captions: Mapping[Any, list[str]]) -> dict[Any, list[str]]:
    """Run pycocoevalcap's PTBTokenizer and verify its output is complete.

    PTBTokenizer silently drops captions when Java fails (it zips keys with the
    output lines), so missing or empty-for-nonempty outputs raise here.
    """
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


def _python_tokenize_all(captions: Mapping[Any, list[str]]) -> dict[Any, list[str]]:
    return {k: [python_ptb_tokenize(c) for c in v] for k, v in captions.items()}


# ---------------------------------------------------------------------------
# Pure-Python coco-caption scorers (used when pycocoevalcap is missing)
# ---------------------------------------------------------------------------

_BLEU_TINY = 1e-15  # coco-caption's smoothing constants
_BLEU_SMALL = 1e-9


def _ngram_counts(words: Sequence[str], max_n: int) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for n in range(1, max_n + 1):
        for i in range(len(words) - n + 1):
            counts[tuple(words[i : i + n])] += 1
    return counts


def _bleu_from_stats(
    correct: Sequence[float], guess: Sequence[float], hyp_len: float, ref_len: float
) -> float:
    """BLEU-N (N = len(correct)) with coco-caption's smoothing and brevity penalty."""
    product = 1.0
    for c, g in zip(correct, guess):
        product *= (c + _BLEU_TINY) / (g + _BLEU_SMALL)
    score = product ** (1.0 / len(correct))
    ratio = (hyp_len + _BLEU_TINY) / (ref_len + _BLEU_SMALL)
    if ratio < 1.0:
        score *= math.exp(1.0 - 1.0 / ratio)
    return score


def _closest_ref_len(ref_lens: Sequence[int], hyp_len: int) -> int:
    """Reference length closest to the hypothesis; ties go to the shorter one."""
    return min(ref_lens, key=lambda length: (abs(length - hyp_len), length))


def _bleu_python(hyps: Sequence[str], refs: Sequence[Sequence[str]], n: int = 4) -> tuple[float, list[float]]:
    """Corpus BLEU-n plus per-item BLEU-n, as coco-caption's BleuScorer("closest")."""
    tot_correct, tot_guess = [0] * n, [0] * n
    tot_hyp_len, tot_ref_len = 0, 0
    per_item: list[float] = []
    for hyp, ref_list in zip(hyps, refs):
        words = hyp.split()
        max_ref_counts: Counter[tuple[str, ...]] = Counter()
        for ref in ref_list:
            max_ref_counts |= _ngram_counts(ref.split(), n)  # |= keeps the max count
        ref_len = _closest_ref_len([len(r.split()) for r in ref_list], len(words))
        correct = [0] * n
        for gram, count in _ngram_counts(words, n).items():
            correct[len(gram) - 1] += min(count, max_ref_counts[gram])
        guess = [max(0, len(words) - k) for k in range(n)]
        per_item.append(_bleu_from_stats(correct, guess, len(words), ref_len))
        tot_correct = [a + b for a, b in zip(tot_correct, correct)]
        tot_guess = [a + b for a, b in zip(tot_guess, guess)]
        tot_hyp_len += len(words)
        tot_ref_len += ref_len
    return _bleu_from_stats(tot_correct, tot_guess, tot_hyp_len, tot_ref_len), per_item


def _tfidf_vectors(
    counts: Counter[tuple[str, ...]], doc_freq: Counter[tuple[str, ...]], log_n_docs: float, n: int
) -> tuple[list[dict[tuple[str, ...], float]], list[float], int]:
    """Per-order tf-idf vectors, their norms, and coco's length (the bigram count)."""
    vecs: list[dict[tuple[str, ...], float]] = [{} for _ in range(n)]
    for gram, tf in counts.items():
        vecs[len(gram) - 1][gram] = tf * (log_n_docs - math.log(max(1.0, doc_freq[gram])))
    norms = [math.sqrt(sum(w * w for w in v.values())) for v in vecs]
    # coco-caption's CiderScorer counts length with `if n == 1` on a 0-based
    # n-gram index, i.e. it counts bigrams.  Reproduced as is; the length
    # difference equals the word-count difference unless a sentence is empty,
    # and an empty sentence has a zero vector, so scores are unaffected.
    length = sum(tf for gram, tf in counts.items() if len(gram) == 2)
    return vecs, norms, length


def _cider_similarity(
    hyp: tuple[list[dict], list[float], int], ref: tuple[list[dict], list[float], int], sigma: float
) -> float:
    """Mean over n-gram orders of the clipped, length-penalized cosine similarity."""
    (h_vecs, h_norms, h_len), (r_vecs, r_norms, r_len) = hyp, ref
    penalty = math.exp(-((h_len - r_len) ** 2) / (2.0 * sigma**2))
    total = 0.0
    for hv, rv, hn, rn in zip(h_vecs, r_vecs, h_norms, r_norms):
        dot = sum(min(w, rv.get(g, 0.0)) * rv.get(g, 0.0) for g, w in hv.items())
        if hn != 0.0 and rn != 0.0:
            dot /= hn * rn
        total += dot * penalty
    return total / len(h_vecs)


def _cider_d_python(
    hyps: Sequence[str], refs: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0
) -> tuple[float, list[float]]:
    """CIDEr-D (coco-caption's Cider): tf-idf over the references, x10 scaling."""
    ref_counts = [[_ngram_counts(r.split(), n) for r in ref_list] for ref_list in refs]
    doc_freq: Counter[tuple[str, ...]] = Counter()
    for counts_of_image in ref_counts:
        doc_freq.update(set().union(*counts_of_image))
    log_n_docs = math.log(float(len(refs)))
    per_item: list[float] = []
    for hyp, counts_of_image in zip(hyps, ref_counts):
        h = _tfidf_vectors(_ngram_counts(hyp.split(), n), doc_freq, log_n_docs, n)
        sims = [
            _cider_similarity(h, _tfidf_vectors(rc, doc_freq, log_n_docs, n), sigma) for rc in counts_of_image
        ]
        per_item.append(10.0 * sum(sims) / len(sims))
    return float(np.mean(per_item)), per_item


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a)*len(b)) time, O(len(b)) memory)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def _rouge_l_single(hyp: str, ref_list: Sequence[str], beta: float = 1.2) -> float:
    """coco-caption ROUGE-L: F-measure of the max LCS precision and max LCS recall."""
    cand = hyp.split(" ")  # coco splits on single spaces, so "" is one empty token
    precisions, recalls = [], []
    for ref in ref_list:
        ref_tokens = ref.split(" ")
        lcs = _lcs_length(ref_tokens, cand)
        precisions.append(lcs / len(cand))
        recalls.append(lcs / len(ref_tokens))
    p, r = max(precisions), max(recalls)
    if p == 0.0 or r == 0.0:
        return 0.0
    return (1 + beta**2) * p * r / (r + beta**2 * p)


def _rouge_l_python(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    per_item = [_rouge_l_single(h, r) for h, r in zip(hyps, refs)]
    return float(np.mean(per_item)), per_item


def _score_python(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Score already-tokenized captions with the pure-Python scorers."""
    bleu, bleu_items = _bleu_python(hyps, refs)
    cider, cider_items = _cider_d_python(hyps, refs)
    rouge, rouge_items = _rouge_l_python(hyps, refs)
    return _pack_scores(bleu, cider, rouge, bleu_items, cider_items, rouge_items)


# ---------------------------------------------------------------------------
# pycocoevalcap scorers
# ---------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _pycocoevalcap_available() -> bool:
    try:
        from pycocoevalcap.bleu.bleu import Bleu  # noqa: F401
        from pycocoevalcap.cider.cider import Cider  # noqa: F401
        from pycocoevalcap.rouge.rouge import Rouge  # noqa: F401
    except ImportError:
        return False
    return True


def _score_pycocoevalcap(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Score already-tokenized captions with pycocoevalcap's Bleu/Cider/Rouge."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    # Integer keys inserted in input order: the scorers iterate gts.keys(), so
    # their per-image outputs come back in that same order.
    gts = {i: list(r) for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    bleus, bleu_lists = Bleu(4).compute_score(gts, res, verbose=0)
    cider, cider_items = Cider().compute_score(gts, res)
    rouge, rouge_items = Rouge().compute_score(gts, res)
    return _pack_scores(bleus[3], cider, rouge, bleu_lists[3], cider_items, rouge_items)


def _pack_scores(
    bleu: float,
    cider: float,
    rouge: float,
    bleu_items: Sequence[float],
    cider_items: Sequence[float],
    rouge_items: Sequence[float],
) -> dict[str, Any]:
    return {
        "bleu4": float(bleu),
        "cider": float(cider),
        "rougeL": float(rouge),
        "n": len(bleu_items),
        "per_item": {
            "cider": [float(x) for x in cider_items],
            "bleu4": [float(x) for x in bleu_items],
            "rougeL": [float(x) for x in rouge_items],
        },
    }


# ---------------------------------------------------------------------------
# Public caption entry point
# ---------------------------------------------------------------------------

BACKEND_PTB = "pycocoevalcap+ptb"
BACKEND_NO_JAVA = "pycocoevalcap+python-tokenizer (java missing)"
BACKEND_PTB_FAILED = "pycocoevalcap+python-tokenizer (ptb failed)"
BACKEND_NO_PYCOCO = "pure-python (pycocoevalcap missing)"
BACKEND_PYTHON_REQUESTED = "pure-python (requested)"

CaptionBackend = Literal["auto", "pycocoevalcap", "python"]


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


def _tokenize(hyps: list[str], refs: list[list[str]]) -> tuple[list[str], list[list[str]], str]:
    """Tokenize with PTB if possible (one JVM call for everything), else Python."""
    captions: dict[tuple[str, int], list[str]] = {}
    for i, (hyp, ref_list) in enumerate(zip(hyps, refs)):
        captions[("hyp", i)] = [hyp]
        captions[("ref", i)] = ref_list
    tokenized: dict[Any, list[str]] | None = None
    backend = BACKEND_NO_JAVA
    if _java_available():
        try:
            tokenized, backend = _ptb_tokenize_java(captions), BACKEND_PTB
        except Exception as exc:
            logger.debug("PTBTokenizer failed (%s); using the Python tokenizer", exc)
            backend = BACKEND_PTB_FAILED
    if tokenized is None:
        tokenized = _python_tokenize_all(captions)
    tok_hyps = [tokenized[("hyp", i)][0] for i in range(len(hyps))]
    tok_refs = [tokenized[("ref", i)] for i in range(len(hyps))]
    return tok_hyps, tok_refs, backend


def caption_scores(
    predictions: Mapping[str, str] | Sequence[str],
    references: Mapping[str, Sequence[str]] | Sequence[Sequence[str]],
    *,
    backend: CaptionBackend = "auto",
) -> dict[str, Any]:
    """BLEU-4, CIDEr-D and ROUGE-L of predicted captions, coco-caption style.

    ``predictions``/``references`` are either dicts keyed by image id (same key
    sets) or parallel lists.  ``backend="auto"`` uses pycocoevalcap when it can
    be imported and the pure-Python scorers otherwise; ``"pycocoevalcap"``
    requires it; ``"python"`` forces the pure-Python scorers and tokenizer.
    Per-item lists follow the order of ``predictions``.
    """
    hyps, refs = _as_ordered_pairs(predictions, references)
    if backend not in ("auto", "pycocoevalcap", "python"):
        raise ValueError(f"unknown backend {backend!r}")
    use_pycoco = backend != "python" and _pycocoevalcap_available()
    if backend == "pycocoevalcap" and not use_pycoco:
        raise ImportError("backend='pycocoevalcap' requested but pycocoevalcap cannot be imported")
    if use_pycoco:
        tok_hyps, tok_refs, label = _tokenize(hyps, refs)
        result = _score_pycocoevalcap(tok_hyps, tok_refs)
    else:
        tok_hyps = [python_ptb_tokenize(h) for h in hyps]
        tok_refs = [[python_ptb_tokenize(r) for r in rs] for rs in refs]
        label = BACKEND_PYTHON_REQUESTED if backend == "python" else BACKEND_NO_PYCOCO
        result = _score_python(tok_hyps, tok_refs)
    result["backend"] = label
    return result


# ---------------------------------------------------------------------------
# Bootstrap confidence intervals
# ---------------------------------------------------------------------------

_BOOTSTRAP_MAX_CELLS = 4_000_000  # resample in blocks to bound memory


def _bootstrap_means(data: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_resamples`` resamples with replacement, drawn in memory-bounded blocks."""
    block = max(1, _BOOTSTRAP_MAX_CELLS // data.size)
    chunks = []
    for start in range(0, n_resamples, block):
        idx = rng.integers(0, data.size, size=(min(block, n_resamples - start), data.size))
        chunks.append(data[idx].mean(axis=1))
    return np.concatenate(chunks)


def bootstrap_ci(
    values: Sequence[float],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean, low, high): percentile-bootstrap CI of the mean, reproducible by ``seed``."""
    data = np.asarray(values, dtype=np.float64).ravel()
    if data.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not np.all(np.isfinite(data)):
        raise ValueError("bootstrap_ci got non-finite values")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    mean = float(data.mean())
    if data.size == 1:
        return mean, mean, mean
    means = _bootstrap_means(data, n_resamples, np.random.default_rng(seed))
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return mean, float(low), float(high)


def summarize(values: Sequence[float], **kw: Any) -> dict[str, float | int]:
    """``{"mean", "ci_low", "ci_high", "n"}``; keyword arguments go to :func:`bootstrap_ci`."""
    mean, low, high = bootstrap_ci(values, **kw)
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": len(values)}
