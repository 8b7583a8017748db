"""The gradient-variance study: a grid of cells (bound, estimator, batch size B, samples per z K), each
measured from R independent gradient draws, plus a nested design for the latent/data split and a pool of
per-example gradients for the noise scale.

- Independent draws: each has a fresh minibatch (with replacement by default; dynamic binarisation is part
  of the data noise) and fresh eps. They give tr Cov[g], |E g|, E|g|^2 and the per-parameter SNR.
- Split: R/J groups; a group holds one minibatch fixed and redraws eps J times. The mean within-group
  trace is the latent part E_batch[Var_eps g]; the data part is the total minus it (law of total variance).
- Pool: per-example gradients (B = 1) in equal groups give tr Sigma and |G|^2, hence B_simple.

Draw r of a cell depends on (seed, B, K, stream, r) only: every estimator and bound sees the same
minibatches and noise (common random numbers), and the chunking that bounds memory changes nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from vaezoo.core.errors import VaezooError
from vaezoo.core.progress import bar as progress_bar
from vaezoo.data import binarize_batch, eval_binarized
from vaezoo.gradnoise import stats
from vaezoo.gradnoise.baseline import SCORE_BASELINES, settled_baseline
from vaezoo.gradnoise.moments import CHUNK_BYTES, GradientMoments
from vaezoo.gradnoise.pergrad import NETWORKS, DrawGradients
from vaezoo.objectives import ESTIMATORS, ObjectiveConfig
from vaezoo.objectives.bounds import BOUNDS

MODEL = "model"  # encoder and decoder together, for the additive figures (traces, squared norms)
MAX_DRAWS = 8192  # the bootstrap keeps an R x R Gram matrix per network (float64)
SNR_BOOT_COLUMNS = 1 << 16  # parameters per network the SNR's bootstrap replicates are computed on
DESIGNS = ("cross", "full")
METHODS = ("hooks", "vmap")  # how the pool's per-example moments are made (vaezoo.gradnoise.moments / pergrad)


@dataclass
class GradVarConfig:
    """The grid and the sampling plan. design ``cross``: a B sweep at K = min(ks) and a K sweep at
    B = k_sweep_batch; ``full``: every (B, K). draws: R per cell; inner: J eps redraws per fixed minibatch
    in the split (R/J groups); pool: per-example gradients for B_simple (0: none), in pool_groups groups;
    two_batch: (B_small, B_big) for the two-batch noise scale (empty: the smallest and largest B);
    bootstrap: replicates for the intervals; data_limit: use only the first N training examples (0: all;
    1: one fixed x, the setting of Rainforth et al. 2018, where a minibatch is B outer samples of it;
    the N examples are binarised once, see select_data);
    chunk_units / chunk_mb bound one vmapped chunk's memory; method: the pool's per-example moments from
    layer hooks in one backward pass per group (``hooks``, vaezoo.gradnoise.moments) or from torch.func
    per-example gradients (``vmap``); score_baseline: the score estimator measured with the baseline training
    uses, held at its settled value (``trained``, vaezoo.gradnoise.baseline), or with none; mom_groups: also the
    median-of-means SNR ``snr_mom`` from that many groups of a cell's draws (0: none; a point estimate, a check
    against heavy-tailed draws, vaezoo.gradnoise.stats.snr_median_of_means). A cell keeps its R gradients (R x P floats:
    about 0.9 GB for the 1.1M-parameter reference VAE at R = 200) and a pool its groups' sums."""

    batch_sizes: tuple[int, ...] = (1, 4, 16, 64, 256, 1024)
    ks: tuple[int, ...] = (1, 4, 16, 64)
    bounds: tuple[str, ...] = ("elbo", "iwae")
    estimators: tuple[str, ...] = ("reparam", "score", "stl", "dreg")
    kl: str = "auto"
    design: str = "cross"
    k_sweep_batch: int = 16
    draws: int = 200
    inner: int = 4
    split: bool = True
    pool: int = 2048
    pool_groups: int = 64
    two_batch: tuple[int, ...] = ()
    bootstrap: int = 200
    replacement: bool = True
    seed: int = 0
    data_limit: int = 0
    chunk_units: int = 8192
    chunk_mb: int = 256
    method: str = "hooks"
    score_baseline: str = "trained"
    mom_groups: int = 0

    def __post_init__(self) -> None:
        self._check_grid()
        self._check_plan()

    def _check_grid(self) -> None:
        """The cells: B and K (sorted, deduplicated), and bound/estimator pairs that apply to each other."""
        for name in ("batch_sizes", "ks", "bounds", "estimators"):
            if not getattr(self, name):
                raise VaezooError(f"empty grid: no {name.replace('_', ' ')} given")
        self.batch_sizes = tuple(sorted(set(self.batch_sizes)))
        self.ks = tuple(sorted(set(self.ks)))
        if self.batch_sizes[0] < 1:
            raise VaezooError(f"batch sizes must be >= 1, got {self.batch_sizes[0]}")
        if self.ks[0] < 1:
            raise VaezooError(f"K (samples per z) must be >= 1, got {self.ks[0]}")
        for b in self.bounds:
            if b not in BOUNDS:
                raise VaezooError(f"bound '{b}' has no latent noise to measure; choose from {', '.join(BOUNDS)}")
        for e in self.estimators:
            if e not in ESTIMATORS:
                raise VaezooError(f"unknown estimator '{e}'; choose from {', '.join(ESTIMATORS)}")
            applies = ESTIMATORS[e].bounds
            if not set(applies) & set(self.bounds):
                raise VaezooError(
                    f"estimator '{e}' does not apply to bound {' or '.join(repr(b) for b in self.bounds)} "
                    f"(it applies to: {', '.join(applies)})"
                )
        for bound, est in self.combos():  # the objective's own checks (kl mode per estimator)
            ObjectiveConfig(bound=bound, estimator=est, k=self.ks[-1], kl=self.kl)

    def _check_plan(self) -> None:
        """How the cells are sampled: design, draws, the split, the pool, the two-batch pair, chunking."""
        if self.design not in DESIGNS:
            raise VaezooError(f"design must be one of {', '.join(DESIGNS)}, got '{self.design}'")
        if self.k_sweep_batch < 1:
            raise VaezooError(f"k_sweep_batch must be >= 1, got {self.k_sweep_batch}")
        if not 4 <= self.draws <= MAX_DRAWS:
            raise VaezooError(f"draws (R) must be between 4 and {MAX_DRAWS}, got {self.draws}")
        if self.split and (self.inner < 2 or self.draws // self.inner < 2):
            raise VaezooError(
                f"the split needs inner >= 2 and draws >= 2 x inner, got draws={self.draws} inner={self.inner}"
            )
        if self.mom_groups and (self.mom_groups < 2 or self.draws % self.mom_groups or self.draws // self.mom_groups < 2):
            raise VaezooError(f"mom_groups must be 0 or >= 2 groups of >= 2 draws dividing draws={self.draws}, "
                              f"got {self.mom_groups}")
        if self.pool < 0 or self.bootstrap < 0:
            raise VaezooError(f"pool and bootstrap must be >= 0, got pool={self.pool} bootstrap={self.bootstrap}")
        if self.pool and (self.pool_groups < 2 or self.pool % self.pool_groups):
            raise VaezooError(f"pool ({self.pool}) must be a multiple of pool_groups ({self.pool_groups} >= 2)")
        self._check_two_batch()
        if self.data_limit < 0:
            raise VaezooError(f"data_limit must be >= 0 (0: all examples), got {self.data_limit}")
        if self.chunk_units < 1 or self.chunk_mb < 1:
            raise VaezooError("chunk_units and chunk_mb must be >= 1")
        if self.method not in METHODS:
            raise VaezooError(f"unknown method '{self.method}'; choose from {', '.join(METHODS)}")
        if self.score_baseline not in SCORE_BASELINES:
            raise VaezooError(
                f"unknown score baseline '{self.score_baseline}'; choose from {', '.join(SCORE_BASELINES)}"
            )

    def _check_two_batch(self) -> None:
        if self.two_batch:
            small_big = tuple(self.two_batch)
            if len(small_big) != 2 or not small_big[0] < small_big[1]:
                raise VaezooError(f"two_batch needs two batch sizes, smaller first, got {list(small_big)}")
            missing = [b for b in small_big if b not in self.b_sweep_sizes()]
            if missing:
                raise VaezooError(f"two_batch sizes {missing} are not in the B sweep {list(self.b_sweep_sizes())}")

    @property
    def k_base(self) -> int:
        return self.ks[0]

    def combos(self) -> list[tuple[str, str]]:
        """(bound, estimator) pairs of the grid where the estimator applies to the bound."""
        return [(b, e) for b in self.bounds for e in self.estimators if b in ESTIMATORS[e].bounds]

    def b_sweep_sizes(self) -> tuple[int, ...]:
        return self.batch_sizes

    def two_batch_pair(self) -> tuple[int, int] | None:
        if self.two_batch:
            return int(self.two_batch[0]), int(self.two_batch[1])
        bs = self.batch_sizes
        return (bs[0], bs[-1]) if len(bs) > 1 else None

    def grid(self) -> list[tuple[int, int]]:
        """The (B, K) pairs measured for each (bound, estimator)."""
        if self.design == "full":
            return [(b, k) for b in self.batch_sizes for k in self.ks]
        pairs = [(b, self.k_base) for b in self.batch_sizes] + [(self.k_sweep_batch, k) for k in self.ks]
        return sorted(set(pairs))


@dataclass(frozen=True)
class Cell:
    bound: str
    estimator: str
    B: int
    K: int

    @property
    def label(self) -> str:
        return f"{self.bound}.{self.estimator}.B{self.B}.K{self.K}"


@dataclass
class Measured:
    """Point estimates point[net][stat] (float) and bootstrap replicates reps[net][stat] ([n_boot] tensors)."""

    point: dict[str, dict[str, float]] = field(default_factory=dict)
    reps: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def put(self, net: str, name: str, point: torch.Tensor, reps: torch.Tensor | None) -> None:
        self.point.setdefault(net, {})[name] = float(point.reshape(-1)[0])
        self.reps.setdefault(net, {})[name] = reps if reps is not None else torch.empty(0, dtype=torch.float64)

    def ci(self, net: str, name: str) -> tuple[float, float]:
        return stats.percentile_ci(self.reps[net][name], point=self.point[net][name])

    def figure(self, net: str, name: str) -> dict[str, float]:
        return stats.figure(self.point[net][name], self.reps[net][name])

    def figures(self) -> dict[str, dict[str, dict[str, float]]]:
        """Every statistic's {value, lo, hi} figure, per network."""
        return {net: {name: self.figure(net, name) for name in names} for net, names in self.point.items()}


@dataclass
class CellResult(Measured):
    cell: Cell | None = None


@dataclass
class PoolResult(Measured):
    bound: str = ""
    estimator: str = ""
    K: int = 1


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, stable across runs and platforms."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class DrawSampler:
    """Seeded minibatches (x [B, *shape]) and latent noise (eps [K, B, d]) from a data pool held on the CPU."""

    def __init__(self, data: torch.Tensor, binarize: str, latent_dim: int, replacement: bool, seed: int) -> None:
        self.data, self.binarize, self.d = data, binarize, latent_dim
        self.replacement, self.seed = replacement, seed

    def batch(self, B: int, *key: object) -> torch.Tensor:
        g = torch.Generator().manual_seed(derive_seed(self.seed, "x", *key))
        n = len(self.data)
        idx = torch.randint(n, (B,), generator=g) if self.replacement else torch.randperm(n, generator=g)[:B]
        # Same generator as the indices, so the pixels follow them in one seeded stream.
        return binarize_batch(self.data[idx], self.binarize, g)

    def noise(self, K: int, B: int, *key: object) -> torch.Tensor:
        g = torch.Generator().manual_seed(derive_seed(self.seed, "eps", *key))
        return torch.randn(K, B, self.d, generator=g)


def chunk_size(B: int, K: int, n_params: int, cfg: GradVarConfig) -> int:
    """Draws per vmapped chunk: bounded by activations (B K units each) and by the gradients kept (P each)."""
    by_units = cfg.chunk_units // (B * K)
    by_memory = cfg.chunk_mb * 2**20 // (4 * n_params)
    return max(1, min(by_units, by_memory))


def _gradient_chunks(
    engine: DrawGradients,
    draws: list[tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]]],
    chunk: int,
    device,
) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Yield (first draw index, {net: [c, P]}) for draws given as (make x, make eps) pairs."""
    for i in range(0, len(draws), chunk):
        part = draws[i : i + chunk]
        x = torch.stack([mx() for mx, _ in part]).to(device)
        eps = torch.stack([me() for _, me in part]).to(device)
        yield i, engine(x, eps)


def _boot(cfg: GradVarConfig, n: int, *key: object) -> torch.Tensor | None:
    if cfg.bootstrap == 0:
        return None
    return stats.bootstrap_counts(n, cfg.bootstrap, torch.Generator().manual_seed(derive_seed(cfg.seed, "boot", *key)))


def _put_all(res: Measured, net: str, point: dict[str, torch.Tensor], reps: dict[str, torch.Tensor] | None) -> None:
    for name, value in point.items():
        res.put(net, name, value, None if reps is None else reps[name])


def measure_cell(engine: DrawGradients, sampler: DrawSampler, cell: Cell, cfg: GradVarConfig, device) -> CellResult:
    """Every figure of one cell: the R independent draws, then (if on) the split."""
    t0 = time.perf_counter()
    B, K, R = cell.B, cell.K, cfg.draws
    n_params = sum(engine.sizes.values())
    chunk = chunk_size(B, K, n_params, cfg)
    res = CellResult(cell=cell)
    res.info = {"R": R, "chunk": chunk}
    draws = [
        (lambda r=r: sampler.batch(B, B, K, "draw", r), lambda r=r: sampler.noise(K, B, B, K, "draw", r))
        for r in range(R)
    ]
    rows = {net: torch.empty(R, size, device=device) for net, size in engine.sizes.items()}
    for i, grads in _gradient_chunks(engine, draws, chunk, device):
        for net, g in grads.items():
            rows[net][i : i + len(g)] = g
    counts = _boot(cfg, R, B, K, "draw")
    for net in NETWORKS:
        m = stats.RowMoments.of(rows[net])
        _put_all(res, net, stats.draw_statistics(m), None if counts is None else stats.draw_statistics(m, counts))
        columns = _snr_columns(engine.sizes[net], cfg.seed, net, device)
        _put_all(res, net, *stats.snr_statistics(rows[net], counts, columns))
        if cfg.mom_groups:
            res.put(net, "snr_mom", stats.snr_median_of_means(rows[net], cfg.mom_groups), None)
        res.info[f"{net}_params"] = engine.sizes[net]
        res.info[f"{net}_zero_variance"] = stats.zero_variance_count(rows[net])
    del rows
    if cfg.split:
        _measure_split(engine, sampler, cell, cfg, device, chunk, res)
    _add_model_totals(res, B)
    res.info["seconds"] = round(time.perf_counter() - t0, 3)
    return res


def _snr_columns(n_params: int, seed: int, net: str, device) -> torch.Tensor | None:
    """A fixed random subset of a network's parameters for the SNR's bootstrap (None: all of them)."""
    if n_params <= SNR_BOOT_COLUMNS:
        return None
    g = torch.Generator().manual_seed(derive_seed(seed, "snr-columns", net))
    return torch.randperm(n_params, generator=g)[:SNR_BOOT_COLUMNS].sort().values.to(device)


def _measure_split(engine, sampler, cell: Cell, cfg: GradVarConfig, device, chunk: int, res: CellResult) -> None:
    """Law of total variance: M groups, each one fixed minibatch with J fresh eps draws."""
    B, K, J = cell.B, cell.K, cfg.inner
    M = cfg.draws // J
    groups_per_chunk = max(1, chunk // J)
    latent = {net: torch.empty(M, dtype=torch.float64) for net in NETWORKS}
    mean_sum = {net: torch.zeros(size, dtype=torch.float64, device=device) for net, size in engine.sizes.items()}
    mean_sq = dict.fromkeys(NETWORKS, 0.0)
    # a group's minibatch is a pure function of its key: each of its J draws regenerates the same one
    draws = [
        (lambda m=m: sampler.batch(B, B, K, "split", m), lambda m=m, j=j: sampler.noise(K, B, B, K, "split", m, j))
        for m in range(M)
        for j in range(J)
    ]
    for i, grads in _gradient_chunks(engine, draws, groups_per_chunk * J, device):
        g0 = i // J
        for net, g in grads.items():
            grouped = g.reshape(-1, J, g.shape[1])
            latent[net][g0 : g0 + len(grouped)] = stats.within_group_trace(grouped)
            means = grouped.mean(1)
            mean_sum[net] += means.double().sum(0)
            mean_sq[net] += float(means.double().square().sum())
    counts = _boot(cfg, M, B, K, "split")
    for net in NETWORKS:
        lat_point, lat_reps = (
            stats.weighted_mean(latent[net]),
            None if counts is None else stats.weighted_mean(latent[net], counts),
        )
        total_point = torch.tensor([res.point[net]["trace_cov"]], dtype=torch.float64)
        total_reps = res.reps[net]["trace_cov"]
        res.put(net, "latent_var", lat_point, lat_reps)
        res.put(net, "data_var", total_point - lat_point, None if lat_reps is None else total_reps - lat_reps)
        res.put(net, "latent_fraction", lat_point / total_point, None if lat_reps is None else lat_reps / total_reps)
        nested = stats.between_trace(mean_sum[net], mean_sq[net], M) - float(lat_point) / J
        res.put(net, "data_var_nested", torch.tensor([nested]), None)
    res.info["split_groups"] = M
    res.info["split_inner"] = J


ADDITIVE = ("trace_cov", "grad_sq", "mean_sq_norm", "latent_var", "data_var", "data_var_nested")


def _put_network_sums(res: Measured, names: tuple[str, ...]) -> None:
    """The whole model's value of each additive statistic (a trace, a squared norm) that the networks have:
    the sum over networks, of the point estimates and of the bootstrap replicates alike."""
    for name in names:
        if name in res.point[NETWORKS[0]]:
            point = torch.tensor([sum(res.point[n][name] for n in NETWORKS)], dtype=torch.float64)
            res.put(MODEL, name, point, sum(res.reps[n][name] for n in NETWORKS))


def _add_model_totals(res: Measured, B: int) -> None:
    """Whole-model figures: sums of the networks' traces and squared norms (same bootstrap resamples),
    and each network's per-cell noise scale B tr Cov / |E g|^2."""
    _put_network_sums(res, ADDITIVE)
    m = res.reps[MODEL]
    res.put(
        MODEL,
        "mean_grad_norm",
        torch.tensor([max(res.point[MODEL]["grad_sq"], 0.0)]).sqrt(),
        m["grad_sq"].clamp_min(0).sqrt(),
    )
    if "latent_var" in res.point[MODEL]:
        p = res.point[MODEL]
        res.put(
            MODEL, "latent_fraction", torch.tensor([p["latent_var"] / p["trace_cov"]]), m["latent_var"] / m["trace_cov"]
        )
    for net in (*NETWORKS, MODEL):
        p, r = res.point[net], res.reps[net]
        point = stats.noise_ratio(torch.tensor([B * p["trace_cov"]]), torch.tensor([p["grad_sq"]]))
        res.put(net, "b_simple", point, stats.noise_ratio(B * r["trace_cov"], r["grad_sq"]))


