"""``vaezoo train --ddp`` under torchrun (gloo, CPU, one thread per rank): 2 ranks x B/2 train as 1 process x B,
rank 0 alone writes, a job with a killed rank resumes to the bits of an uninterrupted one, bad launches are one
error line before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import free_port, vaezoo_command

from vaezoo.training.config import resolve_config
from vaezoo.training.loop import train
from vaezoo.training.rundir import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--dataset", "digits", "--set", "model.hidden=[32]", "--set", "model.latent_dim=4", "--batch-size", "16",
         "--set", "log_every=1", "--set", "eval_k=8", "--no-progress"]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
            **extra}


def torchrun(target: list[str], cwd: Path, nproc: int = 2, **env: str) -> subprocess.CompletedProcess:
    """torchrun on 127.0.0.1 and a free port, ``target`` being ``-m vaezoo train ...`` or a script and its args."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
           "127.0.0.1", "--master-port", str(free_port()), *target]
    return subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=300)


def ddp_train(run: Path, *args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    proc = torchrun(["-m", "vaezoo", "train", "--ddp", *SMALL, "--run-dir", str(run), *args], run.parent, nproc)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def rows(run: Path, key: str = "train_bound") -> list[float]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row[key] for row in lines if key in row]


def weights(run: Path) -> dict:
    return load_checkpoint(run / "checkpoint.pt")["model"]


def single_process(run: Path, steps: int, **over) -> None:
    """The same config in one process, without DDP (the CLI's options as a config)."""
    user = {"data": {"name": "digits"}, "model": {"hidden": [32], "latent_dim": 4}, "batch_size": 16, "log_every": 1,
            "eval_k": 8, "steps": steps, "eval_every": steps, "checkpoint_every": steps, **over}
    train(resolve_config(user, (1, 8, 8)), run, track=False, progress=False)


CASES = {  # CLI options, the same as config, for one process
    "reparam": ([], {}),
    "score": (["--estimator", "score"], {"objective": {"estimator": "score"}}),  # its baseline averaged over ranks
    "free-bits": (["--free-bits", "0.1"], {"objective": {"free_bits": 0.1}}),  # the global batch's mean KL floored
}


@pytest.mark.parametrize("case", ["reparam", pytest.param("score", marks=pytest.mark.slow),
                                  pytest.param("free-bits", marks=pytest.mark.slow)])
def test_two_ranks_follow_the_trajectory_of_one_process_at_the_same_global_batch(tmp_path, case):
    steps = 12
    options, config = CASES[case]
    ddp_train(tmp_path / "two", "--steps", str(steps), "--eval-every", str(steps), "--checkpoint-every", str(steps),
              "--no-track", *options)
    single_process(tmp_path / "one", steps, **config)
    two, one = rows(tmp_path / "two"), rows(tmp_path / "one")
    assert len(two) == len(one) == steps
    # each rank's slice of the same seeded batch and noise, gradients averaged: equal up to float32 rounding
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=1e-5, atol=0)
    for term in ("train_kl", "train_kl_penalised"):
        torch.testing.assert_close(torch.tensor(rows(tmp_path / "two", term)), torch.tensor(rows(tmp_path / "one", term)),
                                   rtol=1e-4, atol=1e-6, msg=term)
    assert one[-1] > one[0] + 0.5  # it trained: a trajectory, not a constant
    w2, w1 = weights(tmp_path / "two"), weights(tmp_path / "one")
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-4, atol=1e-5, msg=name)
    if case == "score":  # the baseline averaged over ranks is the one process's baseline
        b2 = load_checkpoint(tmp_path / "two" / "checkpoint.pt")["objective"]["baseline"]
        b1 = load_checkpoint(tmp_path / "one" / "checkpoint.pt")["objective"]["baseline"]
        assert b2 == pytest.approx(b1, rel=1e-5)
    if case == "free-bits":  # the floor was in force: what the loss penalised is not the KL
        assert rows(tmp_path / "one", "train_kl_penalised") != rows(tmp_path / "one", "train_kl")
    tags = json.loads((tmp_path / "two" / "run.json").read_text())["tags"]
    assert tags["ddp.world_size"] == 2 and tags["ddp.backend"] == "gloo"


