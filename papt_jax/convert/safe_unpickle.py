"""Reading pickled PyTorch checkpoints without running code from them.

fairseq saves whole training states, not just tensors: a `fairseq.data.dictionary.
Dictionary` per label set, the config as an omegaconf `DictConfig` (older files: an
`argparse.Namespace`), meters and iterator state. Users have neither fairseq nor
omegaconf installed, and a plain `torch.load(weights_only=True)` refuses those classes.

`load_pickle` runs torch's own restricted unpickler (`weights_only=True`) with exactly
the classes such files name registered under their real names, each mapped to an
inert stand-in defined here that only stores plain data (`KNOWN_GLOBALS`). Nothing
from fairseq or omegaconf is imported or executed, and every other global
(`os.system`, `subprocess.Popen`, `builtins.eval`, a class of some other library...)
is refused with an `UnsafePickleError` naming it. `plain` turns the stand-ins into
dicts, lists and numbers.

`allow_unsafe_pickle=True` is for trusted files holding other objects: they are fully
unpickled (importing and running whatever they name), with the stand-ins still used
for the known names, so fairseq and omegaconf need not be installed even then.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import collections
import logging
import pickle
import re
import types
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from papt_jax.convert.conversion_errors import (
    UNSAFE_HINT,
    CheckpointFormatError,
    UnsafePickleError,
    UnsafePickleWarning,
)

logger = logging.getLogger(__name__)


class _StandIn:
    """Base of the stand-ins: keeps the pickled instance state as a plain dict, nothing else.

    The unpickler creates one with `cls.__new__(cls)` (pickle's NEWOBJ) and hands it
    the state the real class's `__getstate__` produced (pickle's BUILD).
    """

    origin = "?"

    def __setstate__(self, state: Any) -> None:
        # pickle's (dict state, slot state) form; neither class used here has slots.
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
            state = state[0]
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise pickle.UnpicklingError(
                f"unexpected pickled state for {self.origin}: {type(state).__name__}"
            )
        self.__dict__["state"] = dict(state)

    @property
    def state(self) -> dict[str, Any]:
        return self.__dict__.get("state", {})

    def __repr__(self) -> str:
        return f"<stand-in for {self.origin}>"


class FairseqDictionary(_StandIn):
    """fairseq's label dictionary: `symbols`, `count`, `indices` and the special indices."""

    origin = "fairseq.data.dictionary.Dictionary"

    @property
    def symbols(self) -> list[str]:
        return list(self.state.get("symbols", []))

    @property
    def nspecial(self) -> int | None:
        value = self.state.get("nspecial")
        return value if type(value) is int else None


class OmegaDictConfig(_StandIn):
    """omegaconf `DictConfig`: `_content` maps keys to nodes (or is None / a '${...}' string)."""

    origin = "omegaconf.dictconfig.DictConfig"


class OmegaListConfig(_StandIn):
    """omegaconf `ListConfig`: `_content` is a list of nodes (or None / a string)."""

    origin = "omegaconf.listconfig.ListConfig"


class OmegaValueNode(_StandIn):
    """An omegaconf value node (`AnyNode`, `IntegerNode`, ...): the value is `_val`."""

    origin = "omegaconf.nodes.ValueNode"


class OmegaMetadata(_StandIn):
    """omegaconf `Metadata` / `ContainerMetadata`: types and flags, not needed for values."""

    origin = "omegaconf.base.Metadata"


class NumpyDType(_StandIn):
    """A plain numeric NumPy dtype, as pickled inside NumPy scalars (e.g. in fairseq meters)."""

    origin = "numpy.dtype"

    def __init__(self, name: str):
        self.__dict__["name"] = name

    def __setstate__(self, state: Any) -> None:
        # np.dtype's state tuple: (version, byte order, ...); only the byte order matters.
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else "|"
        if order not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"unexpected numpy dtype state {state!r}")
        self.__dict__["order"] = order

    def numpy(self) -> np.dtype:
        dtype = np.dtype(self.__dict__["name"])
        order = self.__dict__.get("order", "|")
        return dtype if order == "|" else dtype.newbyteorder(order)


def _numpy_dtype(name: Any, *_flags: Any) -> NumpyDType:
    """`numpy.dtype(name, align, copy)`, for bool, integer, float and complex types only."""
    try:
        kind = np.dtype(name).kind if isinstance(name, str) else None
    except TypeError:
        kind = None
    if kind not in ("b", "i", "u", "f", "c"):
        raise pickle.UnpicklingError(f"refused numpy dtype {name!r}: not a plain numeric type")
    return NumpyDType(name)


