"""Every family equals transformers at the published base and large widths (random weights).

Each test builds transformers' model at a published size (`fixtures.family_files.PUBLISHED`),
converts its weights in memory with the family's table, and runs one short padded batch
of two utterances through the Flax encoder. Every hidden state of each utterance's valid
frames is compared with transformers running that utterance alone, within 1e-4: the Flax
encoder's output does not depend on the padding it was batched with (the group-norm
models' feature extractor, data2vec-audio's positional convs), which PyTorch's does.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from fixtures.family_files import perturbed, published_config

from papt_jax.convert import mapping
from papt_jax.convert.shapes import abstract_params
from papt_jax.convert.sources import classify
from papt_jax.convert.torch_io import RawCheckpoint
from papt_jax.models.config import HubertConfig
from papt_jax.models.hubert import HubertModel
from papt_jax.models.stack import to_layout

TOLERANCE = 1e-4
LENGTHS = (16000, 11123)  # one second, and a row padded by a third of it


def _convert(model) -> tuple[HubertConfig, dict]:
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    raw = RawCheckpoint(state_dict=state, source_format="state", hf_config=model.config.to_dict())
    source = classify(raw, "in memory")
    config = HubertConfig.from_dict({**source.config_values, "family": source.naming.family})
    flat = mapping.torch_to_flax(source.encoder, abstract_params(config), source.naming.rules)
    return config, to_layout(mapping.to_tree(flat), config.scan_layers)


def _worst_difference(model, seed: int = 0) -> float:
    config, params = _convert(model)
    rng = np.random.default_rng(seed)
    audio = np.zeros((len(LENGTHS), max(LENGTHS)), np.float32)
    mask = np.zeros(audio.shape, bool)
    for row, length in enumerate(LENGTHS):
        audio[row, :length] = rng.normal(0, 0.1, length)
        mask[row, :length] = True
    out = jax.jit(
        lambda p, a, m: HubertModel(config).apply({"params": p}, a, m, output_hidden_states=True)
    )(params, jnp.asarray(audio), jnp.asarray(mask))
    worst = 0.0
    for row, length in enumerate(LENGTHS):
        with torch.no_grad():
            ref = model(torch.from_numpy(audio[row : row + 1, :length]), output_hidden_states=True)
        frames = ref.last_hidden_state.shape[1]
        ours = (*out.hidden_states, out.last_hidden_state)
        theirs = (*ref.hidden_states, ref.last_hidden_state)
        assert len(ours) == len(theirs) == config.num_hidden_layers + 2
        for a, b in zip(ours, theirs, strict=True):
            worst = max(worst, float(np.abs(np.asarray(a[row, :frames]) - b[0].numpy()).max()))
    return worst


def _published(family: str, size: str):
    torch.manual_seed(0)
    config = published_config(family, size)
    model_cls = {
        "wav2vec2": "Wav2Vec2Model",
        "wavlm": "WavLMModel",
        "data2vec-audio": "Data2VecAudioModel",
    }[family]
    import transformers

    return perturbed(getattr(transformers, model_cls)(config), scale=0.02)


@pytest.mark.slow
@pytest.mark.parametrize(
    "family, size",
    [
        ("wav2vec2", "base"),
        ("wavlm", "base"),
        ("data2vec-audio", "base"),
        pytest.param("wav2vec2", "large-lv60", marks=pytest.mark.slow),
        pytest.param("wavlm", "large", marks=pytest.mark.slow),
        pytest.param("data2vec-audio", "large", marks=pytest.mark.slow),
    ],
)
def test_published_sizes_equal_transformers(family, size):
    worst = _worst_difference(_published(family, size))
    print(f"{family} {size}: worst |difference| over every hidden state {worst:.2e}")
    assert worst <= TOLERANCE


# ------------------------------------------------- masking and speaker fusion, per family
# Tiny models: what sits above the family pieces (masked frames, speaker fusion) must work
# the same for every family. wav2vec2's pieces are HuBERT's (tests/models/test_hubert.py
# covers its fusion); WavLM is taken in both its layouts across the two tests.
MASKED_FAMILIES = [("wav2vec2", "stable"), ("wavlm", "group"), ("data2vec-audio", "group")]
FUSED_FAMILIES = [("wavlm", "stable"), ("data2vec-audio", "group")]


def _tiny(family: str, layout: str):
    from fixtures.family_files import hf_model, tiny_config

    model = hf_model(family, config=tiny_config(family, layout, mask_time_prob=0.05))
    return (model, *_convert(model))


@pytest.mark.slow
@pytest.mark.parametrize("family, layout", MASKED_FAMILIES)
def test_masked_frames_equal_transformers(family, layout):
    """`mask_time_indices` replaces the same frames by `masked_spec_embed` as transformers."""
    model, config, params = _tiny(family, layout)
    audio = np.random.default_rng(1).normal(0, 0.1, (1, 8000)).astype(np.float32)
    frames = config.num_frames(audio.shape[1])
    masked = np.zeros((1, frames), bool)
    masked[0, 3:9] = masked[0, 15:18] = True
    # One compiled program for both runs (no mask: all False), not ~240 one-primitive ones.
    apply = jax.jit(
        lambda p, a, m: HubertModel(config).apply({"params": p}, a, mask_time_indices=m)
    )
    ours = apply(params, jnp.asarray(audio), jnp.asarray(masked))
    plain = apply(params, jnp.asarray(audio), jnp.zeros_like(masked))
    with torch.no_grad():
        theirs = model(torch.from_numpy(audio), mask_time_indices=torch.from_numpy(masked))
    np.testing.assert_allclose(
        np.asarray(ours.last_hidden_state), theirs.last_hidden_state.numpy(), atol=1e-5
    )
    # The mask did something (so the agreement is not that of two unmasked runs).
    assert not np.allclose(ours.last_hidden_state, plain.last_hidden_state, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("family, layout", FUSED_FAMILIES)
def test_speaker_fusion_works_for_every_family(family, layout):
    """Each fusion on each family: a zero table changes nothing ('last'/'first'), 'last'
    adds exactly the speaker's vector, 'prefix' changes every frame and returns the same
    frames; the scanned and unrolled stacks agree with the prefix token (WavLM's bias then
    covers one more position)."""
    _, config, params = _tiny(family, layout)
    rng = np.random.default_rng(2)
    audio = jnp.asarray(rng.normal(0, 0.1, (2, 8000)).astype(np.float32))
    mask = jnp.asarray(np.arange(8000)[None, :] < np.array([[8000], [5600]]))
    speaker = jnp.asarray([2, 0])
    table = jnp.asarray(rng.normal(0, 1, (3, config.hidden_size)).astype(np.float32))

    # Each model compiled once (its two tables are arguments): five programs, not the
    # ~300 one-primitive ones that applying the models op by op compiles.
    @functools.cache
    def compiled(fusion, scan):
        cfg = config.replace(speaker_fusion=fusion, num_speakers=3, scan_layers=scan)
        return jax.jit(lambda p: HubertModel(cfg).apply({"params": p}, audio, mask, speaker))

    def run(fusion, table, scan=config.scan_layers):
        p = to_layout({**params, "speaker_embedding": {"embedding": table}}, scan)
        return compiled(fusion, scan)(p)

    plain = jax.jit(lambda p: HubertModel(config).apply({"params": p}, audio, mask))(params)
    base, valid = plain.last_hidden_state, np.asarray(plain.frame_mask)[..., None]
    zeros = jnp.zeros_like(table)
    for fusion in ("last", "first"):
        out = run(fusion, zeros).last_hidden_state
        np.testing.assert_allclose(np.asarray(out), np.asarray(base), atol=1e-6)
    added = np.asarray(run("last", table).last_hidden_state - base)
    want = np.broadcast_to(np.asarray(table)[np.asarray(speaker)][:, None, :], added.shape)
    np.testing.assert_allclose(added, want, atol=1e-5)
    first = np.asarray(run("first", table).last_hidden_state)
    assert not np.allclose(first * valid, np.asarray(base) * valid, atol=1e-3)
    prefix = run("prefix", table, scan=True).last_hidden_state
    assert prefix.shape == base.shape
    assert np.isfinite(np.asarray(prefix)).all()
    assert (np.abs(np.asarray(prefix - base)) * valid).max(axis=(1, 2)).min() > 1e-3
    unrolled = run("prefix", table, scan=False).last_hidden_state
    np.testing.assert_allclose(np.asarray(unrolled), np.asarray(prefix), atol=1e-5)
