"""One process of the multi-host preemption test: `run_loop` over a two-process mesh.

Started by tests/train/test_preemption.py, never imported by it. Run as

  python tests/train/preemption_worker.py --process-id I --num-processes N --port P \
      --workdir DIR --out FILE [--pause-s S]

with one emulated CPU device per process. It trains a linear toy model with the training
loop (checkpoints in DIR/ckpt, shared by the processes), its batch iterator pausing S
seconds per batch (default 0; the run that is signalled pauses, so the signal lands
mid-way), and SIGTERM left to JAX's preemption notifier as `papt_jax.main` does with
several hosts. It prints `batch <position>` as it hands out batches, then `finished` or
`interrupted: <the one-line message>` (exit code 75), and writes the final parameters to
FILE (.npz).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import numpy as np

GLOBAL_BATCH = 4
TOTAL_STEPS = 30
EVAL_EVERY = 10


def global_batch(position: int) -> dict[str, np.ndarray]:
    rs = np.random.RandomState(position % 7)
    x = rs.randn(GLOBAL_BATCH, 4).astype(np.float32)
    return {
        "x": x,
        "y": (x @ np.array([1.0, -2.0, 0.5, 3.0]) + 1.0).astype(np.float32),
        "audio_mask": np.ones((GLOBAL_BATCH, 160), bool),
    }


class LocalRows:
    """This process's rows of every global batch, with a saveable position."""

    def __init__(self, process_id: int, num_processes: int, pause_s: float):
        self.position, self.process_id, self.num_processes = 0, process_id, num_processes
        self.pause_s = pause_s

    def __next__(self):
        batch = global_batch(self.position)
        self.position += 1
        print(f"batch {self.position}", flush=True)
        time.sleep(self.pause_s)
        per = GLOBAL_BATCH // self.num_processes
        rows = slice(self.process_id * per, (self.process_id + 1) * per)
        return {k: v[rows] for k, v in batch.items()}

    def get_state(self):
        return {"position": self.position}

    def set_state(self, state):
        self.position = int(state["position"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--process-id", type=int, required=True)
    parser.add_argument("--num-processes", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--pause-s", type=float, default=0.0)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"localhost:{args.port}",
        num_processes=args.num_processes,
        process_id=args.process_id,
        initialization_timeout=1800,  # a hang guard: loaded machines start slowly
    )

    from papt_jax import interrupts
    from papt_jax.train import sharding
    from papt_jax.train.checkpoint import Checkpoints
    from papt_jax.train.loop import LoopConfig, run_loop
    from papt_jax.train.metric_writer import MetricWriter
    from papt_jax.train.state import TrainState, guarded_update, make_optimizer

    tx = make_optimizer(0.05, TOTAL_STEPS, warmup_fraction=0.1, clip_norm=None)
    params = {"w": np.zeros(4, np.float32), "b": np.zeros((), np.float32)}
    mesh = sharding.make_mesh()
    state = sharding.replicate(
        jax.device_get(TrainState.create(apply_fn=None, params=params, tx=tx)), mesh
    )

    @jax.jit
    def step(state, batch, rng):
        def loss_fn(p):
            return jnp.mean((batch["x"] @ p["w"] + p["b"] - batch["y"]) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        state, _, finite = guarded_update(state, grads, loss)
        return state, {"loss": loss, "finite": finite}

    def local(tree):
        return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), tree)

    def evaluate(state):
        p = local(state.params)
        b = global_batch(0)
        return {"loss": float(np.mean((b["x"] @ p["w"] + p["b"] - b["y"]) ** 2))}

    checkpoints = Checkpoints(f"{args.workdir}/ckpt")
    writer = MetricWriter(f"{args.workdir}/logs")
    try:
        with interrupts.handling((signal.SIGINT,)), interrupts.deferred():
            result = run_loop(
                state=state,
                train_step=step,
                evaluate=evaluate,
                train_iter=LocalRows(args.process_id, args.num_processes, args.pause_s),
                mesh=mesh,
                rng=jax.random.PRNGKey(0),
                checkpoints=checkpoints,
                writer=writer,
                config=LoopConfig(total_steps=TOTAL_STEPS, eval_every=EVAL_EVERY, log_every=5),
                description=f"process {args.process_id}",
            )
    except interrupts.Interrupted as e:
        print(f"interrupted: {e.message()}", flush=True)
        jax.distributed.shutdown()
        sys.exit(interrupts.INTERRUPTED_EXIT_CODE)
    finally:
        writer.close()
    np.savez(args.out, **{k: v for k, v in local(result.state.params).items()})
    print("finished", flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
