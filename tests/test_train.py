"""Training: same seed -> same bits, SIGKILL + resume -> same bits, NaN stops loudly, run directory contents."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vaezoo.core.errors import TrainingDiverged, VaezooError
from vaezoo.training.config import resolve_config
from vaezoo.training.loop import train
from vaezoo.training.rundir import load_checkpoint

SMALL = {"model": {"hidden": [64, 32], "latent_dim": 8}, "data": {"name": "digits"}, "batch_size": 32,
         "eval_every": 100, "log_every": 20, "eval_k": 8}


def small(**over):
    user = json.loads(json.dumps(SMALL))
    for k, v in over.items():
        if isinstance(v, dict):
            user.setdefault(k, {}).update(v)
        else:
            user[k] = v
    return resolve_config(user, (1, 8, 8))


def weights(run_dir) -> dict:
    return load_checkpoint(Path(run_dir) / "checkpoint.pt")["model"]


def assert_bit_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_twice_gives_bit_identical_weights(tmp_path):
    cfg = small(steps=60, checkpoint_every=60)
    train(cfg, tmp_path / "a", track=False, progress=False)
    train(cfg, tmp_path / "b", track=False, progress=False)
    assert_bit_identical(weights(tmp_path / "a"), weights(tmp_path / "b"))
    train(small(steps=60, checkpoint_every=60, seed=1), tmp_path / "c", track=False, progress=False)
    assert not torch.equal(weights(tmp_path / "a")["encoder.1.weight"], weights(tmp_path / "c")["encoder.1.weight"])


def test_run_directory_holds_config_metrics_checkpoint_final(tmp_path):
    cfg = small(steps=40, checkpoint_every=20, eval_every=20)
    final = train(cfg, tmp_path / "r", track=False, progress=False)
    files = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"config.json", "checkpoint.pt", "metrics.jsonl", "final.json", "run.json"} <= files
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["config_hash"] == cfg.hash
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train_bound" in r] == [20, 40]
    assert final["test_elbo"] <= final["test_iwae_k8"] + 0.5  # IWAE_8 >= ELBO up to MC error
    tags = json.loads((tmp_path / "r" / "run.json").read_text())["tags"]
    for key in ("git_sha", "version.torch", "cpu_model", "torch_threads", "seed", "deterministic_algorithms"):
        assert key in tags
    # an existing run is never overwritten
    with pytest.raises(VaezooError, match="already exists"):
        train(cfg, tmp_path / "r", track=False, progress=False)


def test_sigkill_then_resume_ends_bit_identical(tmp_path):
    steps = 1500
    cfg = small(steps=steps, checkpoint_every=100, eval_every=1000)
    train(cfg, tmp_path / "whole", track=False, progress=False)

    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(cfg.to_dict()))
    run = tmp_path / "killed"
    kill_at = 100  # the first checkpoint: the child dies right after writing it, never at a racy moment
    argv = ["train", "--config", str(cfg_file), "--run-dir", str(run), "--no-track", "--no-progress"]
    # The child kills itself from inside the save, so where it dies is fixed, not a matter of polling speed.
    # train.py did `from vaezoo.training.rundir import save_checkpoint`, so the name to patch is vaezoo.training.loop's.
    child = f"""
import os, signal, sys
import vaezoo.training.loop
real_save = vaezoo.training.loop.save_checkpoint
def save_then_die(path, state):
    real_save(path, state)
    if state["step"] == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
