"""Benchmark: the Flax HuBERT encoder and its train steps against PyTorch `transformers`.

Run:
  /work/venv/bin/python benchmarks/encoder.py --quick                 # base, B=2, 2 s
  /work/venv/bin/python benchmarks/encoder.py --quick --family all --parts forward,finetune
  /work/venv/bin/python benchmarks/encoder.py --model base --batch 4 --seconds 4
  /work/venv/bin/python benchmarks/encoder.py --quick --dtype bfloat16
  /work/venv/bin/python benchmarks/encoder.py --quick --profile /tmp/prof --parts finetune
  /work/venv/bin/python benchmarks/encoder.py --quick --remat dots_saveable --accumulate 2
  /work/venv/bin/python benchmarks/encoder.py --compile_times    # cold compiles, own processes

Three workloads, each on both sides with the same shapes:

- `forward`: the encoder alone in inference mode (jitted `HubertModel` vs
  `transformers.HubertModel` in `eval()` under `torch.no_grad()`).
- `finetune`: one fine-tuning step: encoder + masked mean pooling + the paper's regression
  head (Linear128-ReLU-BN-Dropout-Linear32-ReLU-BN-Dropout-Linear1), loss 1 - CCC,
  backward, global-norm clipping at 10 and Adam; the CNN feature extractor is frozen on
  both sides. Ours is `papt_jax.train.finetune.make_train_step`.
- `pretrain`: one masked-prediction step: encoder with masked frames replaced by the
  learned mask embedding, `final_proj`, cosine logits / 0.1 against 500 label
  embeddings, cross-entropy on masked frames, clipping and Adam. Ours is
  `papt_jax.train.pretrain.make_train_step` (feature penalty weight 0 on both sides, as
  in fairseq's base recipe); it draws the span masks on the device inside the step,
  while the PyTorch side gets a mask drawn with NumPy outside the timed region.

`--family` (comma-separated, or `all`) runs the same workloads for each encoder family in
one process: ours is the family's preset of `--model`'s size (`wavlm-base`, ...; wav2vec2's
`large` is its stable-layer-norm `wav2vec2-large-lv60`), theirs transformers' `Wav2Vec2Model`,
`WavLMModel`, `Data2VecAudioModel` or `HubertModel` of the same config.

The two sides run interleaved (JAX step, PyTorch step, JAX step, ...) so that load from
other jobs on a shared machine hits both alike; the ratio PyTorch/JAX from one run is
the figure to read. Compile time (the first call, which traces, lowers and compiles) is
reported apart from the steady state (median over `--steps` calls after `--warmup`).
PyTorch gets `torch.set_num_threads(--threads)` (default: every core); XLA's CPU
backend uses every core on its own.

On a GPU host: the PyTorch side runs on `--torch_device` (default `cuda` when the installed
torch sees a GPU; the pinned requirements install torch's CPU build, so install a CUDA build
there) and each of its steps ends with `torch.cuda.synchronize()`; it stays fp32 with
`--dtype bfloat16`. `--remat POLICY` recomputes layer activations in the backward pass
('full' when given alone; PyTorch: gradient checkpointing, always full). `--unrolled` runs
the unrolled layer stack instead of the scanned one. `--accumulate K` splits the batch into K
micro-batches per step (PyTorch: K forward/backward passes, one optimizer step; our
fine-tuning step does one more forward per micro-batch, for the whole batch's 1 - CCC).
`--devices N --param_sharding fsdp` shards parameters and optimiser state over N devices
(JAX only).

`--compile_times` measures cold compiles instead: the pre-training and fine-tuning steps
of `--compile_models` (default base and large), scanned and unrolled, each lowered and
compiled from abstract shapes in a fresh process with no persistent compilation cache
(`benchmarks/memory.py`'s `compile_step`), at `--batch` x `--seconds`.
The table adds XLA's FLOPs per JAX step (cost analysis of the compiled step) and, where the
device's peak is known (`train.throughput.PEAK_FLOPS`), the JAX step's MFU: against the bf16
peak for `--dtype bfloat16`, the TF32 peak for fp32. The CUDA path has not been run: no GPU
was lent to this project's sessions so far.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from torch_device import check_torch_device  # benchmarks/torch_device.py, beside this file

from papt_jax.convert.hf_config import to_hf_config
from papt_jax.data.audio import SAMPLE_RATE
from papt_jax.models import HubertModel, get_preset
from papt_jax.models.config import HubertConfig
from papt_jax.models.heads import PretrainHeadConfig
from papt_jax.models.tasks import HubertForPretraining, HubertForRegression
from papt_jax.train import finetune, pretrain, sharding
from papt_jax.train.state import create_state, make_optimizer
from papt_jax.train.throughput import mfu, peak_flops, step_cost

NUM_CLUSTERS = 500
FINAL_DIM = 256
CLIP_NORM = 10.0
LEARNING_RATE = 5e-5
PARTS = ("forward", "finetune", "pretrain")
# Trace events that wrap the XLA ops rather than being ones.
RUNTIME_EVENTS = ("ThunkExecutor", "PjitFunction", "trace", "TraceMe", "Execute")


@dataclasses.dataclass
class Timing:
    """Wall-clock seconds of one workload on one side."""

    first: float
    steady: list[float]

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(self.steady)


# ----------------------------------------------------------------------------- inputs


def make_batch(cfg: HubertConfig, batch: int, samples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch of noise waveforms; the last row is 3/4 long so masking paths run.

    Returns:
      audio (batch, samples), audio_mask, speaker, arousal, valence, example_mask and
      targets (batch, frames) of random cluster ids.
    """
    rs = np.random.RandomState(seed)
    audio = 0.1 * rs.randn(batch, samples).astype(np.float32)
    mask = np.ones((batch, samples), bool)
    mask[-1, (3 * samples) // 4 :] = False
    frames = cfg.num_frames(samples)
    return {
        "audio": np.where(mask, audio, 0).astype(np.float32),
        "audio_mask": mask,
        "speaker": np.zeros(batch, np.int32),
        "arousal": rs.uniform(1, 7, batch).astype(np.float32),
        "valence": rs.uniform(1, 7, batch).astype(np.float32),
        "example_mask": np.ones(batch, bool),
        "targets": rs.randint(0, NUM_CLUSTERS, (batch, frames)).astype(np.int32),
    }


def span_mask(frames: int, batch: int, rs: np.random.RandomState) -> np.ndarray:
    """(batch, frames) bool: HuBERT-like spans of 10 frames covering about half the frames."""
    mask = np.zeros((batch, frames), bool)
    starts = max(1, int(0.065 * frames))
    for row in range(batch):
        for s in rs.choice(max(frames - 10, 1), starts, replace=False):
            mask[row, s : s + 10] = True
    return mask


# ----------------------------------------------------------------------------- JAX side


def block(tree):
    return jax.block_until_ready(tree)


@dataclasses.dataclass(frozen=True)
class JaxOptions:
    """How the JAX side trains: micro-batches per step, mesh size, parameter sharding."""

    accumulate: int = 1
    devices: int = 1
    param_sharding: str = "replicated"


def repeated_step(step, state, batch, mesh):
    """A no-argument callable taking one train step on the same batch, carrying the state
    (the step donates it) from call to call."""
    holder = {"state": state}
    device_batch = sharding.shard_batch(batch, mesh)
    rng = jax.random.PRNGKey(1)

    def run():
        holder["state"], metrics = step(holder["state"], device_batch, rng)
        block(metrics)

    # XLA's FLOPs of the compiled step, for MFU. The first call reuses this compilation, so
    # its time (`compile_s`) is added back to the first call's in the table.
    start = time.perf_counter()
    run.cost = step_cost(step, holder["state"], device_batch, rng)
    run.compile_s = time.perf_counter() - start
    return run


def jax_forward(cfg: HubertConfig, batch, mesh, options: JaxOptions):
    """Returns a no-argument callable running one jitted encoder forward."""
    del options  # inference: no optimiser state, no micro-batches
    model = HubertModel(cfg)
    audio = jnp.asarray(batch["audio"])
    mask = jnp.asarray(batch["audio_mask"])
    params = jax.jit(model.init)(jax.random.PRNGKey(0), audio[:1], mask[:1])["params"]
    params = sharding.replicate(params, mesh)
    apply = jax.jit(lambda p, a, m: model.apply({"params": p}, a, m).last_hidden_state)
    return lambda: block(apply(params, audio, mask))


def jax_finetune(cfg: HubertConfig, batch, mesh, options: JaxOptions):
    """Returns a no-argument callable running one jitted fine-tuning step."""
    model = HubertForRegression(cfg, freeze_feature_extractor=True)
    variables = finetune.init_variables(model, jax.random.PRNGKey(0))
    tx = make_optimizer(
        LEARNING_RATE,
        1000,
        schedule="constant",
        clip_norm=CLIP_NORM,
        params=variables["params"],
        frozen_prefixes=("hubert/feature_extractor",),
    )
    state, shardings = create_state(
        variables["params"], tx, mesh, options.param_sharding, variables["batch_stats"]
    )
    step = finetune.make_train_step(
        model, finetune.LabelScaling("none"), mesh, None, options.accumulate, shardings
    )
    return repeated_step(step, state, finetune.training_batch(batch, "arousal"), mesh)


def jax_pretrain(cfg: HubertConfig, batch, mesh, options: JaxOptions):
    """Returns a no-argument callable running one jitted pre-training step."""
    model = HubertForPretraining(cfg, PretrainHeadConfig(FINAL_DIM, NUM_CLUSTERS))
    params = pretrain.init_params(model, jax.random.PRNGKey(0))
    tx = make_optimizer(LEARNING_RATE, 1000, schedule="constant", clip_norm=CLIP_NORM)
    state, shardings = create_state(params, tx, mesh, options.param_sharding)
    loss_cfg = pretrain.PretrainLossConfig(mask_prob=0.65, mask_length=10, features_pen_weight=0.0)
    step = pretrain.make_train_step(model, loss_cfg, mesh, options.accumulate, shardings)
    return repeated_step(step, state, batch, mesh)


# ----------------------------------------------------------------------------- PyTorch side


# transformers' encoder class of each family.
TORCH_MODELS = {
    "hubert": "HubertModel",
    "wav2vec2": "Wav2Vec2Model",
    "wavlm": "WavLMModel",
    "data2vec_audio": "Data2VecAudioModel",
}
FAMILIES = tuple(TORCH_MODELS)
# Our preset of each family for --model where it is not `{family}-{size}`.
FAMILY_PRESETS = {
    "wav2vec2": {"large": "wav2vec2-large-lv60"},
}


def preset_name(family: str, size: str) -> str:
    """The preset benchmarked for `family` at `size` ('base', 'large', 'small')."""
    if family == "hubert":
        return size
    return FAMILY_PRESETS.get(family, {}).get(size, f"{family.replace('_', '-')}-{size}")


def torch_encoder(cfg: HubertConfig, masked: bool = False) -> torch.nn.Module:
    """The HF encoder; `masked` creates `masked_spec_embed` for explicit frame masks.

    HF only creates the mask embedding when `mask_time_prob > 0`; with explicit
    `mask_time_indices` it never draws masks of its own, so the value is irrelevant.
    """
    values = to_hf_config(cfg)
    values.update(
        apply_spec_augment=masked, mask_time_prob=0.05 if masked else 0.0, mask_feature_prob=0.0
    )
    model_cls = getattr(transformers, TORCH_MODELS[cfg.family])
    encoder = model_cls(model_cls.config_class(**values))
    if cfg.remat != "none":  # the counterpart of our per-layer remat
        encoder.gradient_checkpointing_enable()
    return encoder


def frame_mask_torch(encoder: torch.nn.Module, audio_mask: torch.Tensor, frames: int):
    # A private helper of transformers, but it is what the encoder itself uses.
    return encoder._get_feature_vector_attention_mask(frames, audio_mask.long()).bool()


class TorchRegressor(torch.nn.Module):
    """HF encoder + masked mean pooling + the paper's regression head."""

    def __init__(self, cfg: HubertConfig, dropout: float = 0.1):
        super().__init__()
        self.encoder = torch_encoder(cfg)
        layers, width = [], cfg.hidden_size
        for out in (128, 32):
            layers += [
                torch.nn.Linear(width, out),
                torch.nn.ReLU(),
                torch.nn.BatchNorm1d(out),
                torch.nn.Dropout(dropout),
            ]
            width = out
        self.head = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))

    def forward(self, audio, audio_mask):
        hidden = self.encoder(audio, attention_mask=audio_mask.long()).last_hidden_state
        frames = frame_mask_torch(self.encoder, audio_mask, hidden.shape[1])[..., None].float()
        pooled = (hidden * frames).sum(1) / frames.sum(1).clamp(min=1.0)
        return self.head(pooled)[:, 0]


