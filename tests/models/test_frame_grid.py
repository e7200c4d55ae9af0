"""Every model preset's conv stack has the frame grid that papt_jax.data.audio owns."""

import numpy as np
import pytest

from papt_jax.data import audio
from papt_jax.models.config import MODEL_PRESETS


@pytest.mark.parametrize("name", sorted(MODEL_PRESETS))
def test_preset_frames_match_the_data_layer(name):
    config = MODEL_PRESETS[name]
    assert config.frame_hop == audio.FRAME_HOP
    assert config.receptive_field == audio.RECEPTIVE_FIELD
    lengths = np.arange(399, 20_000, 7)
    np.testing.assert_array_equal(config.num_frames(lengths), audio.num_frames(lengths))
