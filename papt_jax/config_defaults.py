"""Moved to `papt_jax.experiment.config_defaults`; this name stays for existing config files.

Config files written for earlier versions import `papt_jax.config_defaults`; they keep
working, with a warning that names the new module.
"""

import warnings

from papt_jax.experiment.config_defaults import apply_embedded_corpus, base_config

warnings.warn(
    "papt_jax.config_defaults moved to papt_jax.experiment.config_defaults; import it from there",
    FutureWarning,
    stacklevel=2,
)

__all__ = ["apply_embedded_corpus", "base_config"]
