"""The Flax HuBERT against transformers.HubertModel, and its own guarantees.

Equivalence runs random-weight PyTorch models (every parameter perturbed, so a
swapped scale/bias or a wrong transpose cannot hide behind 1/0 initialisations)
through `load_pytorch` of a saved HF directory.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import HubertConfig as HFConfig
from transformers import HubertModel as HFModel

from papt_jax.convert import abstract_params, load_pytorch
from papt_jax.convert.hf_config import to_hf_config
from papt_jax.models import HubertModel, get_preset

SMALL = dict(
    hidden_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=128,
    conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    # Realistic rates: HF in eval mode and ours with deterministic=True ignore them.
    hidden_dropout=0.1,
    attention_dropout=0.1,
    activation_dropout=0.1,
    feat_proj_dropout=0.1,
)
VARIANTS = {
    "base": dict(conv_bias=False, feat_extract_norm="group", do_stable_layer_norm=False),
    "large": dict(conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True),
}
LONG, SHORT = 8000, 5600  # samples: 24 and 17 frames


def random_hf_model(seed: int, **overrides) -> HFModel:
    torch.manual_seed(seed)
    model = HFModel(HFConfig(**{**SMALL, **overrides})).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


@pytest.fixture(scope="module")
def converted_models(tmp_path_factory):
    """variant -> (HF model, Flax model, Flax params), converted through a saved HF dir."""
    models = {}
    for variant, overrides in VARIANTS.items():
        hf = random_hf_model(0, **overrides)
        path = tmp_path_factory.mktemp(f"hf_{variant}")
        hf.save_pretrained(path)
        model, params = load_pytorch(path)
        # Large-style models normalise waveforms in the model (HF does it outside).
        assert model.config.normalize_waveform == (variant == "large")
        models[variant] = (hf, model, params)
    return models


@pytest.fixture(params=sorted(VARIANTS))
def converted(request, converted_models):
    """(variant, HF model, Flax model, Flax params) for each variant."""
    return (request.param, *converted_models[request.param])


@functools.cache
def _jitted_apply(config):
    """One compiled forward per config and shape: far cheaper than op-by-op dispatch."""
    return jax.jit(
        HubertModel(config).apply, static_argnames=("deterministic", "output_hidden_states")
    )


def forward(config, params, audio, mask=None, **kwargs):
    mask = None if mask is None else jnp.asarray(mask)
    return _jitted_apply(config)({"params": params}, jnp.asarray(audio), mask, **kwargs)


def _normalized(audio, mask):
    """What the HF feature extractor does (over valid samples), so HF sees the same input."""
    out = np.zeros_like(audio)
    for row, valid in enumerate(mask):
        x = audio[row, valid]
        out[row, valid] = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    return out


def _audio(rng, *lengths):
    batch = np.zeros((len(lengths), max(lengths)), np.float32)
    mask = np.zeros(batch.shape, bool)
    for row, length in enumerate(lengths):
        batch[row, :length] = rng.standard_normal(length)
        mask[row, :length] = True
    return batch, mask


@pytest.mark.slow
def test_matches_transformers(converted):
    variant, hf, model, params = converted
    rng = np.random.default_rng(1)
    if variant == "base":
        # HF's GroupNorm averages over padding, so HF base models take unpadded input.
        audio, mask = _audio(rng, LONG, LONG)
        torch_mask = None
        torch_audio = audio
    else:  # A padded batch with attention masks; the model normalises it as HF's extractor.
        audio, mask = _audio(rng, LONG, SHORT)
        torch_mask = torch.tensor(mask)
        torch_audio = _normalized(audio, mask)
    with torch.no_grad():
        ref = hf(torch.tensor(torch_audio), attention_mask=torch_mask, output_hidden_states=True)
    out = forward(model.config, params, audio, mask, output_hidden_states=True)
    frames = np.asarray(out.frame_mask)
    assert frames.sum(1).tolist() == [model.config.num_frames(int(n)) for n in mask.sum(1)], (
        "frame mask disagrees with the conv arithmetic"
    )
    assert len(out.hidden_states) == len(ref.hidden_states) == SMALL["num_hidden_layers"] + 1
    for i, (want, got) in enumerate(zip(ref.hidden_states, out.hidden_states, strict=True)):
        diff = np.abs(want.numpy() - np.asarray(got))[frames].max()
        assert diff <= 1e-4, f"{variant} hidden_states[{i}] differs by {diff}"
    diff = np.abs(ref.last_hidden_state.numpy() - np.asarray(out.last_hidden_state))[frames].max()
    assert diff <= 1e-4, f"{variant} last_hidden_state differs by {diff}"


def test_padding_invariance(converted):
    """An utterance gives the same valid frames alone and padded next to a longer one.

    Base covers the masked GroupNorm, large the in-model waveform normalisation.
    """
    variant, _, model, params = converted
    rng = np.random.default_rng(2)
    batch, mask = _audio(rng, LONG, SHORT)
    alone = forward(model.config, params, batch[1:, :SHORT], output_hidden_states=True)
    padded = forward(model.config, params, batch, mask, output_hidden_states=True)
    n = model.config.num_frames(SHORT)
    assert int(padded.frame_mask[1].sum()) == n == alone.last_hidden_state.shape[1]
    pairs = [(alone.last_hidden_state, padded.last_hidden_state)]
    pairs += list(zip(alone.hidden_states, padded.hidden_states, strict=True))
    for want, got in pairs:
        diff = np.abs(np.asarray(want[0]) - np.asarray(got[1, :n])).max()
        assert diff <= 1e-5, f"{variant}: padded output differs by {diff}"


@pytest.mark.parametrize("preset", ["base", "large"])
def test_parameter_count_matches_transformers(preset):
    config = get_preset(preset)
    with torch.device("meta"):
        hf = HFModel(HFConfig(**to_hf_config(config)))
    want = sum(p.numel() for p in hf.parameters())
    got = sum(int(np.prod(s.shape)) for s in abstract_params(config).values())
    assert got == want
    assert want > (300e6 if preset == "large" else 90e6)


def _small(**changes):
    """The converted base model's config with `changes`."""
    return get_preset("tiny").replace(**{**SMALL, **VARIANTS["base"], **changes})


