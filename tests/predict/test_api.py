"""The package-level API: `papt_jax.Predictor` without making `import papt_jax` heavy."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_predictor_is_exposed_lazily():
    code = (
        "import sys, papt_jax\n"
        "assert 'jax' not in sys.modules, 'import papt_jax loaded jax'\n"
        "from papt_jax import Predictor, SpeakerProfile\n"
        "from papt_jax.predict import predictor\n"
        "assert Predictor is predictor.Predictor and 'jax' in sys.modules\n"
        "assert SpeakerProfile.__name__ == 'SpeakerProfile'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_unknown_attribute_is_an_attribute_error():
    import papt_jax

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        papt_jax.Nope  # noqa: B018
