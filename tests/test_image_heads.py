"""The image heads: the flow head samples the modes of a two-mode target; the MSE head predicts their mean."""

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
