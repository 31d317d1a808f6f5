"""Networks of the policy branch, shared by the drifting policy (one step) and the DDPM baseline."""

from drifting_policy.models.common import count_parameters
from drifting_policy.models.transformer import ActionTransformer
from drifting_policy.models.unet1d import ConditionalUnet1D
from drifting_policy.models.vision import MultiImageObsEncoder, RgbEncoder

# The backbones a policy config names (``PolicyConfig.backbone``); each takes the condition the same way:
# forward(sample, timestep, cond (B, To, F), extra (B, E)), and builds itself with ``from_config``.
BACKBONES = {"unet": ConditionalUnet1D, "transformer": ActionTransformer}

__all__ = ["BACKBONES", "ActionTransformer", "ConditionalUnet1D", "MultiImageObsEncoder", "RgbEncoder",
           "count_parameters"]
