"""drifting: the shared core of drifting-models (the drifting field, its loss, CFG helpers, queue, EMA)."""

from drifting.cfg import sample_cfg_alpha, unconditional_weight
from drifting.ema import EMA
from drifting.field import TEMPERATURES, drift_field, drift_loss, feature_drift_loss, pairwise_distance
from drifting.queue import SampleQueue

__all__ = [
    "EMA",
    "SampleQueue",
    "TEMPERATURES",
    "drift_field",
    "drift_loss",
    "feature_drift_loss",
    "pairwise_distance",
    "sample_cfg_alpha",
    "unconditional_weight",
]
