"""WavLM's utterance mixing: the JAX transform against a NumPy reference of the authors' loop,
and the random choices' distribution."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from papt_jax.utterance_mixing import (
    MixingConfig,
    MixingPlan,
    apply_mixing,
    draw_mixing_plan,
    mix_utterances,
)

LENGTHS = (4000, 3200, 2500, 4000, 0, 1800)  # row 4 pads the batch
SAMPLES = 4000


def _batch(seed=0, silent_row=None):
    rng = np.random.default_rng(seed)
    audio = np.zeros((len(LENGTHS), SAMPLES), np.float32)
    mask = np.zeros_like(audio, bool)
    for row, length in enumerate(LENGTHS):
        gain = 0.05 * (row + 1)  # rows of different loudness
        audio[row, :length] = gain * rng.standard_normal(length)
        mask[row, :length] = True
    if silent_row is not None:
        audio[silent_row] = 0.0
    return audio, mask


def _noise_bank(seed=1):
    rng = np.random.default_rng(seed)
    noise = np.zeros((3, 3000), np.float32)
    mask = np.zeros_like(noise, bool)
    for row, length in enumerate((3000, 1200, 2000)):
        noise[row, :length] = rng.uniform(-1, 1, length) * (row + 1)
        mask[row, :length] = True
    return noise, mask


def _reference(audio, mask, plan, noise=None, noise_mask=None):
    """The authors' `mixing_collated_audios` loop, row by row, on the plan's choices
    (clean secondaries, valid samples only: see the module's list of differences)."""
    out = audio.astype(np.float64).copy()
    plan = jax.tree.map(np.asarray, plan)
    for i in range(audio.shape[0]):
        if not plan.mixed[i]:
            continue
        c, n = int(plan.source[i]), int(plan.length[i])
        if plan.use_noise[i]:
            source = noise[c][noise_mask[c]].astype(np.float64)
        else:
            source = audio[c][mask[c]].astype(np.float64)
        ref_pow = np.mean(audio[i][mask[i]].astype(np.float64) ** 2)
        noise_pow = np.mean(source**2)
        if noise_pow == 0:
            scale = 0.0
        else:
            scale = (ref_pow / (noise_pow * 10 ** (float(plan.ratio_db[i]) / 10))) ** 0.5
        c_start, s_start = int(plan.source_start[i]), int(plan.target_start[i])
        out[i, s_start : s_start + n] += source[c_start : c_start + n] * scale
    return out


def _check_plan_fits(plan, lengths, config, noise_lengths=None):
    plan = jax.tree.map(np.asarray, plan)
    lengths = np.asarray(lengths)
    for i in range(len(lengths)):
        if not plan.mixed[i]:
            assert plan.length[i] == 0
            continue
        assert lengths[i] > 0
        if plan.use_noise[i]:
            source_length = noise_lengths[plan.source[i]]
            low, high = config.noise_ratio_db
        else:
            assert plan.source[i] != i and lengths[plan.source[i]] > 0
            source_length = lengths[plan.source[i]]
            low, high = config.speech_ratio_db
        assert 0 <= plan.length[i] <= min(int(lengths[i] * config.max_fraction), source_length)
        assert 0 <= plan.source_start[i] <= source_length - plan.length[i]
        assert 0 <= plan.target_start[i] <= lengths[i] - plan.length[i]
        assert low <= plan.ratio_db[i] <= high


@pytest.mark.slow
@pytest.mark.parametrize("with_noise", [False, True])
def test_mixing_equals_the_numpy_reference_of_the_authors_loop(with_noise):
    audio, mask = _batch(silent_row=5)  # row 5 is silent: mixing it in adds nothing
    noise, noise_mask = _noise_bank() if with_noise else (None, None)
    config = MixingConfig(prob=0.9, noise_prob=0.5 if with_noise else 0.0)
    seen_noise = seen_speech = 0
    for seed in range(12):
        lengths = jnp.asarray(mask.sum(1))
        noise_lengths = None if noise is None else jnp.asarray(noise_mask.sum(1))
        plan = draw_mixing_plan(jax.random.key(seed), lengths, config, noise_lengths)
        _check_plan_fits(plan, mask.sum(1), config, None if noise is None else noise_mask.sum(1))
        ours = jax.jit(apply_mixing)(audio, mask, plan, noise, noise_mask)
        expected = _reference(audio, mask, plan, noise, noise_mask)
        np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-5, atol=1e-6)
        # Padding stays zero, unmixed rows are untouched.
        assert (np.asarray(ours)[~mask] == 0).all()
        for i in np.flatnonzero(~np.asarray(plan.mixed)):
            np.testing.assert_array_equal(np.asarray(ours)[i], audio[i])
        seen_noise += int(np.asarray(plan.use_noise).sum())
        seen_speech += int((np.asarray(plan.mixed) & ~np.asarray(plan.use_noise)).sum())
    assert seen_speech > 0 and (seen_noise > 0) == with_noise


