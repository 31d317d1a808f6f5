"""Per-dimension affine normalisation of observations and actions, saved with the policy.

``LinearNormalizer`` holds one ``SingleFieldLinearNormalizer`` per field ('obs', 'action',
'image', ...). Each stores ``scale`` and ``offset`` (``y = x * scale + offset``) and the data's
input statistics as buffers, so they live in the policy's state dict. The state-dict names
(``params_dict.<field>.scale``, ``params_dict.<field>.input_stats.min``, ...) are the same as
Diffusion Policy's, and a fresh normalizer loads any such state dict: the buffers take the
shapes they are loaded with.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

STAT_NAMES = ("min", "max", "mean", "std")
DEFAULT_FIELD = "_default"  # the field used when normalising a bare array instead of a dict


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _check_finite(data: torch.Tensor) -> None:
    """Fitting to NaN gives NaN statistics (every normalised value NaN); to inf, a scale of 0 (the dimension
    ignored). Only fitting checks: normalize/unnormalize stay free of data-dependent branches (they are traced)."""
    bad = int((~torch.isfinite(data)).sum()) if data.is_floating_point() else 0
    if bad:
        raise ValueError(f"cannot fit a normalizer to data holding {bad} NaN or inf value(s) of {data.numel()}; "
                         "find them in the data first")


class _ShapeFromStateDict(nn.Module):
    """Buffers that take the shape and dtype of the state dict they are loaded from."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in list(self._buffers):
            if prefix + name in state_dict:
                incoming = state_dict[prefix + name]
                self._buffers[name] = torch.empty_like(incoming, device=self._buffers[name].device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class InputStats(_ShapeFromStateDict):
    """min / max / mean / std of a field's data, one value per dimension."""

    def __init__(self, stats: dict | None = None):
        super().__init__()
        for name in STAT_NAMES:
            value = torch.zeros(0) if stats is None else _as_tensor(stats[name]).flatten().float()
            self.register_buffer(name, value.clone())

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in STAT_NAMES}


