"""Pretrained models: the lookup of checkpoints shared by every family, and their loading.

Weights are looked up, in order, in

1. the path given in the model config (``path_or_id`` for Hugging Face: a
   ``save_pretrained`` / ``huggingface-cli download --local-dir`` folder;
   ``checkpoint`` for timm: a ``.safetensors`` / ``.pth`` / ``.bin`` file or a
   folder holding ``model.safetensors`` / ``pytorch_model.bin``);
2. ``$XAIBENCH_WEIGHTS`` (a folder of such checkpoints, named after the model:
   ``<org>--<name>/`` or ``<org>/<name>/`` for Hugging Face ids, ``<name>.safetensors``
   / ``<name>.pth`` / ``<name>/`` for timm names);
3. the Hugging Face hub cache (``cache_dir`` in the config, else
   ``$XAIBENCH_HF_HOME`` (an ``HF_HOME``-style folder with ``hub/`` inside, or a
   hub cache itself), else the ``huggingface_hub`` default cache), read with
   ``local_files_only`` semantics (``try_to_load_from_cache``), i.e. exactly as
   with ``HF_HUB_OFFLINE=1``.  timm names are looked up under their
   ``pretrained_cfg.hf_hub_id`` (e.g. ``timm/vit_base_patch16_224.augreg2_in21k_ft_in1k``);
4. online only: the Hugging Face hub itself (``huggingface_hub.snapshot_download`` /
   ``hf_hub_download`` with the library's normal caching, into the same cache;
   safetensors first).  Offline -- ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE``),
   or no network -- this step is skipped or fails quietly, and the lookup is the
   local one above.

When nothing is found, a :class:`~xaibench.errors.UserError` says what was
looked for (and why the hub could not help) and how to obtain the weights.  A
pickled checkpoint holding Python objects besides tensors is refused with one
clear message (never unpickled with ``weights_only=False``).

Which family a checkpoint belongs to is read from it, never guessed from a name:
a Hugging Face ``config.json``'s ``model_type`` names the family that declared
that ``hf_model_type``; a timm model's class names the family that declared it
in ``timm_classes``.  A family's module declares its published checkpoints as
cards (:func:`declare_hf`, :func:`declare_timm`): registry name, hub id / timm
name, input, normalisation, label set and the expected weights digest.  The
generic entries ``hf_pretrained(path_or_id=...)`` and
``timm_pretrained(model_name=..., checkpoint=...)`` load any checkpoint of a
registered family.

Each adapter gets ``adapter.preprocess`` (and ``adapter.card``): ``frames``,
``size`` (crop), ``resize`` (short side before the centre crop),
``interpolation``, ``mean``, ``std`` -- from the checkpoint's
``preprocessor_config.json`` (Hugging Face; the family's processor defaults
when it has none) or timm's data config (``resize = floor(size / crop_pct)``);
the datasets read it through ``dataset.bind(adapter)``.  ``mean`` / ``std`` are
always for pixels ``u`` in [0, 1]: a Hugging Face processor that maps 8-bit
pixels ``v = 255 u`` to ``(v * f - o - m) / s`` (``f`` = ``rescale_factor``,
``o`` = 1 if ``offset`` else 0, as ViViT's ``rescale_factor = 1/127.5, offset =
True`` to [-1, 1]) gives ``mean = (o + m) / (255 f)`` and ``std = s / (255 f)``
(ViViT's public processor: 0.75 and 0.25).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

from ..config import param
from ..errors import UserError
from .base import MODELS, ModelAdapter
from .card import ModelCard
from .family import FAMILIES, Family, ModelConfig

WEIGHTS_ENV = "XAIBENCH_WEIGHTS"
HF_HOME_ENV = "XAIBENCH_HF_HOME"
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")
TIMM_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


# ------------------------------------------------------------------ locations
def _expand(p) -> Path:
    return Path(os.path.expanduser(str(p)))


def hub_cache_dir(cache_dir=None) -> Optional[str]:
    """The Hugging Face hub cache to read (``None`` = huggingface_hub's default)."""
    c = cache_dir or os.environ.get(HF_HOME_ENV)
    if not c:
        return None
    c = _expand(c)
    return str(c / "hub") if (c / "hub").is_dir() else str(c)


def _default_hub_cache() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover
        return "~/.cache/huggingface/hub"


def _cached_file(repo_id: str, filename: str, cache_dir) -> Optional[Path]:
    from huggingface_hub import try_to_load_from_cache

    try:
        p = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
    except Exception:  # invalid repo id etc.
        return None
    return Path(p) if isinstance(p, str) and Path(p).exists() else None


def _has_hf_weights(folder: Path) -> bool:
    return any((folder / f).exists() for f in HF_WEIGHT_FILES)


def resolve_hf(path_or_id: str, cache_dir=None) -> Path:
    """Folder holding ``config.json`` and weights for a Hugging Face path or id."""
    tried: List[str] = []
    p = _expand(path_or_id)
    if p.is_dir():
        if not (p / "config.json").exists():
            raise UserError(f"{p} has no config.json: it is not a Hugging Face model folder (save_pretrained / "
                            f"`huggingface-cli download --local-dir`)")
        if not _has_hf_weights(p):
            raise UserError(f"{p} has a config.json but no weights ({' or '.join(HF_WEIGHT_FILES[::2])}); "
                            f"the download is incomplete")
        return p
    tried.append(str(p))
    wroot = os.environ.get(WEIGHTS_ENV)
    if wroot:
        w = _expand(wroot)
        for cand in (w / path_or_id.replace("/", "--"), w / path_or_id, w / path_or_id.split("/")[-1]):
            tried.append(str(cand))
            if (cand / "config.json").exists() and _has_hf_weights(cand):
                return cand
    cdir = hub_cache_dir(cache_dir)
    if path_or_id.count("/") == 1:
        cfg = _cached_file(path_or_id, "config.json", cdir)
        tried.append(f"hub cache {cdir or _default_hub_cache()}")
        if cfg is not None and _has_hf_weights(cfg.parent):
            return cfg.parent
        got = download_hf(path_or_id, cdir, tried)
        if got is not None:
            return got
        if cfg is not None:
            raise UserError(f"the hub cache has {path_or_id}'s config.json but no weights file "
                            f"({', '.join(HF_WEIGHT_FILES[::2])}) in {cfg.parent}; the download is incomplete. "
                            + _hf_howto(path_or_id))
    raise UserError(f"no local weights for Hugging Face model {path_or_id!r}{_offline_note()}; "
                    f"looked in: {'; '.join(tried)}. " + _hf_howto(path_or_id))


# ------------------------------------------------------------- the hub (online)
HF_DOWNLOAD_PATTERNS = (["config.json", "preprocessor_config.json", "model.safetensors", "model.safetensors.index.json",
                         "model-*.safetensors"],
                        ["config.json", "preprocessor_config.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
                         "pytorch_model-*.bin"])


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    truthy = ("1", "true", "yes", "on")
    if any(os.environ.get(v, "").strip().lower() in truthy for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover
        return False


def _offline_note() -> str:
    return " (the hub is off: HF_HUB_OFFLINE is set)" if hub_offline() else " (and the hub could not provide it)"


def download_hf(repo_id: str, cache_dir, tried: List[str]) -> Optional[Path]:
    """Online: the repository's config, preprocessing and weights through ``huggingface_hub`` and its normal
    cache (safetensors first, ``pytorch_model.bin`` only if the repository has no safetensors); ``None``
    offline or when the hub cannot provide them (the reason goes to ``tried``)."""
    if hub_offline():
        return None
    from huggingface_hub import snapshot_download

    for patterns in HF_DOWNLOAD_PATTERNS:
        try:
            folder = Path(snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=patterns))
        except Exception as e:  # no network, unknown repo, gated repo ...
            tried.append(f"the hub ({type(e).__name__}: {str(e).splitlines()[0][:160]})")
            return None
        if (folder / "config.json").exists() and _has_hf_weights(folder):
            return folder
    tried.append(f"the hub ({repo_id} has no config.json with safetensors or pytorch_model.bin)")
    return None


def download_timm(hub_id: str, cache_dir, tried: List[str]) -> Optional[Path]:
    """Online: a timm checkpoint file from its ``hf_hub_id`` (safetensors first); ``None`` offline or on failure."""
    if hub_offline():
        return None
    from huggingface_hub import hf_hub_download

    last = None
    for f in ("model.safetensors", "pytorch_model.bin"):
        try:
            return Path(hf_hub_download(hub_id, f, cache_dir=cache_dir))
        except Exception as e:
            last = e
    tried.append(f"the hub ({type(last).__name__}: {str(last).splitlines()[0][:160]})")
    return None


def _hf_howto(repo: str) -> str:
    d = repo.replace("/", "--")
    return (f"To obtain it, on a machine with internet run `huggingface-cli download {repo} --local-dir {d}` "
            f"(or `hf download {repo} --local-dir {d}`), copy the folder here and set the model's path_or_id to it, "
            f"or put it in $XAIBENCH_WEIGHTS/{d}, or copy a Hugging Face cache that holds it and set "
            f"XAIBENCH_HF_HOME (see docs/real_data.md)")


def _timm_howto(name: str, hub_id: Optional[str]) -> str:
    dl = f"`huggingface-cli download {hub_id} model.safetensors --local-dir {name}`" if hub_id else \
        f"`python -c \"import timm, torch; torch.save(timm.create_model('{name}', pretrained=True).state_dict(), " \
        f"'{name}.pth')\"`"
    return (f"To obtain it, on a machine with internet run {dl}, copy the file here and set the model's checkpoint "
            f"to it, or put it in $XAIBENCH_WEIGHTS as {name}.safetensors (or {name}/model.safetensors), or copy a "
            f"Hugging Face cache holding {hub_id or name} and set XAIBENCH_HF_HOME (see docs/real_data.md)")


def resolve_timm(name: str, checkpoint=None, cache_dir=None) -> Path:
    """Weights file for a timm model name."""
    from timm.models import get_pretrained_cfg

    try:
        pcfg = get_pretrained_cfg(name)
    except Exception:
        pcfg = None
    hub_id = getattr(pcfg, "hf_hub_id", None) if pcfg is not None else None
    tried = []

    def from_folder(d: Path) -> Optional[Path]:
        for f in TIMM_WEIGHT_FILES:
            if (d / f).exists():
                return d / f
        return None

    if checkpoint:
        p = _expand(checkpoint)
        if p.is_file():
            return p
        if p.is_dir() and from_folder(p):
            return from_folder(p)
        raise UserError(f"timm checkpoint {p} does not exist (or is a folder without "
                        f"{' / '.join(TIMM_WEIGHT_FILES)}). " + _timm_howto(name, hub_id))
    wroot = os.environ.get(WEIGHTS_ENV)
    if wroot:
        w = _expand(wroot)
        stems = [name] + ([hub_id.split("/")[-1], hub_id.replace("/", "--")] if hub_id else [])
        for stem in stems:
            for ext in (".safetensors", ".pth", ".pth.tar", ".bin"):
                tried.append(str(w / f"{stem}{ext}"))
                if (w / f"{stem}{ext}").is_file():
                    return w / f"{stem}{ext}"
            tried.append(str(w / stem) + "/")
            if (w / stem).is_dir() and from_folder(w / stem):
                return from_folder(w / stem)
    if hub_id:
        cdir = hub_cache_dir(cache_dir)
        tried.append(f"hub cache {cdir or _default_hub_cache()} ({hub_id})")
        for f in TIMM_WEIGHT_FILES:
            p = _cached_file(hub_id, f, cdir)
            if p is not None:
                return p
        p = download_timm(hub_id, cdir, tried)
        if p is not None:
            return p
    raise UserError(f"no local weights for timm model {name!r}{_offline_note()}; looked in: "
                    f"{'; '.join(tried) or 'nothing (no checkpoint, $XAIBENCH_WEIGHTS unset)'}. "
                    + _timm_howto(name, hub_id))


# ----------------------------------------------------------- Hugging Face
def _unit_pixel_stats(mean, std, factor: float, offset: bool):
    """Processor normalisation of 8-bit pixels, ``(v * factor - offset - mean) / std`` with ``v = 255 u``, as
    mean / std for pixels ``u`` in [0, 1]: ``((offset + mean) / (255 factor), std / (255 factor))``."""
    k = 255.0 * factor
    if math.isclose(k, 1.0) and not offset:  # the usual 1/255 rescale: nothing to convert
        return tuple(mean), tuple(std)
    return tuple((float(offset) + m) / k for m in mean), tuple(v / k for v in std)


def _pickle_error(path, e: Exception) -> Optional[UserError]:
    """One clear error for a pickled checkpoint that ``weights_only`` loading refuses (never the library's
    advice to unpickle it anyway)."""
    text = str(e)
    if isinstance(e, pickle.UnpicklingError) or "weights_only" in text or "Weights only load failed" in text:
        return UserError(f"{path} is a pickled PyTorch checkpoint that holds Python objects besides tensors; "
                         f"xaibench does not unpickle such files (unpickling can run arbitrary code). Convert it "
                         f"to safetensors on a machine where you trust the file (e.g. `model.save_pretrained(dir, "
                         f"safe_serialization=True)` for Hugging Face, `safetensors.torch.save_file(state_dict, "
                         f"'model.safetensors')` for timm) or download the safetensors weights of the model")
    return None


def hf_family(model_type: str, where) -> Family:
    for fam in FAMILIES.values():
        if fam.hf_model_type == model_type:
            return fam
    known = sorted(f.hf_model_type for f in FAMILIES.values() if f.hf_model_type)
    raise UserError(f"{where}: model_type {model_type!r} is not supported; supported: {', '.join(known)} "
                    f"(classification heads)")


def _hf_preprocess(folder: Path, defaults: dict, image_size: int, frames: int, any_size: bool = False) -> dict:
    """The input a Hugging Face checkpoint expects (module docstring); ``any_size``: the model interpolates its
    position embeddings, so the processor's crop sets the input size."""
    d = defaults
    pre = {"frames": frames, "size": image_size, "resize": image_size, "interpolation": "bilinear",
           "source": "defaults"}
    cfg = {}
    f = folder / "preprocessor_config.json"
    if f.exists():
        try:
            cfg = json.loads(f.read_text())
        except ValueError as e:
            raise UserError(f"{f} is not valid JSON: {e}") from None
        pre["source"] = str(f)
        size = cfg.get("size")
        crop = cfg.get("crop_size") if cfg.get("do_center_crop", d.get("crop", False)) else None
        if isinstance(crop, dict):
            pre["size"] = int(crop.get("height", crop.get("width", image_size)))
        elif isinstance(crop, int):
            pre["size"] = crop
        if isinstance(size, dict):
            pre["resize"] = int(size.get("shortest_edge", size.get("height", pre["size"])))
        elif isinstance(size, int):
            pre["resize"] = size
        if cfg.get("resample") == 3:  # PIL.Image.BICUBIC
            pre["interpolation"] = "bicubic"
    if cfg.get("do_normalize", True):
        mean = tuple(float(v) for v in (cfg.get("image_mean") or d["mean"]))
        std = tuple(float(v) for v in (cfg.get("image_std") or d["std"]))
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    factor = float(cfg.get("rescale_factor", d.get("rescale_factor", 1 / 255))) if cfg.get("do_rescale", True) \
        else 1.0
    pre["mean"], pre["std"] = _unit_pixel_stats(mean, std, factor, bool(cfg.get("offset", d.get("offset", False))))
    if pre["size"] != image_size and not any_size:
        raise UserError(f"{folder}: the image processor crops to {pre['size']} px but the model expects "
                        f"{image_size} px; the checkpoint folder is inconsistent")
    pre["resize"] = max(pre["resize"], pre["size"])
    return pre


def load_hf(path_or_id: str, cache_dir=None, card: Optional[ModelCard] = None) -> ModelAdapter:
    """A Hugging Face image or video classifier of any registered family, from local files (or the hub when
    online); ``card``: the declared card of a known checkpoint (its family must match the checkpoint's)."""
    folder = resolve_hf(str(path_or_id), cache_dir)
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"could not read {folder / 'config.json'}: {type(e).__name__}: "
                        f"{str(e).splitlines()[0][:300]}") from None
    fam = hf_family(cfg.model_type, folder)
    if card is not None and card.family and card.family != fam.name:
        raise UserError(f"{folder} holds a {cfg.model_type!r} checkpoint (family {fam.name}), but model "
                        f"{card.name!r} is a {card.family} model; give a {card.family} checkpoint")
    import transformers

    cls = getattr(transformers, fam.hf_class)
    kw = {"attn_implementation": "eager"} if getattr(fam.adapter, "eager", True) else {}
    try:
        model = cls.from_pretrained(str(folder), local_files_only=True, **kw)
    except Exception as e:
        weights = next((folder / f for f in HF_WEIGHT_FILES if (folder / f).exists()), folder)
        err = _pickle_error(weights, e)
        if err is not None:
            raise err from None
        if isinstance(e, (OSError, ValueError, RuntimeError)):
            raise UserError(f"could not load the weights in {folder}: {type(e).__name__}: "
                            f"{str(e).splitlines()[0][:300]}") from None
        raise
    frames = int(getattr(cfg, "num_frames", 1) or 1)
    pre = _hf_preprocess(folder, fam.processor_defaults, int(cfg.image_size), frames,
                         any_size=bool(getattr(fam.adapter, "any_input_size", False)))
    base = card or fam.card.replace(name=str(path_or_id))
    card = base.replace(family=fam.name, source="pretrained", frames=frames, image_size=int(pre["size"]),
                        resize=pre["resize"], interpolation=pre["interpolation"], mean=pre["mean"], std=pre["std"],
                        preprocess_source=pre["source"], num_classes=int(cfg.num_labels),
                        hub_id=base.hub_id or (str(path_or_id) if not Path(str(path_or_id)).exists() else None))
    adapter = fam.wrap(model, card)
    adapter.preprocess = pre
    adapter.meta = {"source": "hf", "path_or_id": str(path_or_id), "folder": str(folder)}
    return adapter


