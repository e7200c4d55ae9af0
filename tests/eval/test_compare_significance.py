"""Comparison tables with paired bootstrap intervals against Vanilla-FT, and seed runs."""

import csv
import subprocess
import sys

import numpy as np
import pytest

from papt_jax import significance
from papt_jax.eval import compare, report, runs, significance_table
from papt_jax.eval.results import EvalResult, ReportError

N_SPEAKERS = 12


def _result(split, dim, quality, noise_seed, keys_from=0):
    """Same utterances and labels for every run (fixed rng); predictions vary with the run."""
    rng = np.random.default_rng(11)
    ids = np.repeat(np.arange(N_SPEAKERS), 6)
    labels = rng.uniform(1, 7, ids.size)
    noise = np.random.default_rng(noise_seed).normal(0, 1, ids.size)
    preds = 4 + quality * (labels - 4) + noise
    return EvalResult(
        dim,
        split,
        [f"{split}_{i + keys_from:04d}" for i in range(ids.size)],
        [f"spk{s:02d}" for s in ids],
        labels,
        preds,
        {"sigma": 4 + 1.3 * (preds - 4)},
    )


def _write_run(folder, name, quality, noise_seed, keys_from=0, shuffle=False):
    results = [_result("test-b", d, quality, noise_seed, keys_from) for d in ("arousal", "valence")]
    if shuffle:  # another utterance order: pairing must go by key
        order = np.random.default_rng(5).permutation(results[0].keys.size)
        results = [
            EvalResult(
                r.dimension,
                r.split,
                r.keys[order],
                r.speakers[order],
                r.labels[order],
                r.predictions[order],
                {m: v[order] for m, v in r.calibrated.items()},
            )
            for r in results
        ]
    report.write_report(results, folder / "report", name, plots=False)
    return folder


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "papt_jax.eval.compare", *args],
        capture_output=True,
        text=True,
        timeout=1800,
    )


