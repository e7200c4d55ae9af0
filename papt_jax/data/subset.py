"""A subset of a split's records, for experiments that train on some speakers only.

The personalization-gap experiment (paper Figure 1) fine-tunes on nested subsets of the
training speakers; `select` keeps the chosen records of a source and its index, in their
order, so the batch plan and the loader work on the subset unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from papt_jax.data.batching import DatasetIndex


class SubsetSource:
    """Records `positions` of `source`, read through (picklable when `source` is).

    Args:
      source: random-access records.
      positions: (n,) record numbers of `source` to expose, in order.
    """

    def __init__(self, source: Sequence[Mapping[str, Any]], positions: np.ndarray):
        self.source = source
        self.positions = np.asarray(positions, np.int64)

    def __len__(self) -> int:
        return int(self.positions.size)

    def __getitem__(self, index: int) -> Mapping[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} out of range [0, {len(self)})")
        return self.source[int(self.positions[index])]


def select(
    source: Sequence[Mapping[str, Any]], index: DatasetIndex, keep: np.ndarray
) -> tuple[SubsetSource, DatasetIndex]:
    """The records where `keep` is True, and their index.

    Args:
      source: random-access records.
      index: keys and lengths of `source`, in its order.
      keep: (num_records,) bool.

    Raises:
      ValueError: `keep` does not match the index, or keeps nothing.
    """
    keep = np.asarray(keep, bool)
    if keep.shape != (len(index.keys),):
        raise ValueError(f"keep has shape {keep.shape}, the index {len(index.keys)} records")
    positions = np.flatnonzero(keep)
    if positions.size == 0:
        raise ValueError("the subset keeps no record")
    sub_index = DatasetIndex(
        tuple(index.keys[i] for i in positions), np.asarray(index.num_samples)[positions]
    )
    return SubsetSource(source, positions), sub_index
