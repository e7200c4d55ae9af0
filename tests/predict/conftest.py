"""The one Predictor on the shared smoke run that the prediction tests use (one 4 s bucket,
so each model compiles a single shape for the whole session)."""

from __future__ import annotations

import pytest
from smoke_audio import SETTINGS


@pytest.fixture(scope="session")
def predictor(smoke_run):
    from papt_jax import Predictor

    return Predictor.from_run(smoke_run.workdir, **SETTINGS)
