"""The tutorial-claims command (KL pull, collapse); AE prior samples are the prior-sampling study (tests/test_studies.py)."""

from __future__ import annotations

import json

from vaezoo.cli import main


def test_claims_command_writes_a_table(tmp_path, capsys):
    out = tmp_path / "claims"
    assert main(["bench", "claims", "--dataset", "digits", "--steps", "40", "--out", str(out), "--no-track"]) == 0
    summary = json.loads((out / "claims.json").read_text())
    assert set(summary["results"]) == {"ae", "vae beta=0", "vae beta=1", "vae beta=8", "vae beta=50"}
    r = summary["results"]
    assert r["vae beta=50"]["kl"] < r["vae beta=0"]["kl"]
    assert all("dead_zone_fraction" not in v for v in r.values())  # the invalid number is gone
    out = capsys.readouterr().out
    assert "active units" in out and "dead-zone" not in out and "vaezoo study prior-sampling" in out
    assert main(["bench", "claims", "--dataset", "linear-gaussian", "--no-track", "--out", str(tmp_path / "x")]) == 2
