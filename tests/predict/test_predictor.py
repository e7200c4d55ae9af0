"""Predictor against the evaluation stage of the shared smoke run.

Predictions use the evaluation's own jitted steps (`finetune.make_predict_step`,
`evaluate.make_encode_step`), the same speaker statistics (`pldc`) and PLDC's float32
operations in the same order; the smoke utterances fit one window, so windowing leaves them
whole. They agree to float32 rounding, not always bit for bit: the evaluation pads each
utterance into other batch shapes (another bucket length, other rows, 8 devices), and XLA may
then sum in another order (seen: 1 ulp on the plain output). So the plain output is compared
with rtol 1e-6 (a few ulp); the calibrated variants with an absolute tolerance that allows that
rounding times PLDC's scale factor sigma_bar / sigma (below 20 on the smoke run). The retrieved
speakers (neighbours, proxy) must be identical.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from smoke_audio import SETTINGS, passes, read_waves, split_keys

from papt_jax import pldc
from papt_jax.data.audio import NonFiniteAudio, SilentAudio, TooShortAudio
from papt_jax.eval.evaluate import dense_ids
from papt_jax.eval.results import load_result
from papt_jax.predict import profiles
from papt_jax.predict.predictor import OUTSIDE_SCALE, PLAIN, CalibrationError, Predictor
from papt_jax.predict.profiles import EnrollmentError, ProfileError, SpeakerProfile
from papt_jax.predict.windows import split_windows

pytestmark = pytest.mark.slow


# PLDC multiplies the plain output's rounding by sigma_bar / sigma (< 20 here).
PLAIN_RTOL, CALIBRATED_ATOL = 1e-6, 2e-5


def _assert_matches(out: dict, workdir, split: str, keys) -> None:
    """Every variant of `out` equals the evaluation's result for `keys` (to rounding)."""
    for dim, variants in out.items():
        result = load_result(workdir / "evaluate" / f"{split}_{dim}.npz")
        rows = [list(result.keys).index(str(k)) for k in keys]
        np.testing.assert_allclose(variants[PLAIN], result.predictions[rows], rtol=PLAIN_RTOL)
        for mode in pldc.MODES:
            np.testing.assert_allclose(
                variants[mode],
                result.calibrated[mode][rows],
                rtol=0,
                atol=CALIBRATED_ATOL,
                err_msg=f"{split} {dim} {mode}",
            )


def test_training_speakers_match_test_b_evaluation(predictor, smoke_run):
    workdir = smoke_run.workdir
    fine = passes(workdir)
    train_unique, train_dense = dense_ids(fine["train/speaker"])
    for speaker, keys in split_keys(workdir, "test_b").items():
        waves = read_waves(workdir, keys)
        out = predictor.predict(waves, speaker=speaker)
        assert set(out["arousal"]) == {PLAIN, *pldc.MODES, OUTSIDE_SCALE}
        assert not out["arousal"][OUTSIDE_SCALE].any()
        _assert_matches(out, workdir, "test-b", keys)
        # The same neighbours as the evaluation retrieved with the fine-tuned vectors.
        outputs = predictor.forward(waves, predictor.speaker_index(speaker))
        profile = predictor.profile_from(outputs, 1.0, speaker=speaker)
        rows = fine["test_b/speaker_id"].astype(str) == speaker
        _, _, near = pldc.retrieved_label_stats(
            fine["test_b/pooled"][rows],
            np.zeros(int(rows.sum()), np.int32),
            fine["train/pooled"],
            fine["train/arousal"],
            train_dense,
            predictor.pldc_k,
        )
        expected = tuple(predictor.speakers[int(train_unique[j])] for j in near[0])
        assert profile.dimensions["arousal"].neighbours == expected
        # Enrolling a training speaker's recordings stores the same numbers as a profile.
        enrolled = predictor.enroll(waves, speaker=speaker, min_seconds=0.0)
        assert enrolled.kind == "training" and enrolled.dimensions == profile.dimensions
        again = predictor.predict(waves, profile=enrolled)
        for dim in out:
            for variant in out[dim]:
                np.testing.assert_array_equal(again[dim][variant], out[dim][variant])


