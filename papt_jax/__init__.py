"""papt_jax: personalized adaptive pre-training (PAPT) and PLDC for HuBERT, in JAX/Flax."""

__version__ = "0.1.0"
