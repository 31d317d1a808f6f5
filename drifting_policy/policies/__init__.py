"""Policies of the robot branch: the one-step drifting policy and Diffusion Policy's DDPM baseline.

Both follow Diffusion Policy's contract (``predict_action``, ``compute_loss``, ``set_normalizer``,
``reset``) and LeRobot's (``select_action``, ``save_pretrained`` / ``BasePolicy.from_pretrained``).
"""
from drifting_policy.policies.base import POLICY_REGISTRY, BasePolicy, register_policy
from drifting_policy.policies.config import DiffusionPolicyConfig, DriftingPolicyConfig, PolicyConfig
from drifting_policy.policies.diffusion import DiffusionPolicy
from drifting_policy.policies.drifting import DriftingPolicy

__all__ = [
    "POLICY_REGISTRY",
    "BasePolicy",
    "DiffusionPolicy",
    "DiffusionPolicyConfig",
    "DriftingPolicy",
    "DriftingPolicyConfig",
    "PolicyConfig",
    "register_policy",
]
