"""Invariants of the drifting field and its loss (drifting/field.py)."""

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from drifting import drift_field, drift_loss, feature_drift_loss

GOLDEN = Path(__file__).parent / "data" / "official_drift_loss.npz"
RAW = dict(normalize_features=False, normalize_drift=False, affinity_floor=0.0)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def relative_error(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)


def test_matches_official_release():
    """Value, info and gradient agree with the authors' released drift_loss.py (see make_official_golden.py)."""
    ref = np.load(GOLDEN)
    n_cases = len({k.split("/")[0] for k in ref.files})
    assert n_cases >= 5
    for i in range(n_cases):
        gen = torch.tensor(ref[f"{i}/gen"], requires_grad=True)
        neg = torch.tensor(ref[f"{i}/neg"])
        weights = {k: torch.tensor(ref[f"{i}/{k}"]) for k in ("weight_gen", "weight_pos", "weight_neg")
                   if f"{i}/{k}" in ref}
        loss, info = drift_loss(gen, torch.tensor(ref[f"{i}/pos"]), neg if neg.shape[1] else None, **weights)
        loss.sum().backward()
        assert relative_error(loss.detach(), ref[f"{i}/loss"]) < 1e-4, i
        assert relative_error(gen.grad, ref[f"{i}/grad"]) < 1e-4, i
        assert relative_error(info["scale"], ref[f"{i}/scale"]) < 1e-4, i
        for tau in (0.02, 0.05, 0.2):
            assert relative_error(info[f"drift_sq_norm_{tau:g}"], ref[f"{i}/drift_sq_norm_{tau:g}"]) < 1e-4, (i, tau)


def test_zero_drift_when_positives_equal_generated():
    gen = randn(4, 16, 3)
    # Without the self-mask, a target set holding each sample once as a negative and once as a positive cancels.
    v = drift_field(gen, gen.clone(), self_mask=0.0, normalize_drift=False)
    assert v.abs().max() < 1e-5
    # The same with the positives given as extra negatives and the generated samples weighted out.
    pos = randn(4, 12, 3, seed=1)
    v = drift_field(gen, pos, pos.clone(), weight_gen=torch.zeros(4, 16), normalize_drift=False)
    assert v.abs().max() < 1e-5


def test_drift_vanishes_statistically_as_samples_grow():
    """With p = q sampled independently, V relative to a mismatched field shrinks as the sample count grows."""
    ratios = []
    for n in (64, 256, 1024):
        gen, same, shifted = randn(4, n, 2, seed=0), randn(4, n, 2, seed=1), randn(4, n, 2, seed=2) + 2.0
        matched = drift_field(gen, same, normalize_drift=False).norm(dim=-1).mean()
        mismatched = drift_field(gen, shifted, normalize_drift=False).norm(dim=-1).mean()
        ratios.append((matched / mismatched).item())
    assert ratios[0] > ratios[1] > ratios[2]
    assert ratios[2] < 0.1


@pytest.mark.parametrize("kernel_norm", ["both", "row", "none"])
def test_swapping_positives_and_negatives_flips_the_sign(kernel_norm):
    gen, a, b = randn(3, 10, 4, seed=0), randn(3, 7, 4, seed=1) + 1.0, randn(3, 5, 4, seed=2) - 1.0
    no_gen = dict(weight_gen=torch.zeros(3, 10), kernel_norm=kernel_norm, affinity_floor=0.0)
    v = drift_field(gen, a, b, **no_gen)
    v_swapped = drift_field(gen, b, a, **no_gen)
    torch.testing.assert_close(v_swapped, -v, atol=1e-5, rtol=1e-4)
    assert v.abs().max() > 1e-2


@pytest.mark.parametrize("factor", [1e-2, 3.0, 1e3])
def test_invariant_to_feature_scale_and_translation(factor):
    gen, pos, neg = randn(2, 12, 5, seed=0), randn(2, 9, 5, seed=1) + 0.5, randn(2, 4, 5, seed=2)
    shift = randn(5, seed=3) * 10
    loss, _ = drift_loss(gen, pos, neg)
    loss_t, _ = drift_loss(gen * factor + shift * factor, pos * factor + shift * factor, neg * factor + shift * factor)
    torch.testing.assert_close(loss_t, loss, rtol=2e-3, atol=1e-5)
    # The field itself is equivariant: it scales with the features and ignores the translation.
    v = drift_field(gen, pos, neg)
    v_t = drift_field(gen * factor + shift * factor, pos * factor + shift * factor, neg * factor + shift * factor)
    torch.testing.assert_close(v_t / factor, v, rtol=2e-3, atol=1e-4)


