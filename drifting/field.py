"""The drifting field and its loss: the one implementation both branches call.

Shapes are batched over *groups*. A group is one set of samples that interact with each other, e.g. one
(class label, feature) pair in the image branch, or one observation in the policy branch:

    gen  [B, G, S]   generated samples (carry the gradient)
    pos  [B, P, S]   positives (data)
    neg  [B, U, S]   extra negatives (e.g. unconditional real samples for CFG); optional

The targets of every generated sample are ``[generated (stop-gradient), extra negatives, positives]``.
With the default options the numerics are those of the authors' released ``drift_loss.py`` (lambertae/drifting;
``tests/test_drift_field.py`` compares against golden files of it, ``docs/core.md`` lists the details); the
keyword options reach the paper's variants.
One deliberate difference: the kernel is computed in the log domain and the force is rescaled by the call's
largest coefficient before the drift normalization, which leaves the normalized drift unchanged but keeps it
from underflowing to zero when every positive is far away relative to the temperature (the released code's
drift then falls under its 1e-8 normalization floor and training stalls; measured on a robot policy).
The 1e-8 floor therefore applies to the rescaled drift: it only decides how a drift that cancels is handled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

KERNEL_NORMS = ("both", "row", "none")
TEMPERATURES = (0.02, 0.05, 0.2)


def pairwise_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[B, N, S] x [B, M, S] -> [B, N, M] L2 distances, in the dot-product form the released code uses."""
    sq = (x * x).sum(-1)[:, :, None] + (y * y).sum(-1)[:, None, :] - 2.0 * torch.bmm(x, y.transpose(1, 2))
    return sq.clamp_min(1e-8).sqrt()


@dataclass(frozen=True)
class DriftOptions:
    """The options of one :func:`drift_loss` or :func:`drift_field` call (meanings: :func:`drift_loss`), checked
    when built. The public functions take them as keywords (defaults = the released code) and hand them to
    ``_drift`` as this one value."""

    temperatures: Sequence[float]
    kernel_norm: str
    attraction: float
    repulsion: float
    normalize_features: bool
    normalize_drift: bool
    affinity_floor: float
    self_mask: float

    def __post_init__(self):
        if self.kernel_norm not in KERNEL_NORMS:
            raise ValueError(f"kernel_norm must be one of {KERNEL_NORMS}; got {self.kernel_norm!r}")
        if len(self.temperatures) == 0 or any(float(t) <= 0 for t in self.temperatures):
            raise ValueError(f"temperatures must be a non-empty sequence of positive numbers; "
                             f"got {self.temperatures!r}")


def _check_inputs(gen, pos, neg, weight_gen, weight_pos, weight_neg):
    if gen.dim() != 3:
        raise ValueError(f"gen must be [B, G, S]; got shape {tuple(gen.shape)}")
    B, G, S = gen.shape
    if G < 1 or S < 1:
        raise ValueError(f"gen needs at least one sample and one feature dim; got shape {tuple(gen.shape)}")
    for name, t in (("pos", pos), ("neg", neg)):
        if t is None:
            continue
        if t.dim() != 3 or t.shape[0] != B or t.shape[2] != S:
            raise ValueError(f"{name} must be [B={B}, n, S={S}] like gen [B, G, S]; got shape {tuple(t.shape)}")
    if pos.shape[1] < 1:
        raise ValueError("pos must hold at least one positive per group")
    weighted = (("weight_gen", weight_gen, gen), ("weight_pos", weight_pos, pos), ("weight_neg", weight_neg, neg))
    for name, w, t in weighted:
        if w is None:
            continue
        if t is None:
            raise ValueError(f"{name} was given but its samples are None")
        if tuple(w.shape) != tuple(t.shape[:2]):
            raise ValueError(f"{name} must be [B, n] = {tuple(t.shape[:2])}; got shape {tuple(w.shape)}")


def _inside_functorch_transform() -> bool:
    """Under vmap (the policy's per-observation calls) a Python branch on a value is not allowed."""
    return torch._C._functorch.peek_interpreter_stack() is not None


