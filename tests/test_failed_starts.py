"""Starts that cannot work, through the real ``vaezoo`` command: each is one ``error:`` line naming what is wrong,
exit code 2, and no run folder left behind."""

from __future__ import annotations

import pytest
from helpers import vaezoo_command

SMALL = ["--dataset", "digits", "--set", "model.hidden=[32]", "--latent-dim", "4", "--batch-size", "32",
         "--no-progress", "--no-track"]


def assert_one_error_line(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


SHAPES = [
    ("model=3", "config 'model' must be a mapping, got 3"),
    ("data=5", "config 'data' must be a mapping, got 5"),
    ("objective=[1]", "config 'objective' must be a mapping, got [1]"),
    ("model.name=[1]", "config 'model.name' must be str, got [1]"),
    ("model.name.x=1", "config 'model.name' must be str, got {'x': 1}"),
]


@pytest.mark.parametrize("setting,message", SHAPES, ids=[s for s, _ in SHAPES])
def test_a_value_of_the_wrong_shape_names_its_key_and_what_it_must_be(tmp_path, setting, message):
    run = tmp_path / "run"
    assert_one_error_line(vaezoo_command("train", *SMALL, "--set", setting, "--run-dir", str(run)), message)
    assert not run.exists()
