"""The report's analyses: PLDC oracle, retrieval diagnostic and speaker shift, end to end.

A synthetic evaluation is written in the evaluate stage's layout (results and passes, PLDC
computed by `pldc.pldc` as the evaluation does), then reported.
"""

import csv
import json
import warnings

import numpy as np
import pytest

from papt_jax import metrics, pldc, shift_analysis
from papt_jax.eval import analysis, layout, report, tables
from papt_jax.eval.evaluate import save_passes
from papt_jax.eval.results import MODE_LABELS, EvalResult, ReportError

K = 2
DIM = "arousal"


def _speaker_rows(rng, speakers, per_speaker, dim, centre_scale):
    """Utterance rows: speaker ids, (N, dim) vectors around speaker centres, labels."""
    ids = np.repeat(speakers, per_speaker)
    centres = rng.normal(0, centre_scale, (len(speakers), dim))
    idx = np.repeat(np.arange(len(speakers)), per_speaker)
    vecs = centres[idx] + rng.normal(0, 1.0, (ids.size, dim))
    labels = np.clip(4 + 0.6 * centres[idx, 0] + rng.normal(0, 0.8, ids.size), 1, 7)
    return ids, vecs.astype(np.float32), labels.astype(np.float32)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """evaluate/ with test-b and test-c results and passes for one dimension."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("run")
    passes_dir = root / "evaluate" / "passes"
    passes_dir.mkdir(parents=True)
    train_spk, train_vec, train_lab = _speaker_rows(rng, np.arange(8) + 100, 7, 12, 1.5)
    train_keys = np.asarray([f"tr_{i:03d}" for i in range(train_spk.size)])
    original_train = rng.normal(0, 1, (train_spk.size, 6)).astype(np.float32)
    original_train += train_spk[:, None] % 3
    passes = {
        "train": {
            "key": train_keys,
            "speaker": train_spk.astype(np.int32),
            DIM: train_lab,
            "pooled": train_vec,
        }
    }
    original = {"train": {"key": train_keys, "pooled": original_train}}
    results = []
    for split, n_spk in (("test_b", 7), ("test_c", 5)):
        ids, vecs, labels = _speaker_rows(rng, np.arange(n_spk), 5, 12, 1.5)
        ids = np.asarray([f"{split}_spk{s}" for s in ids], dtype="U32")
        ids[-1] = f"{split}_lonely"  # one speaker with a single utterance
        keys = np.asarray([f"{split}_{i:03d}" for i in range(ids.size)])
        preds = (4 + 0.4 * (labels - 4) + rng.normal(0, 0.4, ids.size)).astype(np.float32)
        passes[split] = {"key": keys, "speaker_id": ids, DIM: labels, "pooled": vecs}
        retrieval_train, retrieval_test = train_vec, vecs
        if split == "test_c":
            retrieval_test = rng.normal(0, 1, (ids.size, 6)).astype(np.float32)
            original[split] = {"key": keys[::-1], "pooled": retrieval_test[::-1]}
            retrieval_train = original_train
        test_ids, test_dense = np.unique(ids, return_inverse=True)
        _, train_dense = np.unique(train_spk, return_inverse=True)
        calibrated = pldc.pldc(
            preds, test_dense, retrieval_test, retrieval_train, train_lab, train_dense, K
        )
        results.append(
            EvalResult(DIM, split.replace("_", "-"), keys, ids, labels, preds, calibrated)
        )
    save_passes(passes, passes_dir / f"{DIM}.npz")
    save_passes(original, passes_dir / "original_encoder.npz")
    return root, results, passes, original


@pytest.fixture(scope="module")
def written(workdir, tmp_path_factory):
    root, results, *_ = workdir
    refs = report.load_references(root / "evaluate" / "passes", results, K)
    out = tmp_path_factory.mktemp("report")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any layout warning fails the tests using this
        paths = report.write_report(results, out, "PAPT-FT", references=refs)
    return out, paths


@pytest.mark.slow
def test_report_has_shift_and_retrieval_files_and_clean_plots(written, workdir):
    out, paths = written
    for r in workdir[1]:
        for name in ("shift", "retrieval"):
            png = out / f"{r.stem}_{name}.png"
            assert paths[f"{r.stem}_{name}_png"] == png and png.read_bytes()[:4] == b"\x89PNG"
        assert paths[f"{r.stem}_shift"] == out / f"{r.stem}_shift.csv"
    text = (out / "results.md").read_text()
    for split in ("test-b", "test-c"):
        assert f"### {split}: feature and label shift per speaker" in text
        assert f"### {split}: PLDC retrieval diagnostic (k = {K}" in text
    seen, unseen = text.split("\n## test-c\n")
    assert "original encoder's vectors" in unseen and "original encoder's" not in seen
    assert "fine-tuned model's vectors" in seen


def _table_after(text, heading):
    block = text.split(heading)[1].split("\n#")[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines][2:]


@pytest.mark.parametrize("split", ["test-b", "test-c"])
def test_shift_matches_shift_analysis_on_fine_tuned_vectors(written, workdir, split):
    out, _ = written
    _, results, passes, _ = workdir
    r = next(r for r in results if r.split == split)
    test = passes[split.replace("-", "_")]
    expected = shift_analysis.speaker_shift(
        passes["train"]["pooled"],
        passes["train"][DIM],
        test["pooled"],
        r.labels,
        r.predictions,
        r.speakers,
    )
    with open(out / f"{r.stem}_shift.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["speaker"] for row in rows] == expected.speakers.tolist()
    np.testing.assert_allclose([float(row["feature_kl"]) for row in rows], expected.feature_kl)
    np.testing.assert_allclose([float(row["label_kl"]) for row in rows], expected.label_kl)
    assert [int(row["used"]) for row in rows] == expected.used.astype(int).tolist()
    lonely = next(row for row in rows if row["speaker"].endswith("lonely"))
    assert lonely["feature_kl"] == "nan" and lonely["used"] == "0"  # counted, no KL
    (row,) = _table_after((out / "results.md").read_text(), f"### {split}: feature and label")
    corr = expected.correlations
    assert row[1] == f"{expected.used.sum()} of {expected.speakers.size}"
    assert row[4].startswith(f"{corr['feature_kl_vs_ccc']['r']:.2f} (p")
    assert row[5].startswith(f"{corr['label_kl_vs_ccc']['r']:.2f} (p")
    assert row[6].startswith(f"{corr['feature_kl_vs_label_kl']['r']:.2f} (p")


@pytest.mark.parametrize("split", ["test-b", "test-c"])
def test_retrieval_diagnostic_is_pldc_retrieval(written, workdir, split):
    out, _ = written
    _, results, passes, original = workdir
    r = next(r for r in results if r.split == split)
    name = split.replace("-", "_")
    if split == "test-c":  # retrieval with the original encoder, rows matched by key
        order = {k: i for i, k in enumerate(original[name]["key"])}
        test_vecs = original[name]["pooled"][[order[k] for k in r.keys]]
        train_vecs = original["train"]["pooled"]
    else:
        test_vecs, train_vecs = passes[name]["pooled"], passes["train"]["pooled"]
    _, test_dense = np.unique(r.speakers, return_inverse=True)
    _, train_dense = np.unique(passes["train"]["speaker"], return_inverse=True)
    train_labels = passes["train"][DIM]
    mu_bar, sigma_bar, _ = pldc.retrieved_label_stats(
        test_vecs, test_dense, train_vecs, train_labels, train_dense, K
    )
    diag = pldc.retrieval_diagnostic(r.labels, test_dense, mu_bar, sigma_bar, train_labels)
    entry = json.loads((out / "summary.json").read_text())["splits"][split][DIM]["analysis"]
    got = entry["retrieval"]
    assert entry["pldc_k"] == K and got["n_speakers"] == diag["n"]
    for stat, prefix in (("label_mean", "mean"), ("label_std", "std")):
        assert set(got[stat]) == {
            "pearson_r_retrieved_vs_own", "mae_retrieved", "mae_all_speakers", "mae_training_set",
        }  # fmt: skip
        for key, name in (("pearson_r_retrieved_vs_own", "r"), ("mae_retrieved", "mae"),
                          ("mae_training_set", "mae_global")):  # fmt: skip
            assert got[stat][key] == pytest.approx(diag[f"{prefix}_{name}"], rel=1e-6)
    rows = _table_after((out / "results.md").read_text(), f"### {split}: PLDC retrieval")
    assert [row[0] for row in rows] == [f"{DIM} μ", f"{DIM} σ"]
    assert rows[0][2] == f"{diag['mean_r']:.2f}" and rows[1][3] == f"{diag['std_mae']:.3f}"
    # The all-speaker average is PLDC with k = every training speaker.
    speaker_mean = [train_labels[train_dense == s].mean() for s in range(train_dense.max() + 1)]
    own = diag["own_mean"][diag["used"]]
    assert got["label_mean"]["mae_all_speakers"] == pytest.approx(
        np.mean(np.abs(np.mean(speaker_mean) - own)), rel=1e-5
    )


def test_oracle_rows_equal_a_hand_computation(tmp_path):
    # Two speakers of three utterances. Speaker a's predictions are an exact affine map of
    # its labels, so its oracle (μ, σ) output equals its labels.
    labels = np.array([2.0, 4.0, 6.0, 3.0, 5.0, 4.0])
    preds = np.array([1.0, 2.0, 3.0, 4.0, 4.5, 3.0])
    speakers = np.array(["a", "a", "a", "b", "b", "b"])
    result = EvalResult("arousal", "test-b", [f"u{i}" for i in range(6)], speakers, labels, preds)
    by_hand = {}
    for mode in ("mu", "sigma", "both"):
        out = preds.copy()
        for s in ("a", "b"):
            m = speakers == s
            p, y = preds[m], labels[m]
            target_mean = p.mean() if mode == "sigma" else y.mean()
            scale = 1.0 if mode == "mu" else y.std() / p.std()
            out[m] = (p - p.mean()) * scale + target_mean
        by_hand[mode] = out
    np.testing.assert_allclose(by_hand["both"][:3], labels[:3])
    report.write_report([result], tmp_path, "PAPT-FT", plots=False)
    text = (tmp_path / "results.md").read_text()
    rows = {row[0]: row for row in _table_after(text, "## test-b")}
    for mode, out in by_hand.items():
        row = rows[f"{tables.ORACLE_LABEL} {MODE_LABELS[mode]}"]
        cccs = [metrics.ccc(out[speakers == s], labels[speakers == s]) for s in ("a", "b")]
        assert row[1] == f"{metrics.ccc(out, labels):.3f}"
        assert row[2] == f"{np.mean(cccs):.3f} ({np.std(cccs):.2f})"
    assert "uses test labels" in text and "no method" in text
    # Without passes the report says why retrieval and shift are missing.
    assert "not computed: no evaluation passes given" in text


def test_passes_of_another_evaluation_are_refused(workdir):
    root, results, *_ = workdir
    refs = report.load_references(root / "evaluate" / "passes", results, K)
    r = results[0]
    tampered = EvalResult(
        r.dimension,
        r.split,
        r.keys,
        r.speakers,
        r.labels,
        r.predictions,
        {m: v + 0.01 for m, v in r.calibrated.items()},
    )
    with pytest.raises(ReportError, match="do not reproduce the evaluation's PLDC 'mu'"):
        analysis.analyse(tampered, refs[r.stem])
    other = EvalResult(
        r.dimension, r.split, np.char.add(r.keys, "x"), r.speakers, r.labels, r.predictions
    )
    with pytest.raises(ReportError, match="other utterances than the evaluation result"):
        report.load_references(root / "evaluate" / "passes", [other], K)
    with pytest.raises(ReportError, match="original_encoder.npz is missing"):
        report.load_references(root / "nowhere", [results[1]], K)
    with pytest.raises(ReportError, match="no PLDC k"):
        report.load_references(root / "evaluate" / "passes", results, None)


def test_analysis_figures_have_clean_layouts(workdir):
    root, results, *_ = workdir
    refs = report.load_references(root / "evaluate" / "passes", results, K)
    found = analysis.analyse(results[0], refs[results[0].stem])
    from papt_jax.eval.analysis_figures import retrieval_figure, shift_figure

    fig = shift_figure(results[0], found.shift, "PAPT-FT")
    assert layout.layout_problems(fig) == []
    assert len(fig.axes) == 3
    used = found.shift.used
    np.testing.assert_allclose(
        fig.axes[0].collections[0].get_offsets()[:, 0], found.shift.feature_kl[used]
    )
    fig = retrieval_figure(results[0], found.retrieval, K)
    assert layout.layout_problems(fig) == []
    np.testing.assert_allclose(
        fig.axes[0].collections[0].get_offsets()[:, 1],
        found.retrieval.mu_bar[found.retrieval.diagnostic["used"]],
        rtol=1e-6,
    )
