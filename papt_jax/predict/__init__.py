"""Prediction on new recordings with a finished run (or an exported model).

`Predictor` (predictor.py) is the Python API; `python -m papt_jax.predict` the command line.
Speaker profiles and PLDC on them: profiles.py; windows and buckets: windows.py; finding and
reading audio files: files.py; what is loaded from a run or export: assets.py; the shortest
recording a model takes and predictions outside the label scale: limits.py.
"""

__all__ = ["Predictor", "SpeakerProfile"]


def __getattr__(name: str):
    # Loaded on first use: they import JAX (seconds), which `python -m papt_jax.predict`
    # does not need to check its flags and refuse a mistake.
    if name == "Predictor":
        from papt_jax.predict.predictor import Predictor

        return Predictor
    if name == "SpeakerProfile":
        from papt_jax.predict.profiles import SpeakerProfile

        return SpeakerProfile
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
