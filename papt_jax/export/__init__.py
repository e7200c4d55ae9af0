"""Export a finished run for prediction (`python -m papt_jax.export`).

`--format=folder`: `bundle.write_bundle` writes the self-contained papt_jax folder (layout:
`papt_jax.predict.assets`), `card.model_card` its README.md. `--format=onnx|stablehlo`:
`portable.write_portable` writes the whole predictor as graphs (`graph.PredictorGraph`,
`onnx_export`, `stablehlo`), checked against JAX (`checks`), with `model.json` and
`pldc.json` (`metadata`).
"""
