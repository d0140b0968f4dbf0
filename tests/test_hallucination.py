"""The hallucination meters (POPE and CHAIR on the Shapes world) and their floors: the truth scores 1,
"always yes" scores a yes-ratio of 1 and precision at the prior, a caption naming an absent object
raises CHAIR."""

import pytest

from vlgpt.eval.hallucination import (
    KINDS,
    SAMPLERS,
    binary_scores,
    chair,
    evaluate_chair,
    evaluate_pope,
    hallucinated,
    make_probes,
    training_statistics,
)
from vlgpt.world.dataset import ShapesWorld
from vlgpt.world.language import parse_caption
from vlgpt.world.scene import Scene


@pytest.fixture(scope="module")
def scenes():
    test, train = ShapesWorld("test", 32, 32), ShapesWorld("train", 32, 32)
    return (
        [Scene.from_dict(test[i]["scene"]) for i in range(24)],
        [Scene.from_dict(train[i]["scene"]) for i in range(200)],
    )


def truthful(scenes_by_image):
    """An answerer that looks at the scene itself (the image is matched back by identity)."""

    def answer(image, question):
        scene = scenes_by_image[id(image)]
        (asked,) = parse_caption(question.removeprefix("Is there ").rstrip("?"))
        return "yes" if any((o.color, o.shape) == (asked.color, asked.shape) for o in scene.objects) else "no"

    return answer


def test_pope_probes_are_balanced_and_absent_ones_are_absent(scenes):
    test, train = scenes
    frequency, together = training_statistics(train)
    for sampler in SAMPLERS:
        probes = make_probes(test, sampler, frequency, together)
        assert sum(p["truth"] for p in probes) * 2 == len(probes)
        for probe in probes:
            (asked,) = parse_caption(probe["question"].removeprefix("Is there ").rstrip("?"))
            present = any(
                (o.color, o.shape) == (asked.color, asked.shape) for o in test[probe["image"]].objects
            )
            assert present == probe["truth"], (sampler, probe)
    popular = make_probes(test, "popular", frequency, together)
    top = {kind for kind, _ in frequency.most_common(12)}
    absent = [p for p in popular if not p["truth"]]
    named = [tuple(p["question"].removeprefix("Is there ").rstrip("?").split()[-2:]) for p in absent]
    assert sum(kind in top for kind in named) / len(named) > 0.8  # popular draws from the frequent kinds


def test_pope_floors_and_the_truth(scenes, monkeypatch):
    test, train = scenes
    rendered = {}

    def render(scene):
        from vlgpt.world.render import render as real

        image = real(scene)
        rendered[id(image)] = scene
        return image

    monkeypatch.setattr("vlgpt.eval.hallucination.render", render)
    result = evaluate_pope(lambda image, q: "yes", test, train)
    for sampler in SAMPLERS:
        figures = result[sampler]
        assert figures["yes_ratio"]["mean"] == 1.0
        assert figures["precision"]["mean"] == pytest.approx(0.5)  # the prior: probes are balanced
        assert figures["recall"]["mean"] == 1.0
        assert figures["f1"]["mean"] == pytest.approx(figures["floor_always_yes"]["f1"])
        assert figures["floor_always_no"]["f1"] == 0.0 and figures["floor_always_no"]["yes_ratio"] == 0.0
    truth = evaluate_pope(truthful(rendered), test, train)
    for sampler in SAMPLERS:
        assert truth[sampler]["f1"]["mean"] == 1.0 and truth[sampler]["yes_ratio"]["mean"] == 0.5
        assert truth[sampler]["f1"]["ci_low"] == 1.0


def test_binary_scores_count_a_confusion_matrix():
    said = [True, True, False, False, True]
    truth = [True, False, True, False, True]
    scores = binary_scores(said, truth)
    assert scores["precision"]["mean"] == pytest.approx(2 / 3)
    assert scores["recall"]["mean"] == pytest.approx(2 / 3)
    assert scores["accuracy"]["mean"] == pytest.approx(3 / 5)
    assert scores["yes_ratio"]["mean"] == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="as many answers"):
        binary_scores([True], [True, False])