def measure_pool(
    engine: DrawGradients, sampler: DrawSampler, bound: str, estimator: str, K: int, cfg: GradVarConfig, device
) -> PoolResult:
    """Per-example gradients (with replacement, fresh eps each) -> tr Sigma, |G|^2 and B_simple per network."""
    t0 = time.perf_counter()
    N, G = cfg.pool, cfg.pool_groups
    size = N // G
    chunk = chunk_size(1, K, sum(engine.sizes.values()), cfg)
    sums = {net: torch.zeros(G, s, device=device) for net, s in engine.sizes.items()}
    sq = {net: torch.zeros(G, dtype=torch.float64, device=device) for net in NETWORKS}
    draws = [
        (lambda i=i: sampler.batch(1, K, "pool", i), lambda i=i: sampler.noise(K, 1, K, "pool", i)) for i in range(N)
    ]
    res = PoolResult(bound=bound, estimator=estimator, K=K)
    res.info = {"N": N, "groups": G, "chunk": chunk, "method": cfg.method, **_baseline_info(engine)}
    if cfg.method == "hooks":  # a group is a batch: its sum and its examples' squared norms, nothing per example
        moments = GradientMoments(
            engine.module.model, engine.cfg, min(CHUNK_BYTES, cfg.chunk_mb * 2**20), baseline=engine.baseline
        )
        for grp in range(G):
            part = draws[grp * size : (grp + 1) * size]
            x = torch.cat([mx() for mx, _ in part]).to(device)
            eps = torch.cat([me() for _, me in part], 1).to(device)
            m = moments(x, eps)
            for net, names in engine.names.items():
                sums[net][grp] = torch.cat([m.sum[n].reshape(-1) for n in names])
                sq[net][grp] = m.network_sq_norms(names).sum()
        res.info["fallback"] = m.fallback
    else:
        for i, grads in _gradient_chunks(engine, draws, chunk, device):
            group = torch.arange(i, i + chunk, device=device)[: next(iter(grads.values())).shape[0]] // size
            for net, g in grads.items():
                sums[net].index_add_(0, group, g)
                sq[net].index_add_(0, group, g.double().square().sum(1))
    counts = _boot(cfg, G, K, "pool")
    for net in NETWORKS:
        m = stats.RowMoments.of(sums[net] / size)
        point = stats.noise_scale_pooled(m, sq[net].cpu(), size)
        reps = None if counts is None else stats.noise_scale_pooled(m, sq[net].cpu(), size, counts)
        _put_all(res, net, point, reps)
    _put_network_sums(res, ("trace_sigma", "grad_sq"))
    p, r = res.point[MODEL], res.reps[MODEL]
    point = stats.noise_ratio(torch.tensor([p["trace_sigma"]]), torch.tensor([p["grad_sq"]]))
    res.put(MODEL, "b_simple", point, stats.noise_ratio(r["trace_sigma"], r["grad_sq"]))
    res.info["seconds"] = round(time.perf_counter() - t0, 3)
    return res


