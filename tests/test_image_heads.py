"""The image heads: the flow head samples the modes of a two-mode target; the MSE head predicts their mean."""

import pytest
import torch

from vlgpt.models.image_heads import FlowHead, MSEHead, build_image_head


def _two_mode_data(n: int, generator: torch.Generator):
    """Hidden states that say nothing about which of two targets follows: +m or -m, at random."""
    hidden = torch.ones(n, 8)
    sign = torch.randint(0, 2, (n, 1), generator=generator).float() * 2 - 1
    target = sign * torch.tensor([[2.0, -1.0, 1.5, 0.5]]) + 0.05 * torch.randn(n, 4, generator=generator)
    return hidden, target


def _fit(head: torch.nn.Module, steps: int = 400) -> None:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(steps):
        hidden, target = _two_mode_data(256, g)
        loss = head.loss(hidden, target)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_flow_head_samples_the_modes_not_their_mean():
    torch.manual_seed(0)
    head = FlowHead(8, 4, hidden=64, depth=2)
    head.fit_scale(_two_mode_data(512, torch.Generator().manual_seed(1))[1])
    _fit(head)
    mode = torch.tensor([2.0, -1.0, 1.5, 0.5])
    samples = head.sample(torch.ones(400, 8), torch.Generator().manual_seed(2))
    to_plus = (samples - mode).norm(dim=1)
    to_minus = (samples + mode).norm(dim=1)
    near = torch.minimum(to_plus, to_minus)
    assert (near < 0.5 * mode.norm()).float().mean() > 0.9  # samples land on a mode...
    assert samples.norm(dim=1).median() > 0.7 * mode.norm()  # ...not at the mean between them (0)
    share = (to_plus < to_minus).float().mean()
    assert 0.25 < share < 0.75  # and both modes are drawn


def test_mse_head_predicts_the_mean_between_modes():
    torch.manual_seed(0)
    head = MSEHead(8, 4)
    _fit(head)
    prediction = head.sample(torch.ones(1, 8))
    assert prediction.norm() < 0.3  # the average of +m and -m: the blur the flow head avoids


def test_registry_names_every_head():
    assert isinstance(build_image_head("mse", 8, 4), MSEHead)
    assert isinstance(build_image_head("flow", 8, 4), FlowHead)
    try:
        build_image_head("gan", 8, 4)
    except ValueError as error:
        assert "mse" in str(error) and "flow" in str(error)
    else:
        raise AssertionError("an unknown head must be refused")


def _noisy_label_data(n: int, generator: torch.Generator, uncond_prob: float = 0.2):
    """Condition c in {+1, -1} (hidden [c, 1, 0...]) says the target is c*m 70% of the time and -c*m
    30%; a share of rows is unconditional (hidden [0, 1, 0...]), where either mode is equally likely."""
    mode = torch.tensor([2.0, -1.0, 1.5, 0.5])
    c = torch.randint(0, 2, (n, 1), generator=generator).float() * 2 - 1
    flip = torch.where(torch.rand(n, 1, generator=generator) < 0.7, 1.0, -1.0)
    keep = (torch.rand(n, 1, generator=generator) >= uncond_prob).float()
    hidden = torch.zeros(n, 8)
    hidden[:, :1], hidden[:, 1] = c * keep, 1.0
    target = c * flip * mode + 0.05 * torch.randn(n, 4, generator=generator)
    return hidden, target, mode


def test_guidance_sharpens_the_flow_head_toward_its_condition():
    torch.manual_seed(0)
    head = FlowHead(8, 4, hidden=64, depth=2)
    g = torch.Generator().manual_seed(0)
    head.fit_scale(_noisy_label_data(512, g)[1])
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(600):
        hidden, target, mode = _noisy_label_data(256, g)
        loss = head.loss(hidden, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    cond = torch.zeros(400, 8)
    cond[:, 0], cond[:, 1] = 1.0, 1.0  # c = +1
    uncond = torch.zeros(400, 8)
    uncond[:, 1] = 1.0

    def share(guidance: float) -> float:
        samples = head.sample(cond, torch.Generator().manual_seed(3), uncond, guidance)
        return float(((samples - mode).norm(dim=1) < (samples + mode).norm(dim=1)).float().mean())

    plain, guided = share(1.0), share(3.0)
    assert 0.55 < plain < 0.85, plain  # the conditional distribution itself: about 70% at +m
    assert guided > plain + 0.1, (plain, guided)  # guidance moves mass toward what the condition favours


def test_mse_head_guidance_extrapolates_from_the_unconditional_prediction():
    head = MSEHead(8, 4)
    cond, uncond = torch.randn(3, 8), torch.randn(3, 8)
    guided = head.sample(cond, None, uncond, 2.5)
    torch.testing.assert_close(guided, head(uncond) + 2.5 * (head(cond) - head(uncond)))
    torch.testing.assert_close(head.sample(cond, None, uncond, 1.0), head(cond))


def test_flow_head_sampling_through_diffusers_scheduler_is_euler_on_even_times():
    """The flow head samples through diffusers' FlowMatchEulerDiscreteScheduler (sigma = 1 - t); on
    `steps` even times that is x += v dt, guided or not."""
    pytest.importorskip("diffusers")
    torch.manual_seed(0)
    head = FlowHead(16, 8, steps=6)
    for parameter in head.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    hidden, uncond = torch.randn(5, 16), torch.randn(1, 16)

    def euler(guidance: float, with_uncond: bool) -> torch.Tensor:
        x = torch.randn(5, 8, generator=torch.Generator().manual_seed(3))
        for i in range(head.steps):
            t = torch.full((5,), i / head.steps)
            v = head.velocity(x, t, hidden)
            if with_uncond:
                v_uncond = head.velocity(x, t, uncond.expand_as(hidden))
                v = v_uncond + guidance * (v - v_uncond)
            x = x + v / head.steps
        return x

    with torch.no_grad():
        plain = head.sample(hidden, torch.Generator().manual_seed(3))
        guided = head.sample(hidden, torch.Generator().manual_seed(3), uncond, 2.5)
        torch.testing.assert_close(plain, euler(1.0, False), rtol=0, atol=1e-3)
        torch.testing.assert_close(guided, euler(2.5, True), rtol=0, atol=1e-3)
        assert (plain - guided).abs().max() > 0.01