@pytest.fixture(scope="module")
def speaker_setup(converted_models):
    _, model, params = converted_models["base"]
    assert model.config == _small()
    audio, mask = _audio(np.random.default_rng(3), LONG, SHORT)
    speaker = jnp.asarray([2, 0], jnp.int32)
    table = jax.random.normal(jax.random.key(5), (3, model.config.hidden_size))
    base = forward(model.config, params, audio, mask, output_hidden_states=True)
    return audio, mask, speaker, params, table, base


def _with_table(params, table):
    return {**params, "speaker_embedding": {"embedding": table}}


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["none", "last", "first", "prefix"])
def test_speaker_fusion_shapes(speaker_setup, fusion):
    audio, mask, speaker, params, table, base = speaker_setup
    config = _small(num_speakers=3, speaker_fusion=fusion)
    expected = abstract_params(config)
    frames = config.num_frames(audio.shape[1])
    if fusion == "none":
        # 'none' never uses the table, so the model does not create one; it is the
        # plain encoder, whose output `base` is.
        assert "speaker_embedding/embedding" not in expected
        out = base
    else:
        assert expected["speaker_embedding/embedding"].shape == (3, config.hidden_size)
        out = forward(
            config,
            _with_table(params, table),
            audio,
            mask,
            speaker=speaker,
            output_hidden_states=True,
        )
    assert out.last_hidden_state.shape == (2, frames, config.hidden_size)
    assert out.frame_mask.shape == (2, frames)
    assert all(h.shape == (2, frames, config.hidden_size) for h in out.hidden_states)
    if fusion == "prefix":
        # The prefix token changes what real frames attend to, and is not returned.
        assert not np.allclose(out.last_hidden_state, base.last_hidden_state, atol=1e-3)


@pytest.mark.parametrize("fusion", ["last", "first"])
def test_zero_speaker_table_is_a_no_op(speaker_setup, fusion):
    audio, mask, speaker, params, _, base = speaker_setup
    config = _small(num_speakers=3, speaker_fusion=fusion)
    zeros = jnp.zeros((3, config.hidden_size))
    out = forward(
        config, _with_table(params, zeros), audio, mask, speaker=speaker, output_hidden_states=True
    )
    np.testing.assert_allclose(out.last_hidden_state, base.last_hidden_state, atol=1e-6)


def test_last_fusion_adds_exactly_the_embedding(speaker_setup):
    audio, mask, speaker, params, table, base = speaker_setup
    config = _small(num_speakers=3, speaker_fusion="last")
    out = forward(
        config, _with_table(params, table), audio, mask, speaker=speaker, output_hidden_states=True
    )
    added = np.asarray(out.last_hidden_state - base.last_hidden_state)
    want = np.broadcast_to(np.asarray(table)[np.asarray(speaker)][:, None, :], added.shape)
    np.testing.assert_allclose(added, want, atol=1e-5)
    # Hidden states never include the 'last' speaker vector.
    for got, ref in zip(out.hidden_states, base.hidden_states, strict=True):
        np.testing.assert_allclose(got, ref, atol=1e-6)


