"""The fixed cost of a training run: the real `vaezoo train` command, timed by phase.

    python benchmarks/fixed_cost.py [--steps 2000] [--rounds 3] [--tracking sqlite|off] [--out FILE.md]

Each round runs the console script in a fresh process with VAEZOO_PHASES set (vaezoo.core.phases), so the
command marks when it enters the CLI, has parsed its config, has its data and model, has its tracker, begins
and ends its steps and its final evaluation, and is done; the process's start and exit are timed from here.
Fixed cost = wall time - the steps - the evaluations (periodic and final): what a run costs beyond training
and measuring. The MLflow store is a fresh SQLite file per round unless --tracking off (a first run on a new
store also creates its tables; the store is made once before the rounds so only the first-use cost of a
store that exists is measured). Prints a table of medians over rounds and writes it as markdown with --out.
A benchmark, not a test: it asserts nothing; compare phases measured in one invocation only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ("main", "parsed", "prepared", "tracking", "steps_begin", "steps_end", "eval_begin", "eval_end", "finished")


def one_run(vaezoo: str, steps: int, tmp: Path, tracking: str, i: int) -> dict:
    marks = tmp / f"phases-{i}.jsonl"
    run_dir = tmp / f"run-{i}"
    cmd = [vaezoo, "train", "--steps", str(steps), "--eval-every", str(steps), "--checkpoint-every", str(steps),
           "--no-progress", "--run-dir", str(run_dir)]
    cmd += ["--no-track"] if tracking == "off" else ["--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}"]
    env = {**os.environ, "VAEZOO_PHASES": str(marks)}
    t0 = time.time()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t_exit = time.time()
    records = [json.loads(line) for line in marks.read_text().splitlines()]
    seen: dict[str, float] = {}
    for rec in records:
        seen.setdefault(rec["phase"], rec["t"])  # the first mark of a phase
    # evaluations inside the steps (training's periodic test bounds), begin/end pairs
    periodic = sum(r["t"] for r in records if r["phase"] == "periodic_eval_end") - sum(
        r["t"] for r in records if r["phase"] == "periodic_eval_begin"
    )
    missing = [p for p in PHASES if p not in seen]
    if missing:
        raise SystemExit(f"error: the command did not mark {', '.join(missing)} (is this vaezoo's own checkout?)")
    t = {"start": t0, **seen, "exit": t_exit}
    steps_s = t["steps_end"] - t["steps_begin"] - periodic
    eval_s = periodic + t["eval_end"] - t["eval_begin"]
    wall = t_exit - t0
    return {
        "interpreter + CLI import": t["main"] - t0,
        "parse + config": t["parsed"] - t["main"],
        "data + model": t["prepared"] - t["parsed"],
        "tracking start": t["tracking"] - t["prepared"],
        "until the first step": t["steps_begin"] - t["tracking"],
        "steps": steps_s,
        "evaluations": eval_s,
        "outputs after the last step": (t["finished"] - t["steps_end"]) - (t["eval_end"] - t["eval_begin"]),
        "exit": t_exit - t["finished"],
        "wall": wall,
        "fixed (wall - steps - evaluations)": wall - steps_s - eval_s,
        "steps / wall": steps_s / wall,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tracking", choices=("sqlite", "off"), default="sqlite")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    vaezoo = str(Path(sys.executable).parent / "vaezoo")
    from vaezoo.tracking.provenance import cpu_features, cpu_model, git_label

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.tracking == "sqlite":  # the store exists before the rounds, as it does after a user's first run
            one_run(vaezoo, 2, tmp, args.tracking, -1)
        rows = [one_run(vaezoo, args.steps, tmp, args.tracking, i) for i in range(args.rounds)]
    lines = [
        f"# Fixed cost of `vaezoo train --steps {args.steps}` (mnist5k reference VAE, tracking {args.tracking})",
        "",
        f"{cpu_model()} ({cpu_features()}), {os.cpu_count()} cores, commit {git_label()}; median of {args.rounds} "
        f"rounds, seconds. Command: `python benchmarks/fixed_cost.py --steps {args.steps} --rounds {args.rounds} "
        f"--tracking {args.tracking}`.",
        "",
        "| phase | median | min | max |",
        "|---|---:|---:|---:|",
    ]
    for key in rows[0]:
        vals = [r[key] for r in rows]
        lines.append(f"| {key} | {statistics.median(vals):.2f} | {min(vals):.2f} | {max(vals):.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
