"""minigpt_geom: GPT-2 from first principles, with a forward pass that reports its own geometry."""

from .config import PRESETS, GPT2Config
from .errors import CheckpointError, InputError, MiniGPTGeomError, WeightsNotFoundError
from .model import GPT2, KVCache
from .sphere import NORM_VARIANTS, NormVariant, register_norm
from .trace import Trace

__all__ = [
    "GPT2", "GPT2Config", "KVCache", "PRESETS", "Trace", "NORM_VARIANTS", "NormVariant", "register_norm",
    "MiniGPTGeomError", "WeightsNotFoundError", "CheckpointError", "InputError",
]