@pytest.mark.slow
def test_the_added_segment_has_the_planned_energy_ratio():
    audio, mask = _batch()
    plan = MixingPlan(
        mixed=jnp.asarray([True, False, False, False, False, False]),
        use_noise=jnp.zeros(6, bool),
        source=jnp.asarray([2, 0, 0, 0, 0, 0], jnp.int32),
        length=jnp.asarray([1000, 0, 0, 0, 0, 0], jnp.int32),
        source_start=jnp.asarray([100, 0, 0, 0, 0, 0], jnp.int32),
        target_start=jnp.asarray([2500, 0, 0, 0, 0, 0], jnp.int32),
        ratio_db=jnp.asarray([3.0, 0, 0, 0, 0, 0], jnp.float32),
    )
    mixed = np.asarray(apply_mixing(audio, mask, plan))
    added = (mixed[0] - audio[0])[2500:3500]
    secondary_segment = audio[2, 100:1100]
    scale = np.median(added / secondary_segment)
    np.testing.assert_allclose(added, scale * secondary_segment, atol=1e-6)
    # Whole-utterance powers: primary / (scale^2 * secondary) is 10^(3/10).
    primary = np.mean(audio[0, : LENGTHS[0]].astype(np.float64) ** 2)
    secondary = np.mean(audio[2, : LENGTHS[2]].astype(np.float64) ** 2)
    ratio_db = 10 * np.log10(primary / (scale**2 * secondary))
    assert ratio_db == pytest.approx(3.0, abs=1e-4)
    assert (mixed[0, :2500] == audio[0, :2500]).all() and (mixed[0, 3500:] == audio[0, 3500:]).all()


@pytest.mark.slow
def test_plan_distribution():
    config = MixingConfig(prob=0.3)
    lengths = jnp.asarray(LENGTHS)
    draws = 4000
    plans = jax.jit(jax.vmap(lambda k: draw_mixing_plan(k, lengths, config)))(
        jax.random.split(jax.random.key(0), draws)
    )
    plans = jax.tree.map(np.asarray, plans)
    mixed = plans.mixed
    valid = np.asarray(LENGTHS) > 0
    assert not mixed[:, ~valid].any()  # padding rows are never mixed ...
    assert not (plans.source[mixed] == np.flatnonzero(~valid)[0]).any()  # ... nor mixed in
    rate = mixed[:, valid].mean()
    n = draws * valid.sum()
    assert abs(rate - 0.3) < 5 * np.sqrt(0.3 * 0.7 / n), rate
    for row in np.flatnonzero(valid):
        rows = mixed[:, row]
        sources = plans.source[rows, row]
        assert (sources != row).all()
        others = [r for r in np.flatnonzero(valid) if r != row]
        counts = np.bincount(sources, minlength=len(LENGTHS))[others]
        expected = rows.sum() / len(others)
        assert np.abs(counts - expected).max() < 5 * np.sqrt(expected), counts
        # Segment lengths uniform on 0 .. min(L_row // 2, L_source): the mean of the
        # uniform integer law, clipped by shorter sources.
        half = LENGTHS[row] // 2
        lengths_drawn = plans.length[rows, row]
        caps = np.asarray(LENGTHS)[sources]
        draws_uncapped = lengths_drawn[caps >= half]
        assert draws_uncapped.max() <= half
        assert abs(draws_uncapped.mean() - half / 2) < 0.05 * half
        assert (lengths_drawn <= np.minimum(half, caps)).all()
    ratios = plans.ratio_db[mixed]
    assert ratios.min() >= -5 and ratios.max() <= 5
    assert abs(ratios.mean()) < 0.2 and abs(ratios.std() - 10 / np.sqrt(12)) < 0.1
    _check_plan_fits(jax.tree.map(lambda x: x[0], plans), LENGTHS, config)


@pytest.mark.slow
def test_noise_share_and_its_ratio_range():
    config = MixingConfig(prob=1.0, noise_prob=0.25)
    noise, noise_mask = _noise_bank()
    lengths = jnp.asarray(LENGTHS)
    plans = jax.vmap(
        lambda k: draw_mixing_plan(k, lengths, config, jnp.asarray(noise_mask.sum(1)))
    )(jax.random.split(jax.random.key(1), 2000))
    plans = jax.tree.map(np.asarray, plans)
    share = plans.use_noise[plans.mixed].mean()
    assert abs(share - 0.25) < 0.02, share
    noisy = plans.ratio_db[plans.use_noise]
    assert noisy.min() >= -5 and noisy.max() <= 20 and noisy.max() > 15


@pytest.mark.slow
def test_prob_zero_returns_the_batch_unchanged_and_one_row_has_no_partner():
    audio, mask = _batch()
    out = mix_utterances(jax.random.key(0), audio, mask, MixingConfig(prob=0.0))
    assert out is audio
    one = mix_utterances(jax.random.key(0), audio[:1], mask[:1], MixingConfig(prob=1.0))
    np.testing.assert_array_equal(np.asarray(one), audio[:1])


