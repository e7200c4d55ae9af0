"""Training at scale: gradient accumulation, sharded parameters (FSDP), bf16, old layouts.

Updates are compared under plain SGD with rate 1 (the update is minus the gradient), so a
wrong gradient cannot hide behind Adam's first step (about lr * sign(g)).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fixtures.xla_options import USER_CODEGEN
from jax.sharding import PartitionSpec
from test_train import tone_batch

from papt_jax.models import get_preset, to_layout
from papt_jax.models.heads import PretrainHeadConfig
from papt_jax.models.quantizer import QuantizerHeadConfig
from papt_jax.models.stack import layout_of
from papt_jax.models.tasks import EncoderForContrastive, HubertForPretraining, HubertForRegression
from papt_jax.train import contrastive_objective, finetune, pretrain, sharding
from papt_jax.train.accumulate import flatten_micro_batches, micro_batches
from papt_jax.train.checkpoint import Checkpoints
from papt_jax.train.state import TrainState, create_state, make_optimizer

# A feature penalty and a loss on unmasked frames, so every term's normalisation counts.
LOSS = pretrain.PretrainLossConfig(
    mask_prob=0.5, mask_length=5, features_pen_weight=10.0, nomask_weight=0.5
)
SGD = optax.sgd(1.0)


def relative_error(got, want) -> float:
    """||got - want|| / ||want|| over every leaf of two pytrees."""
    # In NumPy: JAX would compile a program per operation and leaf shape.
    got, want = jax.device_get((got, want))
    num = sum(
        float(np.sum((np.asarray(a) - np.asarray(b)) ** 2))
        for a, b in zip(*map(jax.tree.leaves, (got, want)), strict=True)
    )
    den = sum(float(np.sum(np.asarray(b) ** 2)) for b in jax.tree.leaves(want))
    return (num / den) ** 0.5


def update(params, new):
    """new.params - params (the state that held `params` was donated to the step)."""
    return jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), new.params, params)


@functools.cache
def pretrain_model():
    cfg = get_preset("tiny", num_speakers=4, speaker_fusion="last")
    model = HubertForPretraining(cfg, PretrainHeadConfig(final_dim=16, num_label_rows=4))
    return model, jax.device_get(pretrain.init_params(model, jax.random.PRNGKey(0)))


def unequal_batch(rows: int) -> dict:
    """Tone batch whose rows have different lengths (different mask counts per row)."""
    batch = tone_batch(np.random.RandomState(3), rows)
    assert len(set(batch["audio_mask"].sum(1))) > 1
    return batch


@functools.cache
def pretraining_update(devices: int, steps: int):
    """(update, metrics) of one masked-prediction step on `unequal_batch(8)` over `devices`
    devices in `steps` micro-batches (cached: the one-batch step is every test's reference)."""
    model, params = pretrain_model()
    mesh = sharding.make_mesh(devices)
    state, shardings = create_state(params, SGD, mesh, "replicated")
    step = pretrain.make_train_step(model, LOSS, mesh, steps, shardings)
    batch = sharding.shard_batch(unequal_batch(8), mesh)
    new, metrics = step(state, batch, jax.random.PRNGKey(5))
    return update(params, new), jax.device_get(metrics)


@pytest.mark.slow
@pytest.mark.parametrize("devices, steps", [(1, 2), (2, 2), (2, 4)])
def test_accumulated_pretraining_update_equals_one_batch(devices, steps):
    (one, m1), (acc, mk) = pretraining_update(devices, 1), pretraining_update(devices, steps)
    assert relative_error(acc, one) <= 1e-5
    for name in ("loss", "accuracy", "features_pen", "grad_norm"):
        assert float(mk[name]) == pytest.approx(float(m1[name]), rel=1e-5), name
    assert float(m1["features_pen"]) > 0 and float(m1["loss"]) > 0


CONTRASTIVE = pretrain.PretrainLossConfig(
    mask_prob=0.5,
    mask_length=3,
    features_pen_weight=10.0,
    objective="contrastive",
    # A diversity weight of 1 (fairseq: 0.1) so its gradient weighs in the comparison.
    contrastive=pretrain.ContrastiveSettings(
        num_negatives=6, diversity_weight=1.0, temperature=(2.0, 0.5, 0.999995)
    ),
)


@functools.cache
def contrastive_model():
    cfg = get_preset("wav2vec2-tiny", num_speakers=4, speaker_fusion="last")
    head = QuantizerHeadConfig(
        num_codevector_groups=2,
        num_codevectors_per_group=8,
        codevector_dim=8,
        proj_codevector_dim=8,
    )
    model = EncoderForContrastive(cfg, head)
    return model, jax.device_get(pretrain.init_params(model, jax.random.PRNGKey(0)))


CONTRASTIVE_LOGGED = (
    "loss",
    "accuracy",
    "contrastive",
    "diversity",
    "prob_perplexity",
    "code_perplexity",
    "temperature",
    "features_pen",
    "grad_norm",
)


@pytest.mark.slow
@pytest.mark.parametrize("devices, steps", [(1, 2), (2, 4)])
def test_accumulated_contrastive_update_equals_one_batch(devices, steps):
    """Masks, negatives and Gumbel noise drawn for the whole batch, the diversity loss of
    the whole batch's codebook marginals: the update and every logged metric are those of
    one batch (before: accumulation with the contrastive objective was refused)."""
    model, params = contrastive_model()
    batch = unequal_batch(8)
    results = {}
    for k in (1, steps):
        mesh = sharding.make_mesh(devices)
        state, shardings = create_state(params, SGD, mesh, "replicated")
        step = pretrain.make_train_step(model, CONTRASTIVE, mesh, k, shardings)
        new, metrics = step(state, sharding.shard_batch(batch, mesh), jax.random.PRNGKey(5))
        results[k] = (update(params, new), jax.device_get(metrics))
    (one, m1), (acc, mk) = results[1], results[steps]
    assert relative_error(acc, one) <= 1e-5
    for name in CONTRASTIVE_LOGGED:
        assert float(mk[name]) == pytest.approx(float(m1[name]), rel=1e-5), name
    # Every term is present: a perplexity well inside (1, G*V) and a penalty.
    assert 2.0 < float(m1["prob_perplexity"]) < 16.0 and float(m1["features_pen"]) > 0
    assert float(m1["diversity"]) > 0


@pytest.mark.slow
def test_one_micro_batch_of_the_accumulated_contrastive_loss_is_the_batch_loss():
    model, params = contrastive_model()
    batch = sharding.shard_batch(unequal_batch(8), sharding.make_mesh(1))
    mask_key, dropout_key = jax.random.split(jax.random.PRNGKey(2))
    args = (model, CONTRASTIVE, params, batch, mask_key, dropout_key, jnp.int32(3))

    def whole(params):
        return contrastive_objective.batch_loss(*args[:2], params, *args[3:], False)

    (loss, stats), grads = jax.jit(jax.value_and_grad(whole, has_aux=True))(params)
    (acc_loss, acc_stats), acc_grads = jax.jit(
        lambda: contrastive_objective.accumulated_loss_and_grads(*args, 1, sharding.make_mesh(1))
    )()
    assert float(acc_loss) == pytest.approx(float(loss), rel=1e-6)
    assert relative_error(acc_grads, jax.device_get(grads)) <= 1e-6
    for name in ("contrastive", "diversity", "prob_perplexity", "code_perplexity"):
        assert float(acc_stats[name]) == pytest.approx(float(stats[name]), rel=1e-6), name


def test_micro_batches_take_rows_from_every_device():
    mesh = sharding.make_mesh(2)
    rows = np.arange(8)
    batch = sharding.shard_batch({"row": rows}, mesh)
    micro = jax.jit(lambda b: micro_batches(b, 2, mesh))(batch)["row"]
    assert micro.sharding.spec == PartitionSpec(None, "data")
    # Device 0 holds rows 0-3, device 1 rows 4-7; each micro-batch takes 2 from each.
    np.testing.assert_array_equal(np.asarray(micro), [[0, 1, 4, 5], [2, 3, 6, 7]])
    for shard in micro.addressable_shards:
        held = set(np.asarray(shard.data).ravel())
        on_device = (
            set(rows[4 * shard.device.id : 4 * shard.device.id + 4])
            if shard.device.id < 2
            else set()
        )
        assert held <= on_device
    np.testing.assert_array_equal(np.sort(np.asarray(flatten_micro_batches(micro))), rows)
    with pytest.raises(ValueError, match="multiple of 8"):
        micro_batches({"row": jnp.arange(6)}, 4, mesh)


def regression_setup():
    model = HubertForRegression(get_preset("tiny"), head_dropout=0.2, freeze_feature_extractor=True)
    variables = jax.device_get(finetune.init_variables(model, jax.random.PRNGKey(0)))
    batch = finetune.training_batch(unequal_batch(8), "arousal")
    batch["example_mask"][5] = False  # a padding row: out of the loss and the statistics
    weights = np.asarray([1.0, 2.0, 0.5, 1.5])  # B2 speaker weights
    return model, variables, batch, weights


@pytest.mark.slow
def test_accumulated_finetuning_gradient_is_that_of_the_whole_batch_ccc():
    """With the head's BatchNorm on micro-batch statistics (what accumulation can give), the
    update is the gradient of 1 - CCC over all k*B predictions, and the running statistics
    are those of k successive training forwards."""
    model, variables, batch, weights = regression_setup()
    mesh = sharding.make_mesh(2)
    state, shardings = create_state(
        variables["params"], SGD, mesh, "replicated", variables["batch_stats"]
    )
    step = finetune.make_train_step(
        model, finetune.LabelScaling("unit"), mesh, weights, 2, shardings
    )
    device_batch = sharding.shard_batch(batch, mesh)
    rng = jax.random.PRNGKey(4)
    # The <= 1e-5 bound is issue #23's, measured on the step as XLA's default code generation
    # compiles it (tests/fixtures/xla_options.py). The reference is compiled with the
    # suite's settings: measured relative difference 7.3e-6 (8.8e-6 op by op, which took
    # 9 s of this test's 18).
    step = step.lower(state, device_batch, rng).compile(compiler_options=USER_CODEGEN)
    new, metrics = step(state, device_batch, rng)

    # The reference: the same micro-batches, each through the model in turn (its own
    # BatchNorm statistics and dropout key), one loss over all predictions, one gradient.
    micro = jax.device_get(jax.jit(lambda b: micro_batches(b, 2, mesh))(device_batch))
    dropout_key = jax.random.fold_in(rng, 0)
    table = jnp.asarray(weights, jnp.float32)

    def loss(params):
        preds, stats = [], variables["batch_stats"]
        for j in range(2):
            mb = {k: v[j] for k, v in micro.items()}
            p, stats = finetune._train_forward(
                model, params, stats, mb, jax.random.fold_in(dropout_key, j)
            )
            preds.append(p)
        flat = flatten_micro_batches(micro)
        labels = finetune.LabelScaling("unit").to_model(flat["label"])
        return finetune.batch_loss(jnp.concatenate(preds), labels, flat, table), stats

    (want_loss, want_stats), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        variables["params"]
    )
    assert float(metrics["loss"]) == pytest.approx(float(want_loss), rel=1e-5)
    assert (
        relative_error(update(variables["params"], new), jax.tree.map(np.negative, grads)) <= 1e-5
    )
    assert relative_error(new.batch_stats, want_stats) <= 1e-6
    # Dropout was on in both passes with the same keys: another key, another update.
    other, _ = step(
        create_state(variables["params"], SGD, mesh, "replicated", variables["batch_stats"])[0],
        device_batch,
        jax.random.PRNGKey(5),
    )
    assert (
        relative_error(update(variables["params"], other), update(variables["params"], new)) > 1e-3
    )