# ------------------------------------------------------------------- timm
def _timm_state(path: Path) -> dict:
    from timm.models import load_state_dict

    try:
        return load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as e:
        err = _pickle_error(path, e)
        if err is not None:
            raise err from None
        raise UserError(f"could not read timm checkpoint {path}: {type(e).__name__}: "
                        f"{str(e).splitlines()[0][:300]}") from None


def timm_family(model) -> Family:
    cls = type(model).__name__
    for fam in FAMILIES.values():
        if cls in fam.timm_classes:
            return fam
    known = sorted(c for f in FAMILIES.values() for c in f.timm_classes)
    raise UserError(f"timm model class {cls} has no xaibench family (supported: {', '.join(known)})")


def load_timm(name: str, *, checkpoint=None, cache_dir=None, num_classes: Optional[int] = None,
              card: Optional[ModelCard] = None, **model_kwargs) -> ModelAdapter:
    """A timm model of a registered family with weights from a local file (or the hub when online).

    ``name``: the timm architecture name (``vit_base_patch16_224``); ``model_kwargs`` go to
    ``timm.create_model`` (e.g. a smaller ``depth`` for a substitute checkpoint); ``num_classes`` defaults to the
    classifier size found in the checkpoint.
    """
    import timm

    if not timm.is_model(name):
        raise UserError(f"unknown timm model {name!r}; see timm.list_models()")
    path = resolve_timm(name, checkpoint, cache_dir)
    state = _timm_state(path)
    probe = timm.models.get_pretrained_cfg(name)
    clf = (getattr(probe, "classifier", None) or "head") if probe is not None else "head"
    clf = clf[0] if isinstance(clf, (list, tuple)) else clf
    if num_classes is None:
        w = state.get(f"{clf}.weight")
        num_classes = int(w.shape[0]) if w is not None else 1000
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **model_kwargs)
    except TypeError as e:
        raise UserError(f"bad arguments for timm model {name!r}: {e}") from None
    fam = timm_family(model)
    if card is not None and card.family and card.family != fam.name:
        raise UserError(f"timm {name!r} is a {fam.name} model, but {card.name!r} is declared {card.family}")
    filt = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
    if filt is not None:
        try:
            state = filt(state, model)
        except Exception as e:
            raise UserError(f"checkpoint {path} cannot be converted for timm {name!r}: {type(e).__name__}: {e}") \
                from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch
        raise UserError(f"checkpoint {path} does not fit timm {name!r} (built with {model_kwargs or 'defaults'}): "
                        f"{str(e).splitlines()[0]} ... Pass the architecture arguments it was trained with") from None
    if missing or unexpected:
        raise UserError(f"checkpoint {path} does not fit timm {name!r}: missing keys {missing[:5]}, unexpected "
                        f"keys {unexpected[:5]}")
    model.eval()
    from timm.data import resolve_data_config

    dcfg = resolve_data_config({}, model=model)
    labels = None
    if num_classes == 1000:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        labels = [info.index_to_description(i) for i in range(1000)]
    base = card or fam.card.replace(name=name)
    card = base.replace(family=fam.name, source="pretrained", mean=tuple(dcfg["mean"]), std=tuple(dcfg["std"]),
                        interpolation=dcfg.get("interpolation", "bicubic"), num_classes=num_classes,
                        timm_name=name, preprocess_source="timm data config",
                        hub_id=base.hub_id or getattr(probe, "hf_hub_id", None),
                        label_set=base.label_set or ("imagenet1k" if num_classes == 1000 else None))
    adapter = fam.wrap(model, card)
    adapter.labels = labels
    size = adapter.image_size
    crop_pct = float(dcfg.get("crop_pct") or 1.0)
    adapter.card = adapter.card.replace(resize=max(size, int(math.floor(size / crop_pct))))
    adapter.preprocess = {"frames": 1, "size": size, "resize": adapter.card.resize,
                          "interpolation": adapter.card.interpolation, "mean": tuple(dcfg["mean"]),
                          "std": tuple(dcfg["std"]), "source": "timm data config"}
    adapter.meta = {"source": "timm", "name": name, "checkpoint": str(path)}
    return adapter