def test_same_key_same_mix_other_key_other_mix():
    audio, mask = _batch()
    config = MixingConfig(prob=1.0)
    run = jax.jit(lambda k: mix_utterances(k, audio, mask, config))
    a, b, c = run(jax.random.key(3)), run(jax.random.key(3)), run(jax.random.key(4))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert not np.array_equal(np.asarray(a), audio)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="prob"):
        MixingConfig(prob=1.5)
    with pytest.raises(ValueError, match="max_fraction"):
        MixingConfig(prob=0.2, max_fraction=0.0)
    with pytest.raises(ValueError, match="speech_ratio_db"):
        MixingConfig(prob=0.2, speech_ratio_db=(5.0, -5.0))


def _write_noise_folder(folder, seed=2):
    """Three 16 kHz noise files (one longer than the bank's rows) and files that are not
    audio; returns the audio files' samples by name, as libsndfile decodes them."""
    import soundfile

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, length, subtype in (
        ("babble.wav", 3000, "PCM_16"),
        ("fan.flac", 1200, "PCM_16"),
        ("street.wav", 9000, "FLOAT"),
    ):
        samples = (0.3 * rng.uniform(-1, 1, length)).astype(np.float32)
        soundfile.write(folder / name, samples, 16_000, subtype=subtype)
        written[name] = soundfile.read(folder / name, dtype="float32")[0]
    (folder / "README.txt").write_text("not audio")
    (folder / ".hidden.wav").write_bytes(b"not read")
    return written


@pytest.mark.slow
def test_a_noise_folder_becomes_a_bank_whose_segments_are_mixed_in(tmp_path):
    from papt_jax.data.noise_bank import load_noise_bank

    written = _write_noise_folder(tmp_path / "noise")
    bank = load_noise_bank(tmp_path / "noise", 5000, resample=False)
    assert [f.name for f in bank.files] == ["babble.wav", "fan.flac", "street.wav"]
    assert bank.noise.shape == bank.mask.shape == (3, 5000) and bank.cropped == 1
    np.testing.assert_array_equal(bank.mask.sum(1), [3000, 1200, 5000])
    for row, name in enumerate(("babble.wav", "fan.flac", "street.wav")):
        kept = written[name][:5000]
        np.testing.assert_array_equal(bank.noise[row, : kept.shape[0]], kept)
        assert (bank.noise[row, kept.shape[0] :] == 0).all()

    audio, mask = _batch()
    config = MixingConfig(prob=1.0, noise_prob=0.6)
    noisy_rows = 0
    for seed in range(6):
        key = jax.random.key(seed)
        # mix_utterances (the step's call) draws this plan from the same key.
        plan = draw_mixing_plan(
            key, jnp.asarray(mask.sum(1)), config, jnp.asarray(bank.mask.sum(1))
        )
        ours = mix_utterances(key, audio, mask, config, bank.noise, bank.mask)
        expected = _reference(audio, mask, plan, bank.noise, bank.mask)
        np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-5, atol=1e-6)
        use_noise = np.asarray(plan.use_noise) & (np.asarray(plan.length) > 0)
        for row in np.flatnonzero(use_noise):
            # The added samples are a scaled stretch of that noise file.
            start, n = int(plan.target_start[row]), int(plan.length[row])
            source, at = int(plan.source[row]), int(plan.source_start[row])
            added = np.asarray(ours)[row, start : start + n] - audio[row, start : start + n]
            noise_segment = bank.noise[source, at : at + n]
            scale = np.dot(added, noise_segment) / np.dot(noise_segment, noise_segment)
            assert scale > 0
            np.testing.assert_allclose(added, scale * noise_segment, atol=1e-6)
            noisy_rows += 1
    assert noisy_rows >= 5


def test_an_unusable_noise_folder_is_refused_naming_the_file(tmp_path):
    import soundfile

    from papt_jax.data.noise_bank import NoiseDirError, check_noise_dir, load_noise_bank

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    with pytest.raises(NoiseDirError, match="holds no audio file") as err:
        check_noise_dir(empty, resample=False)
    assert "noise_dir=''" in err.value.hint
    folder = tmp_path / "noise"
    _write_noise_folder(folder)
    soundfile.write(folder / "phone.wav", np.zeros((800, 2), np.float32) + 0.1, 8000)
    with pytest.raises(NoiseDirError, match="phone.wav: sample rate 8000 Hz") as err:
        check_noise_dir(folder, resample=False)
    assert "data.resample=True" in err.value.hint
    with pytest.raises(NoiseDirError, match="phone.wav: 2 channels"):
        check_noise_dir(folder, resample=True)
    (folder / "phone.wav").unlink()
    soundfile.write(folder / "quiet.wav", np.zeros(800, np.float32), 16_000)
    check_noise_dir(folder, resample=False)  # headers only: fine
    with pytest.raises(NoiseDirError, match="quiet.wav: all 800 samples are zero"):
        load_noise_bank(folder, 5000, resample=False)
    (folder / "quiet.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(NoiseDirError, match="quiet.wav: cannot read header"):
        check_noise_dir(folder, resample=False)
