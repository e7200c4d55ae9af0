"""Every family equals transformers at the published base and large widths (random weights).

Each test builds transformers' model at a published size (`fixtures.family_files.PUBLISHED`),
converts its weights in memory with the family's table, and runs one short padded batch
of two utterances through the Flax encoder. Every hidden state of each utterance's valid
frames is compared with transformers running that utterance alone, within 1e-4: the Flax
encoder's output does not depend on the padding it was batched with (the group-norm
models' feature extractor, data2vec-audio's positional convs), which PyTorch's does.
"""

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
