"""``batch-size``: a batch of 32-256 images is the sweet spot between noisy single-image steps and full batches.

The tutorial's table: batch 1 "super noisy, unstable"; 32-256 "good, sweet spot"; the full dataset "perfect,
expensive". The same VAE is trained at each batch size B (1 ... 1024 and the full training set) with the
learning rate set by one stated rule (``lr_for``: Adam's square-root scaling from the reference lr at B = 128,
capped), and compared twice on the test ELBO: at equal epochs (the same number of images seen) and at equal wall
time (the same seconds of training on this CPU). Time, steps and epochs to a target test ELBO come from the
equal-time runs' periodic evaluations (training's ``observe`` hook). McCandlish et al.'s simple noise scale
B_simple = tr Sigma / |G|^2 (``vaezoo.gradnoise``: per-example gradients, bootstrap interval) is measured on the
model trained at the reference batch and drawn as a band: batches well above it buy little per step.

Equal wall time without live timings: the machine is shared, so each B's step budget comes from one calibration
measured before any training, in one process (seconds per training step of every B, interleaved rounds, median;
``calibrate``). Given the calibration the step budgets, and so every number, are deterministic; the report
records it with the CPU it was measured on. The tiny preset fixes its calibration so that its test is exact.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from types import SimpleNamespace

from vaezoo.core.errors import VaezooError
from vaezoo.studies import intervals as iv
from vaezoo.studies.base import Job, JobContext, Report, Study
from vaezoo.studies.figures import pyplot, to_png
from vaezoo.studies.training import study_data, train_job, user_config

# The learning-rate rule (Malladi, Lyu, Panigrahi & Arora 2022, "On the SDEs and scaling rules for adaptive gradient
# algorithms"): Adam's update is normalised by the gradient's RMS, so keeping its noise per unit of time fixed
# asks lr ~ sqrt(B), not the linear rule of SGD. The reference is the house recipe (Adam 1e-3 at B = 128); the cap
# keeps lr within 3x of it, where the reference networks are known to train (it binds only above B = 1152).
LR_REF, B_REF, LR_CAP = 1e-3, 128, 3e-3
SWEET = (32, 256)  # the tutorial's sweet spot
MODEL = {"name": "vae"}


def lr_for(batch_size: int) -> float:
    """lr(B) = min(LR_CAP, LR_REF * sqrt(B / B_REF))."""
    if batch_size < 1:
        raise VaezooError(f"batch size must be >= 1, got {batch_size}")
    return min(LR_CAP, LR_REF * math.sqrt(batch_size / B_REF))


def batch_sizes(params: dict, n_train: int) -> list[int]:
    """The preset's batch sizes with "full" as the training-set size, each capped at it, sorted and deduplicated."""
    out = set()
    for b in params["batch_sizes"]:
        if b == "full":
            out.add(n_train)
        elif isinstance(b, int) and b >= 1:
            out.add(min(b, n_train))
        else:
            raise VaezooError(f"batch sizes must be integers >= 1 or 'full', got {b!r}")
    if B_REF not in out:
        raise VaezooError(f"the batch sizes must include the reference B = {B_REF} (B_simple is measured there)")
    return sorted(out)


def step_budgets(sec_per_step: dict[str, float], seconds: float) -> dict[str, int]:
    """Equal wall time: each B's number of steps, round(seconds / its calibrated seconds per step), at least 1."""
    if seconds <= 0 or any(not s > 0 for s in sec_per_step.values()):
        raise VaezooError(f"the time budget and every calibrated step time must be > 0, got {seconds} and {sec_per_step}")
    return {b: max(1, round(seconds / s)) for b, s in sec_per_step.items()}