# --------------------------------------------------------------- configs and declarations
@dataclass
class HFPretrainedConfig(ModelConfig):
    """A declared Hugging Face checkpoint: where its files are (null: its hub id, looked up locally)."""

    path_or_id: Optional[str] = param(None, help="a Hugging Face model id or a local checkpoint folder "
                                                 "(null: the card's hub id)")
    cache_dir: Optional[str] = param(None, help="Hugging Face hub cache to read (null: $XAIBENCH_HF_HOME, then "
                                                "the library's default)")


@dataclass
class AnyHFConfig(HFPretrainedConfig):
    def validate(self):
        if not self.path_or_id:
            raise UserError("hf_pretrained needs model.path_or_id: a Hugging Face model id or a local checkpoint "
                            "folder")


def _heads_check(v):
    if v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0):
        return None
    if isinstance(v, (list, tuple)) and v and all(isinstance(h, int) and not isinstance(h, bool) and h > 0
                                                  for h in v):
        return None
    return "give a positive integer (ViT) or a list of them, one per stage (Swin)"


@dataclass
class TimmPretrainedConfig(ModelConfig):
    """A timm checkpoint: its file (null: $XAIBENCH_WEIGHTS, then the hub cache) and, for a smaller substitute
    checkpoint, the ``timm.create_model`` sizes it was trained with (null: the architecture's own)."""

    checkpoint: Optional[str] = param(None, help="a .safetensors / .pth / .bin file or a folder holding one "
                                                 "(null: $XAIBENCH_WEIGHTS, then the hub cache)")
    cache_dir: Optional[str] = param(None, help="Hugging Face hub cache to read (null: $XAIBENCH_HF_HOME, then "
                                                "the library's default)")
    num_classes: Optional[int] = param(None, range=(1, 100_000), help="classes (null: the checkpoint's head)")
    img_size: Optional[int] = param(None, range=(8, 4096), help="input size (null: the architecture's)")
    patch_size: Optional[int] = param(None, range=(1, 512), help="patch size (null: the architecture's)")
    embed_dim: Optional[int] = param(None, range=(1, 16384), help="token width (null: the architecture's)")
    depth: Optional[int] = param(None, range=(1, 256), help="blocks of a ViT (null: the architecture's)")
    depths: Optional[List[int]] = param(None, range=(1, 64), help="blocks per Swin stage (null: the architecture's)")
    num_heads: Optional[Any] = param(None, check=_heads_check, help="heads: an integer (ViT) or one per stage "
                                                                     "(Swin); null: the architecture's")
    window_size: Optional[int] = param(None, range=(1, 512), help="Swin window (null: the architecture's)")

    SIZE_KEYS = ("img_size", "patch_size", "embed_dim", "depth", "depths", "num_heads", "window_size")

    def model_kwargs(self) -> dict:
        out = {}
        for k in self.SIZE_KEYS:
            v = getattr(self, k)
            if v is not None:
                out[k] = tuple(v) if isinstance(v, list) else v
        return out


