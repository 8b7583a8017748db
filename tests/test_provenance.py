"""The commit a run records, also where the tree was copied without its history (the lent GPU machine)."""

import subprocess

import pytest

from vaezoo.tracking.provenance import GIT_DIRTY_ENV, GIT_SHA_ENV, git_label, git_state


def _git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                   capture_output=True)


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(GIT_SHA_ENV, raising=False)
    monkeypatch.delenv(GIT_DIRTY_ENV, raising=False)


def test_a_repository_without_commits_is_not_read_as_sha_HEAD(tmp_path, no_env):
    _git(tmp_path, "init", "-q")
    assert git_state(tmp_path) == {"git_sha": "unknown", "git_dirty": "unknown"}
    assert git_label(tmp_path) == "unknown"


def test_without_history_the_copier_names_the_commit(tmp_path, monkeypatch):
    monkeypatch.setenv(GIT_SHA_ENV, "0123abc")
    monkeypatch.setenv(GIT_DIRTY_ENV, "False")
    assert git_state(tmp_path) == {"git_sha": "0123abc", "git_dirty": "false"}
    assert git_label(tmp_path) == "0123abc"
    monkeypatch.delenv(GIT_DIRTY_ENV)
    assert git_label(tmp_path) == "0123abc-dirty?"


def test_a_real_commit_wins_over_the_environment_and_a_changed_file_marks_it_dirty(tmp_path, monkeypatch):
    monkeypatch.setenv(GIT_SHA_ENV, "not-this-one")
    _git(tmp_path, "init", "-q")
    (tmp_path / "f.txt").write_text("a\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("")
    _git(tmp_path, "add", "f.txt", "pkg")
    _git(tmp_path, "commit", "-q", "-m", "one")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_state(tmp_path) == {"git_sha": sha, "git_dirty": "false"}
    assert git_label(tmp_path) == sha
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "r.csv").write_text("1\n")
    _git(tmp_path, "add", "benchmarks")
    _git(tmp_path, "commit", "-q", "-m", "results")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (results / "r.csv").write_text("2\n")  # a benchmark rewrote its results: still the same code
    assert git_label(tmp_path) == sha
    (tmp_path / "f.txt").write_text("b\n")
    assert git_label(tmp_path) == sha + "-dirty"
    # read from a package folder below the root (f.txt is outside it): the whole tree still counts
    assert git_label(tmp_path / "pkg") == sha + "-dirty"