@dataclass
class Study:
    cfg: GradVarConfig
    cells: list[CellResult]
    pools: list[PoolResult]
    sizes: dict[str, int]
    seconds: float


def select_data(cfg: GradVarConfig, data: torch.Tensor, binarize: str) -> tuple[torch.Tensor, str]:
    """The examples the draws come from (``data_limit``) and how they are binarised per draw; refuses
    requests the data cannot serve.

    With ``data_limit`` the N examples are fixed: under dynamic binarisation each is binarised once here
    (seeded), since fresh pixels per draw would be data noise, and data_limit=1 would not hold x fixed as
    the setting of Rainforth et al. 2018 needs."""
    if cfg.data_limit:
        if cfg.data_limit > len(data):
            raise VaezooError(f"data_limit {cfg.data_limit} exceeds the {len(data)} training examples")
        data = data[: cfg.data_limit]
        if binarize == "dynamic":
            data, binarize = eval_binarized(data, binarize, derive_seed(cfg.seed, "fixed-examples")), "none"
    if not cfg.replacement:
        biggest = max(B for B, _ in cfg.grid())
        if biggest > len(data):
            raise VaezooError(
                f"batch size {biggest} exceeds the {len(data)} training examples; sampling without replacement "
                "needs B <= the dataset size (or sample with replacement)"
            )
    return data, binarize


