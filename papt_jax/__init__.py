"""papt_jax: personalized adaptive pre-training (PAPT) and PLDC for HuBERT, in JAX/Flax."""

__version__ = "0.1.0"

__all__ = ["Predictor", "SpeakerProfile"]


def __getattr__(name: str):
    # Imported on first use: `import papt_jax` stays light (no JAX) for tools that only
    # need a submodule.
    if name in ("Predictor", "SpeakerProfile"):
        from papt_jax import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'papt_jax' has no attribute {name!r}")
