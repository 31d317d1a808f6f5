"""Policy configs: plain dataclasses holding everything needed to rebuild a policy (LeRobot-style).

A config is saved as ``config.json`` next to the weights, with a ``type`` field naming the policy class,
so ``BasePolicy.from_pretrained(dir)`` rebuilds the right policy without hydra. Hydra (or any other
launcher) can pass a config as a mapping: lists and nested mappings (e.g. OmegaConf containers) are
turned into plain tuples and dicts here, so the saved JSON and a round trip are exact.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import ClassVar

from drifting_policy.models import BACKBONES

DRIFT_FEATURES = ("chunk", "step")
DDPM_SAMPLERS = ("ddpm", "ddim")


def _plain(value):
    """Mappings -> dict, sequences -> tuple, recursively (JSON lists come back as tuples)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(_plain(v) for v in value)
    return value


def _json_ready(value):
    """The inverse direction for json.dump: tuples -> lists."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_json_ready(v) for v in value]
    return value


@dataclass
class PolicyConfig:
    """Fields shared by every policy: task shapes, backbone and observation encoder.

    Observations are either low-dim, ``obs_dim`` (batches carry ``{'obs': (B, To, obs_dim)}``), or
    described by DP's ``shape_meta`` (batches carry ``{key: (B, To, *shape)}``; rgb keys go through a
    ResNet-18 encoder). ``action_dim`` may be left out when ``shape_meta`` has an 'action' entry.
    """

    type: ClassVar[str] = ""

    horizon: int = 16  # T: length of a predicted action chunk
    n_obs_steps: int = 2  # To
    n_action_steps: int = 8  # Ta: actions executed per chunk, starting at index To - 1
    obs_dim: int | None = None
    action_dim: int | None = None
    shape_meta: dict | None = None

    backbone: str = "unet"  # a key of drifting_policy.models.BACKBONES: 'unet' or 'transformer'
    # ConditionalUnet1D
    down_dims: tuple = (256, 512, 1024)
    kernel_size: int = 5
    n_groups: int = 8
    diffusion_step_embed_dim: int = 256
    cond_predict_scale: bool = True
    # ActionTransformer
    n_layer: int = 8
    n_head: int = 4
    n_emb: int = 256
    p_drop_emb: float = 0.0
    p_drop_attn: float = 0.3
    causal_attn: bool = True
    n_cond_layers: int = 0
    # MultiImageObsEncoder (image observations only)
    crop_shape: tuple | None = None
    image_feature_dim: int = 64
    num_kp: int = 32
    share_rgb_model: bool = False

    def __post_init__(self):
        for f in fields(self):
            setattr(self, f.name, _plain(getattr(self, f.name)))
        name = type(self).__name__
        if (self.obs_dim is None) == (self.shape_meta is None):
            raise ValueError(f"{name}: give exactly one of obs_dim (low-dim) or shape_meta (dict observations)")
        if self.shape_meta is not None:
            if not self.shape_meta.get("obs"):
                raise ValueError(f"{name}: shape_meta needs a non-empty 'obs' entry; got {self.shape_meta}")
            meta_action = self.shape_meta.get("action", {}).get("shape")
            if self.action_dim is None and meta_action is not None:
                if len(meta_action) != 1:
                    raise ValueError(f"{name}: shape_meta['action']['shape'] must be (Da,); got {meta_action}")
                self.action_dim = int(meta_action[0])
        if self.action_dim is None or self.action_dim < 1:
            raise ValueError(f"{name}: action_dim must be a positive int (or given by shape_meta); "
                             f"got {self.action_dim}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"{name}: backbone must be one of {tuple(BACKBONES)}; got {self.backbone!r}")
        if not 1 <= self.n_obs_steps <= self.horizon:
            raise ValueError(f"{name}: need 1 <= n_obs_steps ({self.n_obs_steps}) <= horizon ({self.horizon})")
        if not 1 <= self.n_action_steps <= self.horizon - self.n_obs_steps + 1:
            raise ValueError(
                f"{name}: n_action_steps ({self.n_action_steps}) must be in [1, horizon - n_obs_steps + 1 = "
                f"{self.horizon - self.n_obs_steps + 1}] (executed actions start at index n_obs_steps - 1)"
            )
        if self.backbone == "unet" and self.horizon % 2 ** (len(self.down_dims) - 1):
            raise ValueError(
                f"{name}: horizon {self.horizon} must be divisible by 2 ** (len(down_dims) - 1) = "
                f"{2 ** (len(self.down_dims) - 1)} for the U-Net"
            )

    def to_dict(self) -> dict:
        """JSON-ready dict with the registry key under 'type'."""
        return {"type": self.type, **{f.name: _json_ready(getattr(self, f.name)) for f in fields(self)}}


@dataclass
class DriftingPolicyConfig(PolicyConfig):
    """One-step policy trained with the drifting loss (``drifting.feature_drift_loss``).

    For every observation ``n_generated`` chunks are drawn from Gaussian noise; the demonstrated chunk is
    the positive, the other generated chunks of the same observation are the negatives. ``features``:
    'chunk' (the flattened chunk, one vector) and/or 'step' (each horizon step a location sharing one
    scale). ``extra_noise_dim`` > 0 appends that many Gaussian values to the network's condition.
    ``temperatures`` .. ``kernel_norm`` are the core's options (see ``drifting.drift_loss``). The core computes
    the feature scale and the drift normalisation over everything in one call; ``drift_per_observation``
    (default) makes each observation its own call, so observations whose demonstration is far from their
    generated chunks are not drowned by the others. The defaults (G = 8, per observation, ``affinity_floor=0``)
    are measured on the bimodal task (``python benchmarks/bimodal_modes.py --floor-sweep``): over the batch,
    the floor pulls every chunk to the modes' mean and no floor collapses onto one mode; per observation
    with no floor both modes are kept at G = 8; at G = 16 the far demonstration's affinity underflowed to exactly
    0 in float32 and training stalled, which the core's log-domain kernel has fixed since (G = 16 and 32 are not
    re-measured yet).

    ``max_prefix_delay`` = D > 0 makes the policy continue a committed action prefix (training-time real-time
    chunking): the network also gets the first d <= D actions of the chunk from the current step on (index
    ``n_obs_steps - 1``), padded to D, and a mask; training draws d per observation (d = 0 with probability
    ``prefix_free_prob``, else uniformly from {1, ..., D}; 1 / (D + 1) makes d uniform on {0, ..., D}) and puts
    the demonstrated actions at those positions of every generated chunk, so they get no drift; at inference
    ``predict_action(obs, prefix=...)`` takes the d actions the robot executes while the chunk is computed and
    the returned chunk continues them. D = 0 is the plain policy (no extra inputs, same numbers).
    """

    type: ClassVar[str] = "drifting"

    n_generated: int = 8
    extra_noise_dim: int = 0
    features: tuple = ("chunk",)
    temperatures: tuple = (0.02, 0.05, 0.2)
    affinity_floor: float = 0.0
    normalize_features: bool = True
    normalize_drift: bool = True
    kernel_norm: str = "both"
    drift_per_observation: bool = True
    max_prefix_delay: int = 0
    prefix_free_prob: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.max_prefix_delay <= self.horizon - self.n_obs_steps:
            raise ValueError(f"DriftingPolicyConfig: max_prefix_delay must be in [0, horizon - n_obs_steps = "
                             f"{self.horizon - self.n_obs_steps}] (the prefix starts at index n_obs_steps - 1 and "
                             f"leaves at least one action to generate); got {self.max_prefix_delay}")
        if not 0.0 <= self.prefix_free_prob <= 1.0:
            raise ValueError(f"DriftingPolicyConfig: prefix_free_prob must be in [0, 1]; got {self.prefix_free_prob}")
        if self.n_generated < 1:
            raise ValueError(f"DriftingPolicyConfig: n_generated must be >= 1; got {self.n_generated}")
        if self.extra_noise_dim < 0:
            raise ValueError(f"DriftingPolicyConfig: extra_noise_dim must be >= 0; got {self.extra_noise_dim}")
        if not self.features or set(self.features) - set(DRIFT_FEATURES):
            raise ValueError(f"DriftingPolicyConfig: features must be a non-empty subset of {DRIFT_FEATURES}; "
                             f"got {self.features}")


@dataclass
class DiffusionPolicyConfig(PolicyConfig):
    """Diffusion Policy's DDPM baseline (obs as global condition), sampled with DDPM or DDIM.

    The scheduler fields are those of diffusers' ``DDPMScheduler`` in DP's configs. ``sampler`` and
    ``num_inference_steps`` (None = ``num_train_timesteps``) only affect inference.
    """

    type: ClassVar[str] = "diffusion"

    num_train_timesteps: int = 100
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "squaredcos_cap_v2"
    variance_type: str = "fixed_small"
    clip_sample: bool = True
    prediction_type: str = "epsilon"
    sampler: str = "ddpm"
    num_inference_steps: int | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.sampler not in DDPM_SAMPLERS:
            raise ValueError(f"DiffusionPolicyConfig: sampler must be one of {DDPM_SAMPLERS}; got {self.sampler!r}")
        if self.prediction_type not in ("epsilon", "sample"):
            raise ValueError(f"DiffusionPolicyConfig: prediction_type must be 'epsilon' or 'sample'; "
                             f"got {self.prediction_type!r}")
