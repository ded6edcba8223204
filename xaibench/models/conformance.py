"""Conformance checks: does a family's adapter declare what its model does?

Every check builds on the model's own computation, never on the declarations it judges, and raises
:class:`ConformanceError` (an ``AssertionError``) naming what is wrong.  ``tests/test_conformance.py`` runs
them on every registered family (:data:`xaibench.models.family.FAMILIES`, a family defined in a test module
included) at its ``tiny`` configuration; run them on your own family with::

    from xaibench.models import conformance
    conformance.conform(conformance.tiny("my_family"))     # every check; or one: conformance.check_readout(a)

The checks:

* :func:`check_readout` -- the declared readout (:class:`~xaibench.models.card.Readout`) against the model:
  the gradient of the target logit with respect to the last block's output tokens is non-zero on exactly the
  declared token groups ([CLS], distillation token, patches), zero on every other token;
* :func:`check_attention` -- the hooked probabilities are row distributions; they equal what the library
  itself returns (``output_attentions``) where it does; their recorded gradients equal
  ``torch.autograd.grad`` of the target logits with respect to the very tensors the model multiplied;
* :func:`check_reshape_tokens` -- change the pixels of one patch (one tubelet of one token frame): exactly
  that token changes in ``reshape_tokens`` of the tokens entering the first block, at its (t, y, x);
* :func:`check_blocks` -- ``blocks()`` are called once each, in forward order, one per attention layer, each
  holding its layer's attention; ``head_modules()`` lies outside the blocks;
* :func:`check_randomised` -- ``randomised(k)`` at every cascade depth (head only, ..., every block): the
  original is untouched, every linear / convolution weight of the head and the top k blocks is re-drawn,
  nothing else changes, the copy is seeded;
* :func:`check_methods` -- every registered method explains a sample, or raises ``NotApplicable`` with a
  reason.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from .base import ModelAdapter
from .card import GROUPS


class ConformanceError(AssertionError):
    """A family's declaration disagrees with its model."""


def tiny(family_name: str, **overrides) -> ModelAdapter:
    """The family's conformance-size model (its declared ``tiny`` values, seeded)."""
    from .base import MODELS
    from .family import family

    fam = family(family_name)
    return MODELS.create(fam.name, **{**fam.tiny, **overrides})


def sample_input(adapter: ModelAdapter, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, *adapter.input_shape, generator=g)


def _targets(adapter: ModelAdapter, batch: int) -> torch.Tensor:
    return torch.arange(batch) % adapter.num_classes


def _fail(adapter, what: str):
    raise ConformanceError(f"{adapter.name} ({type(adapter).__name__}, family {adapter.family or '?'}): {what}")


