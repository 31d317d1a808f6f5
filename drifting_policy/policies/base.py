"""What every policy shares: normalisation, observation encoding, the DP contract, queues and checkpoints.

A policy is Diffusion Policy's contract (``predict_action``, ``compute_loss``, ``set_normalizer``,
``reset``) plus LeRobot's (``select_action`` with observation and action queues, ``forward`` returning
``(loss, metrics)``, ``save_pretrained`` / ``from_pretrained``). Subclasses only say how a normalised
action chunk is produced from the condition (``sample_chunk``) and what the training loss is
(``chunk_loss``); both see the same condition built here.

Condition: every backbone (``drifting_policy.models.BACKBONES``) takes the observation features as (B, To, F)
and a method's per-sample extras (``extra_cond_dim`` values: extra noise, a committed prefix) as (B, E); how it
folds them in is the backbone's business (the U-Net stacks them into one vector, DP's ``obs_as_global_cond``; the
transformer makes one token per observation step).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from drifting.checkpoint import CheckpointError, check_finite_weights
from drifting.files import atomic_path, atomic_write_text
from drifting_policy.models import BACKBONES, MultiImageObsEncoder
from drifting_policy.normalizer import LinearNormalizer
from drifting_policy.policies.config import PolicyConfig
from drifting_policy.step_queues import ActionQueues, stack_steps

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
POLICY_REGISTRY: dict[str, type[BasePolicy]] = {}


def _load_finite_weights(path: Path, map_location) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; CheckpointError naming the file (and the tensor) when it is damaged:
    unreadable, or holding NaN or inf (a few flipped bytes load without complaint and make every action NaN)."""
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in {path.parent}")
    try:
        weights = load_file(str(path), device=str(map_location))
    except Exception as error:  # safetensors raises its own error types for a torn or garbled file
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(error).splitlines()[0]})") from error
    check_finite_weights(weights, path)
    return weights


def register_policy(cls):
    """Class decorator: makes ``cls`` loadable by ``from_pretrained`` under ``cls.config_class.type``."""
    POLICY_REGISTRY[cls.config_class.type] = cls
    return cls


