"""AttnLRP (Achtibat et al., ICML 2024, "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
Transformers", arXiv 2402.05602), with the rules of the ``lxt`` package (PyPI ``lxt`` 2.1, the authors'
library; its "explicit" functions, whose backward pass returns relevance instead of gradients).

The rules, per operation of the block computation described in :mod:`xaibench.models.blocks`, each
``lxt.explicit`` function named:

* linear layers (q/k/v, attention output, fc1, fc2, classifier heads): epsilon-LRP (paper Eq. 8),
  ``R_j = sum_i x_j W_ij / (z_i + eps) R_i`` with ``z_i = sum_j x_j W_ij + b_i`` (``linear_epsilon``,
  ``eps = 1e-6``);
* softmax: the Deep Taylor decomposition at the input with the bias kept (Proposition 3.1),
  ``R_in = s * (R_out - A * sum_k R_out[..., k])`` for scores ``s`` (``softmax``; the ``1/sqrt(d)``
  scaling is passed as its temperature, so the scores are the scaled ones);
* the attention matmuls ``q k^T`` and ``A V``: epsilon rule followed by the uniform rule, half of the
  relevance to each operand (Proposition 3.3, ``matmul``);
* layer norm: identity rule on the division by the standard deviation, epsilon rule on the centring
  (Proposition 3.4, ``layer_norm``);
* GELU: identity rule, ``R_in = R_out`` (Eq. 9, ``lxt.explicit.rules.identity``);
* residual additions and DeiT's two heads: epsilon rule on the sum (``add2``).

Initial relevance: the target logit, ``R^(L) = y_t 1_t``.  Explanation: the relevance of the tokens
entering the first block (patch embedding plus position embedding), summed over the hidden dimension, on
the patch tokens.  The rules run on a float64 re-run of the blocks (:func:`xaibench.models.blocks.run`)
from the tokens the model itself fed to block 0, which must reproduce the model's logits.

Supported models: whatever :func:`xaibench.models.blocks.describe_blocks` describes -- timm ViT and DeiT
(distillation token), Hugging Face ViT.  lxt 2.1's own model patches do not cover these: ``lxt.efficient``
patches Hugging Face LLaMA / Qwen / Gemma 3 / BERT / GPT-2 and torchvision's ViT only, and neither
``lxt.efficient`` nor ``lxt.explicit.core`` can be imported with transformers >= 5 (they import
``transformers.modeling_attn_mask_utils`` and ``transformers.utils.fx``, removed there); the rule
functions used here import fine.  Other models raise :class:`~xaibench.errors.NotApplicable`, as does a
missing ``lxt``.  Deviation: the paper's gamma-rule denoising of ViT linear layers is not applied
(docs/lrp.md).

Cost: one forward pass of the model (counted by the adapter) plus a float64 re-run of the blocks and its
relevance pass (not model passes; about 2.5x Chefer's time on a CPU for a DeiT-S).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import NotApplicable
from ..models.blocks import Ops, check_rerun, entry_tokens, linear_params, require_stack, run
from .base import METHODS, Method, UpsampleConfig, from_token_map


def _lxt():
    try:
        import lxt.explicit.functional as lf
        from lxt.explicit.rules import identity
    except ImportError as e:
        raise NotApplicable(f"attnlrp needs the lxt package: pip install 'xaibench[lrp]' ({e})") from None
    return lf, identity


class LxtRules(Ops):
    """:class:`~xaibench.models.blocks.Ops` performing each operation with its lxt AttnLRP rule."""

    def __init__(self):
        self.lf, self.identity = _lxt()

    def linear(self, x, mod, scale=1.0):
        return self.lf.linear_epsilon(x, *linear_params(mod, x, scale))

    def layer_norm(self, x, mod):
        w, b = linear_params(mod, x) if mod.weight is not None else (None, None)
        return self.lf.layer_norm(x, w, b, mod.eps)

    def act(self, x, mod):
        return self.identity(mod, x)

    def add(self, a, b):
        return self.lf.add2(a, b)

    def matmul(self, a, b):
        return self.lf.matmul(a, b)

    def softmax(self, s, scale):
        return self.lf.softmax(s, -1, temperature=1.0 / scale)


def token_relevance(stack, tokens: torch.Tensor, target: torch.Tensor):
    """``(logits, R)``: the float64 re-run's logits and the AttnLRP relevance (B, n, D) of ``tokens``."""
    x = tokens.detach().double().requires_grad_(True)
    rules = LxtRules()
    with torch.enable_grad():
        logits = run(stack, x, rules)
        r0 = F.one_hot(target.to(logits.device).long(), logits.shape[1]).to(logits.dtype) * logits.detach()
        logits.backward(r0)
    return logits.detach(), x.grad


@METHODS.register("attnlrp")
class AttnLRP(Method):
    name = "attnlrp"
    Config = UpsampleConfig

    def check(self, adapter):
        require_stack(adapter)
        _lxt()

    def trace_request(self, adapter):
        return {"capture": (require_stack(adapter).embed_name,)}

    def explain_trace(self, adapter, trace):
        stack = require_stack(adapter)
        logits, rel = token_relevance(stack, entry_tokens(adapter, stack, trace), trace.target)
        check_rerun(logits, trace.logits, adapter.precision, adapter.name)
        h, w = adapter.layout.grid
        maps = rel.sum(-1)[:, stack.prefix:].reshape(-1, 1, h, w)
        return [from_token_map(m, adapter.image_size, adapter.layout.tubelet, mode=self.upsample) for m in maps]
