"""Training throughput as the user sees it: audio seconds per second, FLOPs per step, MFU.

Three things live here:

- `PEAK_FLOPS`: the published peak FLOP/s of the accelerators whose `device_kind` we know,
  per JAX device, dense (no 2:4 sparsity).
- `step_cost`: the FLOPs of one call of a jitted step, from XLA's cost analysis of the
  compiled executable (what XLA counts, not a hand formula). It goes through the AOT path
  (`jitted.lower(...).compile()`), whose executable jit's own cache keeps, so the call that
  follows reuses it: one compilation per shape, as without it.
- `ThroughputMeter`: host-side counters over one logging interval (no device sync), read
  into `audio_sec_per_sec`, `flops_per_step` and `mfu`.

MFU here is `flops_per_step * steps_per_second / (peak * num_devices)` with XLA's count of
the whole compiled step (forward, backward, optimiser; recomputed layers under remat count
twice, so with remat it is closer to hardware utilisation), against the chip's **bf16
dense** peak whatever the model's compute dtype: the usual reference, and the rate a float32
model could approach only through TF32 tensor cores. A device kind not in the table (any
CPU) has no peak, and then no MFU is reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from collections.abc import Callable, Iterator, Mapping

import jax
import numpy as np

from papt_jax.data.audio import SAMPLE_RATE

TFLOPS = 1e12


@dataclasses.dataclass(frozen=True)
class PeakFlops:
    """Dense peak FLOP/s of one JAX device.

    Attributes:
      bfloat16: Matrix-unit (tensor core / MXU) peak for bf16 inputs.
      tfloat32: NVIDIA tensor-core peak for fp32 inputs rounded to TF32 (None: no such mode).
      float32: Plain fp32 vector peak (None: not published as a separate figure).
    """

    bfloat16: float
    tfloat32: float | None = None
    float32: float | None = None


# Keys are `jax.Device.device_kind`, lower-cased. Figures are per JAX device: one GPU, one
# TPU v4/v5p chip (its two TensorCores form one "megacore" device), one v5e/v6e chip (one
# TensorCore). NVIDIA datasheets quote tensor-core rates with 2:4 sparsity; the dense rates
# below are half of those.
_H100_SXM = PeakFlops(989.4 * TFLOPS, 494.7 * TFLOPS, 66.9 * TFLOPS)
_A100 = PeakFlops(312 * TFLOPS, 156 * TFLOPS, 19.5 * TFLOPS)
PEAK_FLOPS: dict[str, PeakFlops] = {
    # NVIDIA H100 Tensor Core GPU datasheet: SXM5 BF16 1,979 and TF32 989 TFLOPS (sparse),
    # FP32 67 TFLOPS.
    "nvidia h100 80gb hbm3": _H100_SXM,
    # Same datasheet, PCIe card: BF16 1,513 and TF32 756 TFLOPS (sparse), FP32 51 TFLOPS.
    "nvidia h100 pcie": PeakFlops(756.5 * TFLOPS, 378 * TFLOPS, 51.2 * TFLOPS),
    # NVIDIA H200 datasheet (SXM): the H100 SXM's compute rates with more, faster memory.
    "nvidia h200": _H100_SXM,
    # NVIDIA A100 datasheet: BF16 312 and TF32 156 TFLOPS dense, FP32 19.5, SXM4 and PCIe.
    "nvidia a100-sxm4-40gb": _A100,
    "nvidia a100-sxm4-80gb": _A100,
    "nvidia a100-pcie-40gb": _A100,
    "nvidia a100 80gb pcie": _A100,
    # Google Cloud TPU system-architecture pages, bf16 per chip. TPUs publish no separate
    # fp32 rate (fp32 matrix products run as several bf16 passes on the MXUs).
    "tpu v4": PeakFlops(275 * TFLOPS),
    "tpu v5 lite": PeakFlops(197 * TFLOPS),  # v5e
    "tpu v5e": PeakFlops(197 * TFLOPS),
    "tpu v5": PeakFlops(459 * TFLOPS),  # v5p reports itself as "TPU v5"
    "tpu v5p": PeakFlops(459 * TFLOPS),
    "tpu v6 lite": PeakFlops(918 * TFLOPS),  # v6e (Trillium)
    "tpu v6e": PeakFlops(918 * TFLOPS),
}


def peak_flops(device_kind: str, dtype: str = "bfloat16") -> float | None:
    """Dense peak FLOP/s of one device of `device_kind` for `dtype`; None when unknown.

    Args:
      device_kind: `jax.Device.device_kind`, e.g. "NVIDIA H100 80GB HBM3" (any case).
      dtype: "bfloat16", "tfloat32" or "float32".
    """
    if dtype not in ("bfloat16", "tfloat32", "float32"):
        raise ValueError(f"dtype must be bfloat16, tfloat32 or float32, got {dtype!r}")
    kind = re.sub(r"\s+", " ", device_kind.strip().lower())
    peak = PEAK_FLOPS.get(kind)
    return None if peak is None else getattr(peak, dtype)


def mfu(
    flops_per_step: float, steps_per_second: float, peak_per_device: float, num_devices: int
) -> float:
    """Model FLOP utilisation: the share of the devices' peak that the steps used.

    Args:
      flops_per_step: FLOPs of one step on all devices together.
      steps_per_second: Steps completed per second of wall time.
      peak_per_device: Peak FLOP/s of one device.
      num_devices: Devices the step runs on.
    """
    return flops_per_step * steps_per_second / (peak_per_device * num_devices)


@dataclasses.dataclass(frozen=True)
class StepCost:
    """XLA's FLOP count of one compiled step.

    Attributes:
      flops_per_device: FLOPs of the per-device program (after SPMD partitioning).
      num_devices: Devices that run it.
      device_kind: Their `device_kind`.
    """

    flops_per_device: float
    num_devices: int
    device_kind: str

    @property
    def flops(self) -> float:
        """FLOPs of the step on all its devices."""
        return self.flops_per_device * self.num_devices

    @property
    def peak_per_device(self) -> float | None:
        """The bf16 dense peak of one device (None when the device kind is unknown)."""
        return peak_flops(self.device_kind)


def compiled_cost(compiled) -> StepCost | None:
    """The StepCost of a compiled executable (`jax.stages.Compiled`); None when XLA gives
    no FLOP count (some backends do not implement the analysis)."""
    try:
        analysis = compiled.cost_analysis()
    except (RuntimeError, NotImplementedError):
        return None
    if isinstance(analysis, list | tuple):  # older JAX: one dict per program
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    if flops is None or not np.isfinite(flops) or flops <= 0:
        return None
    shardings = jax.tree.leaves(compiled.input_shardings)
    devices = shardings[0].device_set if shardings else {jax.devices()[0]}
    return StepCost(float(flops), len(devices), next(iter(devices)).device_kind)


def step_cost(jitted: Callable, *args) -> StepCost | None:
    """Compiles `jitted` for `args` and returns its StepCost (None without `.lower`).

    The executable stays in jit's cache, so `jitted(*args)` afterwards does not compile
    again; nothing runs on the device and donated arguments are left alone.
    """
    lower = getattr(jitted, "lower", None)
    if lower is None:
        return None
    return compiled_cost(lower(*args).compile())


class ThroughputMeter:
    """Seconds of audio, steps and FLOPs per second of wall time, from host counters only.

    Count each step with `add`; `read` at each log returns the interval's figures and
    starts the next interval. Time spent inside `excluded()` (compilation) is left out;
    `restart()` after evaluation and checkpoints drops what they took. (Device work still
    queued when a compilation starts runs during it, so an interval with a compilation can
    read a little high.)
    """

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        self._samples = 0
        self._steps = 0
        self._costs: list[StepCost] = []
        self._unknown_cost = False
        self._since = time.perf_counter()
        self._excluded = 0.0

    @contextlib.contextmanager
    def excluded(self) -> Iterator[None]:
        """Leaves the time spent in the block out of the interval."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._excluded += time.perf_counter() - start

    def add(self, batch: Mapping[str, np.ndarray], cost: StepCost | None) -> None:
        """Counts one step on `batch` (host NumPy: its mask is counted without a device
        round trip) whose compiled step costs `cost` (None: unknown)."""
        self._samples += int(np.count_nonzero(batch["audio_mask"]))
        self._steps += 1
        if cost is None:
            self._unknown_cost = True
        else:
            self._costs.append(cost)

    def read(self) -> dict[str, float]:
        """The interval's figures (all processes' audio together), then restarts.

        Returns:
          `audio_sec_per_sec`; `flops_per_step` (mean over the interval's steps, which may
          differ by bucket shape) when XLA counted every step; `mfu` when also the device's
          peak is known.
        """
        samples = float(self._samples)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            samples = float(np.sum(multihost_utils.process_allgather(np.float64(samples))))
        elapsed = time.perf_counter() - self._since - self._excluded
        out = {"audio_sec_per_sec": samples / SAMPLE_RATE / elapsed if elapsed > 0 else np.nan}
        if self._steps and not self._unknown_cost and elapsed > 0:
            flops = sum(c.flops for c in self._costs)
            out["flops_per_step"] = flops / self._steps
            peaks = {c.peak_per_device for c in self._costs}
            devices = {c.num_devices for c in self._costs}
            if len(peaks) == 1 and None not in peaks and len(devices) == 1:
                out["mfu"] = mfu(flops / self._steps, self._steps / elapsed, *peaks, *devices)
        self.restart()
        return out