def epoch_steps(epochs: int, batch_size: int, n_train: int) -> int:
    """Equal epochs: training drops each epoch's last partial batch, so an epoch is n_train // B steps."""
    return epochs * (n_train // batch_size)


def calibrate(params: dict, sizes: list[int], n_train: int) -> dict:
    """Seconds per training step of each B, measured side by side in this process with one torch thread (as the
    jobs run): a fresh model per B, then ``rounds`` interleaved rounds (the order rotated each round) of enough
    steps for ~``calibration_round_s`` each; the median over rounds. Synthetic images of the dataset's shape stand
    in for the data (a step's cost does not depend on the pixels), so nothing is loaded."""
    import torch

    from vaezoo.data.datasets import batch_indices, binarize_batch
    from vaezoo.tracking.provenance import cpu_model
    from vaezoo.training import build, resolve_for_dataset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        steppers = {}
        for b in sizes:
            cfg = resolve_for_dataset({**user_config({**params, "steps": 1}, 0, MODEL, batch_size=b), "optim": {"lr": lr_for(b)}})
            x = torch.rand(n_train, *cfg.model.input_shape, generator=torch.Generator().manual_seed(0))
            model, objective, optimizer = build(cfg, SimpleNamespace(train=x), torch.device("cpu"))
            steppers[b] = _stepper(cfg, x, model, objective, optimizer, batch_indices, binarize_batch)
        counts = {}
        for b, step in steppers.items():  # warm-up, and how many steps one timed round needs
            step(3)
            t0 = time.perf_counter()
            step(3)
            counts[b] = max(3, round(params["calibration_round_s"] * 3 / max(time.perf_counter() - t0, 1e-6)))
        times: dict[int, list[float]] = {b: [] for b in sizes}
        for r in range(params["calibration_rounds"]):
            for b in sizes[r % len(sizes):] + sizes[: r % len(sizes)]:
                t0 = time.perf_counter()
                steppers[b](counts[b])
                times[b].append((time.perf_counter() - t0) / counts[b])
    finally:
        torch.set_num_threads(threads)
    return {"sec_per_step": {str(b): statistics.median(t) for b, t in times.items()},
            "range": {str(b): [min(t), max(t)] for b, t in times.items()}, "steps_per_round": {str(b): c for b, c in counts.items()},
            "rounds": params["calibration_rounds"], "cpu": cpu_model(), "torch_threads": 1,
            "load_average_1min": os.getloadavg()[0], "source": "measured"}


def _stepper(cfg, x, model, objective, optimizer, batch_indices, binarize_batch):
    """n training steps as the loop takes them: the epoch's batch, fresh binarisation, the loop's own step."""
    import torch

    from vaezoo.training.loop import take_step

    gen = torch.Generator().manual_seed(0)
    state = {"step": 0}

    def run(n: int) -> None:
        for _ in range(n):
            xb = binarize_batch(x[batch_indices(len(x), cfg.batch_size, state["step"], 0)], cfg.data.binarize, gen)
            take_step(model, objective, optimizer, xb, gen)
            state["step"] += 1

    return run


def log_interval(values: list[float]) -> dict:
    """A t-interval over seeds on log B_simple, mapped back (a geometric mean): a ratio of noisy estimates is
    skewed, and an interval on its own scale can reach below 0."""
    logs = iv.t_interval([math.log(v) for v in values])
    return {**{k: math.exp(logs[k]) for k in ("mean", "lo", "hi")}, "n": logs["n"], "values": list(values)}


def first_reach(trace: list[list[float]], target: float) -> int | None:
    """The first evaluated step whose test ELBO is at or above ``target`` (None: never)."""
    return next((int(step) for step, value in trace if value >= target), None)


class BatchSize(Study):
    name = "batch-size"
    claim = ("A batch of 32-256 images is the sweet spot: batch 1 is too noisy and the full training set too "
             "expensive, so a batch in 32-256 trains the VAE best.")
    source = "the tutorial (../shared/seed/vae-tutorial.txt), the batch-size table ('32-256 | Good | Sweet spot')"
    presets = {
        "tiny": {"dataset": "digits", "hidden": (64, 32), "latent_dim": 4, "batch_sizes": (8, 64, 128, 512),
                 "epochs": 5, "seconds": 0.6, "evals": 10, "target": -32.0, "pool": 256, "pool_groups": 16,
                 "bootstrap": 100, "seeds": 3,
                 # fixed, so that the test is exact: seconds per step of the tiny networks on a shared 2-core CPU
                 "calibration": {"sec_per_step": {"8": 0.0015, "64": 0.0016, "128": 0.0018, "512": 0.003},
                                 "source": "fixed by the preset (stated, not measured)"}},
        "quick": {"dataset": "digits", "hidden": (128, 64), "latent_dim": 8,
                  "batch_sizes": (1, 4, 16, 64, 128, 256, 1024, "full"), "epochs": 10, "seconds": 20.0, "evals": 40,
                  "target": -24.5, "pool": 1024, "pool_groups": 32, "bootstrap": 200, "calibration_rounds": 7,
                  "calibration_round_s": 0.05, "seeds": 3},
        "full": {"dataset": "mnist5k", "hidden": (512, 256), "latent_dim": 32,
                 "batch_sizes": (1, 4, 16, 32, 64, 128, 256, 512, 1024, "full"), "epochs": 50, "seconds": 600.0,
                 "evals": 50, "target": -110.0, "pool": 4096, "pool_groups": 64, "bootstrap": 200,
                 "calibration_rounds": 9, "calibration_round_s": 0.1, "seeds": 5},
    }

    def jobs(self, params: dict, seeds: list[int]) -> list[Job]:
        """Two trainings per (B, seed), at equal epochs and at equal wall time. The calibration is measured here,
        once, unless the preset fixes one, and written into ``params`` so that the analysis and study.json carry it."""
        from vaezoo.data import DataConfig
        from vaezoo.data.datasets import train_size

        n_train = train_size(DataConfig(name=params["dataset"]))
        sizes = batch_sizes(params, n_train)
        if "calibration" not in params:
            params["calibration"] = calibrate(params, sizes, n_train)
        cal = params["calibration"]["sec_per_step"]
        missing = [b for b in sizes if str(b) not in cal]
        if missing:
            raise VaezooError(f"the calibration has no step time for B = {missing}")
        budget = step_budgets({str(b): cal[str(b)] for b in sizes}, params["seconds"])
        params.update(n_train=n_train, sizes=sizes, steps_time=budget,
                      steps_epochs={str(b): epoch_steps(params["epochs"], b, n_train) for b in sizes})
        shared = {k: params[k] for k in ("dataset", "hidden", "latent_dim", "evals", "pool", "pool_groups", "bootstrap")}
        out = []
        for kind, steps in (("epochs", params["steps_epochs"]), ("time", budget)):
            out += [Job(f"{kind}-b{b}/seed{s}", s, {"kind": kind, "batch_size": b, "steps": steps[str(b)], "params": shared})
                    for b in sizes for s in seeds]
        return out

    def run_job(self, job: Job, ctx: JobContext) -> dict:
        p, b, steps = job.payload["params"], job.payload["batch_size"], job.payload["steps"]
        timed = job.payload["kind"] == "time"
        user = user_config({**p, "steps": steps}, job.seed, MODEL, batch_size=b)
        # equal-time runs are evaluated `evals` times on the way (time to target); equal-epoch runs at the end only
        user.update(optim={"lr": lr_for(b)}, eval_every=max(1, steps // p["evals"]) if timed else steps)
        trace: list[list[float]] = []
        model, cfg, final = train_job(job, ctx, user, observe=lambda step, _m, metrics: trace.append([step, metrics["test_elbo"]]))
        out = {"test_elbo": final["test_elbo"], "steps": steps, "lr": lr_for(b), "trace": trace}
        if timed and b == B_REF:
            out["b_simple"] = noise_scale(model, cfg, p, job.seed)
        return out

    def analyse(self, params: dict, seeds: list[int], results: dict[str, dict]) -> Report:
        sizes, cal = params["sizes"], params["calibration"]["sec_per_step"]
        per = {kind: {b: [results[f"{kind}-b{b}/seed{s}"]["test_elbo"] for s in seeds] for b in sizes}
               for kind in ("epochs", "time")}
        stats = {kind: {str(b): iv.t_interval(v) for b, v in per[kind].items()} for kind in per}
        judged = {kind: self._judge(per[kind], sizes) for kind in per}
        reach = self._time_to_target(params, seeds, results, sizes, cal)
        judged["target"] = self._judge_target(reach, sizes)
        bs = [results[f"time-b{B_REF}/seed{s}"]["b_simple"] for s in seeds]
        finite = all(math.isfinite(x["value"]) for x in bs)
        b_simple = {"per_seed": bs, "over_seeds": log_interval([x["value"] for x in bs]) if finite and len(bs) > 1 else None}
        verdict, why = self._verdict(judged, b_simple)
        numbers = {"test_elbo": stats, "judged": judged, "time_to_target": reach, "b_simple": b_simple,
                   "lr": {str(b): lr_for(b) for b in sizes}, "sweet_spot": list(SWEET)}
        figures = {"bound_vs_batch.png": self._figure(params, stats, b_simple),
                   "curves.png": self._curves(params, seeds, results, sizes, cal)}
        return Report(verdict, why, self._sections(params, stats, judged, reach, b_simple), numbers, figures)

    @staticmethod
    def _judge(per: dict[int, list[float]], sizes: list[int]) -> dict:
        """The best B inside the sweet spot (by mean) against every B outside it, on paired seeds: positive is
        the sweet spot better."""
        inside = [b for b in sizes if SWEET[0] <= b <= SWEET[1]]
        best = max(inside, key=lambda b: statistics.fmean(per[b]))
        diffs = {str(b): iv.paired(per[best], per[b]) for b in sizes if b not in inside}
        where = {b: iv.direction(d) for b, d in diffs.items()}
        overall = max(sizes, key=lambda b: statistics.fmean(per[b]))
        return {"best_inside": best, "best_overall": overall, "inside_minus_outside": diffs, "direction": where,
                "all_outside_worse": all(w == "above" for w in where.values()),
                "outside_better": [b for b, w in where.items() if w == "below"]}

    @staticmethod
    def _judge_target(reach: dict, sizes: list[int]) -> dict:
        """Seconds to the target: the fastest B in the sweet spot against every B outside it, on paired seeds
        (positive: the sweet spot is faster). A B that no seed brings to the target is worse than one every seed
        does; partly reached is not resolved."""
        inside = [b for b in sizes if SWEET[0] <= b <= SWEET[1] and reach[str(b)]["reached"] == reach[str(b)]["of"]]
        if not inside:
            return {"best_inside": None, "outside_minus_inside": {}, "direction": {str(b): "zero" for b in sizes
                                                                               if not SWEET[0] <= b <= SWEET[1]}}
        best = min(inside, key=lambda b: statistics.fmean(reach[str(b)]["seconds_per_seed"]))
        diffs, where = {}, {}
        for b in sizes:
            if SWEET[0] <= b <= SWEET[1]:
                continue
            r = reach[str(b)]
            if r["reached"] == r["of"]:
                diffs[str(b)] = iv.paired(r["seconds_per_seed"], reach[str(best)]["seconds_per_seed"])
                where[str(b)] = iv.direction(diffs[str(b)])
            else:
                where[str(b)] = "above" if r["reached"] == 0 else "zero"
        return {"best_inside": best, "outside_minus_inside": diffs, "direction": where}

    @staticmethod
    def _verdict(judged: dict, b_simple: dict) -> tuple[str, str]:
        """Holds: at equal wall time every B outside 32-256 is worse (final test ELBO or seconds to the target) and
        better on neither, and at equal epochs none is better. Does not hold: one is better at equal wall time."""
        names = {"above": "worse", "zero": "not resolved", "below": "better"}

        def told(kind: str) -> str:
            groups = {n: [b for b, w in judged[kind]["direction"].items() if w == d] for d, n in names.items()}
            return "; ".join(f"{n}: B = {', '.join(bs)}" for n, bs in groups.items() if bs)

        outside = list(judged["time"]["direction"])
        ways = [judged[k]["direction"] for k in ("time", "target")]
        time_worse = all(any(w[b] == "above" for w in ways) for b in outside)
        time_better = [b for b in outside if any(w[b] == "below" for w in ways)]
        epochs_better = [b for b, w in judged["epochs"]["direction"].items() if w == "below"]
        band = b_simple["over_seeds"]
        bs = f"B_simple at B = {B_REF} is {iv.fmt(band, 0)}" if band else f"B_simple at B = {B_REF} is not finite on every seed"
        detail = (f"at equal wall time, final test ELBO against B = {judged['time']['best_inside']} ({told('time')}), "
                  f"seconds to the target against B = {judged['target']['best_inside']} ({told('target')}); at equal "
                  f"epochs against B = {judged['epochs']['best_inside']} ({told('epochs')}); {bs}")
        if time_better:
            return "does not hold", f"B = {', '.join(time_better)} outside 32-256 train better at equal wall time: {detail}."
        if time_worse and not epochs_better:
            return "holds", f"every B outside 32-256 is worse at equal wall time and none is better per image seen: {detail}."
        if time_worse:
            return "depends", (f"at equal wall time every B outside 32-256 is worse, but per image seen (equal epochs) "
                               f"B = {', '.join(epochs_better)} is better, so small batches are slow here, not too noisy: {detail}.")
        return "depends", f"at equal wall time not every B outside 32-256 is resolved as worse: {detail}."

    @staticmethod
    def _time_to_target(params: dict, seeds: list[int], results: dict, sizes: list[int], cal: dict) -> dict:
        """Per B, from the equal-time runs: the first evaluated step at the target, as steps, epochs and calibrated
        seconds (t-intervals over the seeds that reach it; how many do)."""
        out = {}
        for b in sizes:
            steps = [first_reach(results[f"time-b{b}/seed{s}"]["trace"], params["target"]) for s in seeds]
            hit = [s for s in steps if s is not None]
            row = {"reached": len(hit), "of": len(seeds), "seconds_per_seed": [None if s is None else s * cal[str(b)] for s in steps]}
            if len(hit) == len(seeds):
                row.update(steps=iv.t_interval(hit), epochs=iv.t_interval([s * b / params["n_train"] for s in hit]),
                           seconds=iv.t_interval([s * cal[str(b)] for s in hit]))
            out[str(b)] = row
        return out

    @staticmethod
    def _figure(params: dict, stats: dict, b_simple: dict) -> bytes:
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=False)
        sizes = params["sizes"]
        titles = {"epochs": f"equal epochs ({params['epochs']})", "time": f"equal wall time ({params['seconds']:g} s calibrated)"}
        for ax, kind in zip(axes, ("epochs", "time")):
            ivs = [stats[kind][str(b)] for b in sizes]
            ax.errorbar(sizes, [v["mean"] for v in ivs], yerr=[[v["mean"] - v["lo"] for v in ivs], [v["hi"] - v["mean"] for v in ivs]],
                        marker="o", capsize=3, color="#2b5d9b", label="test ELBO (95% t over seeds)")
            ax.axvspan(*SWEET, color="#999999", alpha=0.15, label="claimed sweet spot 32-256")
            band = b_simple["over_seeds"]
            if band:
                lo, hi = max(band["lo"], 1.0), band["hi"]
                ax.axvspan(lo, hi, color="#c0392b", alpha=0.25, label=f"B_simple at B={B_REF} (95% t)")
                ax.axvline(band["mean"], color="#c0392b", lw=1)
            ax.set_xscale("log", base=2)
            ax.set(xlabel="batch size B (last: full batch)", ylabel="test ELBO (nats)", title=titles[kind])
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7, loc="lower left")
        return to_png(fig)

    @staticmethod
    def _curves(params: dict, seeds: list[int], results: dict, sizes: list[int], cal: dict) -> bytes:
        """The equal-time runs' test ELBO against calibrated seconds (mean over seeds), with the target."""
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        colours = plt.cm.viridis([i / max(1, len(sizes) - 1) for i in range(len(sizes))])
        for b, c in zip(sizes, colours):
            traces = [results[f"time-b{b}/seed{s}"]["trace"] for s in seeds]
            n = min(len(t) for t in traces)
            xs = [traces[0][i][0] * cal[str(b)] for i in range(n)]
            ax.plot(xs, [statistics.fmean(t[i][1] for t in traces) for i in range(n)], color=c, label=f"B={b}")
        ax.axhline(params["target"], color="k", ls="--", lw=1, label="target")
        lows = [statistics.fmean(results[f"time-b{b}/seed{s}"]["test_elbo"] for s in seeds) for b in sizes]
        ax.set_ylim(min(min(lows), params["target"]) - 5, max(lows) + 2)
        ax.set(xlabel="calibrated seconds", ylabel="test ELBO (nats, mean over seeds)", title="equal wall time: learning curves")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2, loc="lower right")
        return to_png(fig)

    @staticmethod
    def _sections(params: dict, stats: dict, judged: dict, reach: dict, b_simple: dict) -> list[str]:
        cal = params["calibration"]
        sizes = params["sizes"]
        rows = ["| B | lr | steps (equal epochs) | test ELBO, equal epochs | steps (equal time) | test ELBO, equal time |",
                "|---:|---:|---:|---:|---:|---:|"]
        for b in sizes:
            rows.append(f"| {b}{' (full)' if b == params['n_train'] else ''} | {lr_for(b):.2e} | {params['steps_epochs'][str(b)]} | "
                        f"{iv.fmt(stats['epochs'][str(b)], 2)} | {params['steps_time'][str(b)]} | {iv.fmt(stats['time'][str(b)], 2)} |")
        drows = ["| B outside 32-256 | test ELBO, equal epochs | test ELBO, equal wall time | seconds to target (B minus best) |",
                 "|---:|---:|---:|---:|"]
        tgt = judged["target"]
        for b in sizes:
            if SWEET[0] <= b <= SWEET[1]:
                continue
            d = tgt["outside_minus_inside"].get(str(b))
            cell = iv.fmt(d, 2) if d else {"above": "never reached (worse)", "zero": "not reached by every seed"}[tgt["direction"][str(b)]]
            drows.append(f"| {b} | {iv.fmt(judged['epochs']['inside_minus_outside'][str(b)], 2)} | "
                         f"{iv.fmt(judged['time']['inside_minus_outside'][str(b)], 2)} | {cell} |")
        trows = ["| B | seeds reaching it | steps | epochs | calibrated seconds |", "|---:|---:|---:|---:|---:|"]
        for b in sizes:
            r = reach[str(b)]
            cells = ([iv.fmt(r["steps"], 0), iv.fmt(r["epochs"], 1), iv.fmt(r["seconds"], 2)] if "steps" in r
                     else ["not reached by every seed"] * 3)
            trows.append(f"| {b} | {r['reached']} / {r['of']} | " + " | ".join(cells) + " |")
        crow = ["| B | seconds per step (median) | range over rounds |", "|---:|---:|---:|"]
        crow += [f"| {b} | {cal['sec_per_step'][str(b)] * 1e3:.3f} ms | " + (
            f"{cal['range'][str(b)][0] * 1e3:.3f}-{cal['range'][str(b)][1] * 1e3:.3f} ms |" if "range" in cal else "- |")
            for b in sizes]
        where = (f"measured in one process before any training, one torch thread, {cal['rounds']} interleaved rounds "
                 f"(order rotated each round), the median per B, on {cal['cpu']}"
                 + (f" (1-minute load average {cal['load_average_1min']:.1f} on its cores)" if "load_average_1min" in cal else "")
                 if cal.get("source") == "measured"
                 else cal["source"])
        per_seed = ", ".join(f"{x['value']:.0f} [{x['lo']:.0f}, {x['hi']:.0f}]" for x in b_simple["per_seed"])
        band = b_simple["over_seeds"]
        return [
            "## Setup\n\n"
            f"{params['dataset']} ({params['n_train']} training images), MLP {'-'.join(map(str, params['hidden']))}, latent "
            f"{params['latent_dim']}, Adam. **Learning rate rule:** lr(B) = min({LR_CAP:g}, {LR_REF:g} x sqrt(B / {B_REF})), "
            "Adam's square-root scaling (Malladi et al. 2022: Adam normalises the step by the gradient's RMS, so the "
            "gradient noise per unit of training time stays fixed when lr grows as sqrt(B), where SGD's rule is linear) "
            f"from the house recipe (Adam {LR_REF:g} at B = {B_REF}); the cap keeps lr within 3x of the recipe, not tuned. "
            f"**Equal epochs:** {params['epochs']} epochs, n // B steps each (the last partial batch dropped, as training does). "
            f"**Equal wall time:** {params['seconds']:g} calibrated seconds of training steps per B, steps = "
            "round(seconds / calibrated seconds per step); evaluation is not counted. Every run's test ELBO (analytic KL, "
            "nats per image) at its last step.\n\n" + "\n".join(rows) + "\n\n![test ELBO vs B](bound_vs_batch.png)\n",
            "## Calibration (seconds per step)\n\n"
            f"Not live timings: the machine is shared and timings under load are noisy, so each B's step budget comes from "
            f"this calibration, {where}. Given it, the step budgets are fixed and every training is seeded (same seed "
            "and CPU, bit-identical weights: tests/test_train.py), so the numbers follow from the calibration; a rerun "
            "measures its own calibration, and another machine or load gives other budgets. 'Wall time' here is this "
            "one-process, one-thread time per step, although the trainings then run side by side in worker processes "
            "(which slows each of them alike).\n\n" + "\n".join(crow) + "\n",
            f"## Paired differences: the best B in 32-256 against each B outside it\n\nPositive: the sweet spot is better "
            f"(a higher test ELBO; fewer seconds to the target). Best inside 32-256: B = {judged['epochs']['best_inside']} at "
            f"equal epochs, B = {judged['time']['best_inside']} at equal wall time, B = {tgt['best_inside']} to the target; "
            f"best overall: B = {judged['epochs']['best_overall']} and B = {judged['time']['best_overall']}.\n\n"
            + "\n".join(drows) + "\n",
            f"## Time to a target test ELBO of {params['target']:g} nats\n\nFrom the equal-time runs, evaluated "
            f"{params['evals']} times each (so resolved to 1/{params['evals']} of the budget); seconds are calibrated "
            "seconds (steps x seconds per step).\n\n" + "\n".join(trows) + "\n\n![learning curves](curves.png)\n",
            f"## Critical batch size B_simple (McCandlish et al. 2018)\n\nB_simple = tr Sigma / |G|^2 of the ELBO's "
            f"reparameterised gradient, on the model trained at B = {B_REF} for the equal-time budget, from "
            f"{params['pool']} per-example gradients in {params['pool_groups']} groups (``vaezoo.gradnoise``; bias-corrected "
            f"bootstrap intervals, whose coverage tests/test_gradvar.py checks against a known truth). Per seed: {per_seed}. "
            + (f"Over seeds (geometric mean, 95% t-interval on log B_simple): {iv.fmt(band, 0)}; drawn as the red band. " if band else "Not finite on every seed. ")
            + "McCandlish et al.: below B_simple the gradient noise dominates a step, and doubling B nearly halves the steps "
            "needed; above it, doubling B barely cuts them, so the extra images per step are wasted (equal epochs then fall "
            "behind) and only time per step decides at equal wall time. B_simple grows as the loss falls, so this is its "
            "value late in training.\n",
        ]


def noise_scale(model, cfg, params: dict, seed: int) -> dict:
    """B_simple with its bootstrap interval ({value, lo, hi}) for the ELBO's reparameterised gradient at the model's
    current weights, from vaezoo.gradnoise's per-example pool."""
    import torch

    from vaezoo.gradnoise.measure import MODEL as WHOLE
    from vaezoo.gradnoise.measure import GradVarConfig, run_study

    data = study_data(cfg.data.name, cfg.data.binarize)
    gv = GradVarConfig(batch_sizes=(1,), ks=(1,), bounds=("elbo",), estimators=("reparam",), draws=4, split=False,
                       pool=params["pool"], pool_groups=params["pool_groups"], bootstrap=params["bootstrap"], seed=seed)
    pool = run_study(model, data.train_raw, cfg.data.binarize, gv, torch.device("cpu"), progress=False).pools[0]
    return pool.figure(WHOLE, "b_simple")


STUDY = BatchSize()