def test_larger_temperature_gives_smoother_assignment():
    """Attraction alone: at small tau each sample is pulled to its nearest positive, at large tau to their centroid."""
    # An even count keeps every sample off x = 0, where both positives are equally near and the sign of the
    # drift is rounding noise (linspace's middle point is not exactly 0 on every CPU).
    gen = torch.linspace(-2.0, 2.0, 40).view(1, 40, 1)
    pos = torch.tensor([-1.0, 1.0]).view(1, 2, 1)
    nearest = torch.where(gen < 0, -1.0, 1.0)
    toward_nearest = []
    for tau in (0.05, 0.2, 1.0, 5.0):
        v = drift_field(gen, pos, temperatures=(tau,), repulsion=0.0, kernel_norm="row", self_mask=1e6, **RAW)
        toward_nearest.append((torch.sign(v) == torch.sign(nearest - gen)).float().mean().item())
    assert toward_nearest[0] == 1.0
    assert all(a >= b for a, b in pairwise(toward_nearest))
    assert toward_nearest[-1] < 0.75


def test_self_mask_removes_self_interaction():
    """With the mask, sample i drifts exactly as if the other generated samples were plain negatives."""
    gen, pos = randn(1, 6, 2, seed=0), randn(1, 5, 2, seed=1)
    opts = dict(kernel_norm="row", temperatures=(0.5,), **RAW)
    v = drift_field(gen, pos, self_mask=1e6, **opts)
    for i in range(6):
        others = torch.cat([gen[:, :i], gen[:, i + 1 :]], dim=1)
        v_i = drift_field(gen[:, i : i + 1], pos, others, self_mask=1e6, **opts)
        torch.testing.assert_close(v[:, i], v_i[:, 0], atol=1e-6, rtol=1e-5)
    unmasked = drift_field(gen, pos, self_mask=0.0, **opts)
    assert (unmasked - v).abs().max() > 1e-3


@pytest.mark.parametrize("tau", [0.02, 0.05, 0.2])
def test_a_collapsed_cluster_is_still_pulled_to_its_only_far_positive(tau):
    """Eight generated samples collapsed together, one positive far away (a policy's chunks for one
    observation, the demonstration elsewhere): its affinity is ~exp(-9 / tau), far below float32's range,
    yet the normalized drift must point at the positive with full strength, or training stalls for good."""
    gen = randn(1, 8, 6, seed=0) * 1e-3
    pos = torch.full((1, 1, 6), 10.0)
    v = drift_field(gen, pos, temperatures=(tau,), affinity_floor=0.0)
    toward = torch.nn.functional.cosine_similarity(v[0], pos[0] - gen[0], dim=-1)
    assert toward.min() > 0.99
    loss, _ = drift_loss(gen, pos, temperatures=(tau,), affinity_floor=0.0)
    assert loss.item() > 0.5  # the normalized drift's mean square over the feature dims is 1


def test_unit_weights_equal_no_weights():
    gen, pos, neg = randn(3, 8, 4, seed=0), randn(3, 6, 4, seed=1), randn(3, 2, 4, seed=2)
    loss, _ = drift_loss(gen, pos, neg)
    ones = lambda t: torch.ones(t.shape[:2])  # noqa: E731
    loss_w, _ = drift_loss(gen, pos, neg, weight_gen=ones(gen), weight_pos=ones(pos), weight_neg=ones(neg))
    torch.testing.assert_close(loss_w, loss)


def algorithm_2(x, y_pos, y_neg, T):
    """A direct transcription of the paper's Algorithm 2 (compute_V)."""
    N, N_pos = x.shape[0], y_pos.shape[0]
    dist_pos = torch.cdist(x, y_pos)
    dist_neg = torch.cdist(x, y_neg) + torch.eye(N) * 1e6
    logit = torch.cat([-dist_pos / T, -dist_neg / T], dim=1)
    A = torch.sqrt(logit.softmax(dim=-1) * logit.softmax(dim=-2))
    A_pos, A_neg = A[:, :N_pos], A[:, N_pos:]
    W_pos = A_pos * A_neg.sum(dim=1, keepdim=True)
    W_neg = A_neg * A_pos.sum(dim=1, keepdim=True)
    return W_pos @ y_pos - W_neg @ y_neg


@pytest.mark.parametrize("T", [0.05, 0.5, 2.0])
def test_paper_variant_matches_algorithm_2(T):
    x, y_pos = randn(24, 2, seed=0), randn(16, 2, seed=1) * 1.5 + 0.3
    expected = algorithm_2(x.double(), y_pos.double(), x.double(), T).float()
    v = drift_field(x[None], y_pos[None], temperatures=(T,), self_mask=1e6, **RAW)[0]
    torch.testing.assert_close(v, expected, atol=1e-5, rtol=1e-4)