def _table(text, heading):
    block = text.split(heading)[1].split("\n#")[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    return {
        row[0]: row for row in ([c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:])
    }


def test_one_seed_equals_paired_bootstrap():
    r, b = _result("test-b", "arousal", 0.6, 1), _result("test-b", "arousal", 0.3, 2)
    got = significance_table.seed_bootstrap(
        r.labels, [r.predictions], [b.predictions], r.speakers, n_boot=300, seed=4
    )
    want = significance.paired_bootstrap(
        r.labels, r.predictions, b.predictions, r.speakers, n_boot=300, seed=4
    )
    for metric in ("o_ccc", "a_ccc"):
        g, w = got[metric], want[metric]
        assert (g.n_boot, g.n_degenerate, g.n_speakers) == (w.n_boot, w.n_degenerate, w.n_speakers)
        # The same draws: equal up to float round-off in the order of operations.
        np.testing.assert_allclose(
            [g.difference, g.low, g.high], [w.difference, w.low, w.high], rtol=1e-12
        )


@pytest.mark.slow
def test_cli_prints_intervals_matched_by_key(tmp_path):
    vanilla = _write_run(tmp_path / "vanilla", "Vanilla-FT", 0.3, 2)
    papt = _write_run(tmp_path / "papt", "PAPT-FT", 0.6, 1, shuffle=True)
    out = tmp_path / "comparison.md"
    proc = run_cli(f"--out={out}", "--n_boot=500", str(vanilla), str(papt / "report"))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert text in proc.stdout
    rows = _table(text, "### test-b: difference from Vanilla-FT")
    assert list(rows) == ["PAPT-FT", "PAPT-FT + σ shift"]  # PLDC rows of the last run
    r, b = _result("test-b", "valence", 0.6, 1), _result("test-b", "valence", 0.3, 2)
    want = significance.paired_bootstrap(
        r.labels, r.calibrated["sigma"], b.predictions, r.speakers, n_boot=500, seed=0
    )
    for column, metric in ((3, "o_ccc"), (4, "a_ccc")):
        d = want[metric]
        assert rows["PAPT-FT + σ shift"][column].startswith(
            f"{d.difference:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"
        )
        assert rows["PAPT-FT + σ shift"][column].endswith(" *") == d.excludes_zero()
    assert f"over the {N_SPEAKERS} test speakers" in text


@pytest.mark.slow
def test_cli_refuses_runs_on_other_utterances(tmp_path):
    vanilla = _write_run(tmp_path / "vanilla", "Vanilla-FT", 0.3, 2)
    other = _write_run(tmp_path / "other", "PAPT-FT", 0.6, 1, keys_from=1)
    out = tmp_path / "c.md"
    proc = run_cli(f"--out={out}", str(vanilla), str(other))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error: PAPT-FT") and "different test-b utterances" in lines[0]
    assert all(ln.startswith(("error:", "hint:")) for ln in lines) and len(lines) <= 2
    assert not out.exists()


@pytest.mark.slow
def test_seed_runs_are_summarised_and_compared_on_seed_means(tmp_path):
    vanilla = _write_run(tmp_path / "vanilla", "Vanilla-FT", 0.3, 2)
    seeds = [_write_run(tmp_path / f"s{i}", "papt", 0.5, 10 + i) for i in range(3)]
    out = tmp_path / "c.md"
    arg = "PAPT-FT=" + "+".join(str(s) for s in seeds)
    proc = run_cli(f"--out={out}", "--n_boot=200", str(vanilla), arg, "--pldc_systems=")
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "seeds per run: PAPT-FT: 3" in text
    per_seed = [_result("test-b", "arousal", 0.5, 10 + i) for i in range(3)]
    summaries = [
        runs.load_summary(s / "report" / "summary.json")["splits"]["test-b"]["arousal"]["system"]
        for s in seeds
    ]
    o = significance.seed_summary([s["o_ccc"] for s in summaries])
    a = significance.seed_summary([s["a_ccc"] for s in summaries])
    row = _table(text, "## test-b (seen speakers, Table 2)")["PAPT-FT"]
    assert row[1] == f"{o.mean:.3f} ± {o.std:.3f}"
    assert row[2].startswith(f"{a.mean:.3f} ± {a.std:.3f} (")
    b = _result("test-b", "arousal", 0.3, 2)
    want = significance_table.seed_bootstrap(
        b.labels, [r.predictions for r in per_seed], [b.predictions], b.speakers, n_boot=200
    )
    diff_row = _table(text, "### test-b: difference from Vanilla-FT")["PAPT-FT"]
    assert diff_row[1].startswith(f"{want['o_ccc'].difference:+.3f} [")
    # The seed-mean difference is the mean of the per-seed differences.
    singles = [
        significance.paired_bootstrap(b.labels, r.predictions, b.predictions, b.speakers)
        for r in per_seed
    ]
    assert want["o_ccc"].difference == pytest.approx(
        np.mean([s["o_ccc"].difference for s in singles])
    )


def test_seed_runs_must_match_and_need_predictions(tmp_path):
    a = _write_run(tmp_path / "a", "x", 0.5, 1)
    b = tmp_path / "b" / "report"
    b.mkdir(parents=True)
    summary = runs.load_summary(a / "report" / "summary.json")
    del summary["splits"]["test-b"]["valence"]
    (b / "summary.json").write_text(__import__("json").dumps(summary))
    with pytest.raises(ReportError, match="the seeds of X report different results"):
        runs.parse_run(f"X={a}+{b.parent}")
    with pytest.raises(ReportError, match="expected NAME=DIR1"):
        runs.parse_run("X=")
    (a / "report" / "test-b_arousal_predictions.csv").unlink()
    with pytest.raises(ReportError, match="predictions.csv is missing: significance needs"):
        runs.load_predictions(a / "report", "test-b", "arousal")
    vanilla = _write_run(tmp_path / "vanilla", "Vanilla-FT", 0.3, 2)
    with pytest.raises(ReportError, match="--baseline=nobody is not among"):
        compare.significance_section([runs.parse_run(str(vanilla))], "nobody", "test-b")
    none = compare.significance_section([runs.parse_run(str(a / "report"))], None, "test-b")
    assert none[0].startswith("No run is named Vanilla-FT")


def test_predictions_csv_round_trips(tmp_path):
    folder = _write_run(tmp_path / "r", "x", 0.5, 1)
    got = runs.load_predictions(folder / "report", "test-b", "valence")
    want = _result("test-b", "valence", 0.5, 1)
    np.testing.assert_array_equal(got.keys, want.keys)
    np.testing.assert_array_equal(got.predictions, want.predictions)
    np.testing.assert_array_equal(got.calibrated["sigma"], want.calibrated["sigma"])
    with open(folder / "report" / "test-b_valence_predictions.csv", newline="") as f:
        assert next(csv.reader(f))[:4] == ["key", "speaker", "label", "prediction"]
