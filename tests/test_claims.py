"""The tutorial-claims measurements: the dead-zone metric on codes whose answer is known, and the command."""

from __future__ import annotations

import json

import torch

from vaezoo.bench.claims import dead_zone_fraction
from vaezoo.cli import main


def test_dead_zone_fraction_is_small_when_codes_fill_the_prior_and_large_when_not():
    g = torch.Generator().manual_seed(0)
    prior = torch.randn(2000, 4, generator=g)
    matched = dead_zone_fraction(torch.randn(3000, 4, generator=g), torch.randn(1000, 4, generator=g), prior)
    assert 0.0 <= matched < 0.12  # about 5% by construction (the 95% quantile)
    def manifold(n):  # AE-like: codes on a 2-d sheet of the 4-d latent space
        return torch.cat([torch.randn(n, 2, generator=g), torch.zeros(n, 2)], 1)

    assert dead_zone_fraction(manifold(3000), manifold(1000), prior) > 0.8
    clustered = torch.randn(3000, 4, generator=g) * 0.1 + 3.0  # codes in one corner of the prior
    assert dead_zone_fraction(clustered, torch.randn(1000, 4, generator=g) * 0.1 + 3.0, prior) > 0.9


def test_claims_command_writes_a_table(tmp_path, capsys):
    out = tmp_path / "claims"
    assert main(["bench", "claims", "--dataset", "digits", "--steps", "40", "--out", str(out), "--no-track"]) == 0
    summary = json.loads((out / "claims.json").read_text())
    assert set(summary["results"]) == {"ae", "vae beta=0", "vae beta=1", "vae beta=8", "vae beta=50"}
    r = summary["results"]
    assert r["vae beta=50"]["kl"] < r["vae beta=0"]["kl"]
    assert "dead-zone fraction" in capsys.readouterr().out
    assert main(["bench", "claims", "--dataset", "linear-gaussian", "--no-track", "--out", str(tmp_path / "x")]) == 2
