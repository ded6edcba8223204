"""Pretrained models: Hugging Face checkpoints and timm weights, from local files or the hub.

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
looked for (and why the hub could not help) and how to obtain the weights.

Each adapter gets ``adapter.preprocess``: ``frames``, ``size`` (crop),
``resize`` (short side before the centre crop), ``interpolation``, ``mean``,
``std`` -- from the checkpoint's ``preprocessor_config.json`` (Hugging Face) or
timm's data config (``resize = floor(size / crop_pct)``); the datasets read it
through ``dataset.bind(adapter)``.  ``mean`` / ``std`` are always for pixels
``u`` in [0, 1]: a Hugging Face processor that maps 8-bit pixels ``v = 255 u`` to
``(v * f - o - m) / s`` (``f`` = ``rescale_factor``, ``o`` = 1 if ``offset`` else 0,
as ViViT's ``rescale_factor = 1/127.5, offset = True`` to [-1, 1]) gives
``mean = (o + m) / (255 f)`` and ``std = s / (255 f)`` (ViViT's public processor:
0.75 and 0.25).  Eager attention is forced for Hugging Face ViT / Swin / VideoMAE
/ ViViT (:func:`~xaibench.models.hf.force_eager`); the timm adapters unfuse
attention themselves.

Registered model names:

* ``pretrained_timesformer_k400``: HF ``facebook/timesformer-base-finetuned-k400``;
* ``pretrained_videomae_k400``: HF ``MCG-NJU/videomae-base-finetuned-kinetics``
  (16 frames, tubelets of 2, mean-pooled head);
* ``pretrained_vivit_k400``: HF ``google/vivit-b-16x2-kinetics400`` (32 frames,
  tubelets of 2, CLS head);
* ``pretrained_vit_b16``: HF ``google/vit-base-patch16-224``;
* ``pretrained_swin_t``: HF ``microsoft/swin-tiny-patch4-window7-224``;
* ``pretrained_timm_vit_b16``: timm ``vit_base_patch16_224``;
* ``pretrained_deit_s``: timm ``deit_small_patch16_224``;
* ``pretrained_timm_swin_t``: timm ``swin_tiny_patch4_window7_224``;
* ``hf_pretrained(path_or_id=...)``: any HF TimeSformer / VideoMAE / ViViT / ViT /
  Swin classifier;
* ``timm_pretrained(model_name=..., checkpoint=...)``: any timm ViT / DeiT / Swin
  (further keyword arguments go to ``timm.create_model``).

The HF entries take ``path_or_id`` (default: their hub id) and ``cache_dir``;
the timm entries ``checkpoint``, ``cache_dir`` and ``timm.create_model``
arguments.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import List, Optional

from ..errors import UserError
from .base import ModelAdapter

WEIGHTS_ENV = "XAIBENCH_WEIGHTS"
HF_HOME_ENV = "XAIBENCH_HF_HOME"
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")
TIMM_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")

# preprocessing used when a checkpoint has no preprocessor_config.json (the values of the public image
# processors of the Hugging Face checkpoints: VideoMAE normalises with the ImageNet mean / std as the original
# VideoMAE code; ViViT's VivitImageProcessor rescales 8-bit pixels by 1/127.5 with an offset of -1, to [-1, 1],
# before normalising with 0.5 / 0.5)
HF_DEFAULTS = {
    "timesformer": dict(mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225), crop=True),
    "videomae": dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop=True),
    "vivit": dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop=True, rescale_factor=1 / 127.5, offset=True),
    "vit": dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop=False),
    "swin": dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop=False),
}


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


def _hf_preprocess(folder: Path, arch: str, image_size: int, frames: int) -> dict:
    d = HF_DEFAULTS[arch]
    pre = {"frames": frames, "size": image_size, "resize": image_size, "interpolation": "bilinear",
           "source": "defaults"}
    cfg = {}
    f = folder / "preprocessor_config.json"
    if f.exists():
        cfg = json.loads(f.read_text())
        pre["source"] = str(f)
        size = cfg.get("size")
        crop = cfg.get("crop_size") if cfg.get("do_center_crop", d["crop"]) else None
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
    if pre["size"] != image_size:
        raise UserError(f"{folder}: the image processor crops to {pre['size']} px but the model expects "
                        f"{image_size} px; the checkpoint folder is inconsistent")
    pre["resize"] = max(pre["resize"], pre["size"])
    return pre


def hf_pretrained(path_or_id: str = "", cache_dir=None, adapter_name: Optional[str] = None) -> ModelAdapter:
    """A Hugging Face TimeSformer / VideoMAE / ViViT / ViT / Swin image or video classifier from local files."""
    if not path_or_id:
        raise UserError("hf_pretrained needs path_or_id: a Hugging Face model id or a local checkpoint folder")
    folder = resolve_hf(str(path_or_id), cache_dir)
    from transformers import (AutoConfig, SwinForImageClassification, TimesformerForVideoClassification,
                              VideoMAEForVideoClassification, VivitForVideoClassification, ViTForImageClassification)

    from .hf import HFSwinAdapter, HFTimesformerAdapter, HFViTAdapter, force_eager
    from .hf_video import HFVideoMAEAdapter, HFVivitAdapter

    cfg = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    kinds = {
        "timesformer": (TimesformerForVideoClassification, HFTimesformerAdapter),
        "videomae": (VideoMAEForVideoClassification, HFVideoMAEAdapter),
        "vivit": (VivitForVideoClassification, HFVivitAdapter),
        "vit": (ViTForImageClassification, HFViTAdapter),
        "swin": (SwinForImageClassification, HFSwinAdapter),
    }
    if cfg.model_type not in kinds:
        raise UserError(f"{folder}: model_type {cfg.model_type!r} is not supported; supported: "
                        f"{', '.join(kinds)} (classification heads)")
    arch = cfg.model_type
    cls, adapter_cls = kinds[arch]
    kw = {} if arch == "timesformer" else {"attn_implementation": "eager"}
    try:
        model = cls.from_pretrained(str(folder), local_files_only=True, **kw)
    except OSError as e:
        raise UserError(f"could not load the weights in {folder}: {e}") from None
    if arch != "timesformer":
        force_eager(model)
    frames = int(getattr(cfg, "num_frames", 1) or 1)
    pre = _hf_preprocess(folder, arch, int(cfg.image_size), frames)
    adapter = adapter_cls(model, name=adapter_name or str(path_or_id), mean=pre["mean"], std=pre["std"])
    adapter.preprocess = pre
    adapter.meta = {"source": "hf", "path_or_id": str(path_or_id), "folder": str(folder)}
    return adapter


# ------------------------------------------------------------------- timm
def _timm_state(path: Path) -> dict:
    from timm.models import load_state_dict

    try:
        return load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as e:
        raise UserError(f"could not read timm checkpoint {path}: {type(e).__name__}: {e}") from None


def timm_pretrained(model_name: str = "", checkpoint=None, cache_dir=None, num_classes: Optional[int] = None,
                    adapter_name: Optional[str] = None, **model_kwargs) -> ModelAdapter:
    """A timm ViT / DeiT / Swin with weights from a local file.

    ``model_name``: the timm architecture name (``vit_base_patch16_224``);
    ``model_kwargs`` go to ``timm.create_model`` (e.g. a smaller ``depth``);
    ``num_classes`` defaults to the classifier size found in the checkpoint.
    """
    import timm

    from .timm_models import TimmSwinAdapter, TimmViTAdapter

    name = model_name
    if not name:
        raise UserError("timm_pretrained needs model_name: a timm model name such as vit_base_patch16_224")
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
    import importlib

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
    arch = "swin" if "swin" in type(model).__name__.lower() else "vit"
    labels = None
    if num_classes == 1000:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        labels = [info.index_to_description(i) for i in range(1000)]
    cls = TimmSwinAdapter if arch == "swin" else TimmViTAdapter
    adapter = cls(model, name=adapter_name or name, mean=tuple(dcfg["mean"]), std=tuple(dcfg["std"]), labels=labels)
    size = adapter.image_size
    crop_pct = float(dcfg.get("crop_pct") or 1.0)
    adapter.preprocess = {"frames": 1, "size": size, "resize": max(size, int(math.floor(size / crop_pct))),
                          "interpolation": dcfg.get("interpolation", "bicubic"), "mean": tuple(dcfg["mean"]),
                          "std": tuple(dcfg["std"]), "source": "timm data config"}
    adapter.meta = {"source": "timm", "name": name, "checkpoint": str(path)}
    return adapter


# --------------------------------------------------------------- registry
KNOWN_HF = {
    "pretrained_timesformer_k400": "facebook/timesformer-base-finetuned-k400",
    "pretrained_videomae_k400": "MCG-NJU/videomae-base-finetuned-kinetics",
    "pretrained_vivit_k400": "google/vivit-b-16x2-kinetics400",
    "pretrained_vit_b16": "google/vit-base-patch16-224",
    "pretrained_swin_t": "microsoft/swin-tiny-patch4-window7-224",
}
KNOWN_TIMM = {
    "pretrained_timm_vit_b16": "vit_base_patch16_224",
    "pretrained_deit_s": "deit_small_patch16_224",
    "pretrained_timm_swin_t": "swin_tiny_patch4_window7_224",
}


def register(MODELS):
    """Register the pretrained entries in ``MODELS`` (called by the package)."""
    MODELS.register("hf_pretrained")(hf_pretrained)
    MODELS.register("timm_pretrained")(timm_pretrained)
    for reg, repo in KNOWN_HF.items():
        def make_hf(path_or_id=None, cache_dir=None, adapter_name=None, _repo=repo, _reg=reg):
            return hf_pretrained(path_or_id or _repo, cache_dir=cache_dir, adapter_name=adapter_name or _reg)

        MODELS.register(reg)(make_hf)
    for reg, tname in KNOWN_TIMM.items():
        def make_timm(checkpoint=None, cache_dir=None, adapter_name=None, _tname=tname, _reg=reg, **model_kwargs):
            return timm_pretrained(_tname, checkpoint=checkpoint, cache_dir=cache_dir,
                                   adapter_name=adapter_name or _reg, **model_kwargs)

        MODELS.register(reg)(make_timm)