def test_loss_gradient_points_along_the_drift():
    gen = randn(2, 10, 3, seed=0).requires_grad_(True)
    pos = randn(2, 10, 3, seed=1) + 1.0
    loss, _ = drift_loss(gen, pos)
    loss.sum().backward()
    v = drift_field(gen.detach(), pos)
    cosine = torch.nn.functional.cosine_similarity(-gen.grad.flatten(), v.flatten(), dim=0)
    assert cosine > 0.9999


def test_loss_equals_mean_squared_normalized_drift():
    gen, pos = randn(2, 10, 3, seed=0), randn(2, 10, 3, seed=1) + 1.0
    loss, info = drift_loss(gen, pos)
    coord_scale = (info["scale"] / 3**0.5).clamp_min(1e-3)
    v = drift_field(gen, pos) / coord_scale
    torch.testing.assert_close(loss, v.square().mean(dim=(1, 2)))


def test_broken_fields_do_not_vanish_at_equilibrium():
    """Table 1: only attraction == repulsion keeps V = 0 when p = q."""
    gen = randn(4, 32, 2)
    for attraction, repulsion in ((1.0, 1.0), (1.5, 1.0), (1.0, 2.0), (1.0, 0.0)):
        v = drift_field(gen, gen.clone(), self_mask=0.0, normalize_drift=False, attraction=attraction,
                        repulsion=repulsion)
        assert (v.abs().max() < 1e-5) == (attraction == repulsion)


@settings(max_examples=40, deadline=None)
@given(
    log_scale=st.floats(min_value=-6.0, max_value=6.0),
    shift=st.floats(min_value=-1e3, max_value=1e3),
    seed=st.integers(0, 2**16),
    kernel_norm=st.sampled_from(["both", "row", "none"]),
    floor=st.sampled_from([0.0, 1e-6]),
)
def test_finite_for_any_feature_scale(log_scale, shift, seed, kernel_norm, floor):
    scale = 10.0**log_scale
    gen = (randn(2, 8, 6, seed=seed) * scale + shift * scale).requires_grad_(True)
    pos = randn(2, 5, 6, seed=seed + 1) * scale + shift * scale
    neg = randn(2, 3, 6, seed=seed + 2) * scale
    loss, info = drift_loss(gen, pos, neg, kernel_norm=kernel_norm, affinity_floor=floor)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(gen.grad).all()
    assert all(torch.isfinite(v).all() for v in info.values())


def test_works_in_float32_for_low_precision_inputs():
    gen = randn(2, 8, 4).bfloat16().requires_grad_(True)
    loss, _ = drift_loss(gen, randn(2, 8, 4, seed=1).bfloat16())
    assert loss.dtype == torch.float32
    loss.sum().backward()
    assert gen.grad.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "shapes, weights, message",
    [
        (((2, 8, 4), (2, 8, 3), None), {}, "pos must be"),
        (((2, 8, 4), (3, 8, 4), None), {}, "pos must be"),
        (((8, 4), (8, 4), None), {}, "gen must be"),
        (((2, 8, 4), (2, 8, 4), (2, 3, 5)), {}, "neg must be"),
        (((2, 8, 4), (2, 8, 4), None), {"weight_pos": (2, 7)}, "weight_pos must be"),
        (((2, 8, 4), (2, 8, 4), None), {"weight_neg": (2, 3)}, "samples are None"),
        (((2, 8, 4), (2, 0, 4), None), {}, "at least one positive"),
    ],
)
def test_clear_errors_for_mismatched_shapes(shapes, weights, message):
    gen, pos, neg = (None if s is None else torch.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=message):
        drift_loss(gen, pos, neg, **{k: torch.ones(v) for k, v in weights.items()})


def test_clear_errors_for_bad_options():
    gen = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match="kernel_norm"):
        drift_loss(gen, gen, kernel_norm="column")
    with pytest.raises(ValueError, match="temperatures"):
        drift_loss(gen, gen, temperatures=())


def test_feature_loss_sums_keys_and_shares_scale_across_locations():
    B, G, P, L = 3, 6, 5, 4
    gen = {"global": randn(B, G, 8, seed=0), "map": randn(B, G, L, 3, seed=1)}
    pos = {"global": randn(B, P, 8, seed=2), "map": randn(B, P, L, 3, seed=3) * 5}
    loss, info = feature_drift_loss(gen, pos)
    global_loss, _ = drift_loss(gen["global"], pos["global"])
    # Locations become extra groups of one call, so they share the key's scale; then they are averaged.
    as_groups = lambda x: x.permute(0, 2, 1, 3).reshape(B * L, x.shape[1], 3)  # noqa: E731
    map_loss, map_info = drift_loss(as_groups(gen["map"]), as_groups(pos["map"]))
    torch.testing.assert_close(loss, global_loss + map_loss.view(B, L).mean(1))
    torch.testing.assert_close(info["map/scale"], map_info["scale"])
    with pytest.raises(ValueError, match="feature keys differ"):
        feature_drift_loss(gen, {"global": pos["global"]})