def torch_ccc_loss(pred, label):
    pm, lm = pred.mean(), label.mean()
    cov = ((pred - pm) * (label - lm)).mean()
    return 1.0 - 2 * cov / (pred.var(unbiased=False) + label.var(unbiased=False) + (pm - lm) ** 2)


class TorchPretrainer(torch.nn.Module):
    """HF encoder + fairseq's final_proj and cosine logits against label embeddings."""

    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.encoder = torch_encoder(cfg, masked=True)
        self.final_proj = torch.nn.Linear(cfg.hidden_size, FINAL_DIM)
        self.label_embs = torch.nn.Parameter(torch.rand(NUM_CLUSTERS, FINAL_DIM))

    def forward(self, audio, audio_mask, mask_time, targets):
        hidden = self.encoder(
            audio, attention_mask=audio_mask.long(), mask_time_indices=mask_time
        ).last_hidden_state
        proj = self.final_proj(hidden)
        # Cosine similarity as normalised matmul (what fairseq's broadcast computes),
        # which avoids materialising a (batch, frames, clusters, dim) tensor.
        unit_proj = proj / proj.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        unit_embs = self.label_embs / self.label_embs.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        logits = unit_proj @ unit_embs.T / 0.1
        frames = frame_mask_torch(self.encoder, audio_mask, hidden.shape[1])
        chosen = mask_time & frames
        return torch.nn.functional.cross_entropy(logits[chosen], targets[chosen])


