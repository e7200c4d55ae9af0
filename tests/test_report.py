"""Report files: every file written, right columns and rows, tables match the metrics."""

import csv
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from papt_jax import metrics
from papt_jax.eval import compare, figures, layout, report, tables
from papt_jax.eval import results as results_lib
from papt_jax.pldc import MODES


def make_result(rng, dimension, split, n_speakers=8, shift=0.0):
    ids = np.repeat(np.arange(n_speakers), rng.integers(3, 15, n_speakers))
    ids = np.concatenate([ids, [99]])  # a one-utterance speaker, excluded from A-CCC
    labels = rng.uniform(1, 7, ids.size)
    preds = 0.6 * labels + rng.normal(0, 0.7, ids.size) + shift
    # Stand-ins for PLDC outputs; the report must not care how they were made.
    calibrated = {m: preds + 0.1 * (i + 1) * rng.normal(size=ids.size) for i, m in enumerate(MODES)}
    return results_lib.EvalResult(
        dimension=dimension,
        split=split,
        keys=[f"{split}_utt{i:04d}.wav" for i in range(ids.size)],
        speakers=[f"spk{s}" for s in ids],
        labels=labels,
        predictions=preds,
        calibrated=calibrated,
    )


def demo_result(rng, dimension, split, n_utterances, n_speakers=10, name="MSP_{:04d}"):
    """A result shaped like the demo's test-b / test-c: ~70 utterances over 10 speakers.

    Speakers have their own label means (what PLDC corrects); the last one has a single
    utterance, so it is excluded from A-CCC and must be named, not dropped, in the plots.
    """
    counts = rng.multinomial(n_utterances - 2 * n_speakers, np.ones(n_speakers) / n_speakers) + 2
    counts[-1] = 1
    ids = np.repeat(np.arange(n_speakers), counts)
    speaker_mean = rng.normal(4, 0.8, n_speakers)
    labels = np.clip(speaker_mean[ids] + rng.normal(0, 0.9, ids.size), 1, 7)
    preds = 4 + 0.35 * (labels - 4) + rng.normal(0, 0.5, ids.size)
    calibrated = {
        "mu": preds + 0.3 * (speaker_mean[ids] - 4),
        "sigma": 4 + 1.4 * (preds - 4),
        "both": 4 + 1.3 * (preds + 0.3 * (speaker_mean[ids] - 4) - 4),
    }
    return results_lib.EvalResult(
        dimension,
        split,
        [f"{split}_{i:04d}" for i in range(ids.size)],
        [name.format(37 * s) for s in ids],
        labels,
        preds,
        calibrated,
    )


@pytest.fixture(scope="module")
def results():
    """The demo's evaluation shape: test-b 71 and test-c 66 utterances, 10 speakers each."""
    rng = np.random.default_rng(7)
    return [
        demo_result(rng, dim, split, 71 if split == "test-b" else 66)
        for split in ("test-b", "test-c")
        for dim in ("arousal", "valence")
    ]