def test_fsdp_spec_shards_the_largest_divisible_axis():
    assert sharding.fsdp_spec((24, 1024, 4096), 4) == PartitionSpec(None, None, "data")
    assert sharding.fsdp_spec((24, 1024, 1024), 4) == PartitionSpec(None, "data")
    assert sharding.fsdp_spec((1026, 4096), 4) == PartitionSpec(None, "data")  # 1026 % 4 != 0
    assert sharding.fsdp_spec((1024,), 4) == PartitionSpec()  # small: replicated
    assert sharding.fsdp_spec((131, 257), 4) == PartitionSpec()  # indivisible
    assert sharding.fsdp_spec((1024, 4096), 1) == PartitionSpec()


def test_fsdp_leaves_a_quarter_of_hubert_large_state_per_device():
    """HuBERT-large's pre-training state (params + Adam moments), from shapes only."""
    model = HubertForPretraining(get_preset("large"), PretrainHeadConfig(768, 504))
    tx = make_optimizer(1e-5, 100, 0.05, weight_decay=0.01)
    state = jax.eval_shape(
        lambda: TrainState.create(
            apply_fn=None, params=pretrain.init_params(model, jax.random.PRNGKey(0)), tx=tx
        )
    )
    mesh = sharding.make_mesh(4)
    specs = sharding.tree_shardings(state, mesh, "fsdp")
    total = held = 0
    for leaf, spec in zip(jax.tree.leaves(state), jax.tree.leaves(specs), strict=True):
        size = int(np.prod(leaf.shape)) * leaf.dtype.itemsize
        total += size
        held += size // 4 if "data" in spec.spec else size
    assert total > 3.5e9  # 316 M parameters, three float32 copies
    assert held / total < 0.252