class SingleFieldLinearNormalizer(_ShapeFromStateDict):
    """``normalize(x) = x * scale + offset`` over the last dimension(s) of ``x``."""

    def __init__(self, scale=None, offset=None, input_stats: dict | None = None):
        super().__init__()
        scale = torch.zeros(0) if scale is None else _as_tensor(scale).flatten().float()
        offset = torch.zeros(0) if offset is None else _as_tensor(offset).flatten().float()
        if scale.shape != offset.shape:
            raise ValueError(f"scale {tuple(scale.shape)} and offset {tuple(offset.shape)} differ in shape")
        self.register_buffer("scale", scale.clone())
        self.register_buffer("offset", offset.clone())
        self.input_stats = InputStats(input_stats)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def create_fit(cls, data, last_n_dims: int = 1, mode: str = "limits", output_max: float = 1.0,
                   output_min: float = -1.0, range_eps: float = 1e-4, fit_offset: bool = True):
        """Fit to ``data`` (..., *feature_dims); ``last_n_dims`` trailing dims are features.

        mode 'limits' maps [min, max] of each dimension onto [output_min, output_max]; a
        dimension whose range is below ``range_eps`` is not scaled, only shifted so that its
        value lands at the middle of the output range. With ``fit_offset=False`` data is
        assumed zero-centred and only scaled by its largest absolute value. mode 'gaussian'
        maps to zero mean and unit std (constant dimensions are only centred).
        """
        if mode not in ("limits", "gaussian"):
            raise ValueError(f"unknown normalizer mode {mode!r}; expected 'limits' or 'gaussian'")
        if output_max <= output_min:
            raise ValueError(f"output_max ({output_max}) must exceed output_min ({output_min})")
        x = _as_tensor(data).double()
        if x.numel() == 0:
            raise ValueError(f"cannot fit a normalizer to empty data of shape {tuple(x.shape)}")
        _check_finite(x)
        n_features = int(np.prod(x.shape[x.ndim - last_n_dims:])) if last_n_dims > 0 else 1
        x = x.reshape(-1, n_features)
        stats = {"min": x.min(0).values, "max": x.max(0).values, "mean": x.mean(0),
                 "std": x.std(0) if len(x) > 1 else torch.zeros(n_features, dtype=x.dtype)}

        if mode == "limits" and fit_offset:
            span = stats["max"] - stats["min"]
            constant = span < range_eps
            scale = (output_max - output_min) / torch.where(constant, output_max - output_min, span)
            offset = output_min - scale * stats["min"]
            offset[constant] = (output_max + output_min) / 2 - stats["min"][constant]
        elif mode == "limits":
            if not output_min < 0 < output_max:
                raise ValueError("fit_offset=False needs output_min < 0 < output_max")
            output_abs = min(abs(output_min), abs(output_max))
            input_abs = torch.maximum(stats["min"].abs(), stats["max"].abs())
            scale = output_abs / torch.where(input_abs < range_eps, output_abs, input_abs)
            offset = torch.zeros_like(scale)
        else:
            scale = 1 / torch.where(stats["std"] < range_eps, 1.0, stats["std"])
            offset = -stats["mean"] * scale if fit_offset else torch.zeros_like(scale)
        return cls(scale, offset, stats)

    @classmethod
    def create_identity(cls, dim: int = 1):
        ones, zeros = torch.ones(dim), torch.zeros(dim)
        return cls(ones, zeros, {"min": -ones, "max": ones, "mean": zeros, "std": ones})

    # ------------------------------------------------------------------ use
    def normalize(self, x) -> torch.Tensor:
        return self._affine(x, forward=True)

    def unnormalize(self, x) -> torch.Tensor:
        return self._affine(x, forward=False)

    def forward(self, x) -> torch.Tensor:
        return self.normalize(x)

    def _affine(self, x, forward: bool) -> torch.Tensor:
        if self.scale.numel() == 0:
            raise RuntimeError("normalizer is not fitted (no scale); fit it or load a state dict")
        x = _as_tensor(x).to(device=self.scale.device, dtype=self.scale.dtype)
        n = self.scale.numel()
        # The normalised dimensions are the trailing ones whose sizes multiply to n. Searched from the last axis
        # so that the (possibly symbolic, when exporting) batch axis is never read.
        if n > 1 and not any(int(np.prod(x.shape[k:])) == n for k in reversed(range(x.ndim))):
            raise ValueError(f"cannot normalize shape {tuple(x.shape)}: no trailing dims hold {n} values")
        flat = x.reshape(-1, n)
        out = flat * self.scale + self.offset if forward else (flat - self.offset) / self.scale
        return out.reshape(x.shape)

    def get_input_stats(self) -> dict[str, torch.Tensor]:
        return self.input_stats.as_dict()

    def get_output_stats(self) -> dict[str, torch.Tensor]:
        return {name: self.normalize(value) for name, value in self.get_input_stats().items()}