def _numpy_scalar(dtype: Any, data: Any = None) -> int | float | complex | bool:
    """`numpy.core.multiarray.scalar(dtype, raw bytes)` as a Python number."""
    if not isinstance(dtype, NumpyDType) or not isinstance(data, bytes):
        raise pickle.UnpicklingError("refused a numpy scalar that is not plain numeric data")
    array = np.frombuffer(data, dtype=dtype.numpy())
    if array.size != 1:
        raise pickle.UnpicklingError(f"numpy scalar of {array.size} values")
    return array[0].item()


def _defaultdict_as_dict(*_factory: Any) -> dict:
    """`collections.defaultdict(factory)` rebuilt as a plain dict (the factory is not kept)."""
    return {}


def _value_node(name: str) -> type[OmegaValueNode]:
    return type(name, (OmegaValueNode,), {"origin": f"omegaconf.nodes.{name}"})


_VALUE_NODES = [
    _value_node(name)
    for name in (
        "AnyNode",
        "StringNode",
        "IntegerNode",
        "FloatNode",
        "BooleanNode",
        "EnumNode",
        "BytesNode",
    )
]
_CONTAINER_METADATA = type(
    "ContainerMetadata", (OmegaMetadata,), {"origin": "omegaconf.base.ContainerMetadata"}
)

# Real global name -> the inert object the safe unpickler puts in its place. Types that
# only appear as values (typing.Any, builtins.int as a node's ref_type) are themselves.
KNOWN_GLOBALS: dict[str, Any] = {
    "fairseq.data.dictionary.Dictionary": FairseqDictionary,
    "omegaconf.dictconfig.DictConfig": OmegaDictConfig,
    "omegaconf.listconfig.ListConfig": OmegaListConfig,
    "omegaconf.base.Metadata": OmegaMetadata,
    "omegaconf.base.ContainerMetadata": _CONTAINER_METADATA,
    **{cls.origin: cls for cls in _VALUE_NODES},
    "typing.Any": typing.Any,
    "typing.Dict": typing.Dict,  # noqa: UP006 - omegaconf pickles a dict ref_type so
    "typing.List": typing.List,  # noqa: UP006 - ... and a list ref_type so
    "builtins.dict": dict,
    "builtins.list": list,
    "builtins.tuple": tuple,
    "builtins.int": int,
    "builtins.float": float,
    "builtins.str": str,
    "builtins.bool": bool,
    "collections.defaultdict": _defaultdict_as_dict,
    "collections.OrderedDict": collections.OrderedDict,
    "argparse.Namespace": argparse.Namespace,
    "numpy.dtype": _numpy_dtype,
    # Registered so the restricted unpickler lets `_numpy_dtype`'s result take its state.
    f"{__name__}.NumpyDType": NumpyDType,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
}
_SAFE_GLOBALS = [(value, name) for name, value in KNOWN_GLOBALS.items()]


def import_torch():
    """torch, or a clear error saying it is needed to read PyTorch files."""
    try:
        import torch
    except ImportError as err:  # pragma: no cover - torch is in requirements.txt
        raise CheckpointFormatError(
            "reading PyTorch checkpoints needs torch", hint="pip install torch"
        ) from err
    return torch


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_FUNCTION = re.compile(r"unrecognized function (.+?)(?: which belongs|$)", re.MULTILINE)


def _python3_name(name: str) -> str:
    """A global as Python 3 resolves it: protocol-2 pickles spell some the Python 2 way."""
    module, _, attr = name.rpartition(".")
    module, attr = _compat_pickle.NAME_MAPPING.get((module, attr), (module, attr))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{attr}"


def _refused_names(path: Path, err: Exception) -> list[str]:
    """Every global of the file the safe loader refuses (or the one its message names)."""
    torch = import_torch()
    names: list[str] = []
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - legacy-format files: read the error message instead
        names = []
    if not names:
        text = str(err)
        found = _GLOBAL.search(text) or _FUNCTION.search(text)
        names = [found.group(1).strip()] if found else []
    return sorted({_python3_name(name) for name in names})


def _unpickler_reason(err: Exception) -> str:
    """The restricted unpickler's own complaint, without torch's advice around it."""
    text = str(err)
    _, marker, rest = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (rest if marker else text).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _safe_load(path: Path):
    torch = import_torch()
    with torch.serialization.safe_globals(_SAFE_GLOBALS):
        return torch.load(path, map_location="cpu", weights_only=True)


