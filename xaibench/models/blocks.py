"""Typed description of a plain pre-norm ViT stack, for methods that re-run the layers with their own rules (LRP).

:func:`describe_blocks` inspects ``adapter.model``'s modules and returns a :class:`ViTStack` -- where the
tokens entering the first block come from, and per block the layer norms, the query / key / value
projections (timm: one fused ``qkv`` Linear, Hugging Face: three Linears), the number of heads, the
attention output projection and the MLP -- or ``None`` when the model is not such a stack
(:func:`unsupported_reason` says why).  Prefix and readout come from ``adapter.layout``.

The computation the description stands for (:func:`run`), per block, on tokens ``x`` (B, n, D)::

    h      = norm1(x)
    q,k,v  = qkv(h), split into ``heads`` heads of ``head_dim``
    A      = softmax(scale * q k^T)                    (B, heads, n, n)
    x      = x + proj(merge_heads(A v))
    x      = x + fc2(act(fc1(norm2(x))))
    logits = sum_r weight_r * head_r(norm(x)[:, token_r])

(``heads`` of the classifier: one reading token 0 for a CLS readout; one per prefix token with weight
``1/prefix`` for ``prefix_mean``, e.g. DeiT's CLS and distillation heads.)  :func:`run` takes an
:class:`Ops` object that performs each operation; LRP methods pass one whose operations carry their
relevance rules, so the description stays the single statement of the architecture.  Methods that use it
check at run time that :func:`run` reproduces the model's own logits, which catches a model whose modules
look like this stack but compute something else (e.g. post-norm blocks with the same module names).

Supported (recognised by the modules' attributes, never by the architecture's name):

* timm ``VisionTransformer`` / ``VisionTransformerDistilled`` (DeiT) with ``global_pool='token'``: blocks with
  ``norm1``, ``attn`` (``qkv``, ``proj``, no q/k norm, no gate), ``ls1``/``ls2`` identity, ``norm2``, ``mlp``
  (``fc1``, ``act``, ``fc2``); tokens entering block 0: output of ``norm_pre``;
* Hugging Face ViT (transformers >= 5): layers with ``layernorm_before``, ``attention`` (``q_proj``,
  ``k_proj``, ``v_proj``, ``o_proj``), ``layernorm_after``, ``mlp`` (``fc1``, ``activation_fn``, ``fc2``);
  tokens: output of ``<base>.embeddings``; final norm ``<base>.layernorm``; heads ``classifier`` (CLS) or
  ``cls_classifier`` + ``distillation_classifier`` (DeiT with teacher).

Not supported: Swin (windows, patch merging), divided space-time attention (TimeSformer), pooled
readouts, layer scale, q/k normalisation, gated MLPs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Attention:
    """Multi-head self-attention: ``qkv`` is ``(fused,)`` whose output is ``[q | k | v]``, or ``(q, k, v)``."""

    qkv: Tuple[nn.Linear, ...]
    heads: int
    head_dim: int
    scale: float
    proj: nn.Linear


@dataclass(frozen=True)
class Block:
    """One pre-norm block: ``x + proj(attention(norm1(x)))``, then ``x + fc2(act(fc1(norm2(x))))``."""

    norm1: nn.LayerNorm
    attn: Attention
    norm2: nn.LayerNorm
    fc1: nn.Linear
    act: nn.Module  # element-wise, parameter-free (GELU)
    fc2: nn.Linear


@dataclass(frozen=True)
class Head:
    """One classifier head: ``weight * linear(tokens[:, token])`` is added to the logits."""

    linear: nn.Linear
    token: int
    weight: float


@dataclass(frozen=True)
class ViTStack:
    """The whole stack: ``run`` computes the logits from the tokens ``embed`` outputs."""

    embed: nn.Module  # its output is the (B, n, D) token sequence entering the first block
    embed_name: str  # its name in model.named_modules() (for ModelAdapter.trace(capture=...))
    blocks: Tuple[Block, ...]
    norm: nn.LayerNorm
    heads: Tuple[Head, ...]
    prefix: int
    readout: str


# ------------------------------------------------------------------ the computation, with pluggable operations
class Ops:
    """The operations of :func:`run`, plain torch; LRP methods subclass it to attach relevance rules.

    Weights are cast to the dtype of the activations, so a float64 re-run of a float32 model works.
    """

    def linear(self, x, mod: nn.Linear, scale: float = 1.0):
        w, b = linear_params(mod, x, scale)
        return F.linear(x, w, b)

    def layer_norm(self, x, mod: nn.LayerNorm):
        return F.layer_norm(x, mod.normalized_shape, _cast(mod.weight, x), _cast(mod.bias, x), mod.eps)

    def act(self, x, mod: nn.Module):
        return mod(x)

    def add(self, a, b):
        return a + b

    def matmul(self, a, b):
        return torch.matmul(a, b)

    def softmax(self, s, scale: float):
        """``softmax(scale * s)`` over the last axis (the attention probabilities)."""
        return torch.softmax(s * scale, dim=-1)


def _cast(t, like):
    return None if t is None else t.to(device=like.device, dtype=like.dtype)


def linear_params(mod: nn.Linear, like: torch.Tensor, scale: float = 1.0):
    """``(scale * W, scale * b)`` of a Linear in the dtype / device of ``like``."""
    w, b = _cast(mod.weight, like), _cast(mod.bias, like)
    if scale != 1.0:
        w, b = w * scale, (None if b is None else b * scale)
    return w, b


def run(stack: ViTStack, tokens: torch.Tensor, ops: Optional[Ops] = None) -> torch.Tensor:
    """Logits (B, classes) of the described stack on the tokens entering its first block (module docstring)."""
    ops = ops or Ops()
    x = tokens
    B, n, _ = x.shape
    for blk in stack.blocks:
        at = blk.attn
        h = ops.layer_norm(x, blk.norm1)
        if len(at.qkv) == 1:
            q, k, v = ops.linear(h, at.qkv[0]).chunk(3, dim=-1)
        else:
            q, k, v = (ops.linear(h, m) for m in at.qkv)
        q, k, v = (t.reshape(B, n, at.heads, at.head_dim).transpose(1, 2) for t in (q, k, v))
        a = ops.softmax(ops.matmul(q, k.transpose(-1, -2)), at.scale)
        o = ops.matmul(a, v).transpose(1, 2).reshape(B, n, at.heads * at.head_dim)
        x = ops.add(x, ops.linear(o, at.proj))
        h = ops.layer_norm(x, blk.norm2)
        x = ops.add(x, ops.linear(ops.act(ops.linear(h, blk.fc1), blk.act), blk.fc2))
    x = ops.layer_norm(x, stack.norm)
    logits = None
    for hd in stack.heads:
        z = ops.linear(x[:, hd.token], hd.linear, hd.weight)
        logits = z if logits is None else ops.add(logits, z)
    return logits


# ------------------------------------------------------------------ recognising the stack
def describe_blocks(adapter) -> Optional[ViTStack]:
    """The :class:`ViTStack` of ``adapter.model``, or ``None`` when it is not a supported plain ViT stack."""
    return _inspect(adapter)[0]


def unsupported_reason(adapter) -> Optional[str]:
    """Why :func:`describe_blocks` returns ``None`` for this adapter (``None`` when it is supported)."""
    return _inspect(adapter)[1]


def _no_op(m) -> bool:
    """Absent, identity or dropout (a no-op in eval mode)."""
    return m is None or isinstance(m, (nn.Identity, nn.Dropout))


def _inspect(adapter):
    model, layout = adapter.model, adapter.layout
    name = getattr(adapter, "name", type(model).__name__)
    if layout.readout not in ("cls", "prefix_mean"):
        return None, f"model {name!r} has readout {layout.readout!r}; the LRP stack needs a CLS or prefix-token readout"
    if layout.frames != 1 or len(layout.stages) != 1:
        return None, (f"model {name!r} has {layout.frames} token frames and {len(layout.stages)} stages; the LRP "
                      f"stack covers single-frame, single-stage ViTs only")
    names = {m: n for n, m in model.named_modules()}
    if hasattr(model, "blocks") and hasattr(model, "norm_pre"):
        found = _timm(model, layout)
    elif getattr(model, "base_model_prefix", None) and hasattr(getattr(model, model.base_model_prefix, None),
                                                                "embeddings"):
        found = _hf(model, layout)
    else:
        found = "no timm (blocks, norm_pre) or Hugging Face (<base>.embeddings) ViT structure"
    if isinstance(found, str):
        return None, f"model {name!r} is not a plain pre-norm ViT stack: {found}"
    embed, blocks, norm, heads = found
    return ViTStack(embed=embed, embed_name=names[embed], blocks=tuple(blocks), norm=norm, heads=tuple(heads),
                    prefix=layout.prefix, readout=layout.readout), None


def _heads(linears, layout):
    """Classifier heads for the layout's readout, or a reason string."""
    linears = [m for m in linears if m is not None]
    if not all(isinstance(m, nn.Linear) for m in linears):
        return "a classifier head is not a Linear layer"
    if layout.readout == "cls" and len(linears) == 1:
        return [Head(linears[0], 0, 1.0)]
    if layout.readout == "prefix_mean" and len(linears) == layout.prefix:
        return [Head(m, i, 1.0 / layout.prefix) for i, m in enumerate(linears)]
    return (f"{len(linears)} classifier head(s) do not match readout {layout.readout!r} with {layout.prefix} "
            f"prefix tokens")