class BasePolicy(nn.Module):
    config_class: ClassVar[type[PolicyConfig]] = PolicyConfig
    uses_timestep: ClassVar[bool]  # whether the network gets a diffusion step

    def __init__(self, config: PolicyConfig | Mapping):
        super().__init__()
        if isinstance(config, Mapping):
            config = self.config_class(**config)
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}; got {type(config).__name__}")
        self.config = config
        self.normalizer = LinearNormalizer()
        self.obs_encoder = None
        obs_feature_dim = config.obs_dim
        if config.shape_meta is not None:
            self.obs_encoder = MultiImageObsEncoder(
                config.shape_meta, config.crop_shape, config.image_feature_dim, config.num_kp, config.share_rgb_model
            )
            obs_feature_dim = self.obs_encoder.out_dim
        self.model = BACKBONES[config.backbone].from_config(config, obs_feature_dim, self.extra_cond_dim,
                                                            use_timestep=self.uses_timestep)
        self.reset()

    @property
    def extra_cond_dim(self) -> int:
        """Per-sample values a method adds to the condition (the network's ``extra`` input)."""
        return 0

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ what a method defines
    def sample_chunk(self, cond: torch.Tensor, generator: torch.Generator | None = None,
                     noise: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Normalised action chunk (B, T, Da) for the condition of B observations. ``noise`` (the names and shapes
        of ``noise_shapes``) replaces the random draws, so the chunk is a function of its inputs."""
        raise NotImplementedError

    def noise_shapes(self, batch_size: int) -> dict[str, tuple[int, ...]]:
        """The random inputs ``predict_action`` accepts as ``noise``, by name; empty for a method that cannot
        take them explicitly."""
        return {}

    def chunk_loss(self, cond: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scalar training loss and metrics (detached scalar tensors) for normalised demonstrated chunks ``action``
        (B, T, Da) and their condition (B, To, F)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ condition
    def encode_obs(self, obs_dict: Mapping) -> torch.Tensor:
        """Raw observations (B, >= To, ...) -> the network's condition (B, To, F), from the first To steps."""
        c, To = self.config, self.config.n_obs_steps
        if self.obs_encoder is None:
            obs = self._checked_obs(obs_dict, "obs", (c.obs_dim,))
            features = self.normalizer["obs"].normalize(obs[:, :To])
        else:
            steps = {}
            for key, meta in c.shape_meta["obs"].items():
                value = self._checked_obs(obs_dict, key, tuple(meta["shape"]))[:, :To]
                steps[key] = self.normalizer[key].normalize(value).flatten(0, 1)
            batch = next(iter(steps.values())).shape[0] // To
            features = self.obs_encoder(steps).reshape(batch, To, -1)
        return features

    def _checked_noise(self, noise: Mapping | None, batch_size: int) -> dict[str, torch.Tensor] | None:
        if noise is None:
            return None
        expected = self.noise_shapes(batch_size)
        if not expected:
            raise ValueError(f"{type(self).__name__} draws its noise itself; it takes no explicit noise")
        if not isinstance(noise, Mapping) or set(noise) != set(expected):
            got = sorted(noise) if isinstance(noise, Mapping) else type(noise).__name__
            raise KeyError(f"{type(self).__name__}: noise must be a dict with keys {sorted(expected)}; got {got}")
        checked = {}
        for name, shape in expected.items():
            value = torch.as_tensor(noise[name], device=self.device, dtype=torch.float32)
            if tuple(value.shape) != shape:
                raise ValueError(f"{type(self).__name__}: noise {name!r} must be {shape}; got {tuple(value.shape)}")
            checked[name] = value
        return checked

    def _checked_obs(self, obs_dict: Mapping, key: str, shape: tuple) -> torch.Tensor:
        To = self.config.n_obs_steps
        if key not in obs_dict:
            raise KeyError(f"{type(self).__name__}: observation {key!r} (B, >= {To}, {shape}) is missing; "
                           f"got keys {sorted(obs_dict)}")
        value = torch.as_tensor(obs_dict[key], device=self.device, dtype=torch.float32)
        if value.ndim != 2 + len(shape) or tuple(value.shape[2:]) != shape or value.shape[1] < To:
            raise ValueError(f"{type(self).__name__}: observation {key!r} must be (B, >= {To}, "
                             f"{', '.join(map(str, shape))}); got {tuple(value.shape)}")
        return value

    # ------------------------------------------------------------------ Diffusion Policy's contract
    def set_normalizer(self, normalizer: LinearNormalizer) -> None:
        self.normalizer.load_state_dict(normalizer.state_dict())
        self.normalizer.to(self.device)

    def reset(self) -> None:
        """Forget the observation and action queues of ``select_action`` (call at each episode start)."""
        self._queues = ActionQueues(self.config.n_obs_steps, type(self).__name__)

    @torch.no_grad()
    def predict_action(self, obs_dict: Mapping, generator: torch.Generator | None = None,
                       noise: Mapping[str, torch.Tensor] | None = None,
                       prefix: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{'action': (B, Ta, Da) executed from index To - 1, 'action_pred': (B, T, Da)}, in data units.

        ``noise``: the method's random inputs, ``{name: tensor}`` with the shapes of ``noise_shapes(B)`` (for the
        drifting policy ``{'noise': (B, T, Da)}``, plus ``'extra_noise': (B, E)`` when ``extra_noise_dim`` = E > 0);
        the same observations and noise give the same chunk here, in an exported graph and through the server.
        ``prefix`` (B, d, Da), data units, d <= ``max_prefix_steps``: the actions the robot executes from the
        current step on while this chunk is computed; the chunk continues them (and holds them at those steps).
        Observations holding NaN or inf are refused (ValueError naming the key and the first bad index): a policy
        would turn them into NaN actions. The check syncs with the GPU once per call; ``action_chunk`` skips it."""
        self._refuse_non_finite_obs(obs_dict, steps=self.config.n_obs_steps)
        padded = self._padded_prefix(prefix, obs_dict)
        action_pred = self.action_chunk(obs_dict, generator, noise, *padded)
        return {"action": self.executed_actions(action_pred), "action_pred": action_pred}

    def action_chunk(self, obs_dict: Mapping, generator: torch.Generator | None = None,
                     noise: Mapping[str, torch.Tensor] | None = None, prefix: torch.Tensor | None = None,
                     prefix_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The whole predicted chunk (B, T, Da) in data units; ``predict_action`` is this plus its input checks,
        and the exported graph is this (traceable: no branch depends on the values). ``prefix`` (B, D, Da) in
        data units and ``prefix_mask`` (B, D), 1 for a committed action: the padded form of predict_action's."""
        cond = self.encode_obs(obs_dict)
        noise = self._checked_noise(noise, cond.shape[0])
        if prefix is None:
            return self.normalizer["action"].unnormalize(self.sample_chunk(cond, generator, noise))
        normalized = (self.normalizer["action"].normalize(prefix), prefix_mask)
        naction = self.sample_chunk(cond, generator, noise, prefix=normalized)
        return self.overwrite_prefix(self.normalizer["action"].unnormalize(naction), prefix, prefix_mask)

    @property
    def max_prefix_steps(self) -> int:
        """How many committed actions the policy can continue (``predict_action``'s ``prefix``); 0: none."""
        return 0

    def overwrite_prefix(self, chunk: torch.Tensor, prefix: torch.Tensor, prefix_mask: torch.Tensor) -> torch.Tensor:
        """``chunk`` (N, T, Da) with the masked positions of ``prefix`` (N, D, Da) put at indices To - 1 onwards."""
        first, D = self.config.n_obs_steps - 1, prefix.shape[1]
        window = torch.where(prefix_mask[..., None] > 0, prefix, chunk[:, first:first + D])
        return torch.cat([chunk[:, :first], window, chunk[:, first + D:]], dim=1)

    def _padded_prefix(self, prefix, obs_dict: Mapping) -> tuple:
        """``prefix`` (B, d, Da) as ``(padded (B, D, Da), mask (B, D))`` on the policy's device; () for None."""
        if prefix is None:
            return ()
        name, D, Da = type(self).__name__, self.max_prefix_steps, self.config.action_dim
        if D == 0:
            raise ValueError(f"{name} was not trained to continue a prefix (max_prefix_delay = 0); send no prefix")
        prefix = torch.as_tensor(prefix, device=self.device, dtype=torch.float32)
        batch = int(torch.as_tensor(obs_dict[self._obs_keys()[0]]).shape[0]) if self._obs_keys()[0] in obs_dict \
            else prefix.shape[0]
        if prefix.ndim != 3 or prefix.shape[0] != batch or prefix.shape[1] > D or prefix.shape[2] != Da:
            raise ValueError(f"{name}: prefix must be (B={batch}, d <= {D}, {Da}); got {tuple(prefix.shape)}")
        if not bool(torch.isfinite(prefix).all()):
            raise ValueError(f"{name}: prefix holds non-finite values")
        d = prefix.shape[1]
        padded = torch.cat([prefix, prefix.new_zeros(batch, D - d, Da)], dim=1)
        mask = (torch.arange(D, device=self.device) < d).float().expand(batch, D)
        return padded, mask

    def executed_actions(self, action_pred: torch.Tensor) -> torch.Tensor:
        """The Ta actions of a chunk (B, T, Da) that are executed: from index To - 1, the current step."""
        start = self.config.n_obs_steps - 1
        return action_pred[:, start : start + self.config.n_action_steps]

    def compute_loss(self, batch: Mapping) -> torch.Tensor:
        """Scalar loss of a training batch {'obs': (B, T, Do) or {key: (B, T, ...)}, 'action': (B, T, Da)}
        (observations beyond the first To steps are ignored): Diffusion Policy's name for ``forward(batch)[0]``."""
        return self.forward(batch)[0]

    def forward(self, batch: Mapping) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """LeRobot's training entry point: (scalar loss, metrics). The metrics are detached scalar tensors, turned
        into numbers only when they are logged (each conversion is a device sync on a GPU)."""
        c = self.config
        if "action" not in batch:
            raise KeyError(f"{type(self).__name__}: training batch needs 'action' (B, {c.horizon}, {c.action_dim})")
        action = torch.as_tensor(batch["action"], device=self.device, dtype=torch.float32)
        if action.ndim != 3 or tuple(action.shape[1:]) != (c.horizon, c.action_dim):
            raise ValueError(f"{type(self).__name__}: batch 'action' must be (B, {c.horizon}, {c.action_dim}); "
                             f"got {tuple(action.shape)}")
        obs = batch  # low-dim: batch['obs'] is the (B, T, Do) tensor
        if self.obs_encoder is not None:  # shape_meta: batch['obs'] is a dict {key: (B, T, ...)}, as in DP
            obs = batch.get("obs")
            if not isinstance(obs, Mapping):
                raise KeyError(f"{type(self).__name__}: training batch needs 'obs' as a dict of "
                               f"{sorted(c.shape_meta['obs'])}; got {type(obs).__name__}")
        return self.chunk_loss(self.encode_obs(obs), self.normalizer["action"].normalize(action))

    def _obs_keys(self) -> list[str]:
        return ["obs"] if self.config.shape_meta is None else list(self.config.shape_meta["obs"])

    def _refuse_non_finite_obs(self, obs_dict: Mapping, steps: int | None) -> None:
        """ValueError when a floating-point observation the policy reads (its first ``steps`` steps, when given)
        holds NaN or inf. Missing keys and wrong shapes are left to ``encode_obs``'s own checks."""
        for key in self._obs_keys():
            if key not in obs_dict:
                continue
            value = torch.as_tensor(obs_dict[key])
            if not value.is_floating_point():
                continue  # uint8 images
            if steps is not None and value.ndim >= 2:
                value = value[:, :steps]
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                index = tuple(int(i) for i in (~finite).nonzero()[0])
                axes = "batch, step, ..." if steps is not None else "batch, ..."
                raise ValueError(f"{type(self).__name__}: observation {key!r} holds {value[index].item()} at index "
                                 f"{list(index)} ({axes}); a policy cannot act on non-finite observations")

    def _step_batch_size(self, step: Mapping) -> int:
        key = self._obs_keys()[0]
        if key not in step:
            raise KeyError(f"{type(self).__name__}: select_action needs observation {key!r}; got keys {sorted(step)}")
        value = torch.as_tensor(step[key])
        return int(value.shape[0]) if value.ndim else 0

    # ------------------------------------------------------------------ LeRobot's queues
    @torch.no_grad()
    def select_action(self, obs: torch.Tensor | Mapping) -> torch.Tensor:
        """One action (B, Da) for a single-step observation: (B, Do) or {'obs': (B, Do)} for low-dim
        policies, {key: (B, *shape)} for shape_meta policies. Keeps the last To observations (the first
        one repeated after ``reset``) and predicts a new chunk every ``n_action_steps`` calls.

        A refused call (non-finite observation, a batch size other than the queued one without ``reset``, a failed
        prediction) raises and leaves both queues as they were, so the next good call is not affected."""
        step = dict(obs) if isinstance(obs, Mapping) else {"obs": obs}
        self._refuse_non_finite_obs(step, steps=None)
        keys = step.keys() if self.config.shape_meta is None else self.config.shape_meta["obs"].keys()

        def predict_chunk(steps: list[dict]):
            stacked = stack_steps(steps, keys, lambda values: torch.stack([torch.as_tensor(v) for v in values], dim=1))
            return self.predict_action(stacked)["action"].unbind(dim=1)

        return self._queues.next_action(step, self._step_batch_size(step), predict_chunk)

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` (normalizer included). Each file is written to a
        temporary name and renamed into place; the config is renamed last, so a directory with a config
        always has complete weights next to it."""
        directory = Path(directory)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "type": self.config.type})
        atomic_write_text(directory / CONFIG_NAME, json.dumps(self.config.to_dict(), indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> BasePolicy:
        """Rebuild the policy named by the ``type`` in ``config.json`` and load its weights (no hydra)."""
        import drifting_policy.policies  # noqa: F401  (registers every policy class)

        directory = Path(directory)
        config_path = directory / CONFIG_NAME
        if not config_path.is_file():
            raise FileNotFoundError(f"no {CONFIG_NAME} in {directory}")
        fields = json.loads(config_path.read_text())
        kind = fields.pop("type", None)
        if kind not in POLICY_REGISTRY:
            raise ValueError(f"{config_path}: 'type' must be one of {sorted(POLICY_REGISTRY)}; got {kind!r}")
        policy_class = POLICY_REGISTRY[kind]
        if not issubclass(policy_class, cls):
            raise TypeError(f"{config_path} holds a {policy_class.__name__}, not a {cls.__name__}")
        policy = policy_class(policy_class.config_class(**fields))
        policy.load_state_dict(_load_finite_weights(directory / WEIGHTS_NAME, map_location))
        return policy.to(map_location).eval()

    def get_optim_groups(self, weight_decay: float, obs_encoder_weight_decay: float | None = None) -> list[dict]:
        """AdamW parameter groups as DP builds them: the transformer decays only its weight matrices; the
        observation encoder gets its own weight decay (default: the same)."""
        groups = self.model.get_optim_groups(weight_decay)
        if self.obs_encoder is not None:
            decay = weight_decay if obs_encoder_weight_decay is None else obs_encoder_weight_decay
            groups.append({"params": list(self.obs_encoder.parameters()), "weight_decay": decay})
        return groups
