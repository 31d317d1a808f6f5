"""Networks of the policy branch, shared by the drifting policy (one step) and the DDPM baseline."""

from drifting_policy.models.common import count_parameters
from drifting_policy.models.transformer import ActionTransformer
from drifting_policy.models.unet1d import ConditionalUnet1D
from drifting_policy.models.vision import MultiImageObsEncoder, RgbEncoder

__all__ = ["ActionTransformer", "ConditionalUnet1D", "MultiImageObsEncoder", "RgbEncoder", "count_parameters"]