def _refuse_non_finite(scale: torch.Tensor, inputs: Mapping[str, torch.Tensor | None]) -> None:
    """Raise FloatingPointError naming the inputs that hold NaN or inf, when the call's feature scale is not finite.

    The scale is a reduction over every distance and weight of the call, so it is finite exactly when they are:
    reading it is the only check on the common path (no extra reduction; one host sync on a GPU). The inputs are
    searched only once it fails."""
    if _inside_functorch_transform() or bool(torch.isfinite(scale)):
        return
    culprits = []
    for name, value in inputs.items():
        if value is None:
            continue
        bad = ~torch.isfinite(value.detach())
        if bool(bad.any()):
            groups = bad.reshape(bad.shape[0], -1).any(dim=1).nonzero().flatten().tolist()
            culprits.append(f"{name} ({int(bad.sum())} of {value.numel()} values, in group(s) {groups[:5]}"
                            f"{'...' if len(groups) > 5 else ''})")
    if culprits:
        raise FloatingPointError(f"drift_loss: non-finite values in {'; '.join(culprits)}; every group's loss would "
                                 "be NaN, since one feature scale is shared by the whole call")
    raise FloatingPointError(f"drift_loss: the feature scale is {float(scale)} although every input is finite "
                             "(distances beyond float32's range, or all weights 0)")


def _log_affinity(logits: torch.Tensor, kernel_norm: str, affinity_floor: float) -> torch.Tensor:
    """Log kernel weights from logits [B, G, T]; ``affinity_floor`` bounds the *squared* affinity from below.

    Computed in the log domain: a generated cluster far from its only positive has affinities far below
    float32's range at small temperatures, and they must still be compared with each other (see ``_drift``).
    """
    if kernel_norm == "both":  # softmax over targets and over generated samples, geometric mean (paper Alg. 2)
        log_squared = logits.log_softmax(dim=-1) + logits.log_softmax(dim=-2)
    elif kernel_norm == "row":  # softmax over targets only
        log_squared = 2.0 * logits.log_softmax(dim=-1)
    else:  # unnormalized kernel exp(-d / tau)
        log_squared = 2.0 * logits
    if affinity_floor > 0:
        log_squared = log_squared.clamp_min(math.log(affinity_floor))
    return 0.5 * log_squared


@torch.no_grad()
def _drift(
    gen: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor | None,
    weight_gen: torch.Tensor | None,
    weight_pos: torch.Tensor | None,
    weight_neg: torch.Tensor | None,
    options: DriftOptions,
):
    """Returns (coordinate scale, summed force in scaled coordinates [B, G, S], info). No gradient flows."""
    gen = gen.detach().float()
    B, G, S = gen.shape
    if neg is None:
        neg = gen.new_zeros(B, 0, S)
    neg, pos = neg.float(), pos.float()
    U = neg.shape[1]
    ones = gen.new_ones
    weights = torch.cat(
        [
            ones(B, G) if weight_gen is None else weight_gen.float(),
            ones(B, U) if weight_neg is None else weight_neg.float(),
            ones(B, pos.shape[1]) if weight_pos is None else weight_pos.float(),
        ],
        dim=1,
    )
    targets = torch.cat([gen, neg, pos], dim=1)  # [B, T, S]

    dist = pairwise_distance(gen, targets)  # [B, G, T]
    # One scalar over the whole call (all groups): the target-weighted mean distance (paper A.6, S_j).
    scale = (dist * weights[:, None, :]).mean() / weights.mean()
    if options.normalize_features:
        coord_scale = (scale / S**0.5).clamp_min(1e-3)  # coordinates get mean distance ~ sqrt(S)
        dist_normed = dist / scale.clamp_min(1e-3)  # so tau acts like the paper's tau * sqrt(S)
    else:
        coord_scale = scale.new_ones(())
        dist_normed = dist
    if options.self_mask:  # a generated sample neither attracts nor repels itself
        dist_normed = dist_normed.clone()
        dist_normed[:, :, :G].diagonal(dim1=1, dim2=2).add_(options.self_mask)
    info = {"scale": scale}
    force_sum = torch.zeros_like(gen)
    log_weights = weights.log()[:, None, :]  # zero weights become -inf: no affinity
    for tau in options.temperatures:
        log_affinity = _log_affinity(dist_normed * (-1.0 / tau), options.kernel_norm, options.affinity_floor)
        log_affinity = log_affinity + log_weights
        # Cross-weighting (paper Alg. 2): each positive is weighted by the total negative affinity and vice versa,
        # so with attraction == repulsion the coefficients sum to zero and V vanishes when p == q.
        log_neg, log_pos = log_affinity[:, :, : G + U], log_affinity[:, :, G + U :]
        log_coeff = torch.cat([log_neg + log_pos.logsumexp(-1, keepdim=True),
                               log_pos + log_neg.logsumexp(-1, keepdim=True)], dim=2)
        # The force is a sum of coefficient x displacement, so it scales with exp(shift). Exponentiating
        # relative to the call's largest coefficient keeps a far-away positive's pull from underflowing to an
        # exact zero (then the loss and its gradient vanish for good); the drift normalization is unaffected.
        shift = log_coeff.amax()
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        sign = torch.cat([gen.new_full((G + U,), -options.repulsion),
                          gen.new_full((log_pos.shape[2],), options.attraction)])
        coeff = (log_coeff - shift).exp() * sign
        # The force in input units (targets are not rescaled: dividing the [B, G, S] result is cheaper).
        force = torch.baddbmm(coeff.sum(-1, keepdim=True) * -gen, coeff, targets)
        sq_norm = force.square().mean() / coord_scale**2  # in normalized coordinates, over the whole call
        info[f"drift_sq_norm_{tau:g}"] = sq_norm * (2.0 * shift).exp()  # without the shift
        if options.normalize_drift:  # the 1e-8 floor applies as if the call's largest coefficient were 1
            force_sum += force / (coord_scale * sq_norm.clamp_min(1e-8).sqrt())
        else:
            force_sum += force * shift.exp() / coord_scale
    return coord_scale, force_sum, info


