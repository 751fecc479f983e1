"""Coverage-guided fuzzing of the byte decoders (tests/fuzz/atheris_targets.py), a bounded
number of runs each, seeded with the golden payloads and valid frames. A soak test: it
pays off over long runs (`make soak`); atheris is optional (`pip install atheris`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from device_profiles.serial_frames import Reading, encode_reading
from tests.fuzz.tally import Tally, examples

pytestmark = pytest.mark.soak
ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "protocol"
RUNS_PER_EXAMPLE = 100  # libFuzzer runs are cheap: 100 for each hypothesis example


@pytest.mark.parametrize("target", ["wire", "serial"])
def test_coverage_guided_runs_find_no_crash(tally: Tally, tmp_path: Path, target: str) -> None:
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    if target == "wire":
        for path in FIXTURES.glob("*.json"):
            shutil.copy(path, corpus)
    else:
        for seq in range(3):
            (corpus / f"frame{seq}").write_bytes(
                encode_reading(Reading(seq=seq, pressure_bar=7.5, mains_ok=True))
            )
    runs = examples() * RUNS_PER_EXAMPLE
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.atheris_targets", target, f"-runs={runs}", "-max_len=4096",
         str(corpus)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    found = re.search(r"Done (\d+) runs", done.stderr)
    with tally.case(f"atheris: {target}") as case:
        assert done.returncode == 0 and found, done.stderr[-3000:]
        case.accepted()
    row = tally.rows[f"atheris: {target}"]
    row["cases"] += int(found[1]) - 1  # libFuzzer's runs, not one case
    row["accepted"] += int(found[1]) - 1