@pytest.fixture(scope="module")
def written(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    with warnings.catch_warnings():
        # Any matplotlib layout warning ("not compatible", "axes sizes collapsed",
        # "constrained_layout not applied") or layout.LayoutWarning (text cut off or
        # overlapping, checked before each PNG is saved) fails every test using this.
        warnings.simplefilter("error")
        return out, report.write_report(results, out, system="PAPT-FT")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_every_file_is_written(written):
    out, paths = written
    expected = {"summary.json", "results.md"}
    suffixes = ["predictions.csv", "per_speaker.csv"] + [f"{n}.png" for n in figures.FIGURES]
    assert set(figures.FIGURES) == {"speaker_ccc", "speaker_ccc_bars", "pred_vs_true"}
    for split in ("test-b", "test-c"):
        for dim in ("arousal", "valence"):
            expected |= {f"{split}_{dim}_{s}" for s in suffixes}
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
    oracle = [f"{tables.ORACLE_LABEL} {results_lib.MODE_LABELS[m]}" for m in MODES]
    assert [row[0] for row in body] == [
        "PAPT-FT",
        "+ μ shift",
        "+ σ shift",
        "+ (μ, σ) shift",
        *oracle,
    ]
    assert all(len(row) == 5 for row in body)
    valence = results[1]
    mean, std, *_ = metrics.average_ccc(
        valence.calibrated["sigma"], valence.labels, valence.speakers
    )
    assert body[2][4] == f"{mean:.3f} ({std:.2f})"
    assert body[0][3] == f"{metrics.overall_ccc(valence.predictions, valence.labels):.3f}"


def test_format_cells():
    assert tables.format_a(0.5312, 0.1904) == "0.531 (0.19)"
    assert tables.format_o(0.7399) == "0.740"
    assert tables.format_a(None, None) == results_lib.MISSING


def test_comparison_table(tmp_path, results):
    rng = np.random.default_rng(1)
    vanilla = results_lib.build_summary(
        [make_result(rng, "arousal", "test-b", shift=1.0)], "Vanilla-FT"
    )
    tapt = results_lib.build_summary(results[:2], "TAPT-FT")
    papt_path = results_lib.write_summary_json(
        results_lib.build_summary(results, "PAPT-FT"), tmp_path / "papt.json"
    )

    path = compare.write_comparison([vanilla, tapt, papt_path], tmp_path / "comparison.md")
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
    assert table_b[2][3:] == [results_lib.MISSING] * 2
    assert table_c[3][1:] == [results_lib.MISSING] * 4
    arousal_c = results[2]
    assert (
        table_c[7][1]
        == f"{metrics.overall_ccc(arousal_c.calibrated['both'], arousal_c.labels):.3f}"
    )

    both = compare.comparison_table(
        [vanilla, tapt], "test-b", pldc_systems=["Vanilla-FT", "TAPT-FT"]
    )
    assert len(parse_table(both)) == 2 + 8
    with pytest.raises(ValueError, match="not among"):
        compare.comparison_table([vanilla], "test-b", pldc_systems=["PAPT-FT"])


def test_eval_result_rejects_bad_input():
    with pytest.raises(ValueError, match="labels has 1 entries"):
        results_lib.EvalResult("arousal", "test-b", ["a", "b"], [0, 0], [1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="not unique"):
        results_lib.EvalResult("arousal", "test-b", ["a", "a"], [0, 0], [1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="unknown PLDC modes"):
        results_lib.EvalResult("arousal", "test-b", ["a"], [0], [1.0], [1.0], {"median": [1.0]})
    with pytest.raises(ValueError, match="file name"):
        results_lib.EvalResult("arousal", "test/b", ["a"], [0], [1.0], [1.0])
    with pytest.raises(ValueError, match=r"calibrated\[sigma\] has 1 non-finite .* 'b'"):
        results_lib.EvalResult(
            "arousal", "test-b", ["a", "b"], [0, 0], [1.0, 2.0], [1.0, 2.0], {"sigma": [1, np.inf]}
        )


# --- Figures -----------------------------------------------------------------------------------


def test_layout_checker_catches_a_clipped_label(tmp_path):
    fig = Figure(figsize=(1.5, 1.5))  # no layout engine: nothing makes room for the label
    ax = fig.add_subplot()
    ax.set_ylabel("a very long and very large y label", fontsize=30)
    problems = layout.layout_problems(fig)
    assert any("'a very long and very large y label' is cut off" in p for p in problems)
    with pytest.warns(layout.LayoutWarning, match="cut off"):
        layout.save_figure(fig, tmp_path / "clipped.png")


def test_layout_checker_catches_overlapping_titles(tmp_path):
    fig = Figure(figsize=(6, 3))
    axes = fig.subplots(1, 2)
    fig.subplots_adjust(top=0.85)
    axes[1].set_title("a panel title")
    fig.suptitle("a figure title that runs over the panels", y=0.9, x=0.75)
    problems = layout.layout_problems(fig)
    assert any("overlaps axes 1 label 'a panel title'" in p for p in problems)


def test_layout_checker_passes_a_clean_figure():
    fig = Figure(figsize=(4, 3), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1])
    ax.set(title="title", xlabel="x", ylabel="y")
    fig.suptitle("suptitle")
    assert layout.layout_problems(fig) == []


def test_layout_checker_catches_a_legend_over_a_point_and_over_a_line():
    fig = Figure(figsize=(4, 3), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter([0.0, 1.0], [1.0, 0.0], s=30, label="points")
    ax.legend(loc="upper left")  # on the point at (0, 1)
    assert layout.layout_problems(fig) == ["axes 0 legend covers 1 point(s) of collection 0"]

    fig = Figure(figsize=(4, 3), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 10], [10, 0], label="falling")  # runs through the upper left corner
    ax.plot([0, 10], [0, 5], label="rising")
    ax.legend(loc="upper left")
    assert layout.layout_problems(fig) == ["axes 0 legend covers line 0 ('falling')"]
    ax.get_legend().remove()
    fig.legend(loc="outside lower center", ncols=2)  # below the panel: nothing covered
    assert layout.layout_problems(fig) == []


def test_layout_checker_catches_fractional_ticks_on_a_count_axis():
    fig = Figure(figsize=(4, 3), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([20, 35], [0.5, 0.6], marker="o")  # K = 20 and 35 speakers
    assert layout.layout_problems(fig) == []  # the y axis and an undeclared x axis: any ticks
    layout._COUNT_AXES.add(ax.xaxis)  # declared a count, default ticks kept
    assert layout.layout_problems(fig) == [
        "axes 0 x axis counts whole things but has ticks at 22.5, 27.5, 32.5"
    ]
    layout.count_axis(ax.xaxis)  # declared the supported way: whole-number ticks
    assert layout.layout_problems(fig) == []
    assert [float(t).is_integer() for t in ax.get_xticks()] == [True] * len(ax.get_xticks())


def _retrieval_with_a_point_in_the_upper_left(result):
    """PLDC's retrieved targets where the speaker with the lowest own label mean got the
    highest retrieved one: its point sits in the upper left corner of the μ panel."""
    from papt_jax import pldc
    from papt_jax.eval.analysis import Retrieval

    ids, dense = np.unique(result.speakers, return_inverse=True)
    own = np.asarray([result.labels[dense == i].mean() for i in range(ids.size)])
    mu_bar = own + np.linspace(-0.2, 0.2, ids.size)
    mu_bar[np.argmin(own)] = own.max() + 0.5
    sigma_bar = np.full(ids.size, 0.8)
    train = np.random.default_rng(0).uniform(1, 7, 300)
    every = (np.full(ids.size, 4.0), np.full(ids.size, 1.2))
    return Retrieval(
        speakers=ids,
        mu_bar=mu_bar,
        sigma_bar=sigma_bar,
        diagnostic=pldc.retrieval_diagnostic(result.labels, dense, mu_bar, sigma_bar, train),
        all_speakers=pldc.retrieval_diagnostic(result.labels, dense, *every, train),
        all_mean=4.0,
        all_std=1.2,
        global_mean=float(train.mean()),
        global_std=float(train.std()),
    )


def _gap_rows(ks):
    from papt_jax.eval import gap

    points = []
    for i, k in enumerate(ks):
        for dependent in (False, True):
            point = {"k": k, "dependent": dependent}
            keys = [f"{d}/{m}" for d in ("arousal", "valence") for m in gap.METRICS]
            for j, key in enumerate(keys):
                point[key] = 0.3 + 0.05 * i + 0.02 * j + 0.1 * dependent
            points.append(point)
    return gap.pair_points(points)


def test_every_report_figure_renders_without_covered_data_or_fractional_counts(results):
    """Every figure the project draws, with data that provoke the two faults: a point where
    a legend used to sit, and K values whose default ticks fall between whole numbers."""
    from papt_jax import shift_analysis
    from papt_jax.eval import gap
    from papt_jax.eval.analysis_figures import retrieval_figure, shift_figure

    r = results[0]
    rng = np.random.default_rng(5)
    shift = shift_analysis.speaker_shift(
        rng.normal(size=(300, 16)),
        rng.uniform(1, 7, 300),
        rng.normal(size=(r.keys.size, 16)) + 0.3,
        r.labels,
        r.predictions,
        r.speakers,
    )
    built = {name: build(r, "PAPT-FT") for name, build in figures.FIGURES.items()}
    built["shift"] = shift_figure(r, shift, "PAPT-FT")
    built["retrieval"] = retrieval_figure(r, _retrieval_with_a_point_in_the_upper_left(r), 3)
    for ks in [(20, 35), (5, 10, 20, 50), (50, 100, 250, 500, 987)]:
        built[f"gap K={ks}"] = gap.gap_figure(_gap_rows(ks))
    for name, fig in built.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert layout.layout_problems(fig) == [], name
        if name.startswith("gap"):
            k_axis = fig.axes[1].xaxis  # the lower row's shared K axis
            assert all(float(t).is_integer() for t in k_axis.get_majorticklocs()), name


def test_speaker_legends_and_tables_read_numeric_ids_by_number(tmp_path):
    assert results_lib.speaker_order(["10", "2", "1", "2"]) == ["1", "2", "10"]
    assert results_lib.speaker_order([10, 2, 1]) == [1, 2, 10]
    assert results_lib.speaker_order(["b10", "b2", "a"]) == ["a", "b10", "b2"]  # not numbers
    rng = np.random.default_rng(9)
    r = demo_result(rng, "arousal", "test-b", 60, n_speakers=12, name="{}")
    order = [str(37 * s) for s in range(12)]  # 0, 37, 74, ..., 407: numeric, not as text
    assert list(figures.speaker_styles(r.speakers)) == order
    fig = figures.predictions_figure(r, "PAPT-FT")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == order
    path = tables.write_per_speaker_csv(r, tmp_path / "per_speaker.csv")
    assert [row["speaker"] for row in read_csv(path)] == order


def test_csv_numbers_are_float32_values_without_noise(tmp_path):
    prediction = float(np.float32(3.7579))
    assert repr(prediction) == "3.7578999996185303"
    assert tables.cell_text(prediction) == "3.7579"
    assert tables.cell_text(np.float32(0.1)) == "0.1"
    assert tables.cell_text(0.1) == "0.1"  # a float64 that is no float32 keeps float64 digits
    assert tables.cell_text(1 / 3) == repr(1 / 3)
    assert tables.cell_text(float("nan")) == "nan"
    r = results_lib.EvalResult(
        "arousal", "test-b", ["a", "b"], ["1", "1"],
        np.float32([3.2, 4.6]), np.float32([3.7579, 4.1]), {"mu": np.float32([3.9, 4.3])},
    )  # fmt: skip
    path = tables.write_predictions_csv(r, tmp_path / "p.csv")
    assert path.read_text().splitlines()[1:] == ["a,1,3.2,3.7579,3.9", "b,1,4.6,4.1,4.3"]
    rows = read_csv(path)
    np.testing.assert_array_equal(np.float32([row["prediction"] for row in rows]), r.predictions)


def test_collapsed_constrained_layout_is_an_error_under_the_warnings_filter():
    # The filter the figure test relies on does turn matplotlib's layout warnings into errors.
    fig = Figure(figsize=(1, 1), layout="constrained")
    FigureCanvasAgg(fig)
    fig.add_subplot().set_ylabel("label", fontsize=40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="constrained_layout not applied"):
            fig.canvas.draw()


def test_every_figure_is_written_with_a_clean_layout(written, results):
    out, paths = written  # written with warnings as errors: no layout warning was raised
    for r in results:
        for name in figures.FIGURES:
            path = out / f"{r.stem}_{name}.png"
            assert paths[f"{r.stem}_{name}_png"] == path
            assert path.read_bytes()[:4] == b"\x89PNG"
    for build in figures.FIGURES.values():
        fig = build(results[3], "PAPT-FT")
        assert layout.layout_problems(fig) == [], build.__name__


def test_figures_stay_clean_with_many_long_speaker_names():
    rng = np.random.default_rng(3)
    # More speakers than fit one legend column beside the panels: the legend goes below.
    many = demo_result(rng, "arousal", "test-b", 300, n_speakers=30, name="MSP-PODCAST_spk_{:05d}")
    for build in figures.FIGURES.values():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fig = build(many, "PAPT-FT")
            assert layout.layout_problems(fig) == [], build.__name__


@pytest.mark.parametrize("n_speakers", [12, 20, 26])
def test_figures_stay_clean_with_many_short_speaker_names(n_speakers):
    # The demo's test-b (20 speakers named by number): a legend below the panels whose
    # columns were guessed from one column's width ran past both edges of the figure.
    rng = np.random.default_rng(4)
    many = demo_result(rng, "arousal", "test-b", 160, n_speakers=n_speakers, name="{}")
    for build in figures.FIGURES.values():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fig = build(many, "PAPT-FT")
            assert layout.layout_problems(fig) == [], build.__name__


def test_figures_without_pldc_modes_are_clean(results):
    r = results[1]
    plain = results_lib.EvalResult(
        r.dimension, r.split, r.keys, r.speakers, r.labels, r.predictions
    )
    for build in figures.FIGURES.values():
        fig = build(plain, "Vanilla-FT")
        assert layout.layout_problems(fig) == [], build.__name__
        assert "Vanilla-FT" in " ".join(ax.get_title() for ax in fig.axes) + fig.get_suptitle()


def test_speaker_ccc_bars_sorted_with_a_zero_line(results):
    r = results[0]
    fig = figures.speaker_ccc_bars_figure(r, "PAPT-FT")
    per = {v: metrics.per_speaker_ccc(p, r.labels, r.speakers) for v, p in r.variants().items()}
    system = per["system"]
    valid = np.flatnonzero(system.valid)
    expected = [str(system.speakers[i]) for i in valid[np.argsort(-system.ccc[valid])]]
    expected += [str(system.speakers[i]) for i in np.flatnonzero(~system.valid)]
    axes = fig.axes
    assert [ax.get_title().split("\n")[0] for ax in axes] == [
        results_lib.MODE_LABELS[m] for m in MODES
    ]
    shown = [t.get_text().split(" (n=")[0] for t in axes[0].get_yticklabels()]
    assert shown == expected
    for ax, mode in zip(axes, MODES, strict=True):
        assert axes[0].get_xlim() == ax.get_xlim()
        assert any(list(line.get_xdata()) == [0, 0] for line in ax.get_lines()), "zero line missing"
        bars = ax.patches
        assert len(bars) == 2 * len(expected)
        order = [list(system.speakers).index(s) for s in expected]
        # First the uncalibrated bars, then the calibrated ones, both in display order.
        np.testing.assert_allclose(
            [b.get_width() for b in bars[: len(order)]], system.ccc[order], equal_nan=True
        )
        np.testing.assert_allclose(
            [b.get_width() for b in bars[len(order) :]], per[mode].ccc[order], equal_nan=True
        )
        excluded = [t.get_text().strip() for t in ax.texts]
        assert excluded == ["excluded"] * int((~system.valid).sum())


def test_scatter_panels_share_ranges_and_colour_speakers_consistently(results):
    r = results[0]
    styles = figures.speaker_styles(r.speakers)
    assert len(styles) == np.unique(r.speakers).size
    assert len(set(styles.values())) == len(styles)
    for build in (figures.speaker_ccc_figure, figures.predictions_figure):
        fig = build(r, "PAPT-FT")
        visible = [ax for ax in fig.axes if ax.get_visible()]
        assert {(ax.get_xlim(), ax.get_ylim()) for ax in visible} == {
            (visible[0].get_xlim(), visible[0].get_ylim())
        }
        (legend,) = fig.legends
        labels = [t.get_text() for t in legend.get_texts()]
        assert labels == list(styles)
        for handle, label in zip(legend.legend_handles, labels, strict=True):
            colour, marker = styles[label]
            assert handle.get_marker() == marker
            np.testing.assert_allclose(handle.get_color()[:3], colour)
        for ax in visible:
            for points in ax.collections:
                # Every point drawn has the colour of one speaker in the legend.
                face = tuple(np.round(points.get_facecolor()[0][:3], 6))
                assert face in {tuple(np.round(c, 6)) for c, _ in styles.values()}
    fig = figures.speaker_ccc_figure(r, "PAPT-FT")
    excluded = [s for s, v in zip(*_valid(r), strict=True) if not v]
    assert excluded and all(s in fig.get_suptitle() for s in excluded)


def _valid(result):
    per = metrics.per_speaker_ccc(result.predictions, result.labels, result.speakers)
    return [str(s) for s in per.speakers], per.valid


# --- Command line ------------------------------------------------------------------------------


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "papt_jax.eval.compare", *args],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=cwd,
    )


def test_cli_missing_folder_is_one_line_and_exit_2(tmp_path):
    proc = run_cli("--out", str(tmp_path / "c.md"), str(tmp_path / "no_such_run"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "no_such_run: no such file or folder" in lines[0]
    assert not (tmp_path / "c.md").exists()


def test_cli_compares_run_folders(tmp_path, results):
    for name, rs in (("vanilla", results[:2]), ("papt", results)):
        report.write_report(rs, tmp_path / name / "report", system=name, plots=False)
    out = tmp_path / "tables" / "comparison.md"
    proc = run_cli(
        f"--out={out}",
        str(tmp_path / "vanilla"),
        str(tmp_path / "papt" / "report" / "summary.json"),
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() in proc.stdout
    table_c = parse_table(out.read_text().split("## test-c")[1])
    assert [row[0] for row in table_c[2:4]] == ["vanilla", "papt"]


def test_cli_user_errors_are_report_errors(tmp_path):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(results_lib.ReportError, match="no results found in"):
        compare.find_summary(empty)
    broken = tmp_path / "summary.json"
    broken.write_text("{not json")
    with pytest.raises(results_lib.ReportError, match="cannot read the result file"):
        results_lib.load_summary(broken)
    broken.write_text("[1, 2]")
    with pytest.raises(results_lib.ReportError, match="is not a report summary"):
        results_lib.load_summary(broken)
    assert issubclass(results_lib.ReportError, results_lib.UserError)
    with pytest.raises(results_lib.ReportError, match="system names repeat"):
        compare.comparison_table([{"system": "a", "splits": {}}] * 2, "test-b")