def peek_pickle(path: str | Path) -> Any | None:
    """A zip-format `torch.save` file unpickled by the safe loader with its tensors
    memory-mapped (not read): its configs and key names at little cost. None when that is
    not possible (a legacy-format file, a global outside the safe list); `load_pickle` then
    says why, when the file is really read.

    Raises:
      CheckpointFormatError: the file is no PyTorch checkpoint at all (neither a zip archive
        nor a pickle), or cannot be read: refused as early as the file is first looked at.
    """
    path = Path(path)
    _check_container(path)
    try:
        with path.open("rb") as f:
            if f.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
                return None
        torch = import_torch()
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - any failure: the family is not known up front
        return None


class _StandInUnpickler(pickle.Unpickler):
    """A full unpickler (opt-in only) that still maps the known names to the stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        known = KNOWN_GLOBALS.get(f"{module}.{name}")
        if known is not None:
            return known
        return super().find_class(module, name)


def _stand_in_pickle_module() -> types.ModuleType:
    """A `pickle_module` for `torch.load` whose unpickler is `_StandInUnpickler`."""
    module = types.ModuleType("papt_jax_stand_in_pickle")
    module.Unpickler = _StandInUnpickler
    module.load = lambda file, **kwargs: _StandInUnpickler(file, **kwargs).load()
    return module


def _full_load(path: Path):
    torch = import_torch()
    message = (
        f"UNSAFE: fully unpickling {path} (allow_unsafe_pickle=True). This runs any code "
        "the file contains; only do this for checkpoints from a source you trust."
    )
    logger.warning(message)
    warnings.warn(message, UnsafePickleWarning, stacklevel=3)
    try:
        return torch.load(
            path, map_location="cpu", weights_only=False, pickle_module=_stand_in_pickle_module()
        )
    except (ModuleNotFoundError, AttributeError) as err:
        missing = getattr(err, "name", None) or str(err)
        raise CheckpointFormatError(
            f"{path} names {missing!r}, which is not installed (or does not define it), so "
            "even full unpickling cannot rebuild it",
            hint="fairseq's and omegaconf's own classes are read without those packages; "
            f"this is something else: install the package that provides {missing!r}",
        ) from err
    except (pickle.UnpicklingError, EOFError, RuntimeError) as err:
        raise CheckpointFormatError(
            f"{path} is not a PyTorch checkpoint, or a malformed one: {err}"
        ) from err


# torch.save writes a zip archive; before PyTorch 1.6 (or with
# _use_new_zipfile_serialization=False) a pickle of protocol 2 or later, which opens with the
# PROTO opcode. A file that starts with neither is no PyTorch checkpoint at all.
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80


def _what_it_looks_like(head: bytes) -> str:
    """A short description of a file's first bytes, for the message that refuses it."""
    if not head:
        return "it is empty"
    if len(head) > 8 and head[8:9] == b"{":
        return "it looks like a safetensors file: give it the .safetensors extension"
    # The 64 bytes read may end inside a multi-byte character: ignore a cut-off tail.
    text = head.decode("utf-8", errors="replace").rstrip("\ufffd")
    if text and all(c.isprintable() or c in "\r\n\t" for c in text):
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        return f"it looks like a text file (it starts with {first[:40]!r})"
    return f"it starts with the bytes {head[:4].hex(' ')}"


def _check_container(path: Path) -> None:
    """Raises `CheckpointFormatError` when `path` is neither a zip archive nor a pickle."""
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError as err:
        raise CheckpointFormatError(f"{path} cannot be read: {err}") from err
    if head.startswith(_ZIP_MAGIC) or head[:1] == bytes([_PICKLE_PROTO]):
        return
    raise CheckpointFormatError(
        f"{path} is not a PyTorch checkpoint: torch.save writes a zip archive (or, in the "
        f"legacy format, a pickle) and this file is neither; {_what_it_looks_like(head)}",
        hint="give a Hugging Face folder, a .safetensors file, or a .pt/.bin/.pth file "
        "written by torch.save (e.g. fairseq's hubert_base_ls960.pt)",
    )


