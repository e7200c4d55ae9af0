"""PyTorch (Hugging Face, fairseq) <-> Flax conversion of HuBERT checkpoints.

The mapping lives in `papt_jax.convert.mapping` (one table plus rename layers), safe
pickle reading in `papt_jax.convert.safe_unpickle`, file formats in
`papt_jax.convert.torch_io`, fairseq's checkpoint layout and config in
`papt_jax.convert.fairseq`, Hugging Face configs in `papt_jax.convert.hf_config`, and
the entry points below in `papt_jax.convert.api`. CLI: `python -m papt_jax.convert --help`.
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
from papt_jax.convert.conversion_errors import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    ConfigInferenceError,
    ConversionError,
    OutputExistsError,
    UnsafePickleError,
    UnsafePickleWarning,
)

__all__ = [
    "CheckpointFormatError",
    "CheckpointNotFoundError",
    "ConfigInferenceError",
    "ConversionError",
    "ConvertedCheckpoint",
    "OutputExistsError",
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
