"""Model families as plugins: one module per family, registered by one decorator.

A *family* is one architecture as one library implements it (Hugging Face ViT, timm Swin, ...).  Its module
(``xaibench/models/<family>.py``) holds everything about it:

* the **typed config** of the random-init architecture (a :class:`ArchConfig` dataclass: sizes with their
  ranges; Hydra's schema ``schema/model/<family>``);
* the **adapter** (a :class:`~xaibench.models.base.ModelAdapter` subclass): layout, hook points, blocks,
  head, readout;
* ``build(cfg) -> nn.Module``: the library model at random initialisation (global RNG; the registry entry
  seeds it);
* the family's default **card** (normalisation, interpolation, readout) and, for Hugging Face / timm
  families, what the pretrained loader needs to recognise a checkpoint (``hf_model_type`` and the
  ``transformers`` class name, or the timm model classes);
* its **declared models**: pretrained cards (:func:`xaibench.models.pretrained.declare_hf` /
  ``declare_timm``) and the project's shipped models (:func:`declare_shipped`);
* ``tiny``: the values of a small configuration the conformance suite builds
  (:mod:`xaibench.models.conformance`).

::

    @register_family("hf_vit", config=HFViTConfig, library="transformers", hf_model_type="vit",
                     hf_class="ViTForImageClassification", tiny=dict(image_size=32, hidden_size=16, ...))
    class HFViTAdapter(HFAdapter):
        card = ModelCard(mean=(0.5,) * 3, std=(0.5,) * 3)
        build = staticmethod(build_hf_vit)
        ...

Registering puts the family in :data:`FAMILIES` and its random-init entry in ``MODELS`` under the family
name (``models.create("hf_vit", hidden_size=32)``); the conformance suite judges every entry of
:data:`FAMILIES`, including one defined in a test module.

The project's own trained models (``xaibench/models/weights/<name>.safetensors`` and the JSON sidecar
``xaibench-train`` writes: family, architecture config, normalisation, labels) are declared by a card each
(:func:`declare_shipped`) and load bit-identically; a model trained into an output folder loads through the
``trained`` entry (``model.path``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..config import ComponentConfig, param, schema
from ..errors import UserError
from .base import MODELS, ModelAdapter
from .card import ModelCard

WEIGHTS_DIR = Path(__file__).parent / "weights"
#: every registered family by name
FAMILIES: Dict[str, "Family"] = {}
#: shipped model name -> its declared card
SHIPPED: Dict[str, ModelCard] = {}


def _norm_check(v):
    if v is not None and (len(v) != 3 or any(not (s > 0) for s in v if s is not None)):
        return "give three positive numbers (one per RGB channel), or null for the family's default"
    return None


def _mean_check(v):
    if v is not None and len(v) != 3:
        return "give three numbers (one per RGB channel), or null for the family's default"
    return None


@dataclass
class ModelConfig(ComponentConfig):
    """A model entry without parameters."""


@dataclass
class ArchConfig(ModelConfig):
    """Parameters every random-init architecture takes: the seed of its initialisation, its classes and the
    normalisation of its input (null: the family's card)."""

    seed: int = param(0, range=(0, 2 ** 32 - 1), help="seed of the random initialisation")
    num_labels: int = param(4, range=(1, 100_000), help="classes of the classifier head")
    mean: Optional[List[float]] = param(None, check=_mean_check, help="per-channel mean of pixels in [0, 1] "
                                                                     "(null: the family's)")
    std: Optional[List[float]] = param(None, check=_norm_check, help="per-channel std of pixels in [0, 1] "
                                                                    "(null: the family's)")

    def validate(self):
        for key, rule in (("mean", _mean_check), ("std", _norm_check)):
            msg = rule(getattr(self, key))
            if msg:
                raise UserError(f"model.{key}={list(getattr(self, key))} is not allowed: {msg}")


def divides(cfg, part: str, whole: str):
    """Cross-field rule: ``cfg.<part>`` divides ``cfg.<whole>`` (a UserError naming both)."""
    a, b = getattr(cfg, part), getattr(cfg, whole)
    if b % a:
        raise UserError(f"model.{part}={a} must divide model.{whole}={b}")


@dataclass
class ViTArchConfig(ArchConfig):
    """A plain (single-stage) vision Transformer's sizes."""

    image_size: int = param(64, range=(8, 4096), help="input height = width in pixels")
    patch_size: int = param(8, range=(1, 512), help="patch height = width in pixels (divides image_size)")
    hidden_size: int = param(96, range=(1, 16384), help="token width")
    num_hidden_layers: int = param(4, range=(1, 256), help="transformer blocks")
    num_attention_heads: int = param(4, range=(1, 512), help="attention heads (divides hidden_size)")

    def validate(self):
        super().validate()
        divides(self, "patch_size", "image_size")
        divides(self, "num_attention_heads", "hidden_size")


@dataclass
class VideoArchConfig(ViTArchConfig):
    num_frames: int = param(8, range=(1, 1024), help="input frames")


@dataclass
class SwinArchConfig(ArchConfig):
    """A Swin Transformer's sizes (stage s has width embed_dim * 2^s)."""

    image_size: int = param(64, range=(8, 4096), help="input height = width in pixels")
    patch_size: int = param(4, range=(1, 512), help="patch height = width in pixels (divides image_size)")
    embed_dim: int = param(48, range=(1, 16384), help="token width of the first stage")
    depths: List[int] = param(default_factory=lambda: [2, 2], range=(1, 64), help="blocks per stage")
    num_heads: List[int] = param(default_factory=lambda: [3, 6], range=(1, 512), help="attention heads per stage")
    window_size: int = param(4, range=(1, 512), help="attention window (tokens per side)")

    def validate(self):
        super().validate()
        divides(self, "patch_size", "image_size")
        if len(self.depths) != len(self.num_heads):
            raise UserError(f"model.depths={list(self.depths)} and model.num_heads={list(self.num_heads)} must "
                            f"have one entry per stage")
        for s, h in enumerate(self.num_heads):
            if (self.embed_dim * 2 ** s) % h:
                raise UserError(f"model.num_heads[{s}]={h} must divide the width of stage {s}, "
                                f"embed_dim * 2^{s} = {self.embed_dim * 2 ** s}")


@dataclass
class Family:
    """One registered family (see the module docstring)."""

    name: str
    adapter: type
    config: type
    library: str = "torch"
    tiny: Dict[str, Any] = field(default_factory=dict)
    hf_model_type: Optional[str] = None
    hf_class: Optional[str] = None
    timm_classes: Tuple[str, ...] = ()
    #: Hugging Face image-processor defaults when a checkpoint has no preprocessor_config.json
    processor_defaults: Dict[str, Any] = field(default_factory=dict)
    module: str = ""

    @property
    def card(self) -> ModelCard:
        """The family's default card (``default_card`` of its adapter)."""
        return self.adapter.default_card

    def build_model(self, cfg) -> nn.Module:
        """The library model at random initialisation, from the global RNG."""
        try:
            return self.adapter.build(cfg)
        except (TypeError, ValueError) as e:
            if isinstance(e, UserError):
                raise
            raise UserError(f"bad configuration for {self.name}: {e}") from None

    def create(self, cfg) -> ModelAdapter:
        """The registry entry: a random-init model from ``torch.manual_seed(cfg.seed)``, wrapped.  The global RNG
        is seeded (not forked) on purpose: ``xaibench-train`` continues from that state, so a recipe retrains
        its shipped weights exactly (e.g. Swin's stochastic depth draws from it)."""
        torch.manual_seed(int(cfg.seed))
        model = self.build_model(cfg)
        card = self.card.replace(name=self.name, family=self.name, source="random")
        if getattr(cfg, "mean", None) is not None:
            card = card.replace(mean=tuple(cfg.mean))
        if getattr(cfg, "std", None) is not None:
            card = card.replace(std=tuple(cfg.std))
        return self.wrap(model, card)

    def wrap(self, model: nn.Module, card: Optional[ModelCard] = None) -> ModelAdapter:
        """The family's adapter around a model built elsewhere (a checkpoint, your own variant)."""
        card = card or self.card.replace(name=self.name, family=self.name)
        return self.adapter(model, card=card.replace(family=self.name))


def register_family(name: str, *, config: type, tiny: Dict[str, Any], library: str = "torch",
                    hf_model_type: Optional[str] = None, hf_class: Optional[str] = None,
                    timm_classes: Tuple[str, ...] = (), processor_defaults: Optional[Dict[str, Any]] = None):
    """Class decorator of a family's adapter: registers the family (module docstring)."""

    def deco(adapter_cls):
        if name in FAMILIES and FAMILIES[name].adapter is not adapter_cls:
            raise RuntimeError(f"model family {name!r} registered twice")
        if not callable(getattr(adapter_cls, "build", None)):
            raise TypeError(f"family {name!r}: {adapter_cls.__name__} needs a static build(cfg) -> nn.Module")
        adapter_cls.family = name
        fam = Family(name, adapter_cls, config, library, dict(tiny), hf_model_type, hf_class, tuple(timm_classes),
                     dict(processor_defaults or {}), adapter_cls.__module__)
        FAMILIES[name] = fam
        MODELS.register(name, config=config)(fam.create)
        fam.config = MODELS.config(name)  # the registry's class for this name (a subclass if config is shared)
        return adapter_cls

    return deco


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UserError(f"unknown model family {name!r}; families: {', '.join(sorted(FAMILIES))}") from None


def build(family_name: str, *, name: Optional[str] = None, **values) -> ModelAdapter:
    """A random-init model of ``family_name`` from typed values (checked), named ``name``."""
    from ..config import build as build_config

    fam = family(family_name)
    adapter = fam.create(build_config(fam.config, values, where="model"))
    if name:
        adapter.name = name
        adapter.card = adapter.card.replace(name=name)
    return adapter


def raw_model(family_name: str, **values) -> nn.Module:
    """The library model of ``family_name`` at random initialisation from the *global* RNG, from typed values
    (e.g. to save a tiny checkpoint with ``save_pretrained``)."""
    from ..config import build as build_config

    fam = family(family_name)
    return fam.build_model(build_config(fam.config, values, where="model"))


def wrap(family_name: str, model: nn.Module, **card_values) -> ModelAdapter:
    """The adapter of ``family_name`` around your own ``nn.Module`` of that family (e.g. a timm ViT with
    another block class); ``card_values`` set card fields (``name``, ``mean``, ``std``, ...)."""
    fam = family(family_name)
    return fam.wrap(model, fam.card.replace(name=card_values.pop("name", family_name), family=family_name,
                                            **card_values))


# ------------------------------------------------------------------ shipped and trained models
def _recipe_schema(cfg_cls) -> None:
    """Store the schema of a shipped model with its ``train`` recipe (read by ``xaibench-train``, not a model
    parameter), so ``conf/model/<name>.yaml`` can extend the schema and keep its recipe."""
    from hydra.core.config_store import ConfigStore

    base = schema(cfg_cls)
    ns = {"__annotations__": {"train": Optional[Any]}, "train": None, "__module__": cfg_cls.__module__}
    node = dataclasses.dataclass(init=False, repr=False, eq=False)(type(base.__name__, (base,), ns))
    ConfigStore.instance().store(group=f"schema/{cfg_cls.group}", name=cfg_cls.registry_name, node=node)


def declare_shipped(card: ModelCard) -> None:
    """Register one of the project's own trained models (its weights in :data:`WEIGHTS_DIR`)."""
    name = card.name
    reason = (f"model {name!r} is a shipped trained model; its architecture and weights are fixed and it takes "
              f"no parameters. For a configurable random-init architecture use e.g. model={card.family}_tiny "
              f"(or model={card.family} with sizes); to train your own, `xaibench-train model={name}`")
    cfg_cls = dataclasses.make_dataclass(f"Shipped_{name}", [], bases=(ModelConfig,))
    cfg_cls.fixed_reason = reason
    cfg_cls.__module__ = __name__
    SHIPPED[name] = card.replace(source="shipped")
    MODELS.register(name, config=cfg_cls)(lambda cfg, _name=name: load_shipped(_name))
    _recipe_schema(MODELS.config(name))


def shipped_names() -> List[str]:
    return sorted(SHIPPED)


def load_shipped(name: str, **overrides) -> ModelAdapter:
    """One of the project's own trained models (no network needed); parameters are refused."""
    if overrides:
        return MODELS.create(name, **overrides)  # the typed config refuses them with the reason
    card = SHIPPED[name]
    meta_path = WEIGHTS_DIR / f"{name}.json"
    weights = WEIGHTS_DIR / f"{name}.safetensors"
    if not meta_path.exists() or not weights.exists():
        raise UserError(
            f"no shipped model {name!r} (looked for {meta_path.name} and {weights.name} in {WEIGHTS_DIR}); "
            f"trained and present: {', '.join(p.stem for p in sorted(WEIGHTS_DIR.glob('*.json'))) or 'none'}. "
            f"Train it with `xaibench-train model={name} ship=true`."
        )
    return from_files(weights, meta_path, name, card)


def from_files(weights: Path, meta_path: Path, name: str, card: Optional[ModelCard] = None) -> ModelAdapter:
    """An adapter from a safetensors file and the JSON sidecar ``xaibench-train`` writes (``builder``: the
    family, ``config``: its architecture values, ``mean`` / ``std``, ``labels``)."""
    from safetensors.torch import load_file

    try:
        meta = json.loads(meta_path.read_text())
        fam = family(meta["builder"])
    except (ValueError, KeyError) as e:
        raise UserError(f"{meta_path} is not a sidecar written by xaibench-train ({type(e).__name__}: {e})") from None
    values = dict(meta["config"])
    for k in ("mean", "std"):
        if meta.get(k) is not None:
            values[k] = list(meta[k])
    adapter = build(fam.name, name=name, **values)
    try:
        state = load_file(str(weights))
    except Exception as e:
        raise UserError(f"could not read {weights}: {type(e).__name__}: {e}") from None
    missing, unexpected = adapter.model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"weights {weights} do not match the architecture of {meta_path.name}: "
                        f"missing={missing[:5]}, unexpected={unexpected[:5]}")
    adapter.model.eval()
    adapter.labels = meta.get("labels", adapter.labels)
    adapter.meta = meta
    base = card or adapter.card
    adapter.card = base.replace(name=name, family=fam.name, source=base.source if card else "trained",
                                frames=adapter.num_frames, image_size=adapter.image_size, mean=adapter.card.mean,
                                std=adapter.card.std, readout=adapter.layout.readout,
                                num_classes=adapter.num_classes, dataset=meta.get("dataset"),
                                dataset_params=dict(meta.get("dataset_params", {})))
    return adapter