def load_pickle(path: str | Path, *, allow_unsafe_pickle: bool = False) -> Any:
    """Loads a pickled PyTorch object; only known-harmless globals unless told otherwise.

    Args:
      path: a file written by `torch.save` (zip or legacy format).
      allow_unsafe_pickle: when the file names a global outside `KNOWN_GLOBALS`,
        fully unpickle it (runs code from the file; trusted files only).

    Returns:
      The unpickled object; fairseq / omegaconf objects are stand-ins (see `plain`).

    Raises:
      UnsafePickleError: a global outside the safe list, without the opt-in.
      CheckpointFormatError: not a readable PyTorch file.
    """
    path = Path(path)
    _check_container(path)
    try:
        return _safe_load(path)
    except pickle.UnpicklingError as err:
        refused = _refused_names(path, err)
        reason = ", ".join(refused) or _unpickler_reason(err)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, EOFError) as err:
        # Not a pickle, or a known name used in a way its real class never is.
        raise CheckpointFormatError(
            f"{path} is not a PyTorch checkpoint, or a malformed one ({type(err).__name__}: {err})"
        ) from err
    except RuntimeError as err:
        raise CheckpointFormatError(
            f"{path} is not a PyTorch checkpoint torch.load can read: {err}"
        ) from err
    if not allow_unsafe_pickle:
        if not refused:
            raise CheckpointFormatError(
                f"{path} could not be read by the safe unpickler: {reason}",
                hint="if it is a trusted PyTorch checkpoint in a form the restricted "
                "unpickler does not parse, allow_unsafe_pickle=True (command line: "
                "--allow_unsafe_pickle) reads it fully, running any code it contains",
            )
        raise UnsafePickleError(
            f"{path} refers to {reason}, outside the list of harmless classes the safe "
            "loader rebuilds (tensors, fairseq Dictionary, omegaconf configs, "
            "argparse.Namespace, ...); refused without running it",
            hint=UNSAFE_HINT,
        )
    logger.warning("%s: the safe loader refused %s", path, reason)
    return _full_load(path)


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain pickles (not torch files) with the stand-ins only, nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        known = KNOWN_GLOBALS.get(_python3_name(f"{module}.{name}"))
        if known is None:
            raise UnsafePickleError(
                f"{self.path} refers to {_python3_name(f'{module}.{name}')}, outside the list "
                "of harmless classes; refused without running it",
                hint=UNSAFE_HINT,
            )
        return known

    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path


def load_plain_pickle(path: str | Path) -> Any:
    """Loads a plain `pickle.dump` file (numbers, NumPy scalars, containers) safely.

    Raises:
      UnsafePickleError: the file names any other global.
      CheckpointFormatError: not a readable pickle.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            return _PlainUnpickler(f, path).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise CheckpointFormatError(f"{path} is not a readable pickle: {err}") from err


# --------------------------------------------------------------------------- plain data

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")


def plain(obj: Any) -> Any:
    """Turns stand-ins (and Namespaces) into dicts, lists and values, recursively.

    A `DictConfig` becomes a dict of its nodes' values and a `ListConfig` a list; a
    `Namespace` becomes a dict; a `Dictionary` becomes `{'symbols', 'count',
    'indices', 'nspecial'}`. omegaconf's missing value '???' and interpolation
    strings ('${task.normalize}') stay strings (see `resolve_interpolations`).
    """
    if isinstance(obj, OmegaDictConfig | OmegaListConfig):
        content = obj.state.get("_content")
        if isinstance(content, Mapping):
            return {key: plain(value) for key, value in content.items()}
        if isinstance(content, list | tuple):
            return [plain(value) for value in content]
        return content  # None, '???' or an interpolation string.
    if isinstance(obj, OmegaValueNode):
        return plain(obj.state.get("_val"))
    if isinstance(obj, FairseqDictionary):
        keys = ("symbols", "count", "indices", "nspecial")
        return {key: plain(obj.state.get(key)) for key in keys}
    if isinstance(obj, argparse.Namespace):
        return {key: plain(value) for key, value in vars(obj).items()}
    if isinstance(obj, Mapping):
        return {key: plain(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(plain(value) for value in obj)
    return obj


def resolve_interpolations(tree: Any, root: Mapping[str, Any], skip: tuple[str, ...] = ()):
    """Replaces omegaconf '${a.b}' strings by the value at `a.b` in `root`, where it exists.

    Only whole-string absolute references are resolved (the kind fairseq's configs
    use, e.g. `label_rate: ${task.label_rate}`); anything else stays as it is.

    Args:
      tree: plain config data (see `plain`).
      root: the config the references are relative to.
      skip: keys whose subtrees are their own configs (resolved separately).
    """

    def lookup(path: str, depth: int) -> Any:
        node: Any = root
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return resolve(node, depth + 1)

    def resolve(value: Any, depth: int = 0) -> Any:
        if depth > 16:  # A reference cycle: leave the string alone.
            return value
        if isinstance(value, str):
            found = _INTERPOLATION.fullmatch(value)
            if found is None:
                return value
            target = lookup(found.group(1), depth)
            return value if target is None else target
        if isinstance(value, Mapping):
            return {key: sub if key in skip else resolve(sub, depth) for key, sub in value.items()}
        if isinstance(value, list):
            return [resolve(sub, depth) for sub in value]
        return value

    return resolve(tree)