def test_enrollment_picks_test_c_proxy_and_neighbours_and_matches_evaluation(predictor, smoke_run):
    workdir = smoke_run.workdir
    fine, original = passes(workdir), passes(workdir, "original_encoder")
    train_unique, train_dense = dense_ids(fine["train/speaker"])
    speakers = predictor.speakers
    for speaker, keys in split_keys(workdir, "test_c").items():
        profile = predictor.enroll(read_waves(workdir, keys), name=f"new-{speaker}")
        # The evaluation fed each test-c utterance its proxy's index.
        evaluated = fine["test_c/speaker"][fine["test_c/speaker_id"].astype(str) == speaker]
        assert profile.kind == "enrolled"
        assert profile.speaker_id == speakers[int(evaluated[0])]
        rows = original["test_c/speaker_id"].astype(str) == speaker
        _, _, near = pldc.retrieved_label_stats(
            original["test_c/pooled"][rows],
            np.zeros(int(rows.sum()), np.int32),
            original["train/pooled"],
            fine["train/arousal"],
            train_dense,
            predictor.pldc_k,
        )
        expected = tuple(speakers[int(train_unique[j])] for j in near[0])
        assert profile.dimensions["arousal"].neighbours == expected
        assert profile.dimensions["arousal"].neighbours[0] == profile.speaker_id
        out = predictor.predict(read_waves(workdir, keys), profile=profile)
        _assert_matches(out, workdir, "test-c", keys)


def test_profile_round_trips_and_is_refused_by_another_model(predictor, smoke_run, tmp_path):
    workdir = smoke_run.workdir
    speaker, keys = sorted(split_keys(workdir, "test_c").items())[0]
    waves = read_waves(workdir, keys)
    profile = predictor.enroll(waves, name="alice")
    path = profile.save(tmp_path / "alice.json")
    loaded = SpeakerProfile.load(path)
    assert loaded == profile
    first = predictor.predict(waves[:2], profile=profile)
    again = predictor.predict(waves[:2], profile=path)
    for dim in first:
        for variant in first[dim]:
            np.testing.assert_array_equal(first[dim][variant], again[dim][variant])
    # Each prediction is calibrated on its own: one file gives the same numbers as in a set.
    single = predictor.predict(waves[:1], profile=profile)
    np.testing.assert_array_equal(single["valence"]["both"], first["valence"]["both"][:1])

    other = SpeakerProfile.from_dict({**profile.to_dict(), "model_id": "0" * 16})
    with pytest.raises(ProfileError, match="made with model 0000"):
        predictor.predict(waves[:1], profile=other)
    (tmp_path / "bad.json").write_text('{"format": "papt_jax.speaker_profile", "version": 1}')
    with pytest.raises(ProfileError, match="malformed profile"):
        SpeakerProfile.load(tmp_path / "bad.json")
    with pytest.raises(ProfileError, match="does not exist"):
        SpeakerProfile.load(tmp_path / "missing.json")


def test_enrollment_with_too_little_speech_is_refused(predictor, smoke_run):
    workdir = smoke_run.workdir
    keys = sorted(split_keys(workdir, "test_c").items())[0][1]
    waves = read_waves(workdir, keys)
    with pytest.raises(EnrollmentError, match="needs at least 2 recordings and 10 s"):
        predictor.enroll(waves[:1])
    with pytest.raises(EnrollmentError, match=r"2 usable recording\(s\), [0-9.]+ s of speech"):
        predictor.enroll(waves[:2])
    assert profiles.MIN_ENROLL_SECONDS == 10.0


def test_plain_output_and_unknown_speaker(predictor, smoke_run):
    keys = split_keys(smoke_run.workdir, "test_b")
    waves = read_waves(smoke_run.workdir, next(iter(keys.values())))
    out = predictor.predict(waves)
    assert set(out) == {"arousal", "valence"}
    assert set(out["arousal"]) == {PLAIN, OUTSIDE_SCALE}
    assert out["arousal"][PLAIN].shape == (len(waves),)
    assert np.isfinite(out["valence"][PLAIN]).all()
    with pytest.raises(KeyError, match="not one of the run's 17 speakers"):
        predictor.predict(waves, speaker="no-such-speaker")


