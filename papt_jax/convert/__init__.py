"""PyTorch (Hugging Face, fairseq) <-> Flax conversion of HuBERT checkpoints.

The mapping lives in `papt_jax.convert.mapping` (one table plus rename layers),
safe file reading in `papt_jax.convert.torch_io`, and the entry points below in
`papt_jax.convert.api`. CLI: `python -m papt_jax.convert --help`.
"""

from papt_jax.convert.api import (
    ConvertedCheckpoint,
    abstract_params,
    count_params,
    export_hf,
    load_converted,
    load_pytorch,
    load_pytorch_checkpoint,
    params_to_torch,
    save_converted,
)
from papt_jax.convert.mapping import ConversionError
from papt_jax.convert.torch_io import (
    CheckpointFormatError,
    ConfigInferenceError,
    UnsafePickleError,
    UnsafePickleWarning,
)

__all__ = [
    "CheckpointFormatError",
    "ConfigInferenceError",
    "ConversionError",
    "ConvertedCheckpoint",
    "UnsafePickleError",
    "UnsafePickleWarning",
    "abstract_params",
    "count_params",
    "export_hf",
    "load_converted",
    "load_pytorch",
    "load_pytorch_checkpoint",
    "params_to_torch",
    "save_converted",
]
