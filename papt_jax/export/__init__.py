"""Export a finished run as one self-contained folder for prediction (`python -m papt_jax.export`).

`bundle.write_bundle` writes it (layout: `papt_jax.predict.assets`), `card.model_card` its
README.md.
"""