class LinearNormalizer(nn.Module):
    """A ``SingleFieldLinearNormalizer`` per field; normalises dicts field by field."""

    def __init__(self):
        super().__init__()
        self.params_dict = nn.ModuleDict()

    def fit(self, data, last_n_dims: int = 1, mode: str = "limits", output_max: float = 1.0,
            output_min: float = -1.0, range_eps: float = 1e-4, fit_offset: bool = True) -> None:
        """Fit every field of ``data`` (a dict; a bare array is fitted as the default field)."""
        fields = data if isinstance(data, dict) else {DEFAULT_FIELD: data}
        for key, value in fields.items():
            self.params_dict[key] = SingleFieldLinearNormalizer.create_fit(
                value, last_n_dims=last_n_dims, mode=mode, output_max=output_max,
                output_min=output_min, range_eps=range_eps, fit_offset=fit_offset)

    def keys(self) -> list[str]:
        return list(self.params_dict.keys())

    def __contains__(self, key: str) -> bool:
        return key in self.params_dict

    def __getitem__(self, key: str) -> SingleFieldLinearNormalizer:
        if key not in self.params_dict:
            raise KeyError(f"normalizer has no field {key!r}; fields: {self.keys()}")
        return self.params_dict[key]

    def __setitem__(self, key: str, value: SingleFieldLinearNormalizer) -> None:
        self.params_dict[key] = value

    def normalize(self, x):
        return self._map(x, lambda field, value: field.normalize(value))

    def unnormalize(self, x):
        return self._map(x, lambda field, value: field.unnormalize(value))

    def forward(self, x):
        return self.normalize(x)

    def _map(self, x, fn):
        if isinstance(x, dict):
            return {key: fn(self[key], value) for key, value in x.items()}
        return fn(self[DEFAULT_FIELD], x)

    def get_input_stats(self) -> dict:
        """Per-field stats dict; just the stats when the normalizer has only the default field."""
        if self.keys() == [DEFAULT_FIELD]:
            return self[DEFAULT_FIELD].get_input_stats()
        return {key: field.get_input_stats() for key, field in self.params_dict.items()}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Create one (empty) field per field named in the state dict; the fields then load
        # their own buffers, taking the stored shapes.
        head = prefix + "params_dict."
        fields = dict.fromkeys(key[len(head):].split(".", 1)[0] for key in state_dict if key.startswith(head))
        self.params_dict = nn.ModuleDict({field: SingleFieldLinearNormalizer() for field in fields})
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# ---------------------------------------------------------------------- DP's fixed normalizers
def array_to_stats(array: np.ndarray) -> dict[str, np.ndarray]:
    """Per-dimension stats over the first axis."""
    _check_finite(_as_tensor(array))
    return {"min": array.min(0), "max": array.max(0), "mean": array.mean(0), "std": array.std(0)}


def get_range_normalizer_from_stat(stat: dict, output_max: float = 1.0, output_min: float = -1.0,
                                   range_eps: float = 1e-7) -> SingleFieldLinearNormalizer:
    """Map [stat['min'], stat['max']] onto [output_min, output_max] (constant dims centred)."""
    low, high = np.asarray(stat["min"], np.float64), np.asarray(stat["max"], np.float64)
    constant = high - low < range_eps
    scale = (output_max - output_min) / np.where(constant, output_max - output_min, high - low)
    offset = np.where(constant, (output_max + output_min) / 2 - low, output_min - scale * low)
    return SingleFieldLinearNormalizer(scale, offset, stat)


def get_identity_normalizer_from_stat(stat: dict) -> SingleFieldLinearNormalizer:
    ones = np.ones_like(np.asarray(stat["min"], np.float32))
    return SingleFieldLinearNormalizer(ones, np.zeros_like(ones), stat)


def get_image_range_normalizer() -> SingleFieldLinearNormalizer:
    """Images as float in [0, 1] -> [-1, 1], the same for every pixel (DP's convention)."""
    stats = {"min": [0.0], "max": [1.0], "mean": [0.5], "std": [np.sqrt(1 / 12)]}
    return SingleFieldLinearNormalizer([2.0], [-1.0], stats)


def get_abs_action_normalizer_from_stat(stat: dict) -> SingleFieldLinearNormalizer:
    """DP's normalizer for 10-D absolute robomimic actions (pos 3, rotation 6, gripper 1) per arm.

    Positions are range-normalised; the 6-D rotation and the gripper command are already in
    [-1, 1] and pass through unchanged. Dual-arm actions (20-D) are handled per arm.
    """
    dim = np.asarray(stat["min"]).shape[-1]
    if dim % 10 != 0:
        raise ValueError(f"absolute actions are 10-D per arm (pos 3 + rot6d 6 + gripper 1), got {dim}-D")
    position = get_range_normalizer_from_stat(stat)
    scale, offset = position.scale.numpy().copy(), position.offset.numpy().copy()
    stats = {name: np.asarray(value, np.float32).copy() for name, value in stat.items()}
    for arm_start in range(0, dim, 10):
        passthrough = slice(arm_start + 3, arm_start + 10)
        scale[passthrough], offset[passthrough] = 1.0, 0.0
        for name, value in (("min", -1.0), ("max", 1.0), ("mean", 0.0), ("std", 1.0)):
            stats[name][passthrough] = value
    return SingleFieldLinearNormalizer(scale, offset, stats)
