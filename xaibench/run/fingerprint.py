"""The fingerprint of a run: everything that can change a value, so that a resume, a merge or the gate never
mixes results computed under different conditions.

Five parts, each compared on its own so that a refusal names what differs:

* ``config``: the resolved configuration without the options that cannot change a result (threads, batch
  sizes, workers, figures, the cache ...: :func:`xaibench.run.options.neutral_options`) and the component
  parameters after the overrides;
* ``code``: the git revision and whether the tree had uncommitted changes, and the SHA-256 of every source
  file of the package (Python, packaged configs and reference tables; the shipped weights are under
  ``weights``), so a changed metric is caught even without a commit and the refusal names the files;
* ``versions``: Python, torch, torchvision, transformers, timm, numpy, scipy, scikit-learn, shap, lime, lxt;
* ``weights``: per model, the SHA-256 of its state dict (names, dtypes, shapes and bytes of every tensor);
* ``data``: per benchmark, the dataset's :meth:`~xaibench.datasets.base.Dataset.fingerprint` (its sample
  ids in order; real data adds the root and file names and sizes; file times are recorded but not compared,
  so a copy of the same data elsewhere is the same data only if the root is unchanged -- the root is compared).

``config``, ``code`` and ``versions`` are known before anything loads; ``weights`` and ``data`` when a
benchmark is loaded.  :func:`diff` lists differences as readable lines.
"""

from __future__ import annotations

import hashlib
import json
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Dict, List

import xaibench

PACKAGES = ("torch", "torchvision", "transformers", "timm", "numpy", "scipy", "scikit-learn", "shap", "lime", "lxt")
SOURCE_SUFFIXES = (".py", ".yaml", ".csv", ".txt", ".j2")


@lru_cache(maxsize=1)
def source_hashes() -> Dict[str, str]:
    """{path relative to the package or config root: SHA-256} of the package's source and config files."""
    from ..config import conf_dir

    out = {}
    roots = [(Path(xaibench.__file__).parent, "xaibench"), (conf_dir(), "conf")]
    for root, tag in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts \
                    and not (tag == "xaibench" and p.parts[-2:-1] == ("weights",)):
                rel = f"{tag}/{p.relative_to(root).as_posix()}"
                if tag == "xaibench" and rel.startswith("xaibench/conf/"):
                    continue
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def code() -> dict:
    from .provenance import git_revision

    files = source_hashes()
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    rev = git_revision()
    return {"git_revision": rev.replace("-dirty", ""), "dirty": rev.endswith("-dirty"), "source_sha256": digest,
            "files": files}


def versions() -> dict:
    out = {"python": sys.version.split()[0], "xaibench": getattr(xaibench, "__version__", "")}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def weights_digest(adapter) -> str:
    """The SHA-256 of a model's weights (the adapter's own ``weights_digest`` when it has one)."""
    fn = getattr(adapter, "weights_digest", None)
    if callable(fn):
        return str(fn())
    h = hashlib.sha256()
    for name, t in sorted(adapter.model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(__import__("torch").uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def diff(old: dict, new: dict, part: str) -> List[str]:
    """Readable differences between two values of one fingerprint part (``old`` from the earlier run)."""
    if part == "code":
        lines = []
        if old.get("source_sha256") != new.get("source_sha256"):
            of, nf = old.get("files", {}), new.get("files", {})
            changed = sorted(k for k in set(of) | set(nf) if of.get(k) != nf.get(k))
            lines.append(f"code: {len(changed)} source file(s) differ: " + ", ".join(changed[:8])
                         + (" ..." if len(changed) > 8 else ""))
        if old.get("git_revision") != new.get("git_revision"):
            lines.append(f"code: git revision {str(old.get('git_revision'))[:12]} -> {str(new.get('git_revision'))[:12]}")
        return lines
    if part == "data":  # file times change with a copy; sizes, names and ids say whether the data changed
        old, new = _without(old, "mtimes_sha256"), _without(new, "mtimes_sha256")
    return _diff(old, new, part)


def _without(v, key):
    if isinstance(v, dict):
        return {k: _without(x, key) for k, x in v.items() if k != key}
    return v


def _diff(a, b, path) -> List[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    same = json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
    return [] if same else [f"{path}: {_short(a)} -> {_short(b)}"]


def _short(v) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 80 else s[:77] + "..."