@dataclass
class AnyTimmConfig(TimmPretrainedConfig):
    model_name: Optional[str] = param(None, help="the timm architecture name, e.g. vit_base_patch16_224")

    def validate(self):
        if not self.model_name:
            raise UserError("timm_pretrained needs model.model_name: a timm model name such as vit_base_patch16_224")


def declare_hf(card: ModelCard) -> None:
    """Register a known Hugging Face checkpoint under ``card.name`` (its family's module calls this)."""
    card = card.replace(source="pretrained")

    def load(cfg: HFPretrainedConfig, _card=card) -> ModelAdapter:
        return load_hf(cfg.path_or_id or _card.hub_id, cfg.cache_dir, card=_card)

    MODELS.register(card.name, config=HFPretrainedConfig)(load)
    PRETRAINED[card.name] = card


def declare_timm(card: ModelCard) -> None:
    """Register a known timm checkpoint (``card.timm_name``) under ``card.name``."""
    card = card.replace(source="pretrained")

    def load(cfg: TimmPretrainedConfig, _card=card) -> ModelAdapter:
        return load_timm(_card.timm_name, checkpoint=cfg.checkpoint, cache_dir=cfg.cache_dir,
                         num_classes=cfg.num_classes, card=_card, **cfg.model_kwargs())

    MODELS.register(card.name, config=TimmPretrainedConfig)(load)
    PRETRAINED[card.name] = card