vaezoo.training.loop.save_checkpoint = save_then_die
from vaezoo.cli import main
sys.exit(main({argv!r}))
"""
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = proc.communicate()  # reads stderr to the end, so a chatty child cannot block on a full pipe
    assert proc.returncode == -signal.SIGKILL, err.decode()
    killed_at = load_checkpoint(run / "checkpoint.pt")["step"]
    assert killed_at == kill_at < steps, "the run was not killed right after its first checkpoint"

    from vaezoo.cli import main

    assert main(["train", "--resume", str(run), "--no-track", "--no-progress"]) == 0
    assert_bit_identical(weights(tmp_path / "whole"), weights(run))
    # the metrics log is rewound to the checkpoint: same rows, same bounds, no duplicates
    def rows(path):
        return [{k: v for k, v in json.loads(line).items() if k not in ("samples_per_s", "timestamp")}
                for line in path.read_text().splitlines()]

    assert rows(run / "metrics.jsonl") == rows(tmp_path / "whole" / "metrics.jsonl")


def test_nan_stops_training_naming_step_and_term_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    from vaezoo.objectives import objective as objective_module

    real_call = objective_module.Objective.__call__
    calls = {"n": 0}

    def poisoned(self, model, x, generator=None):
        out = real_call(self, model, x, generator)
        calls["n"] += 1
        if calls["n"] == 8:
            out.terms["kl"] = torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(objective_module.Objective, "__call__", poisoned)
    cfg = small(steps=20, checkpoint_every=5)
    with pytest.raises(TrainingDiverged, match="non-finite 'kl' \\(nan\\) at step 8.*last good checkpoint \\(step 5\\)"):
        train(cfg, tmp_path / "r", track=False, progress=False)
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["step"] == 5


def test_divergence_from_the_cli_exits_2(tmp_path, capsys):
    from vaezoo.cli import main

    rc = main(["train", "--dataset", "linear-gaussian", "--backbone", "linear", "--likelihood", "gaussian", "--latent-dim", "3",
               "--lr", "1e30", "--steps", "50", "--batch-size", "16", "--run-dir", str(tmp_path / "r"), "--no-track", "--no-progress"])
    assert rc == 2
    assert "non-finite" in capsys.readouterr().err


def test_beta_zero_and_beta_large_both_train_and_order_the_kl(tmp_path):
    """beta = 0 keeps an informative (large-KL) code; beta >> 1 collapses the posterior onto the prior."""
    kls = {}
    for beta in (0.0, 1.0, 50.0):
        final = train(small(steps=300, checkpoint_every=300, eval_every=300, objective={"beta": beta}), tmp_path / f"b{beta}",
                      track=False, progress=False)
        assert all(torch.isfinite(torch.tensor(v)) for v in final.values())
        rows = [json.loads(line) for line in (tmp_path / f"b{beta}" / "metrics.jsonl").read_text().splitlines()]
        kls[beta] = [r["train_kl"] for r in rows if "train_kl" in r][-1]
    assert kls[0.0] > kls[1.0] > kls[50.0]
    assert kls[50.0] < 0.5  # collapsed: almost no information in z


def test_ae_trains_on_reconstruction(tmp_path):
    final = train(small(steps=100, checkpoint_every=100, model={"name": "ae"}), tmp_path / "ae", track=False, progress=False)
    assert "test_recon" in final and final["test_recon"] < 0


def _as_older_version(run_dir: Path, key: tuple[str, str]) -> None:
    """Rewrite a run as a vaezoo from before config key ``key`` existed would have written it."""
    from vaezoo.core.configs import config_hash
    from vaezoo.training.rundir import save_checkpoint

    path = run_dir / "config.json"
    data = json.loads(path.read_text())
    del data["config"][key[0]][key[1]]
    data["config_hash"] = config_hash(data["config"])
    path.write_text(json.dumps(data))
    state = load_checkpoint(run_dir / "checkpoint.pt")
    state["config_hash"] = data["config_hash"]
    save_checkpoint(run_dir / "checkpoint.pt", state)


def test_a_run_from_before_a_new_config_key_still_loads_but_does_not_resume(tmp_path):
    from vaezoo.training import load_run_model

    train(small(steps=20), tmp_path / "old", track=False, progress=False)
    _as_older_version(tmp_path / "old", ("optim", "fused"))
    from exporters.export import run_metadata
    from vaezoo.training.evaluate import evaluate_run

    recorded = json.loads((tmp_path / "old" / "config.json").read_text())["config_hash"]
    model, cfg = load_run_model(tmp_path / "old")  # eval, sample and export still work on it
    assert cfg.optim.fused and model.latent_dim == 8  # a key the record lacks reads as its default
    report, _ = evaluate_run(tmp_path / "old", k=4, is_samples=0, max_test=10, track=False)
    assert report["config_hash"] == recorded == run_metadata(tmp_path / "old")["config_hash"]
    assert recorded != cfg.hash
    with pytest.raises(VaezooError, match=r"older vaezoo \(its config has no optim.fused\)"):
        train(cfg, tmp_path / "old", resume=True, track=False, progress=False)


def test_an_edited_config_json_is_refused(tmp_path):
    from vaezoo.training import load_run_model

    train(small(steps=20), tmp_path / "run", track=False, progress=False)
    path = tmp_path / "run" / "config.json"
    data = json.loads(path.read_text())
    data["config"]["optim"]["lr"] = 0.5
    path.write_text(json.dumps(data))
    with pytest.raises(VaezooError, match="does not match its recorded config_hash"):
        load_run_model(tmp_path / "run")


@pytest.mark.parametrize("made_before", [False, True], ids=["new-folder", "empty-folder-given"])
def test_a_start_that_fails_before_its_first_checkpoint_leaves_no_run_folder(tmp_path, monkeypatch, made_before):
    run = tmp_path / "r"
    if made_before:
        run.mkdir()

    def fail(*_, **__):
        raise RuntimeError("out of memory (a stand-in for the allocator)")

    monkeypatch.setattr("vaezoo.training.loop.batch_indices", fail)
    with pytest.raises(RuntimeError, match="stand-in"):
        train(small(steps=20, checkpoint_every=5), run, track=False, progress=False)
    assert run.is_dir() == made_before and (not made_before or not any(run.iterdir()))
    monkeypatch.undo()
    train(small(steps=5, checkpoint_every=5), run, track=False, progress=False)  # the same folder, no --resume


def test_a_failure_after_a_checkpoint_keeps_the_run(tmp_path, monkeypatch):
    from vaezoo.training import loop

    real = loop.batch_indices

    def fail_at_step_7(n, batch_size, step, seed):
        if step == 7:
            raise RuntimeError("stand-in")
        return real(n, batch_size, step, seed)

    monkeypatch.setattr(loop, "batch_indices", fail_at_step_7)
    with pytest.raises(RuntimeError, match="stand-in"):
        train(small(steps=20, checkpoint_every=5), tmp_path / "r", track=False, progress=False)
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["step"] == 5
    assert (tmp_path / "r" / "config.json").is_file()


@pytest.mark.slow  # make test's time; the fast suite keeps a sibling of this contract
def test_a_kill_during_a_checkpoint_write_leaves_a_temp_file_that_the_resume_removes(tmp_path):
    from helpers import vaezoo_command

    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(small(steps=30, checkpoint_every=10, eval_every=30).to_dict()))
    run = tmp_path / "killed"
    argv = ["train", "--config", str(cfg_file), "--run-dir", str(run), "--no-track", "--no-progress"]
    # The child dies inside the write of its second checkpoint: the temp file is complete, the rename never happens.
    child = f"""
