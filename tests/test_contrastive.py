"""wav2vec 2.0's objective equals transformers' `Wav2Vec2ForPreTraining`, part by part.

Both sides get the same mask, the same negatives (transformers' `_sample_negative_indices`)
and the same Gumbel draw (regenerated from the seed the PyTorch quantizer draws with), and
the head reads the encoder outputs the PyTorch model produced.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from fixtures import wav2vec2_reference as ref

from papt_jax.contrastive import (
    contrastive_logits,
    contrastive_loss,
    diversity_loss,
    gumbel_temperature,
    sample_negative_indices,
    wav2vec2_loss,
)
from papt_jax.convert import load_pytorch_checkpoint, params_to_torch
from papt_jax.models.quantizer import QuantizerHead, QuantizerHeadConfig
from papt_jax.models.tasks import EncoderForContrastive

TEMPERATURE = 1.7  # Not transformers' default (2), so a temperature left unused would show.


def _rel(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.linalg.norm(ours - theirs) / max(np.linalg.norm(theirs), 1e-12))


def _head_config(config) -> QuantizerHeadConfig:
    return QuantizerHeadConfig(
        num_codevector_groups=config.num_codevector_groups,
        num_codevectors_per_group=config.num_codevectors_per_group,
        codevector_dim=config.codevector_dim,
        proj_codevector_dim=config.proj_codevector_dim,
        contrastive_logits_temperature=config.contrastive_logits_temperature,
    )


def _jax_head_loss(config, params, hidden, features, mask, negatives, noise):
    head_cfg = _head_config(config)
    head = QuantizerHead(head_cfg)

    def loss_fn(params, hidden, features):
        projected, projected_q, quantizer_out = head.apply(
            {"params": params},
            hidden,
            features,
            TEMPERATURE,
            mask,
            deterministic=False,
            gumbel_noise=noise,
        )
        parts = wav2vec2_loss(
            projected,
            projected_q,
            quantizer_out.prob_perplexity,
            mask,
            negatives,
            num_codevectors=head_cfg.num_codevectors,
            logit_temperature=config.contrastive_logits_temperature,
            diversity_weight=config.diversity_loss_weight,
        )
        return parts["loss_sum"], (parts, projected, projected_q, quantizer_out)

    # Compiled as one program (op by op: ~150 one-primitive programs per call).
    grad_fn = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2), has_aux=True))
    return grad_fn(params, jnp.asarray(hidden), jnp.asarray(features))


CASES = {
    # width: (samples, utterance lengths, mask_prob, mask_length)
    "tiny": (4000, (4000, 3100, 2200), 0.5, 4),
    "base": (16000, (16000, 12000), 0.65, 10),
}


def _reference_case(width, weight_proj_scale, unused_entry_bias=0.0):
    num_samples, lengths, mask_prob, mask_length = CASES[width]
    config = ref.hf_config(width)
    model = ref.hf_model(config, seed=0)
    with torch.no_grad():
        model.quantizer.weight_proj.weight.mul_(weight_proj_scale)
        model.quantizer.weight_proj.bias[0] += unused_entry_bias
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((len(lengths), num_samples)).astype(np.float32)
    for row, length in enumerate(lengths):
        audio[row, length:] = 0.0
    attention_mask, frame_mask, mask, negatives = ref.masks_and_negatives(
        model, lengths, num_samples, mask_prob, mask_length, seed=1
    )
    theirs = ref.run(model, audio, attention_mask, mask, negatives, TEMPERATURE)
    batch, frames = mask.shape
    assert not (mask & ~frame_mask).any()  # padding is never masked
    # transformers' indices address the flattened batch; ours the row.
    row_negatives = negatives - (np.arange(batch) * frames)[:, None, None]
    assert ((row_negatives >= 0) & (row_negatives < frames)).all()
    ours = _jax_head_loss(
        config,
        ref.head_params(model),
        theirs.hidden_states,
        theirs.extract_features,
        jnp.asarray(mask),
        jnp.asarray(row_negatives),
        jnp.asarray(ref.gumbel_noise(config, batch, frames)),
    )
    return config, mask, row_negatives, theirs, ours


# transformers initialises `weight_proj` with N(0, 1) weights; on 512 LayerNormed features
# its logits spread so far (std ~23) that some codebook entry's probability underflows to
# exactly 0 on every masked frame, where PyTorch's `xlogy` gradient is NaN (see the test
# after this one). The base-width comparison scales those weights down so that the
# reference has gradients to compare with.
WEIGHT_PROJ_SCALE = {"tiny": 1.0, "base": 0.1}


@pytest.mark.slow
@pytest.mark.parametrize("width", ["tiny", "base"])
def test_head_loss_and_gradients_equal_transformers(width):
    config, mask, row_negatives, theirs, ours = _reference_case(width, WEIGHT_PROJ_SCALE[width])
    batch = mask.shape[0]
    (loss_sum, (parts, projected, projected_q, quantizer_out)), grads = ours
    count = float(mask.sum())
    assert float(parts["count"]) == count
    np.testing.assert_allclose(projected, theirs.projected_states, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(projected_q, theirs.projected_quantized_states, rtol=1e-5, atol=1e-5)
    assert _rel(quantizer_out.prob_perplexity, theirs.perplexity) <= 1e-5
    assert _rel(parts["contrastive_sum"], theirs.contrastive_loss) <= 1e-4
    assert _rel(parts["diversity"] * count, theirs.diversity_loss) <= 1e-4
    assert _rel(loss_sum, theirs.loss) <= 1e-4

    param_grads, hidden_grad, features_grad = grads
    for path, (torch_name, transposed) in ref.HEAD_GRADS.items():
        ours = param_grads
        for key in path:
            ours = ours[key]
        expected = theirs.grads[torch_name]
        expected = expected.T if transposed else expected.reshape(np.shape(ours))
        assert _rel(ours, expected) <= 1e-3, (path, _rel(ours, expected))
    assert _rel(hidden_grad, theirs.input_grads["hidden_states"]) <= 1e-3
    assert _rel(features_grad, theirs.input_grads["extract_features"]) <= 1e-3

    if width == "tiny":
        # The small codebook makes some negatives equal to their target, so the -inf rule
        # took part in the comparison above.
        q = theirs.projected_quantized_states
        negs = q[np.arange(batch)[:, None, None], row_negatives]
        equal = (negs == q[:, :, None, :]).all(-1) & mask[:, :, None]
        assert equal.any()


@pytest.mark.slow
def test_gradients_stay_finite_where_transformers_xlogy_gives_nan():
    # Entry 0 of group 0 scores far below the others: its probability is exactly 0 on
    # every frame.
    _, mask, _, theirs, ours = _reference_case("tiny", 1.0, unused_entry_bias=-300.0)
    assert np.isnan(theirs.grads["quantizer.weight_proj.weight"]).any()
    (loss_sum, (parts, *_)), grads = ours
    # The values are transformers' (its forward pass is fine) ...
    assert _rel(loss_sum, theirs.loss) <= 1e-4
    assert _rel(parts["diversity"] * mask.sum(), theirs.diversity_loss) <= 1e-4
    # ... and every gradient is finite, the codebook's included.
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    # Where PyTorch's gradients are finite, they agree.
    ours_kernel = np.asarray(grads[0]["project_hid"]["kernel"])
    assert _rel(ours_kernel, theirs.grads["project_hid.weight"].T) <= 1e-3


@pytest.mark.slow
def test_negatives_come_from_the_same_rows_other_masked_frames_uniformly():
    frames, k = 40, 64
    mask = np.zeros((3, frames), bool)
    mask[0, [3, 4, 5, 20, 21, 30]] = True
    mask[1, :25] = True
    mask[2, [7]] = True  # one masked frame: nothing to draw from
    indices = np.asarray(sample_negative_indices(jax.random.key(0), jnp.asarray(mask), k))
    assert indices.shape == (3, frames, k) and indices.dtype == np.int32
    for row in range(3):
        for t in range(frames):
            drawn = indices[row, t]
            if mask[row, t] and mask[row].sum() >= 2:
                assert (drawn != t).all()
                assert mask[row, drawn].all()
            else:
                assert (drawn == t).all()
    # Uniform over the other masked frames: in row 1 each of the 25 masked frames draws
    # 64 of the other 24, so every frame is drawn 64 times on average.
    counts = np.bincount(indices[1, :25].ravel(), minlength=frames)
    assert counts[25:].sum() == 0
    expected = float(k)
    chi2 = ((counts[:25] - expected) ** 2 / expected).sum()
    assert chi2 < 60  # 24 degrees of freedom: p < 1e-4 above 60


@pytest.mark.slow
def test_negative_equal_to_target_scores_minus_inf_and_costs_nothing():
    predicted = jnp.asarray([[[1.0, 0.0], [0.0, 1.0]]])
    targets = jnp.asarray([[[1.0, 0.0], [1.0, 0.0]]])  # frame 1's target equals frame 0's
    negatives = jnp.asarray([[[1], [0]]])
    logits = np.asarray(contrastive_logits(predicted, targets, negatives, 0.1))
    assert np.isneginf(logits[0, 0, 1]) and np.isneginf(logits[0, 1, 1])
    np.testing.assert_allclose(logits[0, :, 0], [10.0, 0.0], atol=1e-6)
    stats = contrastive_loss(jnp.asarray(logits), jnp.asarray([[True, True]]))
    assert float(stats["contrastive_sum"]) == 0.0 and float(stats["count"]) == 2.0
    # A distinct negative is scored and costs something.
    targets = targets.at[0, 1].set(jnp.asarray([0.6, 0.8]))
    logits = contrastive_logits(predicted, targets, negatives, 0.1)
    assert np.isfinite(np.asarray(logits)).all()
    assert float(contrastive_loss(logits, jnp.asarray([[True, True]]))["contrastive_sum"]) > 0
    # Equal means equal in every bit: one unit in the last place apart is a negative.
    nearly = targets.at[0, 1].set(jnp.asarray([np.nextafter(np.float32(0.6), 1), 0.8]))
    assert np.isfinite(np.asarray(contrastive_logits(predicted, nearly, negatives, 0.1))).all()
    tiny = jnp.asarray([[[1e-3, 0.0], [1e-3, 0.0]]]).at[0, 1, 1].set(1e-20)
    assert np.isfinite(np.asarray(contrastive_logits(predicted, tiny, negatives, 0.1))).all()


def test_the_logits_and_their_gradient_hold_no_vector_per_negative():
    # Negatives' logits are read from each row's (frames, frames) cosines: the compiled
    # loss and gradient need far less than one (batch, frames, K, dim) float32 array
    # (205 MB here; gathering the negatives' vectors took 796 MiB of temporaries).
    batch, frames, dim, k = 8, 250, 256, 100

    def loss(predicted, targets, negatives, mask):
        logits = contrastive_logits(predicted, targets, negatives, 0.1)
        return contrastive_loss(logits, mask)["contrastive_sum"]

    shapes = (
        jax.ShapeDtypeStruct((batch, frames, dim), jnp.float32),
        jax.ShapeDtypeStruct((batch, frames, dim), jnp.float32),
        jax.ShapeDtypeStruct((batch, frames, k), jnp.int32),
        jax.ShapeDtypeStruct((batch, frames), jnp.bool_),
    )
    program = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(*shapes).compile()
    per_negative = batch * frames * k * dim * 4
    assert program.memory_analysis().temp_size_in_bytes < per_negative / 8


@pytest.mark.parametrize("triple", [(2.0, 0.5, 0.999995), (2.0, 0.1, 0.999995), (1.0, 0.2, 0.9)])
def test_gumbel_temperature_follows_fairseqs_schedule(triple):
    max_temp, min_temp, decay = triple
    steps = [0, 1, 10, 1000, 100_000, 277_258, 400_000, 1_000_000, 5_000_000]
    ours = np.asarray([gumbel_temperature(jnp.asarray(s), *triple) for s in steps])
    expected = np.asarray([max(max_temp * decay**s, min_temp) for s in steps])
    np.testing.assert_allclose(ours, expected, rtol=2e-6)
    assert ours[-1] == np.float32(min_temp)
    # Jitted with a traced step it gives the same values.
    jitted = jax.jit(lambda s: gumbel_temperature(s, *triple))
    np.testing.assert_allclose([jitted(s) for s in steps], ours, rtol=1e-6)


@pytest.mark.slow
def test_diversity_loss_is_zero_for_a_uniformly_used_codebook_and_near_one_when_collapsed():
    cfg = QuantizerHeadConfig(
        num_codevector_groups=2, num_codevectors_per_group=4, codevector_dim=4
    )
    head = QuantizerHead(cfg)
    features = jnp.zeros((1, 8, 3))
    params = head.init(jax.random.key(0), jnp.zeros((1, 8, 5)), features, 1.0)["params"]
    # Zero weights: every frame's softmax is uniform, perplexity G * V.
    params = jax.tree.map(jnp.zeros_like, params)
    _, _, out = head.apply({"params": params}, jnp.zeros((1, 8, 5)), features, 1.0)
    np.testing.assert_allclose(out.prob_perplexity, 8.0, rtol=1e-6)
    assert float(diversity_loss(out.prob_perplexity, cfg.num_codevectors)) == pytest.approx(0.0)
    # One entry dominating every frame: perplexity near 1 per group.
    bias = jnp.tile(jnp.asarray([50.0, 0.0, 0.0, 0.0]), 2)
    params["quantizer"]["weight_proj"]["bias"] = bias
    _, _, out = head.apply({"params": params}, jnp.zeros((1, 8, 5)), features, 1.0)
    np.testing.assert_allclose(out.prob_perplexity, 2.0, rtol=1e-4)
    np.testing.assert_allclose(out.code_perplexity, 2.0, rtol=1e-6)
    assert float(diversity_loss(out.prob_perplexity, 8)) == pytest.approx(0.75, rel=1e-4)


@pytest.mark.slow
def test_quantizer_draws_from_its_rng_in_training_and_takes_the_argmax_in_evaluation():
    cfg = QuantizerHeadConfig(
        num_codevector_groups=2, num_codevectors_per_group=16, codevector_dim=8
    )
    head = QuantizerHead(cfg)
    hidden = jnp.zeros((2, 30, 5))
    features = jax.random.normal(jax.random.key(1), (2, 30, 6))
    params = head.init(jax.random.key(0), hidden, features, 1.0)["params"]

    def codes(deterministic, seed, temperature=2.0):
        _, _, out = head.apply(
            {"params": params},
            hidden,
            features,
            temperature,
            deterministic=deterministic,
            rngs=None if deterministic else {"gumbel": jax.random.key(seed)},
        )
        return np.asarray(out.codes), out

    argmax = np.asarray(
        jnp.argmax(
            (
                features @ params["quantizer"]["weight_proj"]["kernel"]
                + params["quantizer"]["weight_proj"]["bias"]
            ).reshape(2, 30, 2, 16),
            -1,
        )
    )
    eval_codes, eval_out = codes(True, 0)
    np.testing.assert_array_equal(eval_codes, argmax)
    table = params["quantizer"]["codevectors"].reshape(2, 16, 4)
    expected = np.concatenate([table[0][argmax[..., 0]], table[1][argmax[..., 1]]], -1)
    np.testing.assert_allclose(eval_out.quantized, expected, rtol=1e-6)
    a, _ = codes(False, 1)
    b, _ = codes(False, 1)
    c, _ = codes(False, 2)
    np.testing.assert_array_equal(a, b)  # the same key draws the same noise
    assert (a != c).any() and (a != argmax).any()
    # A very low temperature still samples (the noise decides), unlike evaluation.
    assert (codes(False, 3, temperature=1e-3)[0] != argmax).any()


@pytest.mark.slow
def test_straight_through_gradient_reaches_the_logits():
    cfg = QuantizerHeadConfig(
        num_codevector_groups=1,
        num_codevectors_per_group=4,
        codevector_dim=3,
        proj_codevector_dim=3,
    )
    head = QuantizerHead(cfg)
    hidden = jnp.ones((1, 5, 2))
    features = jax.random.normal(jax.random.key(1), (1, 5, 6))
    params = jax.jit(head.init)(jax.random.key(0), hidden, features, 1.0)["params"]

    def quantized_sum(params, deterministic):
        _, q, _ = head.apply(
            {"params": params},
            hidden,
            features,
            1.0,
            deterministic=deterministic,
            rngs={"gumbel": jax.random.key(3)},
        )
        return (q**2).sum()

    # Compiled (op by op, the init and two gradients compiled ~110 one-primitive programs).
    gradient = jax.jit(jax.grad(quantized_sum), static_argnums=1)
    train = gradient(params, False)["quantizer"]["weight_proj"]["kernel"]
    evaluation = gradient(params, True)["quantizer"]["weight_proj"]["kernel"]
    assert float(jnp.abs(train).max()) > 0  # through the soft probabilities
    assert float(jnp.abs(evaluation).max()) == 0  # the argmax has no gradient


@pytest.mark.slow
def test_whole_converted_model_loss_and_gradients_equal_transformers(tmp_path):
    # The whole model this time: a transformers `Wav2Vec2ForPreTraining` saved, converted
    # with the public API (quantizer kept) and run as the pre-training step runs it, on
    # unpadded audio (padding is where the encoders differ on purpose, README).
    config = ref.hf_config("tiny")
    model = ref.hf_model(config, seed=0)
    model.save_pretrained(tmp_path)
    converted = load_pytorch_checkpoint(tmp_path)
    lengths = (4000, 4000, 4000)
    audio = np.random.default_rng(0).standard_normal((3, 4000)).astype(np.float32)
    attention_mask, _, mask, negatives = ref.masks_and_negatives(model, lengths, 4000, 0.5, 4, 1)
    theirs = ref.run(model, audio, attention_mask, mask, negatives, TEMPERATURE, head_only=False)
    batch, frames = mask.shape
    row_negatives = jnp.asarray(negatives - (np.arange(batch) * frames)[:, None, None])
    noise = jnp.asarray(ref.gumbel_noise(config, batch, frames))
    ours = EncoderForContrastive(converted.config, converted.quantizer_config)

    def loss_fn(params):
        projected, projected_q, quantizer_out, out = ours.apply(
            {"params": params},
            jnp.asarray(audio),
            jnp.ones(audio.shape, bool),
            None,
            jnp.asarray(mask),
            deterministic=False,
            temperature=TEMPERATURE,
            gumbel_noise=noise,
            rngs={"dropout": jax.random.key(0)},
        )
        parts = wav2vec2_loss(
            projected,
            projected_q,
            quantizer_out.prob_perplexity,
            jnp.asarray(mask),
            row_negatives,
            num_codevectors=converted.quantizer_config.num_codevectors,
            logit_temperature=converted.quantizer_config.contrastive_logits_temperature,
            diversity_weight=config.diversity_loss_weight,
        )
        return parts["loss_sum"], parts

    params = {"hubert": converted.params, "head": converted.quantizer_params}
    # One compiled program (run op by op, it compiled ~240 one-primitive programs).
    (loss_sum, parts), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
    assert _rel(loss_sum, theirs.loss) <= 1e-4
    assert _rel(parts["contrastive_sum"], theirs.contrastive_loss) <= 1e-4
    assert _rel(parts["diversity"] * mask.sum(), theirs.diversity_loss) <= 1e-4
    # Every parameter's gradient, the encoder's named back to transformers' keys.
    encoder_grads = params_to_torch(converted.config, jax.device_get(grads["hubert"]))
    compared = 0
    for name, expected in theirs.grads.items():
        if name.startswith("wav2vec2."):
            ours_grad = encoder_grads[name.removeprefix("wav2vec2.")]
        else:
            path = next(p for p, (n, _) in ref.HEAD_GRADS.items() if n == name)
            ours_grad = grads["head"]
            for key in path:
                ours_grad = ours_grad[key]
            ours_grad = np.asarray(ours_grad)
            ours_grad = ours_grad.T if ours_grad.ndim == 2 and "kernel" in path else ours_grad
        ours_grad = np.asarray(ours_grad).reshape(expected.shape)
        if name.endswith("k_proj.bias"):
            # A key bias shifts every logit of a query alike, which softmax ignores: its
            # gradient is 0 up to rounding on both sides.
            assert max(np.abs(ours_grad).max(), np.abs(expected).max()) < 1e-4, name
        else:
            assert _rel(ours_grad, expected) <= 1e-3, (name, _rel(ours_grad, expected))
        compared += 1
    assert compared == len(dict(model.named_parameters()))