def _block(norm1, qkv, heads, head_dim, scale, proj, norm2, fc1, act, fc2, extra_ok=True):
    if not extra_ok:
        return "a block has layer scale, q/k normalisation, a gate or an MLP norm"
    if not (isinstance(norm1, nn.LayerNorm) and isinstance(norm2, nn.LayerNorm)):
        return "a block's norms are not LayerNorm"
    if not all(isinstance(m, nn.Linear) for m in (*qkv, proj, fc1, fc2)):
        return "a block's projections are not Linear layers"
    if any(True for _ in act.parameters()) or fc1.out_features != fc2.in_features:
        return "a block's MLP is not fc1 -> element-wise activation -> fc2"
    if sum(m.out_features for m in qkv) != 3 * heads * head_dim:
        return "a block's q/k/v sizes do not match heads x head_dim"
    return Block(norm1, Attention(tuple(qkv), int(heads), int(head_dim), float(scale), proj), norm2, fc1, act, fc2)


def _timm(model, layout):
    if getattr(model, "global_pool", None) != "token" or getattr(model, "attn_pool", None) is not None \
            or not _no_op(getattr(model, "fc_norm", None)):
        return "timm model pools its tokens (global_pool != 'token', attention pooling or fc_norm)"
    blocks = []
    for b in model.blocks:
        at, mlp = getattr(b, "attn", None), getattr(b, "mlp", None)
        if at is None or mlp is None or not hasattr(at, "qkv") or not hasattr(mlp, "fc1"):
            return f"block {type(b).__name__} has no attn.qkv / mlp.fc1"
        extra_ok = all(_no_op(getattr(b, a, None)) for a in ("ls1", "ls2")) and \
            all(_no_op(getattr(at, a, None)) for a in ("q_norm", "k_norm", "norm", "gate")) and \
            _no_op(getattr(mlp, "norm", None))
        blk = _block(b.norm1, (at.qkv,), at.num_heads, at.head_dim, at.scale, at.proj, b.norm2, mlp.fc1, mlp.act,
                     mlp.fc2, extra_ok)
        if isinstance(blk, str):
            return blk
        blocks.append(blk)
    heads = _heads([model.head, getattr(model, "head_dist", None)], layout)
    if isinstance(heads, str):
        return heads
    if not isinstance(model.norm, nn.LayerNorm):
        return "the final norm is not a LayerNorm"
    return model.norm_pre, blocks, model.norm, heads


