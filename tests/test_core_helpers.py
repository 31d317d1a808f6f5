"""CFG helpers, the sample queue and EMA (drifting/cfg.py, queue.py, ema.py)."""

import numpy as np
import pytest
import torch
from torch import nn

from drifting import EMA, SampleQueue, drift_field, sample_cfg_alpha, unconditional_weight


@pytest.mark.parametrize("k", [1.0, 3.0, 5.0])
def test_alpha_follows_power_law_density(k):
    alpha = sample_cfg_alpha(200_000, k=k, generator=torch.Generator().manual_seed(0)).double().numpy()
    assert alpha.min() >= 1.0 and alpha.max() <= 4.0
    grid = np.linspace(1.0, 4.0, 13)
    cdf = np.log(grid) / np.log(4.0) if k == 1.0 else (grid ** (1 - k) - 1.0) / (4.0 ** (1 - k) - 1.0)
    empirical = (alpha[:, None] <= grid[None]).mean(0)
    assert np.abs(empirical - cdf).max() < 0.005  # Kolmogorov-Smirnov distance on a grid


def test_alpha_one_fraction():
    alpha = sample_cfg_alpha(100_000, k=3.0, p_alpha_one=0.5, generator=torch.Generator().manual_seed(1))
    assert abs((alpha == 1.0).float().mean().item() - 0.5) < 0.01
    with pytest.raises(ValueError, match="alpha_min"):
        sample_cfg_alpha(4, alpha_min=2.0, alpha_max=1.5)


def test_unconditional_weight_realizes_alpha():
    G, n_unc = 64, 16
    for alpha in (1.0, 1.5, 4.0):
        w = unconditional_weight(alpha, G, n_unc)
        # Paper A.7: alpha = ((G - 1) + N_unc * w) / (G - 1).
        assert float(((G - 1) + n_unc * w) / (G - 1)) == pytest.approx(alpha)
    assert unconditional_weight(torch.tensor([1.0, 2.0]), 8, 7).tolist() == pytest.approx([0.0, 1.0])
    with pytest.raises(ValueError):
        unconditional_weight(0.5, 8, 4)


def _guided_particles(alpha: float, steps: int = 400) -> torch.Tensor:
    """Particles of class 0 moved by the drift alone (no network), with unconditional negatives weighted for alpha.

    Class 0 is N((+0.5, 0), 0.5^2 I), class 1 the same at x = -0.5; the unconditional set is their even mixture.
    """
    g = torch.Generator().manual_seed(0)
    G, P, U = 64, 64, 32

    def draw(n: int, label: torch.Tensor | int) -> torch.Tensor:
        x = 0.5 * torch.randn(n, 2, generator=g)
        x[:, 0] += torch.where(torch.as_tensor(label) == 0, 0.5, -0.5)
        return x

    x = draw(G, 0)
    weight = unconditional_weight(alpha, G, U) * torch.ones(1, U)
    for _ in range(steps):
        unconditional = draw(U, torch.randint(2, (U,), generator=g))
        x = x + 0.05 * drift_field(x[None], draw(P, 0)[None], unconditional[None], weight_neg=weight,
                                   affinity_floor=0.0)[0]
    return x


def test_unconditional_negatives_guide_samples_away_from_the_other_class():
    # Paper 3.5: the generated distribution approximates alpha p(x|c) - (alpha - 1) p(x): with alpha = 1 the
    # particles stay on class 0 (mean x 0.5), with alpha > 1 they move away from class 1 and tighten.
    plain, guided = _guided_particles(1.0), _guided_particles(3.0)
    assert abs(plain[:, 0].mean().item() - 0.5) < 0.1
    assert guided[:, 0].mean().item() > plain[:, 0].mean().item() + 0.25
    assert guided[:, 0].std().item() < 0.8 * plain[:, 0].std().item()
    assert abs(guided[:, 1].mean().item()) < 0.15  # nothing pushes along y


def test_queue_keeps_most_recent_per_class_and_globally():
    queue = SampleQueue(num_classes=3, sample_shape=(2,), per_class=4, global_size=5)
    values = torch.arange(10.0)
    queue.push(torch.stack([values, values], 1), torch.tensor([0] * 6 + [1] * 4))
    assert queue.count(0) == 4 and queue.count(1) == 4 and queue.count(2) == 0
    assert sorted(queue.class_rings[0, :, 0].tolist()) == [2.0, 3.0, 4.0, 5.0]  # the two oldest were dropped
    assert sorted(queue.global_ring[:, 0].tolist()) == [5.0, 6.0, 7.0, 8.0, 9.0]


def test_queue_samples_without_replacement_and_reports_shortage():
    queue = SampleQueue(num_classes=2, sample_shape=(1,), per_class=8, global_size=16)
    queue.push(torch.arange(8.0)[:, None], torch.zeros(8, dtype=torch.long))
    queue.push(torch.arange(3.0)[:, None] + 100, torch.ones(3, dtype=torch.long))
    draw = queue.sample_class(torch.tensor([0, 0]), 8, generator=torch.Generator().manual_seed(0))
    assert draw.shape == (2, 8, 1)
    for row in draw:
        assert sorted(row[:, 0].tolist()) == list(range(8))  # all distinct
    assert queue.sample_global(3, 11).shape == (3, 11, 1)
    with pytest.raises(ValueError, match="class 1 has 3 queued samples, fewer than the 4"):
        queue.sample_class([1], 4)
    with pytest.raises(ValueError, match="push expects"):
        queue.push(torch.zeros(2, 3), torch.zeros(2))


def test_queue_state_round_trip():
    queue = SampleQueue(num_classes=2, sample_shape=(3,), per_class=4, global_size=6)
    queue.push(torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1]))
    restored = SampleQueue(num_classes=2, sample_shape=(3,), per_class=4, global_size=6)
    restored.load_state_dict(queue.state_dict())
    assert torch.equal(restored.class_rings, queue.class_rings) and restored.global_count == 5


def test_ema_constant_decay_and_power_warmup():
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    ema.update(model)
    assert ema.model.weight.item() == pytest.approx(1 - 0.9**2)
    warm = EMA(model, decay=0.9999, power=0.75)
    assert warm.current_decay() == 0.0  # the first update copies the weights
    warm.step = 1000
    assert warm.current_decay() == pytest.approx(1 - 1001**-0.75)
    target = nn.Linear(1, 1, bias=False)
    ema.copy_to(target)
    assert target.weight.item() == pytest.approx(ema.model.weight.item())
