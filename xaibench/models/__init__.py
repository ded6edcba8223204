"""Model adapters by name.

* ``hf_timesformer``, ``hf_videomae``, ``hf_vivit``, ``hf_vit``, ``hf_swin``,
  ``timm_vit``, ``timm_deit``, ``timm_swin``: real architectures at random
  initialisation (sizes as keyword arguments);
* ``timesformer_synth``, ``vit_synth``, ``swin_synth``, ... : the small models
  this project trains on its synthetic benchmarks and ships (``models/weights``).

``create(name, **kwargs)`` returns a :class:`~xaibench.models.base.ModelAdapter`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import UserError
from ..registry import Registry
from .base import AttentionRecord, HookPoint, ModelAdapter, TokenLayout, Trace  # noqa: F401
from .hf import (HFSwinAdapter, HFTimesformerAdapter, HFViTAdapter, build_hf_swin, build_hf_timesformer,
                 build_hf_vit)
from .hf_video import HFVideoMAEAdapter, HFVivitAdapter, build_hf_videomae, build_hf_vivit
from .timm_models import TimmSwinAdapter, TimmViTAdapter, build_timm_deit, build_timm_swin, build_timm_vit

MODELS = Registry("model")
WEIGHTS_DIR = Path(__file__).parent / "weights"

# builder name -> (build function, adapter class)
BUILDERS = {
    "hf_timesformer": (build_hf_timesformer, HFTimesformerAdapter),
    "hf_videomae": (build_hf_videomae, HFVideoMAEAdapter),
    "hf_vivit": (build_hf_vivit, HFVivitAdapter),
    "hf_vit": (build_hf_vit, HFViTAdapter),
    "hf_swin": (build_hf_swin, HFSwinAdapter),
    "timm_vit": (build_timm_vit, TimmViTAdapter),
    "timm_deit": (build_timm_deit, TimmViTAdapter),
    "timm_swin": (build_timm_swin, TimmSwinAdapter),
}


def build(builder: str, *, seed: int = 0, name: str | None = None, mean=None, std=None, **config) -> ModelAdapter:
    """Build a real architecture at random initialisation (seeded) and wrap it."""
    if builder not in BUILDERS:
        raise UserError(f"unknown model builder {builder!r}; valid: {', '.join(sorted(BUILDERS))}")
    fn, adapter = BUILDERS[builder]
    torch.manual_seed(seed)
    try:
        model = fn(**config)
    except TypeError as e:
        raise UserError(f"bad configuration for {builder}: {e}") from None
    kw = {"name": name or builder}
    if mean is not None:
        kw["mean"] = tuple(mean)
    if std is not None:
        kw["std"] = tuple(std)
    return adapter(model, **kw)


for _b in BUILDERS:
    MODELS.register(_b)(lambda _b=_b, **kw: build(_b, **kw))


# the project's own trained models (recipes in conf/model/<name>.yaml, trained by `xaibench-train`)
SHIPPED = ("timesformer_synth", "vit_synth", "swin_synth", "timm_vit_synth", "timm_swin_synth", "videomae_synth",
           "vivit_synth", "deit_synth")


def shipped_names():
    return sorted(set(SHIPPED) | {p.stem for p in WEIGHTS_DIR.glob("*.json")})


def load_shipped(name: str, **overrides) -> ModelAdapter:
    """Load one of the project's own trained models (no network needed).

    A shipped model is a trained checkpoint: its architecture is fixed, so any
    parameter override is refused with a message that says so.
    """
    if overrides:
        raise UserError(f"model {name!r} is a shipped trained model; its architecture and weights are fixed and it "
                        f"takes no parameters (got {', '.join(sorted(overrides))}). For a configurable random-init "
                        f"architecture use e.g. model=hf_vit_tiny; to train your own, `xaibench-train model={name}`")
    meta_path = WEIGHTS_DIR / f"{name}.json"
    weights = WEIGHTS_DIR / f"{name}.safetensors"
    if not meta_path.exists() or not weights.exists():
        raise UserError(
            f"no shipped model {name!r} (looked for {meta_path.name} and {weights.name} in {WEIGHTS_DIR}); "
            f"trained and present: {', '.join(p.stem for p in sorted(WEIGHTS_DIR.glob('*.json'))) or 'none'}. "
            f"Train it with `xaibench-train model={name}`."
        )
    return _from_files(weights, meta_path, name)


def _from_files(weights: Path, meta_path: Path, name: str) -> ModelAdapter:
    """An adapter from a safetensors file and the JSON sidecar xaibench-train writes (builder, config, labels)."""
    from safetensors.torch import load_file

    meta = json.loads(meta_path.read_text())
    adapter = build(meta["builder"], name=name, mean=meta.get("mean"), std=meta.get("std"), **meta["config"])
    missing, unexpected = adapter.model.load_state_dict(load_file(str(weights)), strict=False)
    if missing or unexpected:
        raise UserError(f"weights {weights} do not match the architecture of {meta_path.name}: "
                        f"missing={missing[:5]}, unexpected={unexpected[:5]}")
    adapter.model.eval()
    adapter.labels = meta.get("labels", adapter.labels)
    adapter.meta = meta
    return adapter


for _n in shipped_names():
    MODELS.register(_n)(lambda _n=_n, **kw: load_shipped(_n, **kw))


def load_trained(path: str = "") -> ModelAdapter:
    """A model trained with ``xaibench-train`` into an output folder: ``path`` is its ``.safetensors`` file (the
    JSON sidecar beside it names the architecture)."""
    p = Path(str(path)).expanduser()
    if not path or p.suffix != ".safetensors" or not p.is_file():
        raise UserError(f"model.path={path!r} must be the .safetensors file written by xaibench-train (e.g. "
                        f"outputs/train/vit_synth/vit_synth.safetensors)")
    meta_path = p.with_suffix(".json")
    if not meta_path.is_file():
        raise UserError(f"{meta_path} (the sidecar xaibench-train writes beside the weights) is missing")
    return _from_files(p, meta_path, p.stem)


MODELS.register("trained")(load_trained)


def create(name: str, **kwargs) -> ModelAdapter:
    return MODELS.create(name, **kwargs)


def available():
    return MODELS.available()


from . import pretrained  # noqa: E402  (pretrained_* models, hf_pretrained, timm_pretrained)

pretrained.register(MODELS)
