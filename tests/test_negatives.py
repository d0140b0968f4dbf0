"""Hard negative captions: word swaps learnt from captions, and the CLIP loss that uses them."""

import numpy as np
import torch

from vlgpt.core.config import ClipConfig, TextConfig, VisionConfig
from vlgpt.data.negatives import SubstitutionTable
from vlgpt.models.clip import CLIP

# Not Shapes: the swaps come from whatever the captions say.
CAPTIONS = [
    f"A {colour} {thing} on the {place}."
    for colour in ("red", "blue", "green")
    for thing in ("car", "boat", "kite")
    for place in ("road", "lake", "hill")
]


def test_substitutes_are_words_used_in_the_same_places():
    table = SubstitutionTable.fit(CAPTIONS)
    assert set(table.substitutes["red"]) == {"blue", "green"}
    assert set(table.substitutes["car"]) == {"boat", "kite"}
    assert "on" not in table.substitutes  # nothing else ever stands between its neighbours


def test_a_negative_swaps_exactly_one_word_and_keeps_capitals():
    table = SubstitutionTable.fit(CAPTIONS + ["Red car here.", "Blue car here."])
    rng = np.random.default_rng(0)
    for caption in CAPTIONS[:10] + ["Red car here."]:
        negative = table.negative(caption, rng)
        before, after = caption.split(), negative.split()
        changed = [(a, b) for a, b in zip(before, after) if a != b]
        assert len(before) == len(after) and len(changed) == 1, (caption, negative)
        assert changed[0][0][0].isupper() == changed[0][1][0].isupper()
    assert table.negative("Nothing known here at all", rng) is None


def _tiny_clip() -> CLIP:
    torch.manual_seed(0)
    vision = VisionConfig(image_size=32, patch_size=8, width=32, depth=1, heads=2)
    text = TextConfig(vocab_size=64, context_length=12, width=32, depth=1, heads=2)
    return CLIP(ClipConfig(vision, text, embed_dim=32, condition_grid=2))


def test_negatives_enter_the_image_to_text_loss_and_masked_ones_do_not():
    clip = _tiny_clip()
    pixels = torch.rand(4, 3, 32, 32)
    ids, lengths = torch.randint(4, 64, (4, 12)), torch.full((4,), 12)
    plain, _ = clip(pixels, ids, lengths)
    masked, _ = clip(pixels, ids, lengths, negatives=(ids, lengths, torch.zeros(4, dtype=torch.bool)))
    torch.testing.assert_close(masked, plain)
    # A negative the image cannot tell from its own caption (the same text) costs about log 2 more
    # in the image-to-text half of the symmetric loss.
    same, _ = clip(pixels, ids, lengths, negatives=(ids, lengths, torch.ones(4, dtype=torch.bool)))
    assert same > plain + 0.25
