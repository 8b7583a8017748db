"""Moments of per-example gradients without materialising them: per parameter, sum_i g_i and sum_i g_i^2
over a batch, and each example's squared norm |g_i|^2, from one backward pass with layer hooks.

g_i is the gradient of the estimator's surrogate for example i (pergrad's definition: the surrogate of the
batch of one, x_i with its noise eps[:, i]). A Linear layer y = W a + b sees rows r, each of one example
(row r of a call with N = R B rows belongs to example r mod B: samples-major, as ``decode`` flattens
[K, B, d]); with delta_r = d(sum_i surrogate_i)/d y_r, the per-example gradient is sum_{r in i} delta_r a_r^T
(Dangel, Kunstner & Hennig 2020, BackPACK). One row per example (K = 1): sum_i g_i^2 = (delta^2)^T (a^2) and
|g_i|^2 = |delta_i|^2 |a_i|^2, no per-example matrix. Several rows (K > 1, a layer called twice as DReG's
decoder is, convolutions after unfolding): the per-example matrices are formed for a chunk of examples that
fits ``chunk_bytes`` and reduced at once.

Everything the hooks cannot vouch for goes through torch.func per-example gradients (vmap over grad), in
chunks reduced as they are made, and is named in ``Moments.fallback``: a parameter outside a Linear, Conv2d or
ConvTranspose2d layer (groups = 1, zero padding), a layer called with swapped-in parameters, a layer whose
hook sum disagrees with autograd's gradient (a use of its parameters the hooks did not see), and a layer
whose per-example norms disagree with autograd at B = 1 (rows that do not map to examples as above, or
examples coupled through the batch); the last check runs once per batch shape.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from vaezoo.core.errors import VaezooError
from vaezoo.gradnoise.pergrad import Surrogate, network_of
from vaezoo.objectives import Objective, ObjectiveConfig

CHUNK_BYTES = 4 * 2**20  # per-example matrices of one chunk: measured fastest at a few MiB (the cache), not more
DISAGREES = "its hook sum disagrees with autograd's gradient (its parameters are used outside its own calls)"
CHECK_RTOL = 1e-3  # hook figures against autograd's: float32 round-off is ~1e-6 here, a missed use is O(1)


@dataclass
class Moments:
    """Per-example gradient moments over a batch of ``batch_size`` examples, keyed by parameter name
    (``model.``-prefixed, as in pergrad): ``sum`` sum_i g_i and ``sum_sq`` sum_i g_i^2 shaped like the
    parameter; ``sq_norms`` [B], |g_i|^2 over that parameter's entries. ``fallback``: module or parameter name
    -> why it went through torch.func instead of the hooks (empty when the hooks served everything)."""

    sum: dict[str, torch.Tensor]
    sum_sq: dict[str, torch.Tensor]
    sq_norms: dict[str, torch.Tensor]
    batch_size: int
    fallback: dict[str, str] = field(default_factory=dict)

    def variance_of_mean(self, name: str) -> torch.Tensor:
        """Per coordinate, the variance of the batch-mean gradient: (sum g^2 / B - (sum g / B)^2) / B."""
        B = self.batch_size
        return (self.sum_sq[name] / B - (self.sum[name] / B).square()) / B

    def network_sq_norms(self, names: list[str]) -> torch.Tensor:
        """|g_i|^2 over several parameters (a network), [B], in float64."""
        return torch.stack([self.sq_norms[n].double() for n in names]).sum(0)


@dataclass
class _Call:
    a: torch.Tensor  # the layer's input
    out: torch.Tensor  # its output (a graph node; its gradient arrives in the backward pass)
    delta: torch.Tensor | None = None


@dataclass
class _Layer:
    """One hooked module and the parameters it owns: slot ('weight' / 'bias') -> parameter name."""

    name: str
    module: nn.Module
    slots: dict[str, str]
    calls: list[_Call] = field(default_factory=list)
    refused: str | None = None  # set during a pass: the module must go to the fallback
    partial: _Partial | str | None = None  # its reduction in this pass (or why there is none)


@dataclass
class _Partial:
    """A layer's squares and norms from the hooks, and what is checked against autograd's gradient."""

    sq: dict[str, torch.Tensor]
    norms: dict[str, torch.Tensor]
    check: _Projection
    bias_sum: torch.Tensor | None


HOOKABLE = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


def _why_not_hookable(module: nn.Module) -> str | None:
    """None if the hooks handle this module exactly, else the reason."""
    if type(module) not in HOOKABLE:  # exact type: a subclass may change forward
        return f"{type(module).__name__} is not a Linear, Conv2d or ConvTranspose2d layer"
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
            return f"{type(module).__name__} with groups={module.groups}, padding={module.padding!r}, padding_mode={module.padding_mode!r} (hooks take groups=1, integer zero padding)"
    return None


class GradientMoments:
    """``GradientMoments(model, cfg)(x, eps) -> Moments`` for x [B, *shape] and eps [K, B, d].

    ``chunk_bytes`` bounds the per-example matrices formed at once (hook path) and the per-example gradients
    of one vmapped chunk (fallback); a bound that cannot hold one example is refused. ``hooks=False`` sends
    every parameter through the fallback (the torch.func path alone)."""

    def __init__(self, model: nn.Module, cfg: ObjectiveConfig, chunk_bytes: int = CHUNK_BYTES, hooks: bool = True,
                 baseline: float | None = None):
        if chunk_bytes < 1:
            raise VaezooError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
        cfg = dataclasses.replace(cfg, baseline_decay=0.0)  # a moving baseline would make g_i depend on the past
        objective = Objective(cfg)
        objective.check_model(model)
        if baseline is not None:  # the score estimator's baseline, held fixed (vaezoo.gradnoise.baseline)
            objective.estimator.baseline = baseline
        self.cfg, self.chunk_bytes = cfg, chunk_bytes
        self.module = Surrogate(model, objective)
        self.params = dict(self.module.named_parameters())
        self.buffers = dict(self.module.named_buffers())
        self.fallback: dict[str, str] = {}  # standing reasons, found once (structure) or by a failed check
        self.layers: dict[str, _Layer] = {}
        if not hooks:
            self.fallback["model"] = "hooks turned off (hooks=False)"
        owners: dict[int, list[str]] = {}
        for mname, mod in self.module.named_modules():
            for p in mod.parameters(recurse=False):
                owners.setdefault(id(p), []).append(mname)
            if not hooks or not any(True for _ in mod.parameters(recurse=False)):
                continue
            reason = _why_not_hookable(mod)
            if reason:
                self.fallback[mname] = reason
                continue
            slots = {s: f"{mname}.{s}" for s, _ in mod.named_parameters(recurse=False)}
            self.layers[mname] = _Layer(mname, mod, slots)
        shared = {m for names in owners.values() if len(names) > 1 for m in names}
        for mname in shared & set(self.layers):  # one tensor, two modules: its g_i is the sum of both
            self._refuse(mname, "shares a parameter with another module")
        self._verified: set[tuple] = set()

    # --- public -------------------------------------------------------------------------------------------

    def __call__(self, x: torch.Tensor, eps: torch.Tensor) -> Moments:
        B = x.shape[0]
        if eps.dim() != 3 or eps.shape[1] != B:
            raise VaezooError(f"eps must be [K, B, d] with B = {B} (the batch of x), got {list(eps.shape)}")
        result = Moments({}, {}, {}, B)
        if self.layers:
            self._hook_pass(x, eps, result)
            key = (tuple(x.shape), tuple(eps.shape))
            if key not in self._verified and self.layers:
                if self._verify(x, eps, result):  # a layer failed: it is now in self.fallback
                    return self(x, eps)
                self._verified.add(key)
        rest = [n for n in self.params if n not in result.sum]
        if rest:
            self._fallback_pass(x, eps, rest, result)
        result.fallback = dict(self.fallback)
        for d in ("sum", "sum_sq", "sq_norms"):  # parameter order, as pergrad flattens
            setattr(result, d, {n: getattr(result, d)[n] for n in self.params})
        return result

    # --- the hook path --------------------------------------------------------------------------------

    def _refuse(self, mname: str, reason: str) -> None:
        self.fallback[mname] = reason
        layer = self.layers.pop(mname, None)
        if layer is not None:  # let go of its activations now
            layer.calls.clear()
            layer.partial = None

    @contextmanager
    def _hooks(self) -> Iterator[None]:
        handles = [layer.module.register_forward_hook(self._forward_hook(layer)) for layer in self.layers.values()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            for layer in self.layers.values():
                layer.calls.clear()
                layer.partial = None

    def _forward_hook(self, layer: _Layer):
        def hook(module, inputs, out):
            if not torch.is_grad_enabled() or not out.requires_grad:
                return  # no gradient flows back through this call
            live = []
            for slot, pname in layer.slots.items():
                t = getattr(module, slot)
                if t is self.params[pname]:
                    live.append(slot)
                elif t is not None and t.requires_grad:  # functional_call with a differentiable stand-in
                    layer.refused = "called with a swapped-in parameter that carries gradient"
            if not live:
                return  # detached copies swapped in: this call adds nothing to the gradient
            if len(live) != len(layer.slots):
                layer.refused = "called with some parameters swapped in"
            call = _Call(inputs[0].detach(), out)
            out.register_hook(lambda g: self._arrived(layer, call, g))
            layer.calls.append(call)

        return hook

    def _arrived(self, layer: _Layer, call: _Call, g: torch.Tensor) -> None:
        """A call's output gradient: once every call of the layer has one, reduce it at once, so that no
        layer's factors outlive its own step of the backward pass."""
        call.delta = g.detach()
        if all(c.delta is not None for c in layer.calls):
            with torch.no_grad():
                layer.partial = self._reduce(layer, self._batch)
            for c in layer.calls:
                c.a = c.delta = c.out = None

    def _hook_pass(self, x: torch.Tensor, eps: torch.Tensor, result: Moments) -> None:
        B = self._batch = x.shape[0]
        names = [pname for layer in self.layers.values() for pname in layer.slots.values()]
        with self._hooks(), _requiring_grad([self.params[n] for n in names]), torch.enable_grad():
            surrogate = self.module.objective.estimate(self.module.model, x, eps).surrogate
            if surrogate.shape != (B,):
                raise VaezooError(f"the surrogate must have one value per example [B={B}], got {list(surrogate.shape)}")
            # The examples are independent, so d(sum_i s_i)/d y_r is example r's own delta_r.
            grads = torch.autograd.grad(surrogate.sum(), [self.params[n] for n in names], allow_unused=True)
            total = {n: g if g is not None else torch.zeros_like(self.params[n]) for n, g in zip(names, grads)}
            for layer in list(self.layers.values()):
                if layer.partial is None:  # some call had no path to the loss: it adds nothing
                    with torch.no_grad():
                        layer.partial = self._reduce(layer, B)
                reason = layer.partial if isinstance(layer.partial, str) else self._finish(layer, total, result)
                if reason:
                    self._refuse(layer.name, reason)

    def _finish(self, layer: _Layer, total: dict, result: Moments) -> str | None:
        """Check the hook figures against autograd's gradient; keep them if they agree."""
        part: _Partial = layer.partial
        wname, bname = layer.slots.get("weight"), layer.slots.get("bias")
        if not part.check.agrees(total[wname]) or (bname and not _close(part.bias_sum, total[bname])):
            return DISAGREES
        for n in layer.slots.values():
            result.sum[n], result.sum_sq[n], result.sq_norms[n] = total[n], part.sq[n], part.norms[n]
        return None

    @staticmethod
    def _rows_reason(layer: _Layer, B: int) -> str | None:
        for c in layer.calls:
            if c.a is not None and c.a.shape[0] % B:
                return f"called on {c.a.shape[0]} rows, not a multiple of the batch ({B})"
        return None

    def _reduce(self, layer: _Layer, B: int) -> _Partial | str:
        """The layer's squares and norms from its calls so far, or the reason the hooks cannot serve it."""
        reason = layer.refused or self._rows_reason(layer, B)
        if reason:
            return reason
        calls = [c for c in layer.calls if c.delta is not None]
        wname, bname = layer.slots.get("weight"), layer.slots.get("bias")
        w = layer.module.weight
        sq = {n: torch.zeros_like(self.params[n]) for n in layer.slots.values()}
        norms = {n: torch.zeros(B, dtype=w.dtype, device=w.device) for n in layer.slots.values()}
        check = _Projection(w)
        bias_sum = torch.zeros_like(self.params[bname]) if bname else None
        if isinstance(layer.module, nn.Linear) and len(calls) == 1 and calls[0].a.numel() // calls[0].a.shape[-1] == B:
            # one row per example: squares and norms from squared factors, no per-example matrix
            a, d = calls[0].a.reshape(B, -1), calls[0].delta.reshape(B, -1)
            a2, d2 = a.square(), d.square()
            sq[wname] = d2.T @ a2
            norms[wname] = d2.sum(1) * a2.sum(1)
            if bname:
                sq[bname], norms[bname], bias_sum = d2.sum(0), d2.sum(1), d.sum(0)
            check.add(d.unsqueeze(-1), a.unsqueeze(-1))
        elif calls:
            per_example = _per_example_bytes(layer, calls, B)
            if per_example > self.chunk_bytes:
                raise VaezooError(
                    f"chunk bound of {self.chunk_bytes} bytes is too small for one example: layer '{layer.name}' "
                    f"needs {per_example} bytes per example"
                )
            step = min(B, self.chunk_bytes // per_example)
            buf = None
            for i0 in range(0, B, step):
                i1 = min(B, i0 + step)
                factors = _factors(layer.module, calls, B, i0, i1)
                if factors is None:
                    return "its unfolded output gradient does not line up with its input (output_padding >= stride)"
                left, right, bias = factors
                if buf is None:
                    buf = left.new_empty(step, left.shape[1], right.shape[1])  # reused: no page faults per chunk
                g = torch.bmm(left, right.transpose(1, 2), out=buf[: i1 - i0])
                _square_into(g, sq[wname].view(g.shape[1:]), norms[wname][i0:i1], left, right)
                check.add(left, right)
                if bname:
                    sq[bname] += bias.square().sum(0)
                    norms[bname][i0:i1] = bias.square().sum(1)
                    bias_sum += bias.sum(0)
        return _Partial(sq, norms, check, bias_sum)

    def _verify(self, x: torch.Tensor, eps: torch.Tensor, result: Moments) -> bool:
        """Autograd at B = 1 for the last example against the hooks' |g_i|^2; refuse the layers that differ."""
        j = x.shape[0] - 1
        names = [n for layer in self.layers.values() for n in layer.slots.values()]
        ps = [self.params[n] for n in names]
        with _requiring_grad(ps), torch.enable_grad():
            value = self.module(x[j : j + 1], eps[:, j : j + 1])
            grads = torch.autograd.grad(value, ps, allow_unused=True)
        failed = False
        for layer in list(self.layers.values()):
            for pname in layer.slots.values():
                g = grads[names.index(pname)]
                ref = g.square().sum() if g is not None else torch.zeros(())
                if not _close(result.sq_norms[pname][j], ref):
                    self._refuse(
                        layer.name,
                        "its per-example norms disagree with autograd at B = 1 (rows not one example each, "
                        "samples-major, or examples coupled through the batch)",
                    )
                    failed = True
                    break
        return failed

    # --- the fallback: torch.func, chunked and reduced as made ------------------------------------------

    def _fallback_pass(self, x: torch.Tensor, eps: torch.Tensor, names: list[str], result: Moments) -> None:
        B = x.shape[0]
        fixed = {n: p.detach() for n, p in self.params.items() if n not in names}
        live = {n: self.params[n].detach() for n in names}

        def value(p: dict, xi: torch.Tensor, ei: torch.Tensor) -> torch.Tensor:
            return functional_call(self.module, ({**fixed, **p}, self.buffers), (xi, ei))

        per_example = vmap(grad(value), in_dims=(None, 0, 1))
        need = self._fallback_bytes(names)
        if need > self.chunk_bytes:
            raise VaezooError(
                f"chunk bound of {self.chunk_bytes} bytes is too small for one example: the torch.func fallback "
                f"({len(names)} parameter tensors) needs {need} bytes per example"
            )
        step = self.chunk_bytes // need
        for n in names:
            result.sum[n] = torch.zeros_like(live[n])
            result.sum_sq[n] = torch.zeros_like(live[n])
            result.sq_norms[n] = torch.zeros(B, dtype=live[n].dtype, device=live[n].device)
        with torch.no_grad():
            for i0 in range(0, B, step):
                i1 = min(B, i0 + step)
                gs = per_example(live, x[i0:i1].unsqueeze(1), eps[:, i0:i1].unsqueeze(2))
                for n, g in gs.items():
                    _accumulate(g, n, result.sum, result.sum_sq, result.sq_norms, i0)

    def _fallback_bytes(self, names: list[str]) -> int:
        """Per example in a vmapped chunk: its gradient and the square formed from it."""
        return 2 * sum(self.params[n].numel() * self.params[n].element_size() for n in names)


# --- per-layer helpers -------------------------------------------------------------------------------------


@contextmanager
def _requiring_grad(params: list[torch.Tensor]) -> Iterator[None]:
    """Frozen parameters still have per-example gradients (pergrad differentiates them all)."""
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p, b in zip(params, before):
            p.requires_grad_(b)


def _per_example_bytes(layer: _Layer, calls: list[_Call], B: int) -> int:
    """Bytes one example adds to a chunk: its weight matrix, and its factors with their reshaped copies."""
    w = layer.module.weight
    factors = 0
    for c in calls:
        rows = c.a.shape[0] // B
        if isinstance(layer.module, nn.Linear):
            factors += rows * (c.a.shape[-1] + c.delta.shape[-1])
        else:  # the unfolded side: kernel positions x channels of one side x positions of the other
            k = math.prod(layer.module.kernel_size)
            a_pos, d_pos = c.a[0, 0].numel(), c.delta[0, 0].numel()
            if isinstance(layer.module, nn.ConvTranspose2d):
                factors += rows * (k * c.delta.shape[1] * a_pos + c.a[0].numel() + c.delta[0].numel())
            else:
                factors += rows * (k * c.a.shape[1] * d_pos + c.delta[0].numel())
    return (w.numel() + 2 * factors) * w.element_size()


def _factors(module: nn.Module, calls: list[_Call], B: int, i0: int, i1: int):
    """For examples i0:i1, (left [c, m, M], right [c, n, M], bias grad [c, out]) such that each example's weight
    gradient is left @ right^T (reshaped to the weight): its rows (and positions) of every call side by side."""
    lefts, rights, biases = [], [], []
    c = i1 - i0
    for call in calls:
        R = call.a.shape[0] // B
        a = call.a.reshape(R, B, *call.a.shape[1:])[:, i0:i1].transpose(0, 1)  # [c, R, ...]
        d = call.delta.reshape(R, B, *call.delta.shape[1:])[:, i0:i1].transpose(0, 1)
        if isinstance(module, nn.Linear):
            a, d = a.reshape(c, -1, a.shape[-1]), d.reshape(c, -1, d.shape[-1])  # extra leading dims are rows too
            lefts.append(d.transpose(1, 2))
            rights.append(a.transpose(1, 2))
            biases.append(d.sum(1))
            continue
        cols = (d if isinstance(module, nn.ConvTranspose2d) else a).flatten(0, 1)
        # unfold: every kernel position of the input side, as conv2d reads it (a ConvTranspose2d is the adjoint
        # of a Conv2d with the same weight, so its weight gradient reads the output's gradient the same way)
        u = F.unfold(cols, module.kernel_size, module.dilation, module.padding, module.stride)
        u = u.reshape(c, R, u.shape[1], u.shape[2]).transpose(1, 2).reshape(c, u.shape[1], -1)  # [c, C k k, R L]
        flat_d = d.reshape(c, R, d.shape[2], -1).transpose(1, 2).reshape(c, d.shape[2], -1)  # [c, Cout, R L]
        if isinstance(module, nn.ConvTranspose2d):
            flat_a = a.reshape(c, R, a.shape[2], -1).transpose(1, 2).reshape(c, a.shape[2], -1)  # [c, Cin, R L_in]
            if u.shape[-1] != flat_a.shape[-1]:
                return None
            lefts.append(flat_a)
            rights.append(u)
        else:
            lefts.append(flat_d)
            rights.append(u)
        biases.append(flat_d.sum(-1))
    if len(calls) == 1:
        return lefts[0], rights[0], biases[0]
    return torch.cat(lefts, -1), torch.cat(rights, -1), torch.stack(biases).sum(0)


def _accumulate(g: torch.Tensor, name: str, s: dict, sq: dict, norms: dict, i0: int) -> None:
    """Add per-example gradients g [c, *shape] of examples i0.. into the sums, squares and norms."""
    g2 = g.square()
    s[name] = s[name] + g.sum(0)
    sq[name] = sq[name] + g2.sum(0)
    norms[name][i0 : i0 + len(g)] = g2.reshape(len(g), -1).sum(1)


def _square_into(
    g: torch.Tensor, sq: torch.Tensor, norms: torch.Tensor, left: torch.Tensor, right: torch.Tensor
) -> None:
    """sq += sum_i g_i^2 and norms[i] = |g_i|^2 for per-example matrices g [c, m, n] = left @ right^T."""
    if len(g) <= 4:  # big matrices, few per chunk: fused multiply-add, one pass over each while it is hot
        for gi in g:
            sq.addcmul_(gi, gi)
    else:
        sq += g.square().sum(0)
    M = left.shape[-1]
    if 2 * M * (left.shape[1] + right.shape[1]) < left.shape[1] * right.shape[1]:
        # |L R^T|^2 = sum (L^T L) * (R^T R): M x M Gram matrices instead of another pass over g
        norms.copy_(((left.transpose(1, 2) @ left) * (right.transpose(1, 2) @ right)).sum((1, 2)))
    else:
        norms.copy_(g.square().sum((1, 2)))


def _close(mine: torch.Tensor, ref: torch.Tensor) -> bool:
    """Equal up to CHECK_RTOL of the reference's largest entry (float32 round-off is far below it)."""
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    return ref.numel() == 0 or float((mine - ref).abs().max()) <= CHECK_RTOL * scale + 1e-12


class _Projection:
    """v^T (sum_i L_i R_i^T) u against v^T G u for G autograd's weight gradient and fixed random v, u: O(rows)
    work instead of a second pass. A use of the weight that the hooks missed moves the two apart; round-off
    is bounded by the same sum in absolute values."""

    def __init__(self, weight: torch.Tensor) -> None:
        # every hooked weight's gradient is left @ right^T with left's rows along the weight's first dimension
        self.shape2d = shape2d = (weight.shape[0], weight[0].numel())
        g = torch.Generator(device="cpu").manual_seed(0)
        self.v = torch.randn(shape2d[0], generator=g).to(weight)
        self.u = torch.randn(shape2d[1], generator=g).to(weight)
        self.mine = self.scale = 0.0

    def add(self, left: torch.Tensor, right: torch.Tensor) -> None:
        lv = (self.v @ left).double()  # [c, M], matrix-vector in float32: round-off ~1e-7
        ru = (self.u @ right).double()
        self.mine += float((lv * ru).sum())
        self.scale += float((lv.abs() * ru.abs()).sum())

    def agrees(self, total: torch.Tensor) -> bool:
        ref = float(self.v.double() @ (total.reshape(self.shape2d) @ self.u).double())
        return abs(self.mine - ref) <= CHECK_RTOL * self.scale + 1e-12


__all__ = ["CHUNK_BYTES", "GradientMoments", "Moments", "network_of"]