RANK_FOLDERS = """
import os, sys
os.chdir(f"rank{os.environ['RANK']}")  # each rank in its own folder: whatever a rank writes lands in its folder
from vaezoo.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # mlflow's import and store: about a minute on 2 shared cores
def test_rank_zero_alone_writes_the_run_and_mlflow(tmp_path):
    for r in range(2):
        (tmp_path / f"rank{r}").mkdir()
    (tmp_path / "rank_folders.py").write_text(RANK_FOLDERS)
    # a relative run folder and the default MLflow store (./mlruns): each would land in the writing rank's folder
    proc = torchrun(["rank_folders.py", "train", "--ddp", *SMALL, "--steps", "6", "--eval-every", "3",
                     "--checkpoint-every", "3", "--run-dir", "run"], tmp_path, VAEZOO_MLRUNS="mlruns")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert list((tmp_path / "rank1").iterdir()) == []  # rank 1 wrote nothing
    run = tmp_path / "rank0" / "run"
    assert {"config.json", "checkpoint.pt", "metrics.jsonl", "final.json", "run.json", "mlflow-sync.json", "samples.png",
            "samples-recon.png"} == {p.name for p in run.iterdir()}
    assert rows(run) and len(rows(run)) == 6 and load_checkpoint(run / "checkpoint.pt")["step"] == 6
    assert proc.stdout.count("run directory: run") == 1  # one rank reports

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'rank0' / 'mlruns' / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name == "vaezoo"]
    (mlrun,) = client.search_runs([exp.experiment_id])  # one run, not one per rank
    assert mlrun.info.status == "FINISHED" and mlrun.data.tags["ddp.world_size"] == "2"
    assert len(client.get_metric_history(mlrun.info.run_id, "train_bound")) == 6


KILL_RANK = """
import os, signal, sys
from vaezoo.training import distributed
real_step, calls = distributed.ddp_step, [0]
def step_or_die(*args, **kwargs):
    # rank 1 dies as it starts step KILL_AT: it got there, so every rank finished step KILL_AT - 1 and rank 0
    # wrote the checkpoint before it; the next checkpoint needs rank 1, so it is never written
    if os.environ["RANK"] == "1" and calls[0] == int(os.environ["KILL_AT"]):
        if os.getpgrp() == os.getpid():  # torchrun starts each rank in its own process group
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    calls[0] += 1
    return real_step(*args, **kwargs)
