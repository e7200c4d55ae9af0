"""The regression head's BatchNorm follows torch.nn.BatchNorm1d (running stats and outputs)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from papt_jax.models.heads import RegressionHead, TorchBatchNorm

FEATURES = 5


def _batches(rng, sizes):
    return [(rng.standard_normal((n, FEATURES)) * 3 + 1).astype(np.float32) for n in sizes]


def _apply_bn(variables, x, train, mask=None):
    out, updates = TorchBatchNorm().apply(
        variables, jnp.asarray(x), use_running_average=not train, mask=mask, mutable=["batch_stats"]
    )
    return np.asarray(out), {**variables, **updates}


@pytest.mark.slow
def test_running_stats_and_outputs_equal_torch_batchnorm1d():
    rng = np.random.default_rng(0)
    batches = _batches(rng, (8, 8, 3, 8))
    variables = TorchBatchNorm().init(jax.random.key(0), jnp.zeros((2, FEATURES)), True)
    torch_bn = torch.nn.BatchNorm1d(FEATURES)
    # Non-trivial affine parameters on both sides.
    scale = rng.uniform(0.5, 2.0, FEATURES).astype(np.float32)
    bias = rng.standard_normal(FEATURES).astype(np.float32)
    variables = {"params": {"scale": scale, "bias": bias}, "batch_stats": variables["batch_stats"]}
    with torch.no_grad():
        torch_bn.weight.copy_(torch.from_numpy(scale))
        torch_bn.bias.copy_(torch.from_numpy(bias))
    torch_bn.train()
    for x in batches:
        ours, variables = _apply_bn(variables, x, train=True)
        theirs = torch_bn(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
        stats = variables["batch_stats"]
        np.testing.assert_allclose(stats["mean"], torch_bn.running_mean.numpy(), atol=1e-6)
        np.testing.assert_allclose(stats["var"], torch_bn.running_var.numpy(), rtol=1e-6)
    # Flax's own nn.BatchNorm (biased running variance) ends up measurably elsewhere, so
    # the comparison above can tell the two conventions apart.
    flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    flax_vars = flax_bn.init(jax.random.key(0), jnp.zeros((2, FEATURES)))
    for x in batches:
        _, updates = flax_bn.apply(flax_vars, jnp.asarray(x), mutable=["batch_stats"])
        flax_vars = {**flax_vars, **updates}
    gap = np.abs(np.asarray(flax_vars["batch_stats"]["var"]) / torch_bn.running_var.numpy() - 1)
    assert gap.max() > 0.01, gap
    torch_bn.eval()
    x = _batches(rng, (6,))[0]
    ours, _ = _apply_bn(variables, x, train=False)
    np.testing.assert_allclose(ours, torch_bn(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_padding_rows_stay_out_of_batch_statistics():
    rng = np.random.default_rng(1)
    real = _batches(rng, (5,))[0]
    padded = np.concatenate([real, np.full((3, FEATURES), 1e3, np.float32)])
    mask = jnp.asarray([True] * 5 + [False] * 3)
    init = TorchBatchNorm().init(jax.random.key(0), jnp.zeros((2, FEATURES)), True)
    ours_padded, with_mask = _apply_bn(init, padded, train=True, mask=mask)
    ours_real, without_padding = _apply_bn(init, real, train=True)
    np.testing.assert_allclose(ours_padded[:5], ours_real, atol=1e-6)
    for a, b in zip(
        jax.tree.leaves(with_mask["batch_stats"]),
        jax.tree.leaves(without_padding["batch_stats"]),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # One real row: PyTorch would refuse to train; the running statistics stay put.
    one = jnp.asarray([True] + [False] * 7)
    _, after_one = _apply_bn(init, padded, train=True, mask=one)
    for a, b in zip(
        jax.tree.leaves(after_one["batch_stats"]), jax.tree.leaves(init["batch_stats"]), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def _torch_head(params):
    dims = [params["dense_0"]["kernel"].shape[0], 128, 32]
    layers = []
    for i in range(2):
        dense = torch.nn.Linear(dims[i], dims[i + 1])
        bn = torch.nn.BatchNorm1d(dims[i + 1])
        with torch.no_grad():
            dense.weight.copy_(torch.tensor(np.array(params[f"dense_{i}"]["kernel"]).T))
            dense.bias.copy_(torch.tensor(np.array(params[f"dense_{i}"]["bias"])))
        layers += [dense, torch.nn.ReLU(), bn]
    out = torch.nn.Linear(32, 1)
    with torch.no_grad():
        out.weight.copy_(torch.tensor(np.array(params["output"]["kernel"]).T))
        out.bias.copy_(torch.tensor(np.array(params["output"]["bias"])))
    return torch.nn.Sequential(*layers, out)


@pytest.mark.slow
def test_regression_head_matches_torch_in_train_and_eval_mode():
    rng = np.random.default_rng(2)
    head = RegressionHead(dropout=0.0)
    dim = 16
    variables = head.init(jax.random.key(3), jnp.zeros((2, dim)), train=False)
    # Checkpoint layout unchanged from Flax's nn.BatchNorm.
    assert set(variables["batch_stats"]["batch_norm_0"]) == {"mean", "var"}
    assert set(variables["params"]["batch_norm_1"]) == {"scale", "bias"}
    torch_head = _torch_head(variables["params"])
    torch_head.train()
    for x in (rng.standard_normal((8, dim)).astype(np.float32) for _ in range(3)):
        ours, updates = head.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
        variables = {**variables, **updates}
        theirs = torch_head(torch.from_numpy(x)).detach().numpy()[:, 0]
        np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-5)
    for i, layer in enumerate((torch_head[2], torch_head[5])):
        stats = variables["batch_stats"][f"batch_norm_{i}"]
        np.testing.assert_allclose(stats["mean"], layer.running_mean.numpy(), atol=1e-6)
        np.testing.assert_allclose(stats["var"], layer.running_var.numpy(), rtol=1e-5, atol=1e-7)
    torch_head.eval()
    x = rng.standard_normal((4, dim)).astype(np.float32)
    ours = head.apply(variables, jnp.asarray(x), train=False)
    theirs = torch_head(torch.from_numpy(x)).detach().numpy()[:, 0]
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-5)