# Where the PyTorch side runs: set by main from --torch_device ("cuda" when a GPU build of
# torch sees one, else "cpu"). The pinned requirements install torch's CPU build.
TORCH_DEVICE = torch.device("cpu")


def _on_device(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).to(TORCH_DEVICE)


def _sync() -> None:
    """Waits for queued GPU work, so a step's time is its own (no-op on the CPU)."""
    if TORCH_DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _torch_step(model, loss_fn, accumulate: int):
    """One optimizer step from `accumulate` micro-batches (`loss_fn(j)`: micro-batch j's loss),
    the usual PyTorch accumulation: a backward pass each, gradients summed in place."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=LEARNING_RATE)

    def run():
        opt.zero_grad(set_to_none=True)
        for j in range(accumulate):
            (loss_fn(j) / accumulate).backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP_NORM)
        opt.step()
        _sync()

    return run


def _micro(array: np.ndarray, accumulate: int) -> list[torch.Tensor]:
    return [_on_device(np.ascontiguousarray(a)) for a in np.split(array, accumulate)]


def torch_forward(cfg: HubertConfig, batch, accumulate: int):
    del accumulate  # inference
    encoder = torch_encoder(cfg).eval().to(TORCH_DEVICE)
    audio = _on_device(batch["audio"])
    mask = _on_device(batch["audio_mask"]).long()

    def run():
        with torch.no_grad():
            encoder(audio, attention_mask=mask)
        _sync()

    return run


def torch_finetune(cfg: HubertConfig, batch, accumulate: int):
    model = TorchRegressor(cfg).train().to(TORCH_DEVICE)
    model.encoder.feature_extractor._freeze_parameters()
    audio, mask, label = (_micro(batch[k], accumulate) for k in ("audio", "audio_mask", "arousal"))
    return _torch_step(
        model, lambda j: torch_ccc_loss(model(audio[j], mask[j]), label[j]), accumulate
    )


def torch_pretrain(cfg: HubertConfig, batch, accumulate: int):
    model = TorchPretrainer(cfg).train().to(TORCH_DEVICE)
    targets = batch["targets"].astype(np.int64)
    mask_time = span_mask(targets.shape[1], targets.shape[0], np.random.RandomState(0))
    audio, mask, targets, mask_time = (
        _micro(x, accumulate) for x in (batch["audio"], batch["audio_mask"], targets, mask_time)
    )
    return _torch_step(
        model, lambda j: model(audio[j], mask[j], mask_time[j], targets[j]), accumulate
    )


# ----------------------------------------------------------------------------- timing


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_interleaved(jax_fn, torch_fn, warmup: int, steps: int) -> tuple[Timing, Timing]:
    """First call of each side, `warmup` untimed pairs, then `steps` timed pairs."""
    jax_first = timed(jax_fn)
    torch_first = timed(torch_fn)
    for _ in range(warmup):
        jax_fn()
        torch_fn()
    jax_times, torch_times = [], []
    for _ in range(steps):
        jax_times.append(timed(jax_fn))
        torch_times.append(timed(torch_fn))
    return Timing(jax_first, jax_times), Timing(torch_first, torch_times)


def capture_profile(jax_fn, directory: str, steps: int = 3) -> Path | None:
    """Traces `steps` steady calls with jax.profiler; returns the Perfetto trace file."""
    with jax.profiler.trace(directory, create_perfetto_trace=True):
        for _ in range(steps):
            jax_fn()
    found = sorted(Path(directory).rglob("*.trace.json.gz"), key=os.path.getmtime)
    return found[-1] if found else None


def top_ops(trace_file: Path, count: int = 12) -> list[tuple[str, float, float]]:
    """(name, total ms, share of all op time) of the most expensive XLA op events."""
    with gzip.open(trace_file, "rt") as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    totals: Counter[str] = Counter()
    for event in events:
        name = event.get("name", "?")
        # Python frames ('$file:line fn') and runtime wrappers enclose the XLA ops.
        if name.startswith("$") or any(w in name for w in RUNTIME_EVENTS):
            continue
        if event.get("ph") == "X" and "dur" in event:
            totals[name] += float(event["dur"])
    total = sum(totals.values()) or 1.0
    return [(name, us / 1e3, us / total) for name, us in totals.most_common(count)]


# ----------------------------------------------------------------------------- main


WORKLOADS = {
    "forward": (jax_forward, torch_forward),
    "finetune": (jax_finetune, torch_finetune),
    "pretrain": (jax_pretrain, torch_pretrain),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("base", "large", "small", "tiny"), default="base")
    parser.add_argument(
        "--family", default="hubert", help=f"comma-separated of {FAMILIES}, or 'all'"
    )
    parser.add_argument("--batch", type=int, default=4, help="utterances per batch")
    parser.add_argument("--seconds", type=float, default=4.0, help="audio length per utterance")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after the first")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument(
        "--remat",
        nargs="?",
        const="full",
        default="none",
        help="remat policy ('full' when given alone; PyTorch: gradient checkpointing)",
    )
    parser.add_argument("--unrolled", action="store_true", help="unrolled, not scanned, layers")
    parser.add_argument("--accumulate", type=int, default=1, help="micro-batches per step")
    parser.add_argument("--devices", type=int, default=1, help="JAX mesh size (data axis)")
    parser.add_argument("--param_sharding", choices=sharding.PARAM_SHARDINGS, default="replicated")
    parser.add_argument(
        "--compile_times", action="store_true", help="cold compile times, scanned vs unrolled"
    )
    parser.add_argument("--compile_models", default="base,large", help="with --compile_times")
    parser.add_argument("--compile_repeats", type=int, default=2, help="with --compile_times")
    parser.add_argument("--compile_one", default=None, help=argparse.SUPPRESS)  # child process
    parser.add_argument(
        "--torch_device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where the PyTorch reference runs (default: cuda when torch sees a GPU)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated workloads")
    parser.add_argument("--quick", action="store_true", help="B=2, 2 s, 3 timed steps")
    parser.add_argument("--profile", default=None, help="write a jax.profiler trace here")
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    parser.add_argument("--check_args", action="store_true", help="check the arguments, exit")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.seconds, args.steps = 2, 2.0, 3
    parts = tuple(p for p in args.parts.split(",") if p)
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown --parts {sorted(unknown)}; choose from {PARTS}")
    if args.batch < 1 or args.seconds <= 0 or args.steps < 1:
        parser.error("--batch, --seconds and --steps must be positive")
    if args.accumulate < 1 or args.devices < 1 or args.compile_repeats < 1:
        parser.error("--accumulate, --devices and --compile_repeats must be positive")
    if args.batch % (args.accumulate * args.devices):
        parser.error(
            f"--batch {args.batch} does not split into {args.accumulate} micro-batches over "
            f"{args.devices} devices"
        )
    if "finetune" in parts and args.batch // args.accumulate < 2:
        parser.error("--parts finetune needs micro-batches of 2 rows at least (BatchNorm)")
    if args.devices > jax.device_count():
        parser.error(f"--devices {args.devices}: only {jax.device_count()} visible")
    try:
        get_preset(args.model, remat=args.remat)
    except ValueError as err:
        parser.error(f"--remat {args.remat!r}: {err}")
    args.compile_models = tuple(m for m in args.compile_models.split(",") if m)
    if set(args.compile_models) - {"base", "large", "small", "tiny"}:
        parser.error(f"--compile_models {args.compile_models}: base, large, small, tiny")
    args.parts = parts
    families = FAMILIES if args.family == "all" else tuple(f for f in args.family.split(",") if f)
    unknown = set(families) - set(FAMILIES)
    if unknown or not families:
        parser.error(f"unknown --family {sorted(unknown)}; choose from {FAMILIES} or 'all'")
    args.families = families
    check_torch_device(parser, args.torch_device)
    return args


def compile_one(args) -> None:
    """Child of `--compile_times`: one cold compile in this fresh process, as JSON."""
    from memory import compile_step  # benchmarks/memory.py, beside this file

    jax.config.update("jax_enable_compilation_cache", False)
    model, part, layers = args.compile_one.split(",")
    cfg = get_preset(model, dtype=args.dtype, scan_layers=layers == "scanned")
    samples = int(args.seconds * SAMPLE_RATE)
    cpu_start = time.process_time()
    lower_s, compile_s, compiled, _ = compile_step(cfg, part, args.batch, samples)
    # CPU seconds of this process (all its threads): far less sensitive than wall time to
    # other jobs on a shared machine.
    cpu_s = time.process_time() - cpu_start
    # The optimised program's size: what XLA compiled, independent of the machine's load.
    instructions = sum(" = " in line for line in compiled.as_text().splitlines())
    times = {"lower_s": lower_s, "compile_s": compile_s, "cpu_s": cpu_s}
    print(json.dumps({**times, "instructions": instructions}))


def _cold_compile(args, model: str, part: str, layers: str, env) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--compile_one"]
    command += [f"{model},{part},{layers}", "--batch", str(args.batch)]
    command += ["--seconds", str(args.seconds), "--dtype", args.dtype]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compile_times(args) -> list[dict]:
    """Cold compile times of both train steps, scanned and unrolled, each in its own process.

    Scanned and unrolled alternate `--compile_repeats` times; the fastest of each is kept
    (on a shared machine, other jobs only ever add time).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    rows = []
    print(
        f"batch={args.batch} seconds={args.seconds} dtype={args.dtype} cpus={os.cpu_count()} "
        f"jax={jax.__version__} device={jax.devices()[0].device_kind}",
        flush=True,
    )
    for model in args.compile_models:
        for part in ("pretrain", "finetune"):
            row = {"model": model, "part": part, "runs": []}
            for _ in range(args.compile_repeats):
                for layers in ("scanned", "unrolled"):
                    times = {"layers": layers, **_cold_compile(args, model, part, layers, env)}
                    row["runs"].append(times)
                    print(
                        f"  {model} {part} {layers}: lower {times['lower_s']:.1f} s, "
                        f"compile {times['compile_s']:.1f} s (CPU {times['cpu_s']:.1f} s), "
                        f"{times['instructions']} HLO instructions",
                        flush=True,
                    )
            for layers in ("scanned", "unrolled"):
                runs = [r for r in row["runs"] if r["layers"] == layers]
                row[layers] = min(runs, key=lambda r: r["lower_s"] + r["compile_s"])
            rows.append(row)
    print()
    print(
        "| model | step | scanned: trace+lower, compile (s) | unrolled: trace+lower, compile (s) "
        "| unrolled / scanned: wall | CPU s scanned / unrolled (ratio) "
        "| HLO instructions scanned / unrolled |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        s, u = r["scanned"], r["unrolled"]
        total = (u["lower_s"] + u["compile_s"]) / (s["lower_s"] + s["compile_s"])
        cpu = [
            min(x["cpu_s"] for x in r["runs"] if x["layers"] == layers)
            for layers in ("scanned", "unrolled")
        ]
        print(
            f"| {r['model']} | {r['part']} | {s['lower_s']:.1f} + {s['compile_s']:.1f} "
            f"| {u['lower_s']:.1f} + {u['compile_s']:.1f} | {total:.1f}x "
            f"| {cpu[0]:.0f} / {cpu[1]:.0f} ({cpu[1] / cpu[0]:.1f}x) "
            f"| {s['instructions']} / {u['instructions']} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return rows


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.check_args:
        print("arguments ok:", " ".join(sys.argv[1:] if argv is None else argv))
        return []
    if args.compile_one:
        return compile_one(args)
    if args.compile_times:
        return compile_times(args)
    global TORCH_DEVICE
    TORCH_DEVICE = torch.device(args.torch_device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    samples = int(args.seconds * SAMPLE_RATE)
    mesh = sharding.make_mesh(args.devices)
    options = JaxOptions(args.accumulate, args.devices, args.param_sharding)
    rows = []
    for family in args.families:
        name = preset_name(family, args.model)
        cfg = get_preset(name, dtype=args.dtype, remat=args.remat, scan_layers=not args.unrolled)
        batch = make_batch(cfg, args.batch, samples)
        print(
            f"family={family} model={name} batch={args.batch} seconds={args.seconds} "
            f"remat={args.remat} layers={'unrolled' if args.unrolled else 'scanned'} "
            f"accumulate={args.accumulate} devices={args.devices} "
            f"param_sharding={args.param_sharding} "
            f"frames={cfg.num_frames(samples)} jax_dtype={args.dtype} torch=float32 "
            f"torch_threads={torch.get_num_threads()} torch_device={TORCH_DEVICE} "
            f"cpus={os.cpu_count()} "
            f"jax={jax.__version__} torch={torch.__version__} "
            f"transformers={transformers.__version__} device={jax.devices()[0].device_kind}",
            flush=True,
        )
        rows += _run_family(family, cfg, batch, mesh, options, args)
    print_table(rows)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return rows


def _run_family(family: str, cfg: HubertConfig, batch, mesh, options, args) -> list[dict]:
    """Every workload of one family, each side interleaved with the other."""
    rows = []
    for part in args.parts:
        make_jax, make_torch = WORKLOADS[part]
        jax_fn = make_jax(cfg, batch, mesh, options)
        torch_fn = make_torch(cfg, batch, args.accumulate)
        jax_t, torch_t = run_interleaved(jax_fn, torch_fn, args.warmup, args.steps)
        jax_t = dataclasses.replace(jax_t, first=jax_t.first + getattr(jax_fn, "compile_s", 0.0))
        row = {
            "family": family,
            "part": part,
            "jax_first_s": jax_t.first,
            "jax_ms": jax_t.median_ms,
            "torch_first_s": torch_t.first,
            "torch_ms": torch_t.median_ms,
            "torch_over_jax": torch_t.median_ms / jax_t.median_ms,
            **_utilisation(getattr(jax_fn, "cost", None), jax_t.median_ms, args.dtype),
            "jax_all_ms": [1e3 * t for t in jax_t.steady],
            "torch_all_ms": [1e3 * t for t in torch_t.steady],
        }
        rows.append(row)
        print(
            f"  {family} {part}: jax {row['jax_ms']:.0f} ms (first {jax_t.first:.1f} s), "
            f"torch {row['torch_ms']:.0f} ms (first {torch_t.first:.1f} s)",
            flush=True,
        )
        if args.profile and part == args.parts[-1]:
            profile_dir = os.path.join(args.profile, family, part)
            trace = capture_profile(jax_fn, profile_dir)
            print(f"profile of {family} {part} written under {profile_dir}")
            if trace is not None:
                print("top events of the trace (total ms over 3 steps, share):")
                for name, ms, share in top_ops(trace):
                    print(f"  {ms:10.1f} ms  {100 * share:5.1f}%  {name[:90]}")
        del jax_fn, torch_fn
    return rows


def _utilisation(cost, ms_per_step: float, dtype: str) -> dict:
    """XLA's FLOPs per step and, where the device's peak is known, the MFU of the JAX step
    against the dense peak for `dtype`. fp32 runs are held to the TF32 tensor-core peak where
    the chip has one (JAX's default precision for fp32 matrix products on NVIDIA GPUs), else
    to the fp32 peak."""
    if cost is None:
        return {"flops_per_step": None, "mfu": None}
    if dtype == "bfloat16":
        peak = peak_flops(cost.device_kind, "bfloat16")
    else:
        peak = peak_flops(cost.device_kind, "tfloat32") or peak_flops(cost.device_kind, "float32")
    steps_per_second = 1000.0 / ms_per_step
    utilisation = (
        None if peak is None else mfu(cost.flops, steps_per_second, peak, cost.num_devices)
    )
    return {"flops_per_step": cost.flops, "mfu": utilisation}


def print_table(rows: list[dict]) -> None:
    print()
    print(
        "| family | workload | JAX compile+first (s) | JAX ms/step | PyTorch first (s) "
        "| PyTorch ms/step | PyTorch/JAX | JAX GFLOP/step | JAX MFU |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        flops = "-" if r.get("flops_per_step") is None else f"{r['flops_per_step'] / 1e9:.0f}"
        util = "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f} %"
        print(
            f"| {r.get('family', 'hubert')} | {r['part']} | {r['jax_first_s']:.1f} | "
            f"{r['jax_ms']:.0f} | "
            f"{r['torch_first_s']:.2f} | {r['torch_ms']:.0f} | {r['torch_over_jax']:.2f}x "
            f"| {flops} | {util} |"
        )


if __name__ == "__main__":
    main()