distributed.ddp_step = step_or_die
from vaezoo.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # three torchrun jobs: about a minute on 2 shared cores
def test_a_job_with_a_killed_rank_resumes_to_the_weights_of_an_uninterrupted_job(tmp_path):
    steps, every, kill_at = 24, 8, 13
    common = ["--steps", str(steps), "--checkpoint-every", str(every), "--eval-every", str(every), "--no-track"]
    ddp_train(tmp_path / "whole", *common)

    (tmp_path / "kill_rank.py").write_text(KILL_RANK)
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), "kill_rank.py", "train", "--ddp", *SMALL, "--run-dir", str(run), *common]
    env = {**_env(), "KILL_AT": str(kill_at)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, "the job went on without its killed rank"
    assert "Signal 9" in proc.stderr or "SIGKILL" in proc.stderr, proc.stderr[-3000:]
    assert load_checkpoint(run / "checkpoint.pt")["step"] == every  # the last checkpoint before the kill

    ddp_train(run, "--resume", str(run), "--no-track")  # the whole job again, every rank from that checkpoint
    a, b = weights(tmp_path / "whole"), weights(run)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # same world size, same seed: the same bits
    assert rows(run) == rows(tmp_path / "whole")  # the log rewound to the checkpoint: same rows, no duplicates


def _nothing_written(folder: Path, proc, pattern: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], proc.stderr
    assert list(folder.iterdir()) == []  # no run folder, no runs/, no mlruns/


def test_ddp_outside_a_torchrun_job_is_one_error_before_anything_is_written(tmp_path):
    proc = vaezoo_command("train", "--ddp", *SMALL, "--steps", "2", cwd=tmp_path, env=_env())
    _nothing_written(tmp_path, proc, "torchrun")


@pytest.mark.parametrize("world", ["3", "32"])
def test_a_global_batch_the_world_does_not_divide_is_one_error_before_anything_is_written(tmp_path, world):
    # torchrun's environment without torchrun: the check comes before the process group is joined
    proc = vaezoo_command("train", "--ddp", *SMALL, "--steps", "2", cwd=tmp_path,
                          env=_env(RANK="0", WORLD_SIZE=world, LOCAL_RANK="0"))
    _nothing_written(tmp_path, proc, f"divisible by the world size {world}")


def test_a_lone_rank_world_trains_like_one_process(tmp_path):
    """torchrun with one rank: the DDP path on a world of one is the plain run, bit for bit."""
    ddp_train(tmp_path / "ddp1", "--steps", "5", "--eval-every", "5", "--checkpoint-every", "5", "--no-track",
              nproc=1)
    single_process(tmp_path / "plain", 5)
    a, b = weights(tmp_path / "ddp1"), weights(tmp_path / "plain")
    for name in a:
        assert torch.equal(a[name], b[name]), name



def _agree_worker(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    from vaezoo.core.errors import VaezooError
    from vaezoo.training.distributed import World

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    world = World(rank, 2)
    said = {"both": world.agree(lambda: f"ready {rank}")}

    def only_rank_one_fails():
        if rank == 1:
            raise VaezooError("no data here")
        return "ready"

    try:
        world.agree(only_rank_one_fails)
        said["one"] = "went on"
    except VaezooError as exc:
        said["one"] = str(exc)
    dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps(said))


def test_a_start_that_fails_on_one_rank_fails_on_every_rank(tmp_path):
    """World.agree: a rank whose start-up checks fail stops every rank before rank 0 writes (instead of leaving the
    others waiting in their first all-reduce), and the others say which rank failed and why."""
    import torch.multiprocessing as mp

    mp.start_processes(_agree_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, start_method="spawn")
    said = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [s["both"] for s in said] == ["ready 0", "ready 1"]  # no failure: each rank's own result
    assert said[0]["one"] == "rank 1 could not start: no data here"
    assert said[1]["one"] == "no data here"  # the failing rank raises its own error


POISON_RANK_ONE = """
import os, sys
import torch
from vaezoo.objectives import objective as objective_module
real_call, calls = objective_module.Objective.__call__, [0]
def poisoned(self, model, x, generator=None):
    out = real_call(self, model, x, generator)
    calls[0] += 1
    if os.environ["RANK"] == "1" and calls[0] == 8:  # rank 1's logged KL of step 8 only; rank 0's stays finite
        out.terms["kl"] = torch.tensor(float("nan"))
    return out
objective_module.Objective.__call__ = poisoned
from vaezoo.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_nan_on_one_rank_stops_every_rank_at_its_step(tmp_path):
    (tmp_path / "poison.py").write_text(POISON_RANK_ONE)
    run = tmp_path / "run"
    proc = torchrun(["poison.py", "train", "--ddp", *SMALL, "--steps", "20", "--checkpoint-every", "5",
                     "--eval-every", "20", "--no-track", "--run-dir", str(run)], tmp_path)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    # rank 0 saw it through the terms averaged over ranks, at the same step, and kept its last checkpoint
    assert len(errors) == 2 and all("non-finite 'kl' (nan) at step 8" in e for e in errors), proc.stderr[-3000:]
    assert sum("the last good checkpoint (step 5) is kept" in e for e in errors) == 1
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 5