@functools.cache
def wide_pretrain_model():
    """Widths at which most parameter bytes sit in arrays big enough to shard."""
    cfg = get_preset(
        "tiny",
        hidden_size=128,
        intermediate_size=512,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    model = HubertForPretraining(cfg, PretrainHeadConfig(final_dim=128, num_label_rows=4))
    return model, jax.device_get(pretrain.init_params(model, jax.random.PRNGKey(0)))


@pytest.mark.slow
def test_fsdp_matches_replicated_with_a_quarter_of_the_parameters_per_device(tmp_path):
    model, params = wide_pretrain_model()
    mesh = sharding.make_mesh(4)
    batches = [tone_batch(np.random.RandomState(i), 8) for i in range(3)]
    tx = make_optimizer(1e-3, 100, 0.1, clip_norm=10.0, weight_decay=0.01)
    curves, states, held, opt_held, placed = {}, {}, {}, {}, {}
    for mode in ("replicated", "fsdp"):
        state, placed[mode] = create_state(params, tx, mesh, mode)
        per_device = sharding.bytes_per_device(state.params)
        assert len(per_device) == 4 and len(set(per_device.values())) == 1
        held[mode] = per_device[0]
        opt_held[mode] = sharding.bytes_per_device(state.opt_state)[0]
        step = pretrain.make_train_step(model, LOSS, mesh, 2, placed[mode])
        curves[mode] = []
        for i in range(5):
            state, metrics = step(
                state, sharding.shard_batch(batches[i % 3], mesh), jax.random.PRNGKey(1)
            )
            curves[mode].append(float(metrics["loss"]))
        states[mode] = state
    np.testing.assert_allclose(curves["fsdp"], curves["replicated"], rtol=1e-5)
    assert curves["replicated"][-1] < curves["replicated"][0]
    # Per device: exactly what the rule says (a quarter of each sharded leaf), about a
    # quarter in all (27 %: the small CNN, norms and biases stay whole).
    want = sum(
        x.nbytes // 4 if "data" in s.spec else x.nbytes
        for x, s in zip(
            jax.tree.leaves(params), jax.tree.leaves(placed["fsdp"].params), strict=True
        )
    )
    assert held["fsdp"] == want
    assert held["fsdp"] / held["replicated"] < 0.28
    assert opt_held["fsdp"] / opt_held["replicated"] < 0.28
    # Evaluation reads the sharded parameters where they are.
    scores = pretrain.evaluate_loss(
        pretrain.make_eval_step(model, LOSS, mesh, placed["fsdp"].params),
        states["fsdp"].params,
        batches,
        mesh,
    )
    want = pretrain.evaluate_loss(
        pretrain.make_eval_step(model, LOSS, mesh), states["replicated"].params, batches, mesh
    )
    assert scores["loss"] == pytest.approx(want["loss"], rel=1e-5)

    # The sharded state saved on 4 devices restores onto 2 (sharded) and 1 (replicated).
    checkpoints = Checkpoints(tmp_path / "ckpt")
    checkpoints.save_latest(5, states["fsdp"], {"step": 5})
    saved = jax.device_get(states["fsdp"])
    for devices, mode in ((2, "fsdp"), (1, "replicated")):
        target, shardings = create_state(params, tx, sharding.make_mesh(devices), mode)
        restored, meta = checkpoints.restore_latest(target)
        assert meta["step"] == 5
        for got, want, place in zip(
            jax.tree.leaves(restored),
            jax.tree.leaves(saved),
            jax.tree.leaves(shardings),
            strict=True,
        ):
            np.testing.assert_array_equal(np.asarray(got), want)
            assert got.sharding.is_equivalent_to(place, got.ndim)


@pytest.mark.slow
def test_bf16_keeps_float32_state_and_loss_close_to_float32():
    model32, params = pretrain_model()
    batch = unequal_batch(8)
    mesh = sharding.make_mesh(1)
    tx = make_optimizer(1e-3, 10, 0.0, clip_norm=10.0)
    out = {}
    for dtype in ("float32", "bfloat16"):
        model = HubertForPretraining(model32.config.replace(dtype=dtype), model32.head_config)
        state, shardings = create_state(params, tx, mesh, "replicated")
        new, metrics = pretrain.make_train_step(model, LOSS, mesh, 1, shardings)(
            state, sharding.shard_batch(batch, mesh), jax.random.PRNGKey(2)
        )
        for leaf in jax.tree.leaves((new.params, new.opt_state)):
            if jnp.issubdtype(leaf.dtype, jnp.floating):
                assert leaf.dtype == jnp.float32
        assert metrics["loss"].dtype == jnp.float32
        out[dtype] = float(metrics["loss"])
    # bf16 has 8 bits of mantissa (relative rounding ~4e-3 per operation).
    assert out["bfloat16"] == pytest.approx(out["float32"], rel=2e-2)
    assert out["bfloat16"] != out["float32"]  # bf16 really computed something else


@pytest.mark.slow
def test_train_checkpoints_of_per_layer_models_restore_into_scanned_ones(tmp_path):
    """A run checkpointed before the layers were scanned resumes in the scanned model."""
    model, params = pretrain_model()
    assert "layers" in params["hubert"]["encoder"]  # the default model scans its layers
    mesh = sharding.make_mesh(2)
    tx = make_optimizer(1e-3, 10, 0.0)
    state, shardings = create_state(params, tx, mesh, "fsdp")
    step = pretrain.make_train_step(model, LOSS, mesh, 1, shardings)
    state, _ = step(state, sharding.shard_batch(unequal_batch(8), mesh), jax.random.PRNGKey(0))
    old = to_layout(jax.device_get(state), False)  # the layout the old code saved
    assert "layers_1" in old.params["hubert"]["encoder"]
    assert (
        layout_of(old.opt_state) is False and layout_of(state.opt_state) is True
    )  # Adam's moments
    checkpoints = Checkpoints(tmp_path / "ckpt")
    checkpoints.save_latest(1, old, {"step": 1})
    target, shardings = create_state(params, tx, mesh, "fsdp")
    restored, _ = checkpoints.restore_latest(target)
    saved = jax.device_get(state)
    for got, want, place in zip(
        jax.tree.leaves(restored), jax.tree.leaves(saved), jax.tree.leaves(shardings), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(got), want)
        assert got.sharding.is_equivalent_to(place, got.ndim)