def test_speaker_fusion_needs_speaker_ids(speaker_setup):
    audio, mask, _, params, table, _ = speaker_setup
    config = _small(num_speakers=3, speaker_fusion="last")
    with pytest.raises(ValueError, match="needs `speaker`"):
        HubertModel(config).apply({"params": _with_table(params, table)}, audio, mask)


@pytest.mark.slow
def test_dropout_only_when_not_deterministic(speaker_setup):
    audio, mask, _, params, _, base = speaker_setup
    config = _small()
    assert config.hidden_dropout > 0 and config.attention_dropout > 0

    def run(deterministic, seed=0):
        rngs = {"dropout": jax.random.key(seed)}
        out = forward(
            config,
            params,
            audio,
            mask,
            deterministic=deterministic,
            rngs=rngs,
            output_hidden_states=True,
        )
        return np.asarray(out.last_hidden_state)

    np.testing.assert_array_equal(run(True, 0), run(True, 1))
    np.testing.assert_array_equal(run(True, 0), base.last_hidden_state)
    np.testing.assert_array_equal(run(False, 0), run(False, 0))
    assert not np.allclose(run(False, 0), run(False, 1), atol=1e-3)
    assert not np.allclose(run(False, 0), run(True), atol=1e-3)


def test_bfloat16_compute_is_close_to_float32(converted_models):
    # One variant (the paper's large-style model): a new dtype means a new compile.
    _, model, params = converted_models["large"]
    audio, mask = _audio(np.random.default_rng(4), LONG, SHORT)
    ref = forward(model.config, params, audio, mask, output_hidden_states=True)
    out = forward(
        model.config.replace(dtype="bfloat16"), params, audio, mask, output_hidden_states=True
    )
    assert out.last_hidden_state.dtype == jnp.bfloat16
    frames = np.asarray(ref.frame_mask)
    want = np.asarray(ref.last_hidden_state)[frames]
    got = np.asarray(out.last_hidden_state.astype(jnp.float32))[frames]
    assert np.isfinite(got).all()
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert rel < 0.05, f"bf16 relative error {rel}"


@pytest.mark.parametrize("taps, groups, channels", [(128, 16, 64), (9, 4, 8), (2, 1, 6)])
def test_grouped_conv_gradients_match_xla_and_torch(taps, groups, channels):
    from papt_jax.models.grouped_conv import grouped_conv1d

    rs = np.random.RandomState(taps)
    x = rs.randn(3, 150, channels).astype(np.float32)
    kernel = (rs.randn(taps, channels // groups, channels) / np.sqrt(taps)).astype(np.float32)
    weights = rs.randn(3, 150 + 1 - taps % 2, channels).astype(np.float32)
    pad = taps // 2

    def plain(x, k):
        return jax.lax.conv_general_dilated(
            x,
            k,
            (1,),
            [(pad, pad)],
            dimension_numbers=("NWC", "WIO", "NWC"),
            feature_group_count=groups,
        )

    def loss(conv):
        return lambda x, k: jnp.sum(conv(x, k) * weights)

    ours = jax.jit(jax.grad(loss(lambda x, k: grouped_conv1d(x, k, groups, pad)), (0, 1)))(
        x, kernel
    )
    xla = jax.jit(jax.grad(loss(plain), (0, 1)))(x, kernel)
    np.testing.assert_allclose(
        grouped_conv1d(x, kernel, groups, pad), plain(x, kernel), rtol=1e-5, atol=1e-5
    )
    for a, b in zip(ours, xla, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # PyTorch, independently: conv1d weight layout (out, in/groups, taps), NCW data.
    tx = torch.tensor(x.transpose(0, 2, 1), requires_grad=True)
    tk = torch.tensor(kernel.transpose(2, 1, 0).copy(), requires_grad=True)
    out = torch.nn.functional.conv1d(tx, tk, padding=pad, groups=groups)
    (out * torch.tensor(weights.transpose(0, 2, 1))).sum().backward()
    np.testing.assert_allclose(ours[0], tx.grad.numpy().transpose(0, 2, 1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours[1], tk.grad.numpy().transpose(2, 1, 0), rtol=1e-4, atol=1e-4)
