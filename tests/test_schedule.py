"""The test-file schedule (tests/fixtures/schedule.py), on small pytest sessions."""

import json

import pytest

PLUGIN = ("-p", "fixtures.schedule", "-n", "0")


def _project(pytester, table=None):
    pytester.makeini("[pytest]\nmarkers =\n    slow: long\n")
    tests = pytester.mkdir("tests")
    (tests / "test_few_fast.py").write_text("def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    (tests / "test_one_slow.py").write_text(
        "import pytest\n\n@pytest.mark.slow\ndef test_c():\n    pass\n"
    )
    (tests / "test_measured_long.py").write_text("def test_d():\n    pass\n")
    if table is not None:  # a string is written as it is (a damaged table)
        text = table if isinstance(table, str) else json.dumps(table)
        (tests / "durations.json").write_text(text)


def _collected_files(result) -> list[str]:
    files = []
    for line in result.outlines:
        if "::" in line:
            name = line.split("::")[0]
            if name not in files:
                files.append(name)
    return files


def test_files_run_longest_first_measured_or_estimated(pytester):
    # Measured: 50 s and 1 s; the unmeasured file with one slow test is estimated at 2 s.
    _project(pytester, {"tests/test_measured_long.py": 50, "tests/test_few_fast.py": 1})
    result = pytester.runpytest(*PLUGIN, "--collect-only", "-q")
    assert _collected_files(result) == [
        "tests/test_measured_long.py",
        "tests/test_one_slow.py",
        "tests/test_few_fast.py",
    ]
    # A file's tests stay together and in their order.
    assert [line for line in result.outlines if "test_few_fast" in line] == [
        "tests/test_few_fast.py::test_a",
        "tests/test_few_fast.py::test_b",
    ]


def test_recorded_durations_are_merged_into_the_table(pytester):
    _project(pytester, {"tests/test_measured_long.py": 50, "tests/gone.py": 3})
    out = pytester.path / "tests" / "durations.json"
    result = pytester.runpytest(*PLUGIN, f"--record-file-durations={out}", "tests/test_few_fast.py")
    result.assert_outcomes(passed=2)
    table = json.loads(out.read_text())
    # The file that ran is measured now, the one that did not keep its figure, and a
    # file that no longer exists is dropped.
    assert set(table) == {"tests/test_few_fast.py", "tests/test_measured_long.py"}
    assert table["tests/test_measured_long.py"] == 50
    assert 0 <= table["tests/test_few_fast.py"] < 50


@pytest.mark.parametrize(
    "table, args, says",
    [
        ({"tests/test_few_fast.py": "long"}, (), "must map test files to seconds"),
        ("{not json", (), "cannot be read as a durations table"),
        (None, ("--record-file-durations=no/such/folder/d.json",), "no folder"),
    ],
)
@pytest.mark.parametrize("workers", ["0", "2"])
def test_mistakes_are_usage_errors_before_any_test_runs(pytester, table, args, says, workers):
    _project(pytester, table)
    result = pytester.runpytest("-p", "fixtures.schedule", "-n", workers, *args)
    assert result.ret == 4  # pytest's usage error
    assert says in "\n".join(result.errlines + result.outlines)
    assert "passed" not in "\n".join(result.outlines)
    assert "INTERNALERROR" not in "\n".join(result.errlines + result.outlines)
