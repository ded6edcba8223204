"""Transformer Attribution (Chefer, Gur & Wolf, CVPR 2021, "Transformer Interpretability Beyond Attention
Visualization", arXiv 2012.09838): LRP relevance of every block's attention map, weighted by the attention
gradient and aggregated from the identity.  Written from the paper (docs/lrp.md lists the rules and what
differs from the authors' code).

Per block ``b`` with attention probabilities ``A_b`` (heads, n, n), their gradient ``grad_A_b`` with
respect to the target *logit* and their LRP relevance ``R_A_b``::

    Abar_b = mean_h( (grad_A_b * R_A_b).clamp(min=0) )
    R = I;   R <- R + Abar_b R     for b = first used block, ..., last block

Explanation: the readout row of ``R`` on the patch tokens (``R[CLS, patches]``; DeiT: the mean of the CLS
and distillation rows), as :mod:`xaibench.methods.chefer` (the propagation is shared with it,
:func:`xaibench.methods._relevance.propagate`).  ``layers``: use the last ``layers`` blocks (default all,
as in the paper).

LRP (relevance ``R``, output relevance ``R^(0) = 1_t``, the one-hot of the target class), per operation of
the block computation described in :mod:`xaibench.models.blocks`:

* Linear layers (q/k/v, attention output, fc1, fc2, classifier heads): the paper's rule for layers with
  weights, LRP-alpha1beta0 on the signed contributions ``z_ji = x_j W_ij`` (paper Sec. 3.1: only the
  pairs with ``x_j W_ij > 0`` carry relevance, since GELU lets activations be negative; the bias carries
  none)::

      R_j = sum_i (x_j W_ij)^+ / (sum_j' (x_j' W_ij')^+ + eps) R_i

* Layer norm, GELU, softmax: relevance passes unchanged, element by element (``R_in = R_out``; the
  standard LRP treatment of a neuron's activation function; the paper does not spell these out, and to
  our reading its code passes relevance through them unchanged too).  ``R_A`` is therefore the relevance
  of the softmax output and of its input alike.
* The two operations that mix two activation tensors ``u, v`` (paper Sec. 3.2): residual additions
  ``u + v`` and the attention matmuls ``q k^T`` and ``A V``: the paper's generic Deep Taylor rule
  ``R_j = sum_i x_j (dL_i/dx_j) R_i / L_i`` (LRP-0, denominator stabilised as ``z + eps sign(z)``),
  applied to each operand, gives ``R^u, R^v``, which are then normalised as in the paper (Sec. 3.2), per
  sample over the whole tensors::

      Rbar^u = R^u |sum R^u| / (|sum R^u| + |sum R^v|) * sum R / sum R^u      (and likewise for v)

  so that ``sum Rbar^u + sum Rbar^v = sum R`` (for a matmul both raw sums equal ``sum R`` and this halves
  each operand's relevance).  Where a token feeds several operations (the residual stream, q/k/v from one
  norm) the relevances add.  DeiT's two heads are added the same way.
* ``eps = 1e-9``; everything runs in float64.

Properties (tested in tests/test_lrp.py against a dense re-implementation): the relevance is conserved,
``sum R = 1`` at every block boundary up to ``eps``; the relevance entering the classifier is
non-negative; ``Abar_b >= 0``.

The rules run on a float64 re-run of the blocks (:func:`xaibench.models.blocks.run`) from the tokens the
model itself fed to its first block; the re-run must reproduce the model's logits
(:func:`xaibench.models.blocks.check_rerun`).  ``A`` and ``grad_A`` come from the model's own forward
and backward pass (:meth:`ModelAdapter.trace`).  Models that are not a plain ViT stack (Swin,
TimeSformer, pooled readouts) raise :class:`~xaibench.errors.NotApplicable`.

Cost: one forward and one backward pass of the model (counted by the adapter), plus a float64 re-run of
the blocks and its relevance pass (not model passes; the alpha1beta0 rule costs four matrix products per
linear layer: about 5x Chefer's time on a CPU for a DeiT-S).
"""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch.autograd import Function

from ..errors import NotApplicable
from ..models.blocks import Ops, check_rerun, entry_tokens, linear_params, require_stack, run
from ._relevance import PropagationMethod, head_mean, last_layers, propagate
from .base import METHODS, Method, from_token_map

EPS = 1e-9


def _stab(z: torch.Tensor) -> torch.Tensor:
    """``z + eps sign(z)`` (sign(0) = 1): the LRP-epsilon stabiliser."""
    return z + torch.where(z >= 0, EPS, -EPS)


def _sums(t: torch.Tensor) -> torch.Tensor:
    """Per-sample sums, shaped to broadcast against ``t``."""
    return t.reshape(t.shape[0], -1).sum(1).view(-1, *([1] * (t.dim() - 1)))


def _ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(b != 0, a / torch.where(b != 0, b, torch.ones_like(b)), torch.zeros_like(a))


def normalise_pair(ru: torch.Tensor, rv: torch.Tensor, r: torch.Tensor):
    """The paper's normalisation (Sec. 3.2), per sample: rescale ``(R^u, R^v)`` so that they share ``sum R``
    in the ratio ``|sum R^u| : |sum R^v|``."""
    su, sv, s = _sums(ru), _sums(rv), _sums(r)
    total = su.abs() + sv.abs()
    return ru * _ratio(su.abs(), total) * _ratio(s, su), rv * _ratio(sv.abs(), total) * _ratio(s, sv)


