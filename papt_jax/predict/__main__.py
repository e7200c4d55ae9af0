"""Predict arousal and valence of audio files with a finished run or an exported model.

  python -m papt_jax.predict --workdir=RUN --audio=a.wav,recordings/ --out=predictions.csv
  python -m papt_jax.predict --export=MODEL --audio=... --out=... --speaker=1234
  python -m papt_jax.predict --export=MODEL --enroll=alice/ --save_profile=alice.json
  python -m papt_jax.predict --export=MODEL --profile=alice.json --audio=new/ --out=alice.csv
  python -m papt_jax.predict --converted=CKPT --audio=a.wav,recordings/ --out=predictions.csv

  python -m papt_jax.predict --converted=CKPT --reference=RUN --enroll=alice/ \
      --save_profile=alice.json --audio=new/ --out=alice.csv

`--converted` is a published emotion model converted with `python -m papt_jax.convert`
(audEERING's w2v2-L-robust-12, the MSP-Podcast challenge's WavLM baseline): its own head
predicts arousal, dominance and valence directly, on its own scale (0..1 for both; the
CSV's `scale` column and stderr say so). PLDC then needs training speakers with labels:
`--reference=RUN` takes them from a run whose dataset is prepared (its training split,
encoded by the emotion model; `papt_jax/predict/emotion_reference.py`), for `--enroll`;
a saved `--profile` needs no reference. Dominance has no labels in the data: uncalibrated.
Its CSV ends with `scale` instead of `outside_scale`, and it takes recordings of at least
1 s (the published models record no training durations: `limits.min_seconds(None)`).

`--audio` takes files and folders (searched recursively), comma-separated. The CSV has one
row per predicted file: file, duration_s, speaker (the speaker or profile used, or "none
(plain model output)"), one column per emotion dimension and, with a speaker, its PLDC
variants `<dim>_mu`, `<dim>_sigma`, `<dim>_both`, and last `outside_scale`: the dimensions
whose prediction lies outside the label scale 1..7 (';'-separated, empty for none), which
never enter the speaker's calibration. Files that cannot be used (unreadable, silent,
shorter than the model's minimum duration, ...) are named on stderr and listed in
`<out stem>.rejected.csv` (file, reason, detail; written only when a file was refused); the
others are predicted. Exit code 0 when at least one file was predicted, 2 otherwise (one
error line).

The outputs (`--out`, its `.rejected.csv`, `--window_csv`, `--save_profile`) are checked
before the model is loaded: one that is an input (an audio file, the profile), an existing
folder, or in a place that cannot be written is refused with one line. Each is written under
a temporary name and renamed when complete, so a failure leaves an earlier file as it was.

Long recordings are read and encoded window by window (`--window_seconds`), so memory does
not grow with their length; `--window_csv=FILE` also writes each window's values (file,
window, start_s, end_s, the same value columns and `outside_scale`), with windows every
`--hop_seconds` if given (sliding windows) or tiling each recording (the default). No window
is shorter than the model's minimum duration: window settings that could cut one (tiled
windows can be half of `--window_seconds`) stop with one error line naming the least
`--window_seconds` that works.

Speakers (exclusive: --speaker with --enroll means a training speaker's enrollment set):
  --speaker=ID       a training speaker; calibrated with the --audio files as its set
  --enroll=FOLDER    a new speaker's recordings (>= 2 files, >= 10 s): proxy speaker and PLDC
                     neighbours chosen with the original encoder, as for test-c
  --profile=FILE     a profile saved earlier with --save_profile (no enrollment audio needed)
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from pathlib import Path

from absl import flags, logging

from papt_jax import cli, storage
from papt_jax.data.audio import SAMPLE_RATE
from papt_jax.data.msp_podcast import LABEL_MAX, LABEL_MIN
from papt_jax.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished run's workdir.")
_EXPORT = flags.DEFINE_string("export", None, "A folder written by python -m papt_jax.export.")
_CONVERTED = flags.DEFINE_string(
    "converted", None, "A converted emotion model (python -m papt_jax.convert), used directly."
)
_REFERENCE = flags.DEFINE_string(
    "reference", None, "With --converted and --enroll: a run whose training speakers PLDC uses."
)
_AUDIO = flags.DEFINE_string("audio", None, "Comma-separated audio files and/or folders.")
_OUT = flags.DEFINE_string("out", None, "CSV file to write the predictions to.")
_SPEAKER = flags.DEFINE_string("speaker", None, "A training speaker's id (speakers.json).")
_ENROLL = flags.DEFINE_string("enroll", None, "Folder (or files) of a new speaker's recordings.")
_PROFILE = flags.DEFINE_string("profile", None, "A speaker profile saved with --save_profile.")
_SAVE_PROFILE = flags.DEFINE_string("save_profile", None, "Write the speaker profile here.")
_WINDOW = flags.DEFINE_float("window_seconds", 20.0, "Longest window a recording is encoded in.")
_BATCH = flags.DEFINE_float("batch_seconds", 80.0, "Padded audio per batch (memory).")
_BUCKETS = flags.DEFINE_integer("num_buckets", 5, "Padded window lengths (compiled shapes).")
_DEVICES = flags.DEFINE_integer("num_devices", 1, "Accelerators to spread batches over.")
_HOP = flags.DEFINE_float(
    "hop_seconds", None, "Sliding windows: a window starts every this many seconds."
)
_WINDOW_CSV = flags.DEFINE_string("window_csv", None, "Also write each window's values here.")

PLAIN_NOTE = "none (plain model output)"


def _check_flags() -> None:
    given = [v for v in (_WORKDIR.value, _EXPORT.value, _CONVERTED.value) if v is not None]
    if len(given) != 1:
        raise UserError(
            "give exactly one of --workdir (a finished run), --export (an exported model) "
            "and --converted (a converted emotion model)"
        )
    if _CONVERTED.value and _SPEAKER.value:
        raise UserError(
            "--speaker needs a run's speaker table; the emotion model has none",
            hint="enroll the speaker instead (--enroll with --reference=RUN)",
        )
    if _CONVERTED.value and _ENROLL.value and not _REFERENCE.value:
        raise UserError(
            "--enroll with --converted needs --reference=RUN: the training speakers PLDC "
            "retrieves from"
        )
    if _REFERENCE.value and not _CONVERTED.value:
        raise UserError("--reference goes with --converted (a run predicts with its own)")
    if _PROFILE.value and (_SPEAKER.value or _ENROLL.value):
        raise UserError("--profile cannot be combined with --speaker or --enroll")
    if _AUDIO.value and not _OUT.value:
        raise UserError("--audio needs --out (the CSV to write)")
    if _OUT.value and not _AUDIO.value:
        raise UserError("--out needs --audio (the files to predict)")
    if not _AUDIO.value and not (_ENROLL.value and _SAVE_PROFILE.value):
        raise UserError(
            "nothing to do: give --audio and --out, or --enroll with --save_profile",
            hint="run with --help for examples",
        )
    if _SAVE_PROFILE.value and not (_ENROLL.value or _SPEAKER.value):
        raise UserError("--save_profile needs --enroll (or --speaker) to make a profile from")
    if _WINDOW_CSV.value and not _AUDIO.value:
        raise UserError("--window_csv needs --audio (the files to predict)")


def _report_problems(problems) -> None:
    for p in problems:
        print(f"skipped {p.file}: {p.reason} ({p.detail})", file=sys.stderr)


def _progress_bar(seconds: float, passes: int, what: str):
    """A bar over `passes` model passes of `seconds` of audio (the share done is shown)."""
    from papt_jax import progress

    noun = "pass" if passes == 1 else "passes"
    bar = progress.bar(
        total=seconds * passes,
        desc=f"{what} {seconds:.1f} s of audio ({passes} model {noun})",
        show_count=False,
    )

    def update(done: float) -> None:
        # Header durations (the total) and decoded lengths differ by resampling round-off.
        bar.update(min(done, max(bar.total - bar.n, 0.0)))

    return bar, update


def _read_all(predictor, files):
    """Reads every file (for enrollment): (waveforms, problems)."""
    from papt_jax.predict import files as files_lib

    waves, problems = [], []
    for _, w, bad in files_lib.read_chunks(files, check=predictor.check_duration):
        waves += w
        problems += bad
    return waves, problems


def _enroll(predictor, found):
    from papt_jax.predict import files as files_lib

    waves, problems = _read_all(predictor, found.files)
    _report_problems(problems)
    seconds = sum(len(w) for w in waves) / SAMPLE_RATE
    # One pass per dimension, and for a new speaker one of the original encoder.
    passes = len(predictor.dimensions) + (0 if _SPEAKER.value else 1)
    bar, progress = _progress_bar(seconds, passes, "enrolling")
    with bar:
        name = Path(files_lib.split_paths(_ENROLL.value)[0]).name or "enrolled"
        profile = predictor.enroll_prepared(
            waves,
            speaker=_SPEAKER.value,
            name=name,
            where=f"--enroll={_ENROLL.value}",
            progress=progress,
        )
    print(
        f"enrolled {profile.name}: {profile.recordings} recordings, {profile.seconds:.1f} s; "
        f"model input: training speaker {profile.speaker_id}",
        file=sys.stderr,
    )
    return profile


def _predict_files(predictor, profile, found, out: Path) -> int:
    import numpy as np

    from papt_jax.predict import files as files_lib
    from papt_jax.predict.predictor import OUTSIDE_SCALE, PLAIN

    if found.ignored:
        kinds = sorted({p.suffix or p.name for p in found.ignored})
        print(
            f"ignored {len(found.ignored)} non-audio file(s) in the folders ({', '.join(kinds)})",
            file=sys.stderr,
        )
    index = None
    if _SPEAKER.value and profile is None:
        index = predictor.speaker_index(_SPEAKER.value)
    elif profile is not None:
        index = predictor.speaker_index(profile.speaker_id)
    seconds = sum(files_lib.probe_seconds(f) for f in found.files)
    paths, durations, problems, parts, windows = [], [], [], [], []
    passes = len(predictor.dimensions)
    bar, progress = _progress_bar(seconds, passes, "predicting")
    with bar:
        for chunk_paths, waves, bad in files_lib.read_chunks(
            found.files, check=predictor.check_duration
        ):
            problems += bad
            bar.total -= sum(files_lib.probe_seconds(p.file) for p in bad) * passes
            if waves:
                parts.append(predictor.forward(waves, index, progress))
                windows += [(len(paths) + w.item, w) for w in predictor.windows(waves)]
                paths += chunk_paths
                durations += [len(w) / SAMPLE_RATE for w in waves]
    _report_problems(problems)
    rejected = _write_rejected(out, problems) if problems else None
    if not paths:
        raise UserError(
            f"no file could be predicted: all {len(problems)} were refused (listed in {rejected})"
        )
    outputs = {
        dim: {k: np.concatenate([p[dim][k] for p in parts]) for k in (PLAIN, "pooled")}
        for dim in predictor.dimensions
    }
    if _SPEAKER.value and profile is None:
        profile = predictor.profile_from(outputs, sum(durations), speaker=_SPEAKER.value)
        if _SAVE_PROFILE.value:
            profile.save(_SAVE_PROFILE.value)
            print(f"saved profile to {_SAVE_PROFILE.value}", file=sys.stderr)
    results = predictor.results(outputs, profile)
    _write_predictions(out, paths, durations, results, profile)
    if _WINDOW_CSV.value:
        per_window = {
            dim: {PLAIN: np.concatenate([p[dim]["window_prediction"] for p in parts])}
            for dim in predictor.dimensions
        }
        window_results = predictor.results(per_window, profile)
        _write_windows(Path(_WINDOW_CSV.value), paths, windows, window_results, profile)
    print(
        f"wrote {len(paths)} prediction(s) to {out}"
        + (f"; {len(problems)} file(s) refused, listed in {rejected}" if problems else ""),
        file=sys.stderr,
    )
    flagged = {dim: int(r[OUTSIDE_SCALE].sum()) for dim, r in results.items()}
    if any(flagged.values()):
        counts = ", ".join(f"{n} {dim}" for dim, n in flagged.items() if n)
        print(
            f"predictions outside the label scale {LABEL_MIN:g}..{LABEL_MAX:g} ({counts}) are "
            f"marked in column {OUTSIDE_SCALE} and left out of the speaker's calibration",
            file=sys.stderr,
        )
    return 0


def _emotion_profile(predictor, enroll):
    from papt_jax.predict import emotion_reference
    from papt_jax.predict import files as files_lib
    from papt_jax.predict.profiles import SpeakerProfile

    if _PROFILE.value:
        return SpeakerProfile.load(_PROFILE.value)
    if not _ENROLL.value:
        return None
    reference = emotion_reference.reference_from_run(predictor, _REFERENCE.value)
    waves, problems = _read_all(predictor, enroll.files)
    _report_problems(problems)
    name = Path(files_lib.split_paths(_ENROLL.value)[0]).name or "enrolled"
    profile = emotion_reference.enroll(predictor, reference, waves, name)
    print(
        f"enrolled {profile.name}: {profile.recordings} recordings, {profile.seconds:.1f} s; "
        f"nearest training speaker {profile.speaker_id}",
        file=sys.stderr,
    )
    if _SAVE_PROFILE.value:
        profile.save(_SAVE_PROFILE.value)
        print(f"saved profile to {_SAVE_PROFILE.value}", file=sys.stderr)
    return profile


def _predict_emotion_model(found, enroll, out: Path | None) -> int:
    from papt_jax.pldc import MODES
    from papt_jax.predict import emotion_reference
    from papt_jax.predict import files as files_lib
    from papt_jax.predict.emotion import EmotionPredictor

    predictor = EmotionPredictor.from_converted(
        _CONVERTED.value,
        window_seconds=_WINDOW.value,
        batch_seconds=_BATCH.value,
        num_buckets=_BUCKETS.value,
        num_devices=_DEVICES.value,
    )
    profile = _emotion_profile(predictor, enroll)
    if found is None:
        return 0
    paths, durations, problems, parts = [], [], [], []
    total = sum(files_lib.probe_seconds(f) for f in found.files)
    bar, progress = _progress_bar(total, 1, "predicting")
    with bar:
        for chunk_paths, waves, bad in files_lib.read_chunks(
            found.files, check=predictor.check_duration
        ):
            problems += bad
            bar.total -= sum(files_lib.probe_seconds(p.file) for p in bad)
            if waves:
                parts.append(predictor.forward(waves, progress)[0])
                paths += chunk_paths
                durations += [len(w) / SAMPLE_RATE for w in waves]
    _report_problems(problems)
    rejected = _write_rejected(out, problems) if problems else None
    if not paths:
        raise UserError(
            f"no file could be predicted: all {len(problems)} were refused (listed in {rejected})"
        )
    import numpy as np

    preds = np.concatenate(parts)
    low, high = predictor.label_range
    dims = predictor.dimensions
    calibrated = [] if profile is None else [d for d in dims if d in profile.dimensions]
    results = (
        {d: {"prediction": preds[:, j]} for j, d in enumerate(dims)}
        if profile is None
        else emotion_reference.calibrate(predictor, preds, profile)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        header = ["file", "duration_s", "speaker", *dims]
        header += [f"{d}_{mode}" for d in calibrated for mode in MODES]
        writer.writerow([*header, "scale"])
        note = PLAIN_NOTE if profile is None else profile.describe()
        for i, (path, seconds) in enumerate(zip(paths, durations, strict=True)):
            row = [str(path), f"{seconds:.3f}", note]
            row += [f"{results[d]['prediction'][i]:.6g}" for d in dims]
            row += [f"{results[d][mode][i]:.6g}" for d in calibrated for mode in MODES]
            writer.writerow([*row, f"{low:g}..{high:g}"])
    print(f"outputs: {predictor.describe_scale()}", file=sys.stderr)
    print(
        f"wrote {len(paths)} prediction(s) to {out}"
        + (f"; {len(problems)} file(s) refused, listed in {rejected}" if problems else ""),
        file=sys.stderr,
    )
    return 0


def rejected_path(out: Path) -> Path:
    """Where the refused files of `out` are listed: `<stem>.rejected.csv` beside it."""
    return out.with_name(out.stem + ".rejected.csv")


def _check_outputs(audio, enroll) -> None:
    """Refuses, before any work, outputs that would overwrite an input or cannot be written."""
    inputs = [*(audio.files if audio else ()), *(enroll.files if enroll else ())]
    inputs += [p for p in (_PROFILE.value,) if p]
    outputs = []
    if _OUT.value:
        out = storage.check_output_file(_OUT.value, "--out", inputs)
        storage.check_output_file(rejected_path(out), "--out's list of refused files", inputs)
        outputs += [out, rejected_path(out)]
    if _WINDOW_CSV.value:
        windows = storage.check_output_file(_WINDOW_CSV.value, "--window_csv", inputs)
        if windows in outputs:
            raise UserError(f"--window_csv={windows} is also the predictions' file")
        outputs.append(windows)
    if _SAVE_PROFILE.value:
        profile = storage.check_output_file(_SAVE_PROFILE.value, "--save_profile", inputs)
        if profile in outputs:
            raise UserError(f"--save_profile={profile} is also the predictions' file")


def _write_rejected(out: Path, problems) -> Path:
    path = rejected_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(f) -> None:
        writer = csv.writer(f)
        writer.writerow(["file", "reason", "detail"])
        for p in problems:
            writer.writerow([str(p.file), p.reason, p.detail])

    storage.write_atomic(path, write)
    return path


def _value_columns(results, profile) -> tuple[list[str], Callable[[int], list[str]]]:
    """The columns `--out` and `--window_csv` share after their own leading ones.

    Returns:
      (header, row_values): the speaker note, each dimension's plain value, with a profile
      each PLDC mode's, and `outside_scale`; `row_values(i)` gives result row i's cells.
    """
    from papt_jax.pldc import MODES
    from papt_jax.predict.predictor import OUTSIDE_SCALE, PLAIN

    dims = list(results)
    modes = () if profile is None else MODES
    header = ["speaker", *dims, *(f"{dim}_{mode}" for dim in dims for mode in modes), OUTSIDE_SCALE]
    note = PLAIN_NOTE if profile is None else profile.describe()

    def row_values(i: int) -> list[str]:
        row = [note, *(f"{results[dim][PLAIN][i]:.6g}" for dim in dims)]
        row += [f"{results[dim][mode][i]:.6g}" for dim in dims for mode in modes]
        row.append(";".join(dim for dim in dims if results[dim][OUTSIDE_SCALE][i]))
        return row

    return header, row_values


def _write_predictions(out: Path, paths, durations, results, profile) -> None:
    header, row_values = _value_columns(results, profile)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(f) -> None:
        writer = csv.writer(f)
        writer.writerow(["file", "duration_s", *header])
        for i, (path, seconds) in enumerate(zip(paths, durations, strict=True)):
            writer.writerow([str(path), f"{seconds:.3f}", *row_values(i)])

    storage.write_atomic(out, write)


def _write_windows(path: Path, paths, windows, results, profile) -> None:
    """One row per window: file, window number in its file, start and end in seconds, the
    values as in `--out`, and `outside_scale`."""
    header, row_values = _value_columns(results, profile)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(f) -> None:
        writer = csv.writer(f)
        writer.writerow(["file", "window", "start_s", "end_s", *header])
        number = {}
        for i, (item, w) in enumerate(windows):
            number[item] = number.get(item, -1) + 1
            start, end = w.start / SAMPLE_RATE, (w.start + w.length) / SAMPLE_RATE
            writer.writerow(
                [str(paths[item]), number[item], f"{start:.3f}", f"{end:.3f}", *row_values(i)]
            )

    storage.write_atomic(path, write)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}", hint="flags only; see --help")
    _check_flags()
    if not flags.FLAGS["verbosity"].present:
        # Orbax and JAX log every checkpoint read at INFO; the user wants the predictions.
        logging.set_verbosity(logging.WARNING)
    from papt_jax.predict import assets as assets_lib
    from papt_jax.predict import files as files_lib
    from papt_jax.predict.predictor import Predictor
    from papt_jax.predict.profiles import SpeakerProfile

    # Paths first: a typo fails before the model is loaded.
    audio = files_lib.find_audio(files_lib.split_paths(_AUDIO.value)) if _AUDIO.value else None
    enroll = None
    if _ENROLL.value:
        enroll = files_lib.find_audio(files_lib.split_paths(_ENROLL.value), "--enroll")
    _check_outputs(audio, enroll)

    if _CONVERTED.value:
        return _predict_emotion_model(audio, enroll, Path(_OUT.value) if _OUT.value else None)
    source = (
        assets_lib.from_workdir(_WORKDIR.value)
        if _WORKDIR.value
        else assets_lib.from_export(_EXPORT.value)
    )
    predictor = Predictor(
        source,
        window_seconds=_WINDOW.value,
        batch_seconds=_BATCH.value,
        num_buckets=_BUCKETS.value,
        num_devices=_DEVICES.value,
        hop_seconds=_HOP.value,
    )
    if _SPEAKER.value:
        predictor.speaker_index(_SPEAKER.value)  # an unknown id fails before any work
    profile = None
    if _PROFILE.value:
        profile = SpeakerProfile.load(_PROFILE.value)
        predictor.check_profile(profile)
    elif _ENROLL.value:
        profile = _enroll(predictor, enroll)
        if _SAVE_PROFILE.value:
            profile.save(_SAVE_PROFILE.value)
            print(f"saved profile to {_SAVE_PROFILE.value}", file=sys.stderr)
    if audio is None:
        return 0
    return _predict_files(predictor, profile, audio, Path(_OUT.value))


if __name__ == "__main__":
    cli.run(main)
