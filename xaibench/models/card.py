"""What a model *is*, declared as data: its readout (:class:`Readout`) and its card (:class:`ModelCard`).

Readout
-------
The classifier of a vision Transformer reads a fixed combination of the final token groups:

=========  =====================================================================
group      tokens
=========  =====================================================================
``cls``    the first prefix token ([CLS])
``dist``   the second prefix token (DeiT's distillation token)
``patches`` the mean of the patch tokens (every token after the prefix)
=========  =====================================================================

A :class:`Readout` declares a non-negative weight per group, normalised to sum to one: ViT reads
``cls``; DeiT averages the predictions of its CLS and distillation heads (``cls`` 0.5 + ``dist`` 0.5);
Swin and VideoMAE pool their patch tokens (``patches``); DINOv2 concatenates [CLS] and the mean of the
patch tokens before one linear head (``cls`` 0.5 + ``patches`` 0.5).  The methods turn it into the row
vector ``v0`` their relevance starts from (:func:`xaibench.methods._relevance.readout_vector`): the
weight of ``cls`` / ``dist`` on that token, the weight of ``patches`` spread over the patch tokens.  The
conformance suite (:mod:`xaibench.models.conformance`) checks the declaration against the model: the
gradient of a logit with respect to the last block's output tokens is non-zero on exactly the declared
groups.

A ``Readout`` is a ``str`` (its canonical name), so the names of the single-group and DeiT readouts of
earlier versions keep working in comparisons and JSON: ``cls``, ``prefix_mean`` (``cls`` + ``dist`` in
equal parts) and ``pool`` (``patches``).  Other combinations are named ``cls+patches`` (equal weights) or
``cls*0.25+patches*0.75``.

Model card
----------
A :class:`ModelCard`, in the spirit of timm's ``PretrainedCfg``, gathers what is otherwise scattered:
the input the model expects (frames, size, resize / crop, interpolation), its normalisation (mean and std
for pixels in [0, 1]), its label set, its readout, where its weights come from (hub id, timm name) and
the identity of the expected weights (``weights_sha256``: :meth:`ModelAdapter.weights_digest` of the
published checkpoint, when it is known).  Families declare a default card; every registered model has
its own; an adapter carries the card of what was actually loaded (``adapter.card``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

GROUPS = ("cls", "dist", "patches")
#: names of earlier versions (and the canonical names of these combinations)
LEGACY = {"cls": {"cls": 1.0}, "prefix_mean": {"cls": 0.5, "dist": 0.5}, "pool": {"patches": 1.0}}
_ALIASES = {"mean": None, "patch_mean": "patches", "gap": "patches"}


def _parse(spec: str) -> Dict[str, float]:
    if spec in LEGACY:
        return dict(LEGACY[spec])
    out: Dict[str, float] = {}
    for part in spec.split("+"):
        m = re.fullmatch(r"\s*([a-z_]+)\s*(?:\*\s*([0-9.eE+-]+))?\s*", part)
        group = m.group(1) if m else part
        group = _ALIASES.get(group, group)
        if not m or group not in GROUPS:
            raise ValueError(f"readout {spec!r}: {part.strip()!r} is not a token group; groups: "
                             f"{', '.join(GROUPS)} (e.g. 'cls', 'cls+patches', 'cls*0.25+patches*0.75'; "
                             f"also {', '.join(LEGACY)})")
        w = float(m.group(2)) if m.group(2) else 1.0
        out[group] = out.get(group, 0.0) + w
    return out


class Readout(str):
    """Weights over the token groups the classifier reads (module docstring); a ``str`` of its name.

    ``Readout("cls")``, ``Readout("cls+patches")``, ``Readout.of(cls=0.5, patches=0.5)``.
    """

    weights: Dict[str, float]

    def __new__(cls, spec="cls"):
        if isinstance(spec, Readout):
            return spec
        if isinstance(spec, dict):
            raw = {str(k): float(v) for k, v in spec.items()}
        elif isinstance(spec, str):
            raw = _parse(spec.strip())
        else:
            raise ValueError(f"readout {spec!r} must be a name such as 'cls' or a mapping group -> weight")
        bad = [g for g in raw if g not in GROUPS]
        if bad:
            raise ValueError(f"readout {spec!r}: unknown token group(s) {bad}; groups: {', '.join(GROUPS)}")
        if any(not (w >= 0) for w in raw.values()) or sum(raw.values()) <= 0:
            raise ValueError(f"readout {spec!r}: weights must be non-negative with a positive sum")
        total = sum(raw.values())
        weights = {g: raw[g] / total for g in GROUPS if raw.get(g, 0.0) > 0}
        obj = super().__new__(cls, _name(weights))
        obj.weights = weights
        return obj

    @staticmethod
    def of(**weights: float) -> "Readout":
        return Readout(dict(weights))

    @property
    def groups(self) -> Tuple[str, ...]:
        """The groups the classifier reads (non-zero weight), in the order of :data:`GROUPS`."""
        return tuple(self.weights)

    def weight(self, group: str) -> float:
        return self.weights.get(group, 0.0)

    @property
    def prefix_needed(self) -> int:
        """How many prefix tokens the declaration needs (``dist`` is the second one)."""
        return 2 if "dist" in self.weights else 1 if "cls" in self.weights else 0

    def __reduce__(self):
        return (Readout, (dict(self.weights),))

    def __repr__(self):  # the name, as the plain strings of earlier versions printed
        return str.__repr__(self)


def _name(weights: Dict[str, float]) -> str:
    for name, w in LEGACY.items():
        if set(w) == set(weights) and all(abs(w[g] - weights[g]) < 1e-12 for g in w):
            return name
    vals = list(weights.values())
    if all(abs(v - vals[0]) < 1e-12 for v in vals):
        return "+".join(weights)
    return "+".join(f"{g}*{w:.6g}" for g, w in weights.items())


@dataclass(frozen=True)
class ModelCard:
    """Declared facts about one model (module docstring).  ``None``: not declared / set by the config."""

    name: str = ""
    family: str = ""
    #: ``random`` (random init), ``shipped`` (the project's own trained weights), ``pretrained``, ``trained``
    source: str = "random"
    description: str = ""
    # ---- input
    frames: Optional[int] = None
    image_size: Optional[int] = None
    #: short side before the centre crop to ``image_size`` (None: no crop, resize straight to the size)
    resize: Optional[int] = None
    interpolation: str = "bilinear"
    mean: Tuple[float, ...] = (0.5, 0.5, 0.5)
    std: Tuple[float, ...] = (0.5, 0.5, 0.5)
    # ---- output
    num_classes: Optional[int] = None
    #: the label set's name (``kinetics400``, ``imagenet1k``, ``synthetic_image``...)
    label_set: Optional[str] = None
    readout: Optional[Readout] = None
    # ---- identity
    hub_id: Optional[str] = None     # Hugging Face repository id
    timm_name: Optional[str] = None  # timm architecture name (its pretrained tag's hub id: ``hub_id``)
    #: sha256 of the expected weights (:meth:`ModelAdapter.weights_digest`); None: not known
    weights_sha256: Optional[str] = None
    #: the synthetic benchmark a shipped model was trained on (dataset name and parameters)
    dataset: Optional[str] = None
    dataset_params: Dict[str, object] = field(default_factory=dict)
    #: where the preprocessing values came from (checkpoint file, family defaults, ...)
    preprocess_source: str = "defaults"

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.readout is not None:
            object.__setattr__(self, "readout", Readout(self.readout))

    def replace(self, **changes) -> "ModelCard":
        return dataclasses.replace(self, **{k: v for k, v in changes.items()})

    def preprocess(self, frames: int, image_size: int) -> dict:
        """What the datasets read (``adapter.preprocess``): frames, size, resize, interpolation, mean, std."""
        size = int(self.image_size or image_size)
        return {"frames": int(self.frames or frames), "size": size, "resize": max(int(self.resize or size), size),
                "interpolation": self.interpolation, "mean": tuple(self.mean), "std": tuple(self.std),
                "source": self.preprocess_source}

    def describe(self) -> dict:
        d = dataclasses.asdict(self)
        d["readout"] = None if self.readout is None else {"name": str(self.readout), **self.readout.weights}
        return d
