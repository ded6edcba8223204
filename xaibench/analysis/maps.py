"""The token maps of every explanation of a run (``maps.npz``), so that the gate can tell that a method's
explanations changed even when its scores barely move.

One float32 array per (dataset, model, method, params, sample id): the explanation's token map (T', h, w),
the attribution at the model's token resolution.  The file holds ``index`` (a JSON list of those keys, in
order) and ``map_0`` ... ``map_{n-1}``.  The runner journals each map with its results (``rows.jsonl``), so an
interrupted run loses none, and writes the file at the end.
"""

from __future__ import annotations

import base64
import json
import zipfile
from pathlib import Path
from typing import Dict, Iterable, Tuple

import numpy as np

from ..io import atomic_path

FILE = "maps.npz"
Key = Tuple[str, str, str, str, str]  # dataset, model, method, params, sample id


def encode(token_map) -> dict:
    """A token map as a JSON-able record (shape + base64 of float32 bytes) for the journal."""
    a = np.asarray(token_map.detach().cpu().float().numpy() if hasattr(token_map, "detach") else token_map,
                   dtype=np.float32)
    return {"shape": list(a.shape), "b64": base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")}


def decode(rec: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(rec["b64"]), dtype=np.float32).reshape(rec["shape"]).copy()


def write_maps(items: Iterable[Tuple[Key, np.ndarray]], out_dir) -> Path:
    """Write ``maps.npz`` atomically from ``(key, array)`` pairs."""
    items = list(items)
    path = Path(out_dir) / FILE
    arrays = {f"map_{i}": np.asarray(a, dtype=np.float32) for i, (_, a) in enumerate(items)}
    arrays["index"] = np.array(json.dumps([list(k) for k, _ in items]))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return path


def read_maps(run_dir) -> Dict[Key, np.ndarray]:
    """``{(dataset, model, method, params, sample id): token map}`` of a run folder ({} without ``maps.npz``)."""
    path = Path(run_dir) / FILE
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            index = json.loads(str(z["index"]))
            return {tuple(k): z[f"map_{i}"] for i, k in enumerate(index)}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable maps file ({type(e).__name__}: {e})") from None