import os, signal, sys
import torch
real_save = torch.save
def save_then_die(obj, f, *args, **kwargs):
    real_save(obj, f, *args, **kwargs)
    if isinstance(obj, dict) and obj.get("step") == 20:
        os.kill(os.getpid(), signal.SIGKILL)
torch.save = save_then_die
from vaezoo.cli import main
sys.exit(main({argv!r}))
"""
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    assert len(list(run.glob(".checkpoint.pt.*.tmp"))) == 1 and load_checkpoint(run / "checkpoint.pt")["step"] == 10
    (run / "notes.tmp").write_text("not a temp file of this run's writes")

    done = vaezoo_command("train", "--resume", str(run), "--no-track", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 30
    assert not list(run.glob(".*.tmp")) and (run / "notes.tmp").is_file()


def test_a_finished_run_leaves_no_temp_files_of_its_writes(tmp_path, monkeypatch):
    from vaezoo.training import loop

    real = loop.save_checkpoint
    stray = tmp_path / "r" / ".checkpoint.pt.k1ll3d00.tmp"  # as an interrupted write leaves it

    def save_and_leave_a_temp(path, state):
        real(path, state)
        stray.write_bytes(b"half a checkpoint")
        (tmp_path / "r" / ".notes.txt.tmp").write_text("not one of the run's files")

    monkeypatch.setattr(loop, "save_checkpoint", save_and_leave_a_temp)
    train(small(steps=10, checkpoint_every=5), tmp_path / "r", track=False, progress=False)
    assert not stray.exists() and (tmp_path / "r" / ".notes.txt.tmp").is_file()


def test_only_the_temp_files_of_atomic_writes_count_as_stale(tmp_path):
    import tempfile

    from vaezoo.core.io import stale_temp_files

    fd, real = tempfile.mkstemp(prefix=".checkpoint.pt.", suffix=".tmp", dir=tmp_path)  # as atomic_write names them
    os.close(fd)
    for name in (".checkpoint.pt.a.b.tmp", "checkpoint.pt.abc.tmp", ".checkpoint.pt.abc.tmp.keep", ".checkpoint.ptx.abc.tmp"):
        (tmp_path / name).write_text("someone else's")
    assert stale_temp_files(tmp_path / "checkpoint.pt") == [Path(real)]


def test_a_diverged_resume_without_a_checkpoint_says_so_and_keeps_the_run(tmp_path, monkeypatch):
    from vaezoo.objectives import objective as objective_module

    cfg = small(steps=10, checkpoint_every=5)
    train(cfg, tmp_path / "r", track=False, progress=False)
    (tmp_path / "r" / "checkpoint.pt").unlink()  # as a run killed before its first checkpoint has it
    real_call = objective_module.Objective.__call__

    def poisoned(self, model, x, generator=None):
        out = real_call(self, model, x, generator)
        out.terms["kl"] = torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(objective_module.Objective, "__call__", poisoned)
    with pytest.raises(TrainingDiverged, match=r"at step 1; training stopped; '.*' has no checkpoint yet, so a resume starts again"):
        train(cfg, tmp_path / "r", resume=True, track=False, progress=False)
    assert (tmp_path / "r" / "config.json").is_file()


def test_observe_sees_every_evaluation_and_can_stop_the_run_there(tmp_path):
    """The studies' hook: called at each eval_every step with the test metrics; True stops there, checkpointed,
    and the stopped run's weights are those of a full run at that step (observing changes nothing)."""
    seen = []

    def watch(step, model, metrics):
        seen.append((step, metrics["test_elbo"]))
        return step == 40

    cfg = small(steps=100, checkpoint_every=100, eval_every=20)
    final = train(cfg, tmp_path / "stopped", track=False, progress=False, observe=watch)
    assert [s for s, _ in seen] == [20, 40]
    assert final["step"] == 40 and final["test_elbo"] == seen[-1][1]
    assert load_checkpoint(tmp_path / "stopped" / "checkpoint.pt")["step"] == 40
    train(small(steps=40, checkpoint_every=40, eval_every=20), tmp_path / "full40", track=False, progress=False)
    assert_bit_identical(weights(tmp_path / "stopped"), weights(tmp_path / "full40"))
    train(cfg, tmp_path / "watched", track=False, progress=False, observe=lambda s, m, e: None)
    train(cfg, tmp_path / "plain", track=False, progress=False)
    assert_bit_identical(weights(tmp_path / "watched"), weights(tmp_path / "plain"))