# Each rule is an autograd Function whose forward is the plain operation and whose backward maps the
# relevance of the output to the relevance of the inputs ("explicit" LRP: x.grad is x's relevance).
class _Linear(Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return F.linear(x, w, b)

    @staticmethod
    def backward(ctx, r):
        x, w = ctx.saved_tensors
        xp, xn, wp, wn = x.clamp(min=0), x.clamp(max=0), w.clamp(min=0), w.clamp(max=0)
        s = r / (F.linear(xp, wp) + F.linear(xn, wn) + EPS)  # denominators sum_j (x_j W_ij)^+ >= 0
        return xp * (s @ wp) + xn * (s @ wn), None, None


class _Add(Function):
    @staticmethod
    def forward(ctx, u, v):
        ctx.save_for_backward(u, v)
        return u + v

    @staticmethod
    def backward(ctx, r):
        u, v = ctx.saved_tensors
        s = r / _stab(u + v)
        return normalise_pair(u * s, v * s, r)


class _MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, r):
        a, b = ctx.saved_tensors
        s = r / _stab(a @ b)
        return normalise_pair(a * (s @ b.transpose(-1, -2)), b * (a.transpose(-1, -2) @ s), r)


class _Identity(Function):
    @staticmethod
    def forward(ctx, fn, x):
        return fn(x)

    @staticmethod
    def backward(ctx, r):
        return None, r


class CheferRules(Ops):
    """:class:`~xaibench.models.blocks.Ops` carrying the paper's rules; keeps each block's attention tensor
    (its ``.grad`` after the relevance pass is ``R_A``) and the residual-stream tensors (for the tests)."""

    def __init__(self):
        self.attn: List[torch.Tensor] = []
        self.stream: List[torch.Tensor] = []

    def linear(self, x, mod, scale=1.0):
        return _Linear.apply(x, *linear_params(mod, x, scale))

    def layer_norm(self, x, mod):
        return _Identity.apply(lambda t: Ops.layer_norm(self, t, mod), x)

    def act(self, x, mod):
        return _Identity.apply(mod, x)

    def add(self, a, b):
        out = _Add.apply(a, b)
        out.retain_grad()
        self.stream.append(out)
        return out

    def matmul(self, a, b):
        return _MatMul.apply(a, b)

    def softmax(self, s, scale):
        a = _Identity.apply(lambda t: torch.softmax(t * scale, dim=-1), s)
        a.retain_grad()
        self.attn.append(a)
        return a


def relevance_pass(stack, tokens: torch.Tensor, target: torch.Tensor):
    """Run the stack on ``tokens`` (float64) with the paper's rules and propagate ``R^(0) = 1_target``.

    Returns ``(logits, rules, x)``: ``rules.attn[b].grad`` is ``R_A`` of block ``b`` (B, heads, n, n),
    ``rules.stream`` the residual-stream tensors (their ``.grad`` their relevance) and ``x.grad`` the
    relevance of the input tokens.
    """
    x = tokens.detach().double().requires_grad_(True)
    rules = CheferRules()
    with torch.enable_grad():
        logits = run(stack, x, rules)
        r0 = F.one_hot(target.to(logits.device).long(), logits.shape[1]).to(logits.dtype)
        logits.backward(r0)
    return logits.detach(), rules, x


def attention_relevance(adapter, trace, layers: Optional[int] = None):
    """``(records, R_A)``: the attention records of the last ``layers`` blocks (all if ``None``) of a trace made
    with attentions, gradients and the capture of the tokens entering block 0, and the LRP relevance
    ``R_A`` (float64, (B, heads, n, n)) of each; for this module and :mod:`xaibench.methods.stdnorm`
    (``base=transformer_attribution``)."""
    stack = require_stack(adapter)
    n = len(stack.blocks)
    recs = last_layers(trace.attentions, layers, adapter.num_layers)
    if len(recs) != (layers or n) or any(r.kind != "global" or r.grad is None for r in recs):
        raise NotApplicable(f"model {adapter.name!r}: the trace's attention records (with gradients) do not match "
                            f"its {n} described blocks")
    logits, rules, _ = relevance_pass(stack, entry_tokens(adapter, stack, trace), trace.target)
    check_rerun(logits, trace.logits, adapter.precision, adapter.name)
    return recs, [a.grad.to(recs[0].probs.device) for a in rules.attn[n - len(recs):]]


def capture_request(adapter, req: dict) -> dict:
    """``req`` plus the capture of the tokens entering block 0."""
    return dict(req, capture=tuple(req.get("capture", ())) + (require_stack(adapter).embed_name,))


def ta_block(rec, r_attn: torch.Tensor) -> torch.Tensor:
    """``Abar = mean_h((grad_A * R_A).clamp(min=0))`` (B, n, n), float64."""
    return head_mean((rec.grad.double() * r_attn.double()).clamp(min=0))


@METHODS.register("transformer_attribution")
class TransformerAttribution(PropagationMethod, Method):
    name = "transformer_attribution"
    grads = True

    def check(self, adapter):
        require_stack(adapter)

    def trace_request(self, adapter):
        return capture_request(adapter, super().trace_request(adapter))

    def explain_trace(self, adapter, trace):
        recs, rel = attention_relevance(adapter, trace, self._last_k(adapter))
        maps = propagate(adapter.layout, recs, [ta_block(r, ra) for r, ra in zip(recs, rel)], residual=True,
                         pool="sum", cls_self=0.0, cls_rows="sum")
        return [from_token_map(m, adapter.image_size, adapter.layout.tubelet, mode=self.upsample) for m in maps]