class _Engines:
    """DrawGradients per (bound, estimator, K); the score estimator's baseline is computed once per (bound, K)
    (the ELBO's signal is per sample, IWAE's is the K-sample bound) from warm-up draws of their own stream."""

    def __init__(self, model, sampler: DrawSampler, cfg: GradVarConfig, device) -> None:
        self.model, self.sampler, self.cfg, self.device = model, sampler, cfg, device
        self.baselines: dict[tuple[str, int], float] = {}

    def __call__(self, bound: str, estimator: str, K: int) -> DrawGradients:
        # 'auto' picks the closed-form KL where the estimator allows it; a model whose prior is not N(0, I) (the
        # VampPrior) has none, so there 'auto' is the sampled KL, as that model trains
        kl = "mc" if self.cfg.kl == "auto" and not getattr(self.model, "standard_prior", True) else self.cfg.kl
        ocfg = ObjectiveConfig(bound=bound, estimator=estimator, k=K, kl=kl)
        baseline = None
        if estimator == "score" and self.cfg.score_baseline == "trained":
            if (bound, K) not in self.baselines:
                s = self.sampler
                self.baselines[(bound, K)] = settled_baseline(
                    self.model, ocfg, lambda B, i: s.batch(B, "baseline", i), lambda k, B, i: s.noise(k, B, "baseline", i),
                    self.device,
                )
            baseline = self.baselines[(bound, K)]
        return DrawGradients(self.model, ocfg, baseline)