#: every declared pretrained card by registry name
PRETRAINED: dict = {}


@MODELS.register("hf_pretrained", config=AnyHFConfig)
def hf_pretrained_entry(cfg: AnyHFConfig) -> ModelAdapter:
    return load_hf(cfg.path_or_id, cfg.cache_dir)


@MODELS.register("timm_pretrained", config=AnyTimmConfig)
def timm_pretrained_entry(cfg: AnyTimmConfig) -> ModelAdapter:
    return load_timm(cfg.model_name, checkpoint=cfg.checkpoint, cache_dir=cfg.cache_dir,
                     num_classes=cfg.num_classes, **cfg.model_kwargs())


def hf_pretrained(path_or_id: str = "", cache_dir=None, adapter_name: Optional[str] = None) -> ModelAdapter:
    """Python API: any Hugging Face checkpoint of a registered family (``adapter_name``: the adapter's name)."""
    if not path_or_id:
        raise UserError("hf_pretrained needs path_or_id: a Hugging Face model id or a local checkpoint folder")
    a = load_hf(path_or_id, cache_dir)
    if adapter_name:
        a.name, a.card = adapter_name, a.card.replace(name=adapter_name)
    return a


def timm_pretrained(model_name: str = "", checkpoint=None, cache_dir=None, num_classes: Optional[int] = None,
                    adapter_name: Optional[str] = None, **model_kwargs) -> ModelAdapter:
    """Python API: any timm checkpoint of a registered family (``model_kwargs`` go to ``timm.create_model``)."""
    if not model_name:
        raise UserError("timm_pretrained needs model_name: a timm model name such as vit_base_patch16_224")
    a = load_timm(model_name, checkpoint=checkpoint, cache_dir=cache_dir, num_classes=num_classes, **model_kwargs)
    if adapter_name:
        a.name, a.card = adapter_name, a.card.replace(name=adapter_name)
    return a


__all__ = ["AnyHFConfig", "AnyTimmConfig", "HFPretrainedConfig", "PRETRAINED", "TimmPretrainedConfig",
           "declare_hf", "declare_timm", "hf_pretrained", "load_hf", "load_timm", "resolve_hf", "resolve_timm",
           "timm_pretrained"]