# ------------------------------------------------------------------ readout
def token_gradients(adapter: ModelAdapter, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N,) summed |d logit_target / d token| over the batch and the channels, for the N tokens the last block
    outputs (in the block's own order)."""
    store = {}

    def hook(mod, inp, out):
        t = out[0] if isinstance(out, tuple) else out
        if t.requires_grad:
            t.retain_grad()
        store["out"] = t

    handle = adapter.blocks()[-1].register_forward_hook(hook)
    try:
        xin = adapter.normalise(adapter.check_input(x)).requires_grad_(True)
        with torch.enable_grad():
            logits = adapter._run(xin).float()
            logits.gather(1, target[:, None].to(logits.device)).sum().backward()
    finally:
        handle.remove()
    g = store["out"].grad
    if g is None:
        _fail(adapter, "the logits do not depend on the last block's output")
    return g.detach().reshape(g.shape[0], -1, g.shape[-1]).abs().double().sum((0, 2)).cpu()


def readout_support(adapter: ModelAdapter, tok: torch.Tensor) -> Dict[str, str]:
    """Which token groups the gradient reaches: ``{'cls': 'all', 'patches': 'some', ...}`` ('all' / 'some' /
    'none' of the group's tokens non-zero), plus ``other_prefix`` for prefix tokens of no group."""
    L = adapter.layout
    n_expected = L.n_tokens(len(L.stages) - 1)
    if tok.numel() != n_expected:
        _fail(adapter, f"the last block outputs {tok.numel()} tokens, the layout declares {n_expected} "
                       f"({L.prefix} prefix + {L.frames} x {L.stages[-1]} patches)")

    def state(t):
        nz = t > 0
        return "none" if not nz.any() else "all" if nz.all() else "some"

    out = {"cls": state(tok[:1]) if L.prefix >= 1 else "none",
           "dist": state(tok[1:2]) if L.prefix >= 2 else "none",
           "patches": state(tok[L.prefix:])}
    out["other_prefix"] = state(tok[2:L.prefix]) if L.prefix > 2 else "none"
    return out


def check_readout(adapter: ModelAdapter, seed: int = 0) -> Dict[str, str]:
    """The declared readout's groups are exactly the token groups the target logit's gradient reaches."""
    x = sample_input(adapter, 2, seed)
    support = readout_support(adapter, token_gradients(adapter, x, _targets(adapter, 2)))
    declared = set(adapter.layout.readout.groups)
    read = {g for g in GROUPS if support[g] != "none"}
    problems = []
    if read != declared:
        problems.append(f"declares readout {str(adapter.layout.readout)!r} (groups {sorted(declared)}), but the "
                        f"gradient of the logits w.r.t. the last block's tokens is non-zero on {sorted(read)}")
    if "patches" in declared and support["patches"] == "some":
        problems.append("the readout declares the mean of the patches, but some patch tokens get no gradient")
    if support["other_prefix"] != "none":
        problems.append("prefix tokens beyond [CLS] and the distillation token are read (no group declares them)")
    if problems:
        _fail(adapter, "; ".join(problems))
    return support


# ------------------------------------------------------------------ attention and gradients
def check_attention(adapter: ModelAdapter, seed: int = 1, atol: float = 1e-5) -> Dict[str, int]:
    """Hooked probabilities: distributions, equal to the library's ``output_attentions`` where it has them;
    their gradients equal autograd's w.r.t. the tensors the model computed."""
    x = sample_input(adapter, 2, seed)
    target = _targets(adapter, 2)
    try:
        tr = adapter.trace(x, target=target, attentions=True, grads=True)
    except (RuntimeError, ValueError) as e:
        _fail(adapter, f"a trace with the declared hook points fails: {type(e).__name__}: {e}")
    points = adapter.hook_points()
    if [r.name for r in tr.attentions] != [p.name for p in points] or not points:
        _fail(adapter, "the trace does not yield one record per hook point")
    for r in tr.attentions:
        rows = r.probs.sum(-1)
        if not torch.allclose(rows, torch.ones_like(rows), atol=1e-4):
            _fail(adapter, f"record {r.name}: hooked rows do not sum to one (not attention probabilities)")
        if r.grad is None or r.grad.shape != r.probs.shape:
            _fail(adapter, f"record {r.name}: no gradient of the probabilities' shape")
    # the very tensors, captured independently, and autograd
    captured: Dict[str, torch.Tensor] = {}
    handles = []
    for p in points:
        def hook(mod, inp, out, name=p.name):
            captured[name] = out[1] if isinstance(out, tuple) else out
        handles.append(p.probs_module.register_forward_hook(hook))
    try:
        xin = adapter.normalise(adapter.check_input(x)).requires_grad_(True)
        with torch.enable_grad():
            logits = adapter._run(xin).float()
            sel = logits.gather(1, target[:, None].to(logits.device)).sum()
            grads = torch.autograd.grad(sel, [captured[p.name] for p in points], allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    B = x.shape[0]
    for r, p, g in zip(tr.attentions, points, grads):
        ref = adapter._layout(r, captured[p.name].detach().float(), B)
        if not torch.allclose(r.probs, ref, atol=atol):
            _fail(adapter, f"record {r.name} is not the tensor its hook point computes")
        g = torch.zeros_like(ref) if g is None else adapter._layout(r, g.float(), B)
        if not torch.allclose(r.grad, g, atol=atol, rtol=1e-4):
            _fail(adapter, f"record {r.name}: recorded gradient differs from autograd's "
                           f"(max |diff| {(r.grad - g).abs().max().item():.3g})")
    lib = adapter.library_attentions(x)
    compared = 0
    if lib is not None:
        recs = {r.name: r for r in tr.attentions}
        if not lib:
            _fail(adapter, "library_attentions returned nothing")
        for name, t in lib.items():
            if name not in recs:
                _fail(adapter, f"the library returns attention {name!r}, which the adapter does not record")
            if t.shape != recs[name].probs.shape or not torch.allclose(recs[name].probs, t, atol=atol):
                _fail(adapter, f"record {name} differs from the library's output_attentions")
            compared += 1
    return {"records": len(tr.attentions), "library_compared": compared}


# ------------------------------------------------------------------ token order
def entry_tokens(adapter: ModelAdapter, x: torch.Tensor) -> torch.Tensor:
    """The tokens entering the first block (its first input), from a forward pre-hook."""
    store = {}

    def hook(mod, args, kwargs):
        store["t"] = args[0] if args else kwargs.get("hidden_states", next(iter(kwargs.values())))

    handle = adapter.blocks()[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        adapter.predict(x)
    finally:
        handle.remove()
    return store["t"].detach().float()


def check_reshape_tokens(adapter: ModelAdapter, seed: int = 2, tol: float = 1e-6) -> tuple:
    """Marking the pixels of token (t, y, x) changes exactly that token of ``reshape_tokens`` at block entry
    (the library's own token order, not only the reshape); prefix tokens do not change."""
    L = adapter.layout
    (h, w), p, k = L.grid, adapter.patch_size, L.tubelet
    t, y, xx = L.frames // 2, (h - 1) // 3, w - 1 - (w - 1) // 3  # off the diagonal
    x0 = sample_input(adapter, 1, seed)
    x1 = x0.clone()
    g = torch.Generator().manual_seed(seed + 1)
    x1[:, t * k:(t + 1) * k, :, y * p:(y + 1) * p, xx * p:(xx + 1) * p] = torch.rand(1, k, 3, p, p, generator=g)
    acts = [entry_tokens(adapter, v) for v in (x0, x1)]
    grids = [adapter.reshape_tokens(a, 1) for a in acts]
    if grids[0].shape[:4] != (1, L.frames, h, w):
        _fail(adapter, f"reshape_tokens gives {tuple(grids[0].shape)} for the first block's tokens, not "
                       f"(1, {L.frames}, {h}, {w}, D)")
    diff = (grids[1] - grids[0]).abs().amax(-1)[0]
    changed = diff > tol * max(1.0, diff.max().item())
    expected = torch.zeros(L.frames, h, w, dtype=torch.bool)
    expected[t, y, xx] = True
    if not torch.equal(changed, expected):
        where = [tuple(int(v) for v in i) for i in changed.nonzero()[:6]]
        _fail(adapter, f"marking token (t={t}, y={y}, x={xx}) changed reshaped tokens at {where}")
    if acts[0].dim() == 3 and L.prefix and acts[0].shape[0] == 1:
        if not torch.allclose(acts[0][:, :L.prefix], acts[1][:, :L.prefix]):
            _fail(adapter, "marking a patch changed a prefix token at block entry")
    return (t, y, xx)


# ------------------------------------------------------------------ blocks, head, randomisation
def _contains(parent: nn.Module, module: nn.Module) -> bool:
    return any(m is module for m in parent.modules())


def check_blocks(adapter: ModelAdapter) -> int:
    """``blocks()``: one per attention layer, each holding its layer's attention; the head outside them."""
    blocks, heads = adapter.blocks(), adapter.head_modules()
    calls: List[int] = []
    handles = [b.register_forward_hook(lambda m, i, o, k=k: calls.append(k)) for k, b in enumerate(blocks)]
    try:
        adapter.predict(sample_input(adapter, 1))
    finally:
        for h in handles:
            h.remove()
    if calls != list(range(len(blocks))):
        _fail(adapter, f"blocks() are not the blocks in forward order: the forward pass calls them in the order "
                       f"{calls[:8]}")
    if len(blocks) != adapter.num_layers:
        _fail(adapter, f"blocks() gives {len(blocks)} modules for {adapter.num_layers} attention layers")
    for p in adapter.hook_points():
        if not _contains(blocks[p.layer], p.probs_module):
            _fail(adapter, f"attention {p.name} (layer {p.layer}) is not inside blocks()[{p.layer}]")
    if not heads:
        _fail(adapter, "head_modules() is empty")
    for hd in heads:
        if any(_contains(b, hd) for b in blocks):
            _fail(adapter, "a head module lies inside a block")
        if not any(True for _ in hd.parameters()):
            _fail(adapter, "a head module has no parameters")
    return len(blocks)


def _reset_weights(modules: List[nn.Module]) -> set:
    """ids of the weights a reset re-draws at random: weights (2-d or more) of modules with reset_parameters."""
    out = set()
    for t in modules:
        for m in t.modules():
            w = getattr(m, "weight", None)
            if hasattr(m, "reset_parameters") and isinstance(w, nn.Parameter) and w.dim() >= 2:
                out.add(id(w))
    return out


def check_randomised(adapter: ModelAdapter, seed: int = 3, depths: Optional[List[int]] = None) -> List[int]:
    """``randomised(k, seed)`` for every k from 0 (head only) to every block (module docstring)."""
    check_blocks(adapter)
    n = len(adapter.blocks())
    before = {k: v.detach().clone() for k, v in adapter.model.state_dict().items()}
    x = sample_input(adapter, 1, seed)
    ref = adapter.predict(x)
    depths = list(range(n + 1)) if depths is None else depths
    for k in depths:
        twin = adapter.randomised(k, seed)
        if len(twin.blocks()) != n:
            _fail(adapter, f"randomised({k}) has {len(twin.blocks())} blocks, the original {n}")
        targets = twin.head_modules() + twin.blocks()[n - min(k, n):]
        inside = {id(p) for t in targets for p in t.parameters()}
        must = _reset_weights(targets)
        changed, stale = [], []
        for name, prm in twin.model.named_parameters():
            moved = not torch.equal(prm.detach(), before[name])
            if moved and id(prm) not in inside:
                changed.append(name)
            if id(prm) in must and not moved:
                stale.append(name)
        if changed:
            _fail(adapter, f"randomised({k}) changed parameters outside the head and the top {k} blocks: "
                           f"{changed[:4]}")
        if stale:
            _fail(adapter, f"randomised({k}) left weights of the head / top {k} blocks unchanged: {stale[:4]}")
        if torch.equal(twin.predict(x), ref):
            _fail(adapter, f"randomised({k}) predicts exactly as the original")
        if k == depths[-1]:
            again = adapter.randomised(k, seed).model.state_dict()
            if any(not torch.equal(v, again[key]) for key, v in twin.model.state_dict().items()):
                _fail(adapter, f"randomised({k}, seed={seed}) is not reproducible")
    after = adapter.model.state_dict()
    if any(not torch.equal(v, after[key]) for key, v in before.items()):
        _fail(adapter, "randomised() changed the original model")
    if not torch.equal(adapter.predict(x), ref):
        _fail(adapter, "the original predicts differently after randomised()")
    return depths


# ------------------------------------------------------------------ methods
#: small budgets for the perturbation methods (only the keys a method takes are given)
BUDGET = {"n_samples": 16, "batch_size": 64, "budget": "coarsen"}


def conformance_sample(adapter: ModelAdapter, seed: int = 4):
    """A seeded sample with ground truth (a square mask, evidence in every other frame) for the controls."""
    from ..datasets.base import Sample

    x = sample_input(adapter, 1, seed)[0]
    T, _, H, W = x.shape
    mask = torch.zeros(T, H, W, dtype=torch.bool)
    mask[:, H // 4: H // 2, W // 4: W // 2] = True
    frames = torch.arange(T) % 2 == 0
    mask[~frames] = False
    return Sample(sample_id=f"conformance-{seed}", x=x, label=0, mask=mask, frames=frames)


def check_methods(adapter: ModelAdapter, names: Optional[List[str]] = None, seed: int = 4) -> Dict[str, str]:
    """Every registered method explains a sample (finite maps of the declared shapes, not all zero), or raises
    ``NotApplicable`` with a reason: ``{method: 'ok' | 'not applicable: <reason>'}``."""
    import warnings

    from .. import methods as M
    from ..errors import NotApplicable

    s = conformance_sample(adapter, seed)
    target = int(adapter.predict(s.x[None]).argmax())
    L = adapter.layout
    out = {}
    for name in names or M.available():
        accepted = M.METHODS.parameters(name) or []
        m = M.create(name, **{k: v for k, v in BUDGET.items() if k in accepted})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m.check(adapter)
                e = m.explain_sample(adapter, s, target)
        except NotApplicable as err:
            if not str(err).strip():
                _fail(adapter, f"method {name} raised NotApplicable without a reason")
            out[name] = f"not applicable: {err}"
            continue
        except Exception as err:
            raise ConformanceError(f"{adapter.name} (family {adapter.family}): method {name} failed: "
                                   f"{type(err).__name__}: {err}") from err
        if e.volume.shape != (adapter.num_frames, adapter.image_size, adapter.image_size):
            _fail(adapter, f"method {name}: volume of shape {tuple(e.volume.shape)}")
        if e.token_map.shape[0] != L.frames or tuple(e.token_map.shape[1:]) not in [tuple(g) for g in L.stages]:
            _fail(adapter, f"method {name}: token map of shape {tuple(e.token_map.shape)} fits no stage")
        if not all(torch.isfinite(t).all() for t in (e.volume, e.frame_scores, e.token_map)):
            _fail(adapter, f"method {name}: non-finite values")
        if not e.volume.abs().sum() > 0:
            _fail(adapter, f"method {name}: an all-zero map")
        out[name] = "ok"
    return out


#: every check by name, in the order :func:`conform` runs them
CHECKS: Dict[str, Callable] = {"readout": check_readout, "attention": check_attention,
                               "reshape_tokens": check_reshape_tokens, "blocks": check_blocks,
                               "randomised": check_randomised, "methods": check_methods}


def conform(adapter: ModelAdapter, checks=None) -> dict:
    """Run the checks (default: all) and return their results; the first failure raises."""
    return {name: CHECKS[name](adapter) for name in (checks or CHECKS)}