def _hf(model, layout):
    base = getattr(model, model.base_model_prefix)
    if getattr(base, "pooler", None) is not None:
        return "the base model has a pooler"
    layers = [m for m in base.modules() if hasattr(m, "layernorm_before") and hasattr(m, "attention")]
    if not layers:
        return "no layers with layernorm_before / attention"
    blocks = []
    for b in layers:
        at, mlp = b.attention, getattr(b, "mlp", None)
        if not all(hasattr(at, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj")) or mlp is None \
                or not hasattr(mlp, "fc1"):
            return f"layer {type(b).__name__} has no attention.q_proj/k_proj/v_proj/o_proj and mlp.fc1 " \
                   f"(transformers >= 5 layout)"
        blk = _block(b.layernorm_before, (at.q_proj, at.k_proj, at.v_proj), at.num_attention_heads, at.head_dim,
                     at.scaling, at.o_proj, b.layernorm_after, mlp.fc1, mlp.activation_fn, mlp.fc2)
        if isinstance(blk, str):
            return blk
        blocks.append(blk)
    if hasattr(model, "classifier"):
        heads = _heads([model.classifier], layout)
    else:
        heads = _heads([getattr(model, "cls_classifier", None), getattr(model, "distillation_classifier", None)],
                       layout)
    if isinstance(heads, str):
        return heads
    norm = getattr(base, "layernorm", None)
    if not isinstance(norm, nn.LayerNorm):
        return "the base model has no final LayerNorm 'layernorm'"
    return base.embeddings, blocks, norm, heads


# ------------------------------------------------------------------ helpers for the methods
def require_stack(adapter) -> ViTStack:
    """:func:`describe_blocks`, raising :class:`~xaibench.errors.NotApplicable` with the reason when unsupported."""
    from ..errors import NotApplicable

    describe = getattr(adapter, "transformer_blocks", None)
    stack = describe() if describe is not None else None
    if stack is None:
        raise NotApplicable(unsupported_reason(adapter) if describe is not None else
                            "the adapter does not describe its Transformer blocks")
    return stack


def entry_tokens(adapter, stack: ViTStack, trace) -> torch.Tensor:
    """The (B, n, D) tokens entering block 0, captured by a trace (``capture=[stack.embed_name]``); refused
    (NotApplicable) when ``n`` is not the ``prefix + h*w`` tokens the adapter's layout declares."""
    from ..errors import NotApplicable

    tokens = trace.activations[stack.embed_name]
    if tokens.dim() != 3 or tokens.shape[1] != adapter.layout.n_tokens():
        raise NotApplicable(f"model {adapter.name!r} feeds {tuple(tokens.shape)} tokens to its first block, but its "
                            f"layout declares {adapter.layout.n_tokens()} ({adapter.layout.prefix} prefix + patches)")
    return tokens


# |re-run - model| allowed, relative to 1 + max |logit|: float64 re-run against the model's own precision
RERUN_TOL = {"fp32": 1e-3, "bf16": 5e-2, "fp16": 5e-2}


def check_rerun(rerun: torch.Tensor, logits: torch.Tensor, precision: str = "fp32", name: str = "model") -> None:
    """Refuse (NotApplicable) when :func:`run` does not reproduce the model's own logits.

    This is what makes the rules run on the real computation: a model whose modules look like the
    described stack but compute something else (post-norm blocks, extra scaling) is caught here.
    """
    from ..errors import NotApplicable

    err = (rerun.detach().double() - logits.detach().double().to(rerun.device)).abs().max().item()
    scale = 1.0 + logits.detach().abs().max().item()
    if not err <= RERUN_TOL.get(precision, 5e-2) * scale:
        raise NotApplicable(f"the layer-by-layer re-run of {name!r} does not reproduce its logits (max difference "
                            f"{err:.3g}); the model is not the plain pre-norm ViT stack xaibench.models.blocks "
                            f"describes")