def drift_field(
    gen: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor | None = None,
    *,
    weight_gen: torch.Tensor | None = None,
    weight_pos: torch.Tensor | None = None,
    weight_neg: torch.Tensor | None = None,
    temperatures: Sequence[float] = TEMPERATURES,
    kernel_norm: str = "both",
    attraction: float = 1.0,
    repulsion: float = 1.0,
    normalize_features: bool = True,
    normalize_drift: bool = True,
    affinity_floor: float = 1e-6,
    self_mask: float = 100.0,
) -> torch.Tensor:
    """The drift V(x) of every generated sample, [B, G, S], in the units of ``gen`` (for analysis and plots).

    ``gen + drift_field(...)`` is the frozen goal that :func:`drift_loss` regresses onto.
    """
    _check_inputs(gen, pos, neg, weight_gen, weight_pos, weight_neg)
    options = DriftOptions(temperatures, kernel_norm, attraction, repulsion, normalize_features, normalize_drift,
                           affinity_floor, self_mask)
    coord_scale, force, _ = _drift(gen, pos, neg, weight_gen, weight_pos, weight_neg, options)
    return force * coord_scale


def drift_loss(
    gen: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor | None = None,
    *,
    weight_gen: torch.Tensor | None = None,
    weight_pos: torch.Tensor | None = None,
    weight_neg: torch.Tensor | None = None,
    temperatures: Sequence[float] = TEMPERATURES,
    kernel_norm: str = "both",
    attraction: float = 1.0,
    repulsion: float = 1.0,
    normalize_features: bool = True,
    normalize_drift: bool = True,
    affinity_floor: float = 1e-6,
    self_mask: float = 100.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Drifting loss ||x - stopgrad(x + V(x))||^2 per group.

    Returns ``loss [B]`` (float32; mean over generated samples and feature dims of each group row) and an info
    dict with the call's feature ``scale`` and, per temperature, ``drift_sq_norm_<tau>``: the mean squared drift
    before drift normalization (it may underflow to 0 where the normalized drift does not).

    Options (defaults = the released code):
      kernel_norm         'both' (softmax over targets and generated samples), 'row' (targets only), 'none' (Table 11)
      attraction          factor on V+; repulsion factor on V- (Table 1's broken fields when they differ)
      normalize_features  divide by the shared feature scale S (paper A.6); False works on raw coordinates
      normalize_drift     divide each temperature's drift by its RMS before summing (paper A.6, lambda)
      affinity_floor      lower bound of the squared affinity (1e-6 released; 0 turns it off). It pulls samples
                          that are far from every positive toward the positives' centroid: turn it off when
                          generated samples can start far from the data, or with few positives per group.
      self_mask           added to the (normalized) self-distance of each generated sample

    Non-finite inputs: one NaN anywhere would make every group's loss NaN (the feature scale is shared), so a call
    whose scale is not finite raises FloatingPointError naming the inputs (gen, pos, neg, weights) and groups that
    hold NaN or inf. The check reads one scalar the loss computes anyway: no extra reduction, but on a GPU one host
    synchronization per call (the CPU waits for the scale before queuing more work). Inside torch.func transforms
    (vmap: the drifting policy's per-observation calls) it is skipped and the loss is NaN.
    """
    _check_inputs(gen, pos, neg, weight_gen, weight_pos, weight_neg)
    options = DriftOptions(temperatures, kernel_norm, attraction, repulsion, normalize_features, normalize_drift,
                           affinity_floor, self_mask)
    coord_scale, force, info = _drift(gen, pos, neg, weight_gen, weight_pos, weight_neg, options)
    _refuse_non_finite(info["scale"], {"gen": gen, "pos": pos, "neg": neg, "weight_gen": weight_gen,
                                       "weight_pos": weight_pos, "weight_neg": weight_neg})
    gen_scaled = gen.float() / coord_scale
    goal = gen_scaled.detach() + force
    loss = (gen_scaled - goal).square().mean(dim=(1, 2))
    return loss, info


def _groups(x: torch.Tensor, key: str, name: str) -> tuple[torch.Tensor, int]:
    """[B, N, S] or [B, N, L, S] (L locations sharing one scale) -> ([B * L, N, S], L)."""
    if x.dim() == 3:
        return x, 1
    if x.dim() == 4:
        B, N, L, S = x.shape
        return x.permute(0, 2, 1, 3).reshape(B * L, N, S), L
    raise ValueError(f"feature {key!r} of {name} must be [B, N, S] or [B, N, L, S]; got shape {tuple(x.shape)}")


def _per_location(weight: torch.Tensor | None, L: int) -> torch.Tensor | None:
    """Per-sample weights [B, N] -> [B * L, N], matching the group order of :func:`_groups`."""
    return None if weight is None else weight.repeat_interleave(L, dim=0)


def feature_drift_loss(
    gen: Mapping[str, torch.Tensor],
    pos: Mapping[str, torch.Tensor],
    neg: Mapping[str, torch.Tensor] | None = None,
    *,
    weight_gen: torch.Tensor | None = None,
    weight_pos: torch.Tensor | None = None,
    weight_neg: torch.Tensor | None = None,
    **options,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Drifting loss summed over named features (paper eq. 14), each key with its own scale.

    Each value is [B, N, S], or [B, N, L, S] for L locations of one feature map that share a scale (paper A.6).
    Per key the loss is averaged over its locations, then the keys are summed; returns ``loss [B]`` and an info
    dict with ``<key>/scale``, ``<key>/drift_sq_norm_<tau>`` and ``<key>/loss``.
    Weights are per sample, [B, N], and apply to every feature.
    """
    if set(gen) != set(pos) or (neg is not None and set(neg) != set(gen)):
        raise ValueError(
            f"feature keys differ: gen {sorted(gen)}, pos {sorted(pos)}"
            + ("" if neg is None else f", neg {sorted(neg)}")
        )
    if not gen:
        raise ValueError("feature_drift_loss needs at least one feature")
    total, info = None, {}
    for key in gen:
        g, L = _groups(gen[key], key, "gen")
        p, Lp = _groups(pos[key], key, "pos")
        n, Ln = _groups(neg[key], key, "neg") if neg is not None else (None, L)
        if Lp != L or Ln != L:
            raise ValueError(f"feature {key!r}: gen, pos and neg must have the same number of locations")
        try:
            loss, key_info = drift_loss(
                g, p, n,
                weight_gen=_per_location(weight_gen, L), weight_pos=_per_location(weight_pos, L),
                weight_neg=_per_location(weight_neg, L),
                **options,
            )
        except FloatingPointError as error:
            raise FloatingPointError(f"feature {key!r}: {error}") from None
        loss = loss.view(-1, L).mean(dim=1)
        total = loss if total is None else total + loss
        info.update({f"{key}/{name}": value for name, value in key_info.items()})
        info[f"{key}/loss"] = loss.detach().mean()
    return total, info
