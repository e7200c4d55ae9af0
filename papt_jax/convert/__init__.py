"""PyTorch (Hugging Face, fairseq, releases) <-> Flax conversion of encoder checkpoints.

Families: HuBERT, wav2vec2, WavLM, data2vec-audio, and the published emotion models built
on them. The mapping machinery lives in `mapping`, one naming table per family in
`families/`, safe pickle reading in `safe_unpickle`, file formats in `torch_io`, fairseq's
layout in `fairseq` and its configs in `fairseq_config`, the WavLM release in
`wavlm_release`, the emotion models in `emotion_models`, Hugging Face configs in
`hf_config`; `sources` tells what a file is, `heads` converts its heads, `shapes` gives
the shapes they are checked against, `storage` writes and reads converted folders, and
`api` holds the entry points below. CLI: `python -m papt_jax.convert --help`.
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