def test_the_learning_rate_schedule_is_a_function_of_the_step_and_is_what_adam_uses(tmp_path):
    """lr x gamma^(milestones passed); a scheduled run differs from a constant one only after the first milestone,
    and the optimizer's state at the end holds the last stage's rate."""
    from vaezoo.training.config import OptimConfig

    sched = OptimConfig(lr=1e-3, milestones=(30, 90), gamma=0.1)
    assert [sched.lr_at(s) for s in (0, 29, 30, 89, 90, 500)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])
    assert OptimConfig().lr_at(10**6) == 1e-3
    with pytest.raises(VaezooError, match="increasing"):
        OptimConfig(milestones=(30, 30))
    with pytest.raises(VaezooError, match="gamma"):
        OptimConfig(gamma=0.0)
    run = small(steps=40, checkpoint_every=40, optim={"milestones": [30], "gamma": 0.1})
    train(run, tmp_path / "sched", track=False, progress=False)
    assert load_checkpoint(tmp_path / "sched" / "checkpoint.pt")["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    train(small(steps=30, checkpoint_every=30, optim={"milestones": [30], "gamma": 0.1}), tmp_path / "a", track=False,
          progress=False)
    train(small(steps=30, checkpoint_every=30), tmp_path / "b", track=False, progress=False)
    assert_bit_identical(weights(tmp_path / "a"), weights(tmp_path / "b"))
