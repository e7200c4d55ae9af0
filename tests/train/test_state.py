"""The optimiser: fairseq's HuBERT recipe through optax equals torch.optim.AdamW + clipping."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from papt_jax.train.pretrain import FAIRSEQ_HUBERT_LARGE_ADAM, PretrainSettings
from papt_jax.train.state import make_optimizer, warmup_linear_schedule

PEAK_LR = 1e-2
TOTAL_STEPS = 8
WARMUP = 0.25


def _params(rng):
    return {
        "dense": {"kernel": rng.standard_normal((3, 4)), "bias": rng.standard_normal(4)},
        "scale": rng.standard_normal(2),
    }


def _grads(rng, step):
    # Alternating gradient sizes: the global norm (about 30 or 0.3) is clipped on even
    # steps and left alone on odd ones.
    size = 10.0 if step % 2 == 0 else 0.1
    return jax.tree.map(lambda p: size * rng.standard_normal(p.shape), _params(rng))


def _torch_run(params, grads_per_step, recipe, schedule):
    leaves, treedef = jax.tree.flatten(params)
    tensors = [torch.nn.Parameter(torch.tensor(x, dtype=torch.float32)) for x in leaves]
    opt = torch.optim.AdamW(
        tensors,
        lr=PEAK_LR,
        betas=(recipe["adam_b1"], recipe["adam_b2"]),
        eps=recipe["adam_eps"],
        weight_decay=recipe["weight_decay"],
    )
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: float(schedule(k)) / PEAK_LR)
    history = []
    for grads in grads_per_step:
        for t, g in zip(tensors, jax.tree.leaves(grads), strict=True):
            t.grad = torch.tensor(g, dtype=torch.float32)
        torch.nn.utils.clip_grad_norm_(tensors, recipe["clip_norm"])
        opt.step()
        lr_sched.step()
        history.append(jax.tree.unflatten(treedef, [t.detach().numpy().copy() for t in tensors]))
    return history


def _optax_run(params, grads_per_step, tx):
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    state = tx.init(params)
    history = []
    for grads in grads_per_step:
        grads = jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), grads)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        history.append(jax.device_get(params))
    return history


@pytest.mark.slow
def test_recipe_update_equals_torch_adamw_with_clipping():
    rng = np.random.default_rng(0)
    params = _params(rng)
    grads_per_step = [_grads(rng, step) for step in range(TOTAL_STEPS)]
    recipe = FAIRSEQ_HUBERT_LARGE_ADAM
    assert recipe == {
        "adam_b1": 0.9,
        "adam_b2": 0.98,
        "adam_eps": 1e-6,
        "weight_decay": 0.01,
        "clip_norm": 1.0,
    }
    schedule = warmup_linear_schedule(PEAK_LR, TOTAL_STEPS, WARMUP)
    tx = make_optimizer(
        PEAK_LR,
        TOTAL_STEPS,
        WARMUP,
        weight_decay=recipe["weight_decay"],
        clip_norm=recipe["clip_norm"],
        b1=recipe["adam_b1"],
        b2=recipe["adam_b2"],
        eps=recipe["adam_eps"],
    )
    ours = _optax_run(params, grads_per_step, tx)
    theirs = _torch_run(params, grads_per_step, recipe, schedule)
    moved = False
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_allclose(x, y, atol=1e-6, rtol=0, err_msg=f"step {step}")
        moved |= any(
            not np.allclose(x, p)
            for x, p in zip(jax.tree.leaves(a), jax.tree.leaves(params), strict=True)
        )
    assert moved  # the comparison is not between two frozen parameter sets


@pytest.mark.slow
def test_pretrain_run_builds_the_stated_optimizer():
    recipe = FAIRSEQ_HUBERT_LARGE_ADAM
    # The optimiser fields have no defaults: leaving one out is an error.
    with pytest.raises(TypeError, match="adam_b2"):
        PretrainSettings(
            epochs=1,
            peak_lr=PEAK_LR,
            warmup_fraction=WARMUP,
            **{k: v for k, v in recipe.items() if k != "adam_b2"},
        )
    run = PretrainSettings(
        epochs=1,
        peak_lr=PEAK_LR,
        warmup_fraction=WARMUP,
        log_every=1,
        stop_after_steps=0,
        checkpoint_every_minutes=0.0,
        seed=0,
        accumulate_steps=1,
        param_sharding="replicated",
        **recipe,
    )
    rng = np.random.default_rng(1)
    params = _params(rng)
    grads_per_step = [_grads(rng, step) for step in range(3)]
    direct = make_optimizer(
        PEAK_LR,
        TOTAL_STEPS,
        WARMUP,
        weight_decay=0.01,
        clip_norm=1.0,
        b1=0.9,
        b2=0.98,
        eps=1e-6,
    )
    for a, b in zip(
        _optax_run(params, grads_per_step, run.optimizer(TOTAL_STEPS)),
        _optax_run(params, grads_per_step, direct),
        strict=True,
    ):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)


def test_finetuning_default_is_torch_adam():
    rng = np.random.default_rng(2)
    params = _params(rng)
    grads_per_step = [_grads(rng, step) for step in range(3)]
    ours = _optax_run(
        params, grads_per_step, make_optimizer(1e-3, 10, schedule="constant", clip_norm=None)
    )
    leaves, treedef = jax.tree.flatten(params)
    tensors = [torch.nn.Parameter(torch.tensor(x, dtype=torch.float32)) for x in leaves]
    opt = torch.optim.Adam(tensors, lr=1e-3)
    for step, grads in enumerate(grads_per_step):
        for t, g in zip(tensors, jax.tree.leaves(grads), strict=True):
            t.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
        for x, t in zip(jax.tree.leaves(ours[step]), tensors, strict=True):
            np.testing.assert_allclose(x, t.detach().numpy(), atol=1e-6, rtol=0)


def test_bad_optimizer_settings():
    with pytest.raises(ValueError, match="b2"):
        make_optimizer(1e-3, 10, b2=1.0)
    with pytest.raises(ValueError, match="eps > 0"):
        make_optimizer(1e-3, 10, eps=0.0)