def _baseline_info(engine: DrawGradients) -> dict:
    """What a score estimator's figures were measured with (nothing for the other estimators)."""
    if engine.cfg.estimator != "score":
        return {}
    return {"score_baseline": "none" if engine.baseline is None else round(engine.baseline, 4)}


def run_study(model, data: torch.Tensor, binarize: str, cfg: GradVarConfig, device, progress: bool = True) -> Study:
    """Measure every cell of the grid and every pool on a model at its current parameters."""
    data, binarize = select_data(cfg, data, binarize)
    t0 = time.perf_counter()
    model = model.to(device)
    sampler = DrawSampler(data.cpu(), binarize, model.latent_dim, cfg.replacement, cfg.seed)
    cells = [Cell(b, e, B, K) for b, e in cfg.combos() for B, K in cfg.grid()]
    pools = [(b, e) for b, e in cfg.combos()] if cfg.pool else []
    bar = progress_bar(progress, len(cells) + len(pools), unit="cell", desc="gradvar")
    cell_results, pool_results = [], []
    sizes: dict[str, int] = {}
    engines = _Engines(model, sampler, cfg, device)
    try:
        for cell in cells:
            bar.set_postfix_str(cell.label)
            engine = engines(cell.bound, cell.estimator, cell.K)
            sizes = engine.sizes
            cell_results.append(measure_cell(engine, sampler, cell, cfg, device))
            cell_results[-1].info.update(_baseline_info(engine))
            bar.update(1)
        for bound, est in pools:
            bar.set_postfix_str(f"{bound}.{est}.pool")
            engine = engines(bound, est, cfg.k_base)
            pool_results.append(measure_pool(engine, sampler, bound, est, cfg.k_base, cfg, device))
            bar.update(1)
    finally:
        bar.close()
    return Study(cfg, cell_results, pool_results, dict(sizes), round(time.perf_counter() - t0, 2))