def test_chair_reads_captions_against_the_scene(scenes):
    test, _ = scenes
    world = ShapesWorld("test", 32, 32)
    truths = [world[i]["caption"] for i in range(len(test))]
    clean = chair(truths, test)
    assert clean["chair_i"]["mean"] == 0.0 and clean["chair_s"]["mean"] == 0.0
    scene = test[0]
    present = {(o.color, o.shape) for o in scene.objects}
    color, shape = next(
        kind for kind in KINDS if kind not in present and kind[1] not in {s for _, s in present}
    )
    made_up = f"{truths[0].rstrip('.')} and a {color} {shape}."
    assert hallucinated(made_up, scene) == (1, len(present) + 1)
    raised = chair([made_up] + truths[1:], test)
    assert raised["chair_s"]["mean"] == pytest.approx(1 / len(test)) and raised["chair_i"]["mean"] > 0
    # A colourless mention is right when any object has that shape.
    assert hallucinated(f"A {next(iter(present))[1]}.", scene) == (0, 1)
    floor = evaluate_chair(truths, test)["floor_names_everything"]
    assert floor["chair_i"] > 0.9


def test_contrastive_logits_keep_only_plausible_tokens_and_alpha_zero_is_plain():
    import torch

    from vlgpt.inference.generate import contrastive_logits

    logits = torch.tensor([4.0, 3.5, 0.0, -2.0])
    distorted = torch.tensor([4.0, 1.0, -5.0, 3.0])
    plain = contrastive_logits(logits, distorted, alpha=0.0, beta=0.1)
    assert torch.equal(plain[:2], logits[:2]) and torch.isinf(plain[2:]).all()  # below 0.1 x the top
    contrasted = contrastive_logits(logits, distorted, alpha=1.0, beta=0.1)
    assert int(contrasted.argmax()) == 1  # what the noised image also says loses to what the image says
    assert torch.isinf(contrasted[3])  # never promotes a token the image finds implausible
    masked = torch.tensor([2.0, float("-inf")])
    assert not contrastive_logits(masked, masked, alpha=1.0, beta=0.0).isnan().any()  # -inf - -inf


def test_vcd_with_alpha_zero_is_greedy_token_for_token(serve_run):
    """Through every verb that writes text: alpha 0 leaves greedy decoding's answer unchanged, while
    the contrast context is built and fed (a wrong contrast prompt is refused)."""
    import vlgpt
    from vlgpt.inference.generate import GenerationError
    from vlgpt.world.render import render

    model = vlgpt.load(serve_run)
    world = ShapesWorld("test", 32, 32)
    for i in range(3):
        image = render(Scene.from_dict(world[i]["scene"]))
        plain = model.caption(image, max_new_tokens=16)
        assert model.caption(image, max_new_tokens=16, decoding="vcd", vcd_alpha=0.0) == plain
        question = world[i]["questions"][0]["question"]
        plain = model.ask(image, question, max_new_tokens=6)
        assert model.ask(image, question, max_new_tokens=6, decoding="vcd", vcd_alpha=0.0) == plain
        model.ask(image, question, max_new_tokens=6, decoding="vcd", vcd_alpha=2.0)  # runs
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Hi"}]}
    ]
    config = vlgpt.inference.generate.SamplingConfig(decoding="vcd")
    with pytest.raises(GenerationError, match="other image embeddings"):
        model.generator.generate(
            model.segments(messages),
            config,
            contrast=model.segments(
                messages[:0] or [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
            ),
        )
    with pytest.raises(GenerationError, match="unknown decoding"):
        model.caption(image, decoding="dola")


def test_impossible_edits_are_impossible_and_say_why():
    """The world's impossible edit requests: `absent` names a colour and shape the scene lacks,
    `same` asks an object to become what it is; the reply names the reason."""
    from vlgpt.world.language import IMPOSSIBLE_KINDS

    world = ShapesWorld("train", 64, 64)
    seen = set()
    for i in range(60):
        row = world[i]
        impossible = row["impossible_edit"]
        assert impossible is not None
        scene = Scene.from_dict(row["scene"])
        kinds = {(o.color, o.shape) for o in scene.objects}
        seen.add(impossible["kind"])
        if impossible["kind"] == "absent":
            color, shape = (
                impossible["reply"].removeprefix("There is no ").removesuffix(" in the image.").split()
            )
            assert (color, shape) not in kinds and f"the {color} {shape}" in impossible["instruction"]
        else:
            assert impossible["reply"].endswith(" already.")
            what = impossible["reply"].removesuffix(" already.").split(" is ")[-1].split()[-1]
            shape = next(
                s
                for s in ("circle", "square", "triangle", "diamond", "star", "cross")
                if s in impossible["reply"]
            )
            assert any(o.shape == shape and what in (o.color, o.shape) for o in scene.objects), impossible
    assert seen == set(IMPOSSIBLE_KINDS)
    assert world[3]["impossible_edit"] == ShapesWorld("train", 64, 64)[3]["impossible_edit"]  # reproducible
