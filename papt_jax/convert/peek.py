"""The encoder family of a PyTorch checkpoint from its config or header alone.

Planning a run needs the family before any checkpoint is converted (the contrastive
objective of a wav2vec2 skips the pseudo-label stage), and reading a large checkpoint's
weights for that would cost the time and memory of a conversion. Each format tells it
cheaply:

* a Hugging Face folder: `config.json`'s `model_type` (`hf_config.family_of`); the
  MSP-Podcast challenge's release folder: WavLM;
* a `.safetensors` file: the tensor names in its header (`sources.family_from_keys`);
* a `torch.save` file (fairseq, a WavLM release, a state dict): unpickled by the safe
  loader with its tensors memory-mapped, never read (`safe_unpickle.peek_pickle`), then
  told apart as the converter tells them (`wavlm_release.release_cfg`,
  `fairseq.split_checkpoint`, the weight names).

Whatever cannot be told this way (a legacy-format pickle, a file the safe loader
refuses, a damaged one) gives None: the planner then assumes the objective needs
pseudo-labels, and the conversion itself reports the file's problem.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from pathlib import Path

from papt_jax.convert import fairseq, hf_config, sources, wavlm_release
from papt_jax.convert.conversion_errors import CheckpointFormatError
from papt_jax.convert.safe_unpickle import peek_pickle
from papt_jax.convert.torch_io import INDEX_SUFFIX, SAFETENSORS_NAME, TORCH_BIN_NAME
from papt_jax.errors import UserError

log = logging.getLogger(__name__)


def checkpoint_family(path: str | Path) -> str | None:
    """'hubert', 'wav2vec2', 'wavlm' or 'data2vec_audio' for a PyTorch checkpoint, or None
    when its config or header does not tell (see the module docstring).

    Raises:
      CheckpointFormatError: `path` is a file that is no PyTorch checkpoint at all.
    """
    path = Path(path).absolute()
    try:
        st = path.stat()
    except OSError:
        return None
    return _family(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _family(path: Path, size: int, mtime_ns: int) -> str | None:
    """`checkpoint_family`, once per file version (the planner asks several times)."""
    del size, mtime_ns  # the cache key: a rewritten file is read again
    if path.is_file() and (path.name in (SAFETENSORS_NAME, TORCH_BIN_NAME)):
        path = path.parent
    if path.is_file() and path.name.endswith(INDEX_SUFFIX):
        path = path.parent
    try:
        if path.is_dir():
            return _folder_family(path)
        if path.suffix == ".safetensors":
            return _safetensors_family(path)
        return _pickle_family(path)
    except CheckpointFormatError:
        raise  # no checkpoint at all (a text file, an empty one): refused before any work
    except (UserError, OSError, ValueError) as err:
        log.info("%s: the family is known only once it is read (%s)", path, err)
        return None


def _folder_family(folder: Path) -> str | None:
    if (folder / "final_ssl.pt").is_file():
        return "wavlm"  # the challenge's release folder (`torch_io._read_msp_release`)
    config = folder / "config.json"
    if not config.is_file():
        return None
    values = json.loads(config.read_text())
    if not isinstance(values, Mapping):
        return None
    return hf_config.family_of(values, str(config)).family


def _safetensors_family(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        names = dict.fromkeys(f.keys())  # noqa: SIM118 (the header only)
    return sources.family_from_keys(names).family


def _pickle_family(path: Path) -> str | None:
    obj = peek_pickle(path)
    if obj is None:
        return None
    if wavlm_release.release_cfg(obj) is not None:
        return "wavlm"
    if fairseq.is_fairseq(obj):
        model = obj["model"]
        if not isinstance(model, Mapping):
            return None
        return fairseq.split_checkpoint(obj, dict(model), str(path)).family
    if isinstance(obj, Mapping) and obj and all(isinstance(k, str) for k in obj):
        return sources.family_from_keys(obj).family
    return None
