"""Benchmark: `python -m papt_jax.predict` on one long recording: peak memory and throughput.

Run (MODEL is a finished workdir or an exported folder):
  python benchmarks/long_recording.py --model=runs/smoke
  python benchmarks/long_recording.py --model=runs/smoke --minutes=1,10,30 --repeats=2
  python benchmarks/long_recording.py --model=runs/smoke --checkout=../other_clone

For each length a recording is written once (16 kHz mono PCM_16 wav, in blocks: a tone whose
pitch and loudness move like speech, plus noise; deterministic), then the command line runs in
a child process exactly as a user runs it, with the default windows (20 s), batches (80 s) and
`--window_csv`. The child's peak resident memory comes from `os.wait4` (its own
`ru_maxrss`), its time from the wall clock around it. Throughput is audio seconds per second
of the whole command (start-up, model loading, compilation, reading and writing included)
and, between two lengths, the marginal rate (extra audio / extra time), which leaves out what
every run pays once. `--checkout` runs another clone's papt_jax (e.g. one before streaming
reads; with `--no-window_csv` if it lacks that flag) on the same files, for a comparison in
the same session.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parents[1]
RATE = 16_000
BLOCK = 60 * RATE


def write_recording(path: Path, minutes: float, seed: int = 0) -> float:
    """A speech-like test signal of `minutes`, written one minute at a time; its seconds."""
    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * RATE)
    phase = 0.0
    with soundfile.SoundFile(path, "w", RATE, 1, "PCM_16") as f:
        for start in range(0, total, BLOCK):
            n = min(BLOCK, total - start)
            t = (start + np.arange(n)) / RATE
            f0 = 140 + 40 * np.sin(2 * np.pi * 0.3 * t)  # a slowly moving pitch
            steps = phase + 2 * np.pi * np.cumsum(f0) / RATE
            phase = float(steps[-1])
            envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2  # syllable-rate loudness
            x = 0.3 * envelope * np.sin(steps) + 0.02 * rng.standard_normal(n)
            f.write(x.astype(np.float32))
    return total / RATE


def run_predict(checkout: Path, model: Path, audio: Path, out: Path, window_csv: bool) -> dict:
    """One command line in a child process: wall seconds and peak RSS."""
    flag = "--export" if (model / "manifest.json").is_file() else "--workdir"
    env = dict(os.environ, PYTHONPATH=str(checkout))
    args = [
        sys.executable,
        "-m",
        "papt_jax.predict",
        f"{flag}={model}",
        f"--audio={audio}",
        f"--out={out}",
    ]
    if window_csv:
        args.append(f"--window_csv={out.with_suffix('.windows.csv')}")
    start = time.perf_counter()
    child = subprocess.Popen(args, cwd=checkout, env=env, stderr=subprocess.PIPE, text=False)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"predict failed ({code}):\n{stderr.decode()[-3000:]}")
    return {"wall_s": seconds, "peak_rss_mib": usage.ru_maxrss / 1024}  # ru_maxrss is KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="workdir or export folder")
    parser.add_argument("--minutes", default="1,10,30", help="recording lengths")
    parser.add_argument("--repeats", type=int, default=1, help="runs per length (best kept)")
    parser.add_argument("--checkout", type=Path, default=REPO, help="papt_jax clone to run")
    parser.add_argument(
        "--window_csv",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also write per-window values (--no-window_csv for checkouts without the flag)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    model, checkout = args.model.absolute(), args.checkout.absolute()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in (float(m) for m in args.minutes.split(",")):
            audio = Path(tmp) / f"{minutes:g}min.wav"
            seconds = write_recording(audio, minutes)
            runs = [
                run_predict(checkout, model, audio, Path(tmp) / f"{minutes:g}.csv", args.window_csv)
                for _ in range(args.repeats)
            ]
            best = min(runs, key=lambda r: r["wall_s"])
            row = {
                "minutes": minutes,
                "audio_s": seconds,
                "wall_s": round(best["wall_s"], 2),
                "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs), 1),
                "audio_s_per_s": round(seconds / best["wall_s"], 1),
            }
            if results:
                prev = results[-1]
                extra = row["wall_s"] - prev["wall_s"]
                row["marginal_audio_s_per_s"] = (
                    round((seconds - prev["audio_s"]) / extra, 1) if extra > 0 else None
                )
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"checkout": str(checkout), "runs": results}, indent=1))


if __name__ == "__main__":
    main()
