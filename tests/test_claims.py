"""``vaezoo bench claims``: an alias that runs the tutorial's studies and tabulates their verdicts; the numbers it
used to print (one seed, per-model averages over units, the dead-zone fraction) are gone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from vaezoo.bench.claims import TUTORIAL
from vaezoo.studies.registry import STUDIES, get_study

VAEZOO = Path(sys.executable).parent / "vaezoo"  # the installed command, as a user runs it


def vaezoo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(VAEZOO), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_claims_runs_the_named_studies_and_tabulates_their_verdicts(tmp_path):
    proc = vaezoo("bench", "claims", "--preset", "tiny", "--only", "kl-direction", "--workers", "0", "--no-track",
                  "--out", "c", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "c" / "claims.json").read_text())
    study = json.loads((tmp_path / "c" / "kl-direction" / "study.json").read_text())
    assert list(summary["studies"]) == ["kl-direction"]
    assert summary["studies"]["kl-direction"]["verdict"] == study["verdict"]
    table = (tmp_path / "c" / "claims.md").read_text()
    assert "[`kl-direction`](kl-direction/report.md)" in table and study["verdict"] in table
    assert "dead" not in proc.stdout + table and "mean sigma" not in table
    assert proc.stdout.startswith(f"kl-direction: {study['verdict']}.")


def test_claims_refuses_a_study_that_is_not_the_tutorials_in_one_line(tmp_path):
    proc = vaezoo("bench", "claims", "--only", "dreg-gain", "--no-track", "--out", "c", cwd=tmp_path)
    assert proc.returncode == 2 and not (tmp_path / "c").exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--only" in lines[0] and "dreg-gain" in lines[0]


def test_every_study_of_a_tutorial_claim_is_in_the_alias_and_every_alias_name_is_a_study():
    assert set(TUTORIAL) <= set(STUDIES)
    from_tutorial = {name for name in STUDIES if get_study(name).source.startswith("the tutorial")}
    assert from_tutorial == set(TUTORIAL)
