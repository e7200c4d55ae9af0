"""A `RunAssets` of random tiny regressors, for export tests that need no finished run."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from papt_jax.models.config import get_preset
from papt_jax.models.tasks import HubertForRegression
from papt_jax.predict.assets import Regressor, RunAssets
from papt_jax.predict.profiles import Reference

NUM_SPEAKERS = 5


def _perturbed(variables, key):
    """Initial variables plus noise, so no weight is a neutral 0 or 1 (speaker table included)."""
    leaves, treedef = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    noisy = [
        leaf + 0.2 * jax.random.normal(k, leaf.shape, leaf.dtype)
        for leaf, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(treedef, noisy)


@functools.cache
def tiny_assets(
    fusion: str,
    norm: str,
    label_scaling: str = "none",
    intermediate_size: int = 64,
    dimensions: tuple[str, ...] = ("arousal", "valence"),
) -> RunAssets:
    """Regressors (arousal and valence by default) of the 'tiny' preset with `fusion` and
    extractor `norm`. One dimension halves an ONNX conversion's graph (and jax2onnx's time,
    which grows faster than the graph).

    `norm='layer'` is the large models' layout (LayerNorm extractor, pre-LN, waveform
    normalisation); 'group' is the base models' (masked GroupNorm on conv 0, post-LN).
    Cached: tests share one set of weights per layout (nothing modifies them).
    """
    layer = norm == "layer"
    config = get_preset(
        "tiny",
        num_speakers=NUM_SPEAKERS if fusion != "none" else 0,
        speaker_fusion=fusion,
        feat_extract_norm=norm,
        do_stable_layer_norm=layer,
        normalize_waveform=layer,
        conv_bias=layer,
        intermediate_size=intermediate_size,
    )
    model = HubertForRegression(config)
    audio = jnp.zeros((2, 4000))
    speaker = jnp.zeros((2,), jnp.int32) if fusion != "none" else None
    regressors, references = {}, {}
    rng = np.random.default_rng(0)
    init = jax.jit(
        lambda key: _perturbed(model.init(key, audio, jnp.ones((2, 4000), bool), speaker), key)
    )
    for seed, dim in enumerate(dimensions):
        variables = jax.device_get(init(jax.random.key(seed)))
        regressors[dim] = Regressor(dim, config, variables, label_scaling)
        train = np.arange(NUM_SPEAKERS - 1, dtype=np.int32)
        references[dim] = Reference(
            train,
            rng.standard_normal((train.size, config.hidden_size)).astype(np.float32),
            rng.uniform(2, 6, train.size).astype(np.float32),
            rng.uniform(0.3, 1.2, train.size).astype(np.float32),
        )

    def no_original():
        raise AssertionError("the export does not need the original encoder")

    return RunAssets(
        source=None,
        config={"name": f"tiny-{fusion}-{norm}"},
        speakers=tuple(f"s{i}" for i in range(NUM_SPEAKERS)),
        pldc_k=2,
        regressors=regressors,
        references=references,
        load_original=no_original,
    )
