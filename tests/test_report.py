"""Report files: every file written, right columns and rows, tables match the metrics."""

import csv
import json

import numpy as np
import pytest

from papt_jax import metrics, report
from papt_jax.pldc import MODES


def make_result(rng, dimension, split, n_speakers=8, shift=0.0):
    ids = np.repeat(np.arange(n_speakers), rng.integers(3, 15, n_speakers))
    ids = np.concatenate([ids, [99]])  # a one-utterance speaker, excluded from A-CCC
    labels = rng.uniform(1, 7, ids.size)
    preds = 0.6 * labels + rng.normal(0, 0.7, ids.size) + shift
    # Stand-ins for PLDC outputs; the report must not care how they were made.
    calibrated = {m: preds + 0.1 * (i + 1) * rng.normal(size=ids.size) for i, m in enumerate(MODES)}
    return report.EvalResult(
        dimension=dimension,
        split=split,
        keys=[f"{split}_utt{i:04d}.wav" for i in range(ids.size)],
        speakers=[f"spk{s}" for s in ids],
        labels=labels,
        predictions=preds,
        calibrated=calibrated,
    )


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(0)
    return [
        make_result(rng, dim, split)
        for split in ("test-b", "test-c")
        for dim in ("arousal", "valence")
    ]


@pytest.fixture(scope="module")
def written(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, report.write_report(results, out, system="PAPT-FT")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_file_is_written(written):
    out, paths = written
    expected = {"summary.json", "results.md"}
    for split in ("test-b", "test-c"):
        for dim in ("arousal", "valence"):
            stem = f"{split}_{dim}"
            expected |= {
                f"{stem}_{s}"
                for s in (
                    "predictions.csv",
                    "per_speaker.csv",
                    "speaker_ccc.png",
                    "pred_vs_true.png",
                )
            }
    assert {p.name for p in out.iterdir()} == expected
    assert {p.name for p in paths.values()} == expected
    for p in paths.values():
        assert p.stat().st_size > 0
    assert (out / "test-b_arousal_speaker_ccc.png").read_bytes()[:4] == b"\x89PNG"


def test_predictions_csv(written, results):
    out, _ = written
    r = results[0]
    rows = read_csv(out / f"{r.stem}_predictions.csv")
    assert list(rows[0]) == ["key", "speaker", "label", "prediction"] + [
        f"prediction_{m}" for m in MODES
    ]
    assert len(rows) == r.keys.size
    assert [row["key"] for row in rows] == r.keys.tolist()
    np.testing.assert_array_equal([float(row["prediction"]) for row in rows], r.predictions)
    np.testing.assert_array_equal(
        [float(row["prediction_sigma"]) for row in rows], r.calibrated["sigma"]
    )


def test_per_speaker_csv(written, results):
    out, _ = written
    r = results[1]
    rows = read_csv(out / f"{r.stem}_per_speaker.csv")
    assert list(rows[0]) == ["speaker", "n", "ccc_system"] + [f"ccc_{m}" for m in MODES]
    assert len(rows) == np.unique(r.speakers).size
    for row in rows:
        sel = r.speakers == row["speaker"]
        assert int(row["n"]) == sel.sum()
        if sel.sum() < 2:
            assert row["ccc_system"] == "nan"
        else:
            assert float(row["ccc_both"]) == pytest.approx(
                metrics.ccc(r.calibrated["both"][sel], r.labels[sel])
            )


def test_summary_json_matches_metrics(written, results):
    out, _ = written
    summary = json.loads((out / "summary.json").read_text())
    assert summary["system"] == "PAPT-FT"
    r = results[2]
    entry = summary["splits"][r.split][r.dimension]
    mean, std, used, excluded = metrics.average_ccc(r.calibrated["mu"], r.labels, r.speakers)
    assert entry["mu"]["a_ccc"] == pytest.approx(mean)
    assert entry["mu"]["a_ccc_std"] == pytest.approx(std)
    assert (entry["mu"]["n_speakers_used"], entry["mu"]["n_speakers_excluded"]) == (used, 1)
    assert entry["system"]["o_ccc"] == pytest.approx(metrics.overall_ccc(r.predictions, r.labels))
    assert entry["n_utterances"] == r.keys.size


def parse_table(text):
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def test_results_md_shape_and_numbers(written, results):
    out, _ = written
    text = (out / "results.md").read_text()
    assert "## test-b" in text and "## test-c" in text
    section = text.split("## test-b")[1].split("## test-c")[0]
    table = parse_table(section)
    assert table[0] == [
        "",
        "Arousal O-CCC",
        "Arousal A-CCC (std)",
        "Valence O-CCC",
        "Valence A-CCC (std)",
    ]
    body = table[2:]
    assert [row[0] for row in body] == ["PAPT-FT", "+ μ shift", "+ σ shift", "+ (μ, σ) shift"]
    assert all(len(row) == 5 for row in body)
    valence = results[1]
    mean, std, *_ = metrics.average_ccc(
        valence.calibrated["sigma"], valence.labels, valence.speakers
    )
    assert body[2][4] == f"{mean:.3f} ({std:.2f})"
    assert body[0][3] == f"{metrics.overall_ccc(valence.predictions, valence.labels):.3f}"


def test_format_cells():
    assert report.format_a(0.5312, 0.1904) == "0.531 (0.19)"
    assert report.format_o(0.7399) == "0.740"
    assert report.format_a(None, None) == report.MISSING


def test_comparison_table(tmp_path, results):
    rng = np.random.default_rng(1)
    vanilla = report.build_summary([make_result(rng, "arousal", "test-b", shift=1.0)], "Vanilla-FT")
    tapt = report.build_summary(results[:2], "TAPT-FT")
    papt_path = report.write_summary_json(
        report.build_summary(results, "PAPT-FT"), tmp_path / "papt.json"
    )

    path = report.write_comparison([vanilla, tapt, papt_path], tmp_path / "comparison.md")
    text = path.read_text()
    table_b = parse_table(text.split("## test-b")[1].split("## test-c")[0])
    table_c = parse_table(text.split("## test-c")[1])
    labels = [
        "Vanilla-FT",
        "TAPT-FT",
        "PAPT-FT",
        "PAPT-FT + μ shift",
        "PAPT-FT + σ shift",
        "PAPT-FT + (μ, σ) shift",
    ]
    assert [row[0] for row in table_b[2:]] == labels
    assert [row[0] for row in table_c[2:]] == labels
    # Vanilla-FT has no valence and TAPT-FT no test-c: dashes, not errors.
    assert table_b[2][3:] == [report.MISSING] * 2
    assert table_c[3][1:] == [report.MISSING] * 4
    arousal_c = results[2]
    assert (
        table_c[7][1]
        == f"{metrics.overall_ccc(arousal_c.calibrated['both'], arousal_c.labels):.3f}"
    )

    both = report.comparison_table(
        [vanilla, tapt], "test-b", pldc_systems=["Vanilla-FT", "TAPT-FT"]
    )
    assert len(parse_table(both)) == 2 + 8
    with pytest.raises(ValueError, match="not among"):
        report.comparison_table([vanilla], "test-b", pldc_systems=["PAPT-FT"])


def test_eval_result_rejects_bad_input():
    with pytest.raises(ValueError, match="labels has 1 entries"):
        report.EvalResult("arousal", "test-b", ["a", "b"], [0, 0], [1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="not unique"):
        report.EvalResult("arousal", "test-b", ["a", "a"], [0, 0], [1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="unknown PLDC modes"):
        report.EvalResult("arousal", "test-b", ["a"], [0], [1.0], [1.0], {"median": [1.0]})
    with pytest.raises(ValueError, match="file name"):
        report.EvalResult("arousal", "test/b", ["a"], [0], [1.0], [1.0])
