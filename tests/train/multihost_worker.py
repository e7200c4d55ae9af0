"""One process of the multi-host test: a few pre-training steps over a global device mesh.

Started by tests/train/test_multihost.py, never imported by it. Run as

  python tests/train/multihost_worker.py --process-id I --num-processes N --port P --out FILE

with `XLA_FLAGS=--xla_force_host_platform_device_count=K` in the environment (K local CPU
devices). With N > 1 the process joins a `jax.distributed` job coordinated on
localhost:P and feeds only its own contiguous 1/N of every global batch to `shard_batch`;
with N = 1 it feeds the whole batch. It writes the final parameters (its local copy of the
replicated state) and the per-step losses to FILE (.npz).
"""

from __future__ import annotations

import argparse

import numpy as np

GLOBAL_BATCH = 8
SAMPLES = 8_000  # 0.5 s -> 24 frames
NUM_CLASSES = 4
STEPS = 3


def global_batch(step: int, frames: int) -> dict[str, np.ndarray]:
    """The step's full batch, identical in every process (seeded by the step)."""
    rs = np.random.RandomState(100 + step)
    audio = 0.3 * rs.randn(GLOBAL_BATCH, SAMPLES).astype(np.float32)
    lengths = rs.randint(SAMPLES // 2, SAMPLES + 1, GLOBAL_BATCH)
    mask = np.arange(SAMPLES)[None] < lengths[:, None]
    return {
        "audio": np.where(mask, audio, 0).astype(np.float32),
        "audio_mask": mask,
        "speaker": rs.randint(0, 4, GLOBAL_BATCH).astype(np.int32),
        "example_mask": np.ones(GLOBAL_BATCH, bool),
        "targets": rs.randint(0, NUM_CLASSES, (GLOBAL_BATCH, frames)).astype(np.int32),
    }


def local_rows(batch: dict[str, np.ndarray], process_id: int, num_processes: int):
    """This process's contiguous share of the global batch rows."""
    per = GLOBAL_BATCH // num_processes
    return {k: v[process_id * per : (process_id + 1) * per] for k, v in batch.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--process-id", type=int, required=True)
    parser.add_argument("--num-processes", type=int, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import jax

    if args.num_processes > 1:
        # Gloo over TCP is JAX's default CPU collective; named so a changed default shows.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"localhost:{args.port}",
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=1800,  # a hang guard: loaded machines start slowly
        )

    from papt_jax.models import get_preset
    from papt_jax.models.heads import PretrainHeadConfig
    from papt_jax.models.tasks import HubertForPretraining
    from papt_jax.train import pretrain, sharding
    from papt_jax.train.state import TrainState, make_optimizer

    assert jax.process_count() == args.num_processes, jax.process_count()
    cfg = get_preset("tiny", num_speakers=4, speaker_fusion="last")
    model = HubertForPretraining(cfg, PretrainHeadConfig(final_dim=16, num_label_rows=NUM_CLASSES))
    # Same seed in every process: the replicated initial state agrees everywhere.
    params = jax.device_get(pretrain.init_params(model, jax.random.PRNGKey(0)))
    tx = make_optimizer(2e-3, 10, warmup_fraction=0.1, clip_norm=10.0)
    state = jax.device_get(TrainState.create(apply_fn=None, params=params, tx=tx))
    initial = {
        jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    }
    mesh = sharding.make_mesh()
    loss_cfg = pretrain.PretrainLossConfig(mask_prob=0.5, mask_length=10, features_pen_weight=0.0)
    step = pretrain.make_train_step(model, loss_cfg, mesh)
    state = sharding.replicate(state, mesh)

    losses = []
    for i in range(STEPS):
        batch = local_rows(
            global_batch(i, cfg.num_frames(SAMPLES)), args.process_id, args.num_processes
        )
        state, metrics = step(state, sharding.shard_batch(batch, mesh), jax.random.PRNGKey(5))
        losses.append(float(np.asarray(metrics["loss"].addressable_data(0))))

    leaves = jax.tree_util.tree_leaves_with_path(state.params)
    arrays = {
        jax.tree_util.keystr(path): np.asarray(leaf.addressable_data(0)) for path, leaf in leaves
    }
    np.savez(
        args.out,
        losses=np.asarray(losses),
        num_devices=np.asarray(jax.device_count()),
        num_processes=np.asarray(jax.process_count()),
        **{f"param:{k}": v for k, v in arrays.items()},
        **{f"init:{k}": v for k, v in initial.items()},
    )
    if args.num_processes > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
