"""CAE-AV losses (P Eq. 22-25) against hand-computed values."""

import math

import pytest
import torch

from caeav.config import LossConfig
from caeav.model.losses import caption_infonce, entropy_term, gamma_at, total_loss, va_consistency


def _loop_infonce(z, c, tau, T):
    """P Eq. 22 written as the paper's sum, one row at a time."""
    z = torch.nn.functional.normalize(z, dim=-1)
    c = torch.nn.functional.normalize(c, dim=-1)
    total = 0.0
    for i in range(len(z)):
        pos = math.exp(float(z[i] @ c[i]) / tau)
        denom = pos + sum(math.exp(float(z[i] @ c[j]) / tau) for j in range(len(z)) if j // T != i // T)
        total += -math.log(pos / denom)
    return total / len(z)


def test_infonce_one_video_is_exactly_zero_and_other_videos_add_negatives():
    torch.manual_seed(0)
    T = 4
    z, c = torch.randn(T, 8), torch.randn(T, 8)
    tau = torch.tensor(0.2)
    assert caption_infonce(z, c, tau, T).item() == 0.0
    z2 = torch.cat([z, torch.randn(T, 8)])
    c2 = torch.cat([c, torch.randn(T, 8)])
    two = caption_infonce(z2, c2, tau, T)
    assert two.item() > 0
    c3 = c2.clone()
    c3[T:] = torch.randn(T, 8)  # other video's captions move: the first video's rows see different negatives
    assert caption_infonce(z2, c3, tau, T).item() != pytest.approx(two.item())


def test_infonce_matches_a_hand_written_loop():
    torch.manual_seed(1)
    T, B = 3, 3
    z, c = torch.randn(B * T, 6), torch.randn(B * T, 6)
    got = caption_infonce(z, c, torch.tensor(0.2), T).item()
    assert got == pytest.approx(_loop_infonce(z, c, 0.2, T), rel=1e-5)


def test_infonce_clamps_tau_and_rejects_partial_videos():
    torch.manual_seed(2)
    z, c = torch.randn(4, 5), torch.randn(4, 5)
    low = caption_infonce(z, c, torch.tensor(1e-4), 2, tau_min=0.01)
    assert low.item() == pytest.approx(caption_infonce(z, c, torch.tensor(0.01), 2).item())
    with pytest.raises(ValueError):
        caption_infonce(z, c, torch.tensor(0.2), 3)


def test_infonce_gradient_reaches_tau():
    torch.manual_seed(3)
    tau = torch.tensor(0.2, requires_grad=True)
    caption_infonce(torch.randn(4, 5), torch.randn(4, 5), tau, 2).backward()
    assert tau.grad is not None and tau.grad.item() != 0


def test_va_consistency_hand_values():
    z_v = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    z_a = torch.tensor([[5.0, 0.0], [1.0, 0.0]])  # cosines 1 and 0
    assert va_consistency(z_v, z_a).item() == pytest.approx(0.5)
    z_a = torch.tensor([[-1.0, 0.0], [0.0, 1.0]])  # cosines -1 and 1
    assert va_consistency(z_v, z_a).item() == pytest.approx(1.0)


def test_entropy_term_hand_values_and_sign():
    p_v = torch.tensor([[0.5, 0.5], [1.0, 0.0]])  # H = ln 2, 0
    p_a = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])  # H = ln 4, 0
    expected = (math.log(2) + math.log(4)) / 2
    assert entropy_term(p_v, p_a, "literal").item() == pytest.approx(-expected)
    assert entropy_term(p_v, p_a, "sharpen").item() == pytest.approx(expected)
    assert entropy_term(None, None).item() == 0.0
    with pytest.raises(ValueError):
        entropy_term(p_v, p_a, "up")


def test_gamma_schedule_zero_then_linear_ramp():
    cfg = LossConfig(gamma=0.003, gamma_zero_epochs=5, gamma_ramp_epochs=5)
    assert [gamma_at(e, cfg) for e in range(5)] == [0.0] * 5
    assert gamma_at(5, cfg) == pytest.approx(0.0006)
    assert gamma_at(7, cfg) == pytest.approx(0.0018)
    assert gamma_at(9, cfg) == pytest.approx(0.003)
    assert gamma_at(30, cfg) == pytest.approx(0.003)
    jump = LossConfig(gamma=0.005, gamma_zero_epochs=15, gamma_ramp_epochs=0)
    assert gamma_at(14, jump) == 0.0 and gamma_at(15, jump) == pytest.approx(0.005)


def _aux(B=2, T=3, train=True):
    torch.manual_seed(4)
    n = B * T
    prob = (lambda L: torch.softmax(torch.randn(n, L), -1)) if train else (lambda L: None)
    return {"Pv": torch.randn(n, 8), "Pa": torch.randn(n, 8), "Pvcap": torch.randn(n, 8), "Pacap": torch.randn(n, 8),
            "prob_v": prob(5), "prob_a": prob(7), "tau": torch.tensor(0.2)}


def test_total_loss_is_eq25():
    cfg = LossConfig(alpha=0.1, beta=0.05, gamma=0.003, gamma_zero_epochs=5, gamma_ramp_epochs=5)
    aux = _aux()
    task, lb = torch.tensor(1.5), torch.tensor(0.25)
    total, parts = total_loss(task, aux, cfg, epoch=9, segments=3, lb=lb)
    cap_v = caption_infonce(aux["Pv"], aux["Pvcap"], aux["tau"], 3)
    cap_a = caption_infonce(aux["Pa"], aux["Pacap"], aux["tau"], 3)
    va = va_consistency(aux["Pv"], aux["Pa"])
    ent = entropy_term(aux["prob_v"], aux["prob_a"])
    expected = 1.5 + 0.25 + 0.1 * (cap_v + cap_a) + 0.05 * va + 0.003 * ent
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["gamma"] == pytest.approx(0.003) and parts["ent"].item() == pytest.approx(ent.item())
    assert set(parts) == {"task", "lb", "cap_v", "cap_a", "va", "ent", "gamma", "total"}
    early, parts0 = total_loss(task, aux, cfg, epoch=0, segments=3)  # γ = 0, no lb
    assert parts0["lb"].item() == 0.0
    assert early.item() == pytest.approx((1.5 + 0.1 * (cap_v + cap_a) + 0.05 * va).item(), rel=1e-6)


def test_total_loss_in_eval_has_no_entropy():
    cfg = LossConfig()
    total, parts = total_loss(torch.tensor(1.0), _aux(train=False), cfg, epoch=20, segments=3)
    assert parts["ent"].item() == 0.0 and torch.isfinite(total)
