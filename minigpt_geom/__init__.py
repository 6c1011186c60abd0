"""minigpt_geom: GPT-2 from first principles, with a forward pass that reports its own geometry."""

from .cache import KVCache
from .config import PRESETS, GPT2Config
from .errors import CheckpointError, InputError, MiniGPTGeomError, OutputError, WeightsNotFoundError
from .fused import reference_math
from .generate import Sampling, generate
from .model import GPT2
from .sphere import NORM_VARIANTS, NormVariant, register_norm
from .trace import Trace, TraceRequest

__all__ = [
    "GPT2", "GPT2Config", "KVCache", "PRESETS", "Trace", "TraceRequest", "Sampling", "generate",
    "NORM_VARIANTS", "NormVariant", "register_norm", "reference_math",
    "MiniGPTGeomError", "WeightsNotFoundError", "CheckpointError", "InputError", "OutputError",
]