def test_a_recording_in_one_window_equals_the_unwindowed_model(predictor, smoke_run):
    """Windowing leaves a recording that fits whole: window = recording, pooled = its pooled,
    and the head on the combined pooled vector = the model's own joint output."""
    import jax

    from papt_jax.predict.windows import window_batches

    workdir = smoke_run.workdir
    speaker, keys = sorted(split_keys(workdir, "test_b").items())[0]
    wave = read_waves(workdir, keys[:1])[0]
    windows = split_windows(0, len(wave), predictor.batching.max_frames)
    assert [(w.start, w.length) for w in windows] == [(0, len(wave))]
    index = predictor.speaker_index(speaker)
    windowed = predictor.forward([wave], index)

    # The evaluation's step (`finetune.make_predict_step`) as the predictor holds it.
    runtime = predictor._runtimes["arousal"]

    def model_output(audio, mask):
        speakers = np.full(audio.shape[:1], index, np.int32)
        batch = {"audio": audio, "audio_mask": mask, "speaker": speakers}
        preds, pooled = jax.device_get(runtime.encode(runtime.variables, batch))
        return preds[0], pooled[0]

    # The model on the same padded batch: bit for bit.
    (batch,) = window_batches([wave], windows, predictor.batching)
    preds, pooled = model_output(batch.audio, batch.audio_mask)
    np.testing.assert_array_equal(windowed["arousal"]["pooled"][0], pooled)
    np.testing.assert_array_equal(windowed["arousal"][PLAIN][0], preds)
    # The model on the bare, unpadded recording: the same to float32 rounding.
    preds, pooled = model_output(wave[None], np.ones((1, len(wave)), bool))
    np.testing.assert_allclose(windowed["arousal"]["pooled"][0], pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(windowed["arousal"][PLAIN][0], preds, rtol=1e-6)


def test_long_recording_is_the_frame_weighted_mean_of_its_windows(predictor, smoke_run):
    workdir = smoke_run.workdir
    keys = np.concatenate(list(split_keys(workdir, "test_c").values()))
    wave = max(read_waves(workdir, keys), key=len)
    short = Predictor(predictor.assets, **{**SETTINGS, "window_seconds": 1.0})
    windows = split_windows(0, len(wave), short.batching.max_frames)
    assert len(windows) > 2  # 2.98 s, at most 49 frames (0.98 s) per window
    whole = short.forward([wave], 3)
    pieces = short.forward([wave[w.start : w.start + w.length] for w in windows], 3)
    frames = np.asarray([w.frames for w in windows], np.float64)
    for dim in whole:
        expected = (pieces[dim]["pooled"].astype(np.float64) * frames[:, None]).sum(0)
        np.testing.assert_allclose(
            whole[dim]["pooled"][0], expected / frames.sum(), rtol=1e-6, atol=1e-7
        )


def test_bad_waveforms_are_named_and_channels_mixed(predictor, smoke_run):
    keys = next(iter(split_keys(smoke_run.workdir, "test_b").values()))
    wave = read_waves(smoke_run.workdir, keys)[0]
    bad = wave.copy()
    bad[10] = np.nan
    with pytest.raises(NonFiniteAudio, match="waveform 1: 1 of"):
        predictor.predict([wave, bad])
    with pytest.raises(TooShortAudio, match="waveform 0"):
        predictor.predict([wave[:399]])
    with pytest.raises(TooShortAudio):  # 199 samples at 8 kHz are 398 at 16 kHz
        predictor.predict([wave[:199]], sample_rate=8000)
    with pytest.raises(SilentAudio):
        predictor.predict([np.zeros(16000, np.float32)])
    stereo = np.stack([wave, 0.5 * wave], axis=1)
    mixed = predictor.predict([stereo])
    mono = predictor.predict([(0.75 * wave.astype(np.float64)).astype(np.float32)])
    np.testing.assert_array_equal(mixed["arousal"][PLAIN], mono["arousal"][PLAIN])


def test_original_vectors_are_recomputed_when_the_run_saved_none(predictor, smoke_run, tmp_path):
    """A run evaluated without test-c saved no original-encoder passes: enrollment then
    encodes the training split itself, as the evaluation would."""
    import shutil

    from papt_jax.predict import assets

    copy = tmp_path / "run"
    shutil.copytree(smoke_run.workdir, copy, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    (copy / "evaluate" / "passes" / "original_encoder.npz").unlink()
    recomputed = assets.from_workdir(copy).original.reference
    saved = predictor.assets.original.reference
    np.testing.assert_array_equal(recomputed.speaker_index, saved.speaker_index)
    np.testing.assert_allclose(recomputed.vectors, saved.vectors, rtol=1e-5, atol=1e-6)


def _shortest_train_s(workdir) -> float:
    index = json.loads((workdir / "data/papt_msp_podcast/1.0.0/index/train.json").read_text())
    return min(index["num_samples"]) / 16_000


@pytest.mark.parametrize("seconds", [0.025, 0.1, 0.3])
def test_recordings_much_shorter_than_the_training_data_are_refused(predictor, smoke_run, seconds):
    workdir = smoke_run.workdir
    shortest = _shortest_train_s(workdir)
    assert predictor.assets.shortest_train_s == pytest.approx(shortest, abs=1e-4)
    assert predictor.min_seconds == pytest.approx(0.5 * shortest, abs=1e-4)
    assert predictor.min_seconds > 0.3  # the smoke corpus's shortest utterance is >= 1 s
    wave = read_waves(workdir, next(iter(split_keys(workdir, "test_b").values())))[0]
    clip = wave[len(wave) // 2 :][: round(seconds * 16_000)]
    expected = (
        f"waveform 1: {seconds:.3f} s; this model takes recordings of at least "
        f"{predictor.min_seconds:.2f} s (0.5 x the shortest training utterance, {shortest:.2f} s)"
    )
    with pytest.raises(TooShortAudio) as err:
        predictor.predict([wave, clip])
    assert str(err.value) == f"{expected} (too_short)"
    with pytest.raises(TooShortAudio, match="waveform 0"):
        predictor.enroll([clip, wave, wave])


def test_the_minimum_duration_of_older_runs_comes_from_the_index_or_a_default(smoke_run, tmp_path):
    from papt_jax.predict import assets, limits

    copy = tmp_path / "run"
    shutil.copytree(smoke_run.workdir, copy, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    record_path = copy / "stages" / "evaluate.json"
    record = json.loads(record_path.read_text())
    assert record["facts"]["shortest_train_s"] == round(_shortest_train_s(copy), 4)
    del record["facts"]["shortest_train_s"]  # evaluated before it was recorded
    record_path.write_text(json.dumps(record))
    assert assets.from_workdir(copy).shortest_train_s == round(_shortest_train_s(copy), 4)
    (copy / "data/papt_msp_podcast/1.0.0/index/train.json").unlink()  # and the index is gone
    older = assets.from_workdir(copy)
    assert older.shortest_train_s is None
    assert older.min_seconds == limits.FALLBACK_MIN_SECONDS == 1.0
    clip = np.full(8_000, 0.1, np.float32)  # 0.5 s
    with pytest.raises(TooShortAudio, match="at least 1.00 s .the default for models that did"):
        limits.check_duration(clip, "old.wav", older.shortest_train_s)


def _outputs_with(outputs, dim: str, row: int, value: float):
    changed = {d: {k: v.copy() for k, v in o.items()} for d, o in outputs.items()}
    changed[dim][PLAIN][row] = value
    return changed


@pytest.mark.parametrize("value", [9.27, -8.55, np.nan])
def test_predictions_outside_the_label_scale_are_flagged_and_never_calibrate(
    predictor, smoke_run, value
):
    workdir = smoke_run.workdir
    speaker, keys = sorted(split_keys(workdir, "test_b").items())[0]
    outputs = predictor.forward(read_waves(workdir, keys), predictor.speaker_index(speaker))
    assert len(keys) >= 3
    # The first recording's arousal as a 25 ms clip gave it (issue 22), valence untouched.
    bad = _outputs_with(outputs, "arousal", 0, value)
    rest = {d: {k: v[1:] for k, v in o.items()} for d, o in outputs.items()}
    profile = predictor.profile_from(bad, 1.0, speaker=speaker)
    without = predictor.profile_from(rest, 1.0, speaker=speaker)
    every = predictor.profile_from(outputs, 1.0, speaker=speaker)
    assert profile.dimensions["arousal"] == dataclasses.replace(
        without.dimensions["arousal"], left_out=1
    )
    assert profile.dimensions["valence"] == every.dimensions["valence"]
    results = predictor.results(bad, profile)
    assert results["arousal"][OUTSIDE_SCALE].tolist() == [True] + [False] * (len(keys) - 1)
    assert not results["valence"][OUTSIDE_SCALE].any()
    # The other recordings are calibrated as if the bad one had not been there.
    for mode in pldc.MODES:
        np.testing.assert_array_equal(
            results["arousal"][mode][1:], predictor.results(rest, without)["arousal"][mode]
        )
    # The profile file records what was left out; older files without the field read as 0.
    stored = profile.to_dict()
    assert stored["dimensions"]["arousal"]["left_out"] == 1
    del stored["dimensions"]["arousal"]["left_out"]
    assert SpeakerProfile.from_dict(stored).dimensions["arousal"].left_out == 0

    nothing = outputs
    for row in range(len(keys)):
        nothing = _outputs_with(nothing, "valence", row, value)
    with pytest.raises(CalibrationError, match="every valence prediction of the .* recording"):
        predictor.profile_from(nothing, 1.0, speaker=speaker)
