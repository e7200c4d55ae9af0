"""The README's paper commands, run on files laid out like the ones users own.

The commands are read from the README itself (the code block under "The paper's
setting"), so the README cannot drift from what works: genuine-format fairseq checkpoints
are converted, then the pipeline's prepare stage builds the dataset from a v1.6-style and a
v1.10-style release side by side, test-c's audio read from the newer release's folder.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.fairseq_files import write_checkpoints
from fixtures.hubert_files import pretraining_job
from fixtures.msp_releases import write_two_releases

REPO = Path(__file__).resolve().parents[1]


def readme_paper_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## The paper's setting") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip().startswith("python")]


@pytest.mark.slow
def test_readme_paper_commands_convert_and_prepare_the_two_release_layout(tmp_path):
    releases = write_two_releases(tmp_path / "data")
    models = tmp_path / "models"
    models.mkdir()
    write_checkpoints(
        [
            pretraining_job(models / "hubert_large_ll60k.pt", "large", seed=1),
            pretraining_job(models / "hubert_base_ls960.pt", "base", seed=2),
        ]
    )
    paths = {
        "/models/": f"{models}/",
        "/data/MSP-Podcast-1.6": str(releases.old),
        "/data/MSP-Podcast-1.10": str(releases.new),
        "ckpt/": f"{tmp_path}/ckpt/",
        "runs/": f"{tmp_path}/runs/",
    }
    commands = readme_paper_commands()
    assert [c.split()[2] for c in commands] == ["papt_jax.convert"] * 2 + ["papt_jax.main"]
    for command in commands:
        for old, new in paths.items():
            command = command.replace(old, new)
        args = shlex.split(command)[1:]
        if args[1] == "papt_jax.main":
            # Only the data stage here (training needs real-size models); the fixture
            # corpus has two training speakers, so PLDC's k must be 1.
            args += ["--config.stages=prepare", "--config.evaluate.pldc_k=1"]
        proc = subprocess.run(
            [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=1800
        )
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
    for name in ("hubert_large", "hubert_base"):
        conversion = json.loads((tmp_path / "ckpt" / name / "conversion.json").read_text())
        assert conversion["source_format"] == "fairseq"
    index = tmp_path / "runs" / "papt" / "data" / "papt_msp_podcast" / "1.0.0" / "index"
    test_c = json.loads((index / "test_c.json").read_text())
    assert tuple(sorted(test_c["keys"])) == tuple(sorted(releases.test_c_keys))
    # Some of test-c's audio exists only in the newer release's Audios/.
    assert set(releases.new_only_keys) & set(test_c["keys"])