@dataclass
class TrainedConfig(ModelConfig):
    path: Optional[str] = param(None, help="the .safetensors file xaibench-train wrote (its .json sidecar beside it)")

    def validate(self):
        p = self.path
        if not p or not str(p).endswith(".safetensors"):
            raise UserError(f"model.path={p!r} must be the .safetensors file written by xaibench-train (e.g. "
                            f"outputs/train/vit_synth/vit_synth.safetensors)")


@MODELS.register("trained", config=TrainedConfig)
def load_trained(cfg: TrainedConfig) -> ModelAdapter:
    """A model trained with ``xaibench-train`` into an output folder: ``path`` is its ``.safetensors`` file (the
    JSON sidecar beside it names the family and the architecture)."""
    p = Path(str(cfg.path)).expanduser()
    if not p.is_file():
        raise UserError(f"model.path={cfg.path!r}: no such file (the .safetensors file written by xaibench-train)")
    meta_path = p.with_suffix(".json")
    if not meta_path.is_file():
        raise UserError(f"{meta_path} (the sidecar xaibench-train writes beside the weights) is missing")
    return from_files(p, meta_path, p.stem)


__all__ = ["ArchConfig", "Family", "FAMILIES", "ModelConfig", "SHIPPED", "WEIGHTS_DIR", "build", "declare_shipped",
           "divides", "family", "from_files", "raw_model", "load_shipped", "register_family", "shipped_names", "wrap"]
