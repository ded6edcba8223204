"""Real-format fixtures for the real-data loaders (written in tmp dirs by the tests).

* :func:`write_video`: a short MP4 (PyAV, mpeg4) whose frame k is a flat grey of
  level ``step * k`` plus a white square in the top-left corner, so a decoded
  frame's index can be read back from its brightness;
* :func:`make_kinetics`: both Kinetics-400 on-disk layouts with an official-style
  annotation CSV, including a missing, a corrupt and a too-short video;
* :func:`write_gtsegs`: a MATLAB v7.3 (HDF5 with a 512-byte userblock) file laid
  out exactly like ``gtsegs_ijcv.mat`` (``/value/img``, ``/value/gt``,
  ``/value/id`` as object references into ``/#refs#``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

STEP = 20  # grey-level step between consecutive frames


def write_video(path: Path, n_frames: int, h: int = 36, w: int = 48, step: int = STEP, rate: int = 10) -> Path:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"qscale": "1"}
        for k in range(n_frames):
            a = np.full((h, w, 3), (step * k) % 250, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def frame_level(x) -> np.ndarray:
    """Frame index encoded in each frame of a decoded (T, C, H, W) clip in [0, 1]."""
    arr = np.asarray(x, dtype=np.float64)
    return np.rint(arr.mean(axis=(1, 2, 3)) * 255.0 / STEP).astype(int)


CLASSES = ["abseiling", "air drumming", "zumba"]  # canonical indices 0, 1, 399
HEADER = ["label", "youtube_id", "time_start", "time_end", "split", "is_cc"]


def make_kinetics(root: Path, n_frames: int = 12, per_class: int = 3, h: int = 36, w: int = 48,
                  split: str = "test") -> dict:
    """Kinetics ``split`` (default test) in the tree layout (``root/tree``) and the flat layout
    (``root/flat``), both described by ``root/tree/annotations/<split>.csv``.

    Returns ``{'tree', 'flat', 'csv', 'list', 'rows', 'missing', 'corrupt', 'short'}``.
    """
    canon = [c.strip() for c in (Path(__file__).parents[1] / "xaibench/datasets/data/kinetics400_classes.txt")
             .read_text().splitlines() if c.strip()]
    tree, flat = root / "tree", root / "flat"
    rows = []
    for ci, cname in enumerate(CLASSES):
        for j in range(per_class):
            yid = f"vid{ci}{j}_{cname[:3]}"  # youtube ids may contain '_' and '-'
            rows.append({"label": cname, "youtube_id": yid, "time_start": 10 * j, "time_end": 10 * j + 10,
                         "split": split, "is_cc": 0})
    missing, corrupt, short = rows[1], rows[4], rows[7]
    list_lines = []
    for r in rows:
        stem = f"{r['youtube_id']}_{r['time_start']:06d}_{r['time_end']:06d}"
        folder = tree / split / r["label"].replace(" ", "_")  # downloaders often use '_' in folder names
        if r is missing:
            list_lines.append(f"{r['youtube_id']}.mp4 {canon.index(r['label'])}")
            continue
        if r is corrupt:
            for p in (folder / f"{stem}.mp4", flat / f"{r['youtube_id']}.mp4"):
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(np.random.default_rng(0).integers(0, 256, 2000,
                                                                                                      np.uint8)))
        else:
            n = 3 if r is short else n_frames
            write_video(folder / f"{stem}.mp4", n, h=h, w=w)
            write_video(flat / f"{r['youtube_id']}.mp4", n, h=h, w=w)
        list_lines.append(f"{r['youtube_id']}.mp4 {canon.index(r['label'])}")
    ann = tree / "annotations" / f"{split}.csv"
    ann.parent.mkdir(parents=True, exist_ok=True)
    with open(ann, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=HEADER)
        wr.writeheader()
        wr.writerows(rows)
    lst = flat / "test_list.txt"
    flat.mkdir(parents=True, exist_ok=True)
    lst.write_text("\n".join(list_lines) + "\n")

    def sid(r):
        return f"{r['youtube_id']}_{r['time_start']:06d}_{r['time_end']:06d}"

    return {"tree": tree, "flat": flat, "csv": ann, "list": lst, "rows": rows, "missing": sid(missing),
            "corrupt": sid(corrupt), "short": sid(short), "flat_ids": {
                "missing": missing["youtube_id"], "corrupt": corrupt["youtube_id"], "short": short["youtube_id"]}}


# ----------------------------------------------------------------- gtsegs_ijcv
MATLAB_HEADER = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 "
                 b"HDF5 schema 1.00 .")


def _utf16(s: str) -> np.ndarray:
    """MATLAB char array as stored in v7.3 files: uint16 code units, shape (n, 1)."""
    return np.frombuffer(s.encode("utf-16-le"), dtype=np.uint16).reshape(-1, 1)


def write_gtsegs(path: Path, images, masks, ids, compression=None) -> Path:
    """Write ``gtsegs_ijcv.mat``'s layout: images (H, W, 3) or (H, W) of any dtype (uint8 as in the published
    file), masks (H, W) 0/1, ids (strings).  MATLAB stores arrays column-major, so an H x W x 3 image is an
    HDF5 dataset of shape (3, W, H) and an H x W mask one of shape (W, H).  ``compression="gzip"``: deflate
    the images and masks as MATLAB does for large arrays."""
    import h5py

    n = len(images)
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        value = f.create_group("value")
        ref_dt = h5py.ref_dtype
        img = value.create_dataset("img", (n, 1), dtype=ref_dt)
        gt = value.create_dataset("gt", (n, 1), dtype=ref_dt)
        idd = value.create_dataset("id", (n, 1), dtype=ref_dt)
        for i in range(n):
            a = np.asarray(images[i])
            d = refs.create_dataset(f"img{i}", data=np.ascontiguousarray(a.T if a.ndim == 2 else a.transpose(2, 1, 0)),
                                    compression=compression)
            d.attrs["MATLAB_class"] = np.bytes_("uint8")
            img[i, 0] = d.ref
            m = refs.create_dataset(f"mask{i}", data=np.ascontiguousarray(np.asarray(masks[i], np.uint8).T),
                                    compression=compression)
            m.attrs["MATLAB_class"] = np.bytes_("uint8")
            cell = refs.create_dataset(f"gtcell{i}", (1, 1), dtype=ref_dt)
            cell[0, 0] = m.ref
            cell.attrs["MATLAB_class"] = np.bytes_("cell")
            gt[i, 0] = cell.ref
            s = refs.create_dataset(f"id{i}", data=_utf16(ids[i]))
            s.attrs["MATLAB_class"] = np.bytes_("char")
            idd[i, 0] = s.ref
        for d in (img, gt, idd):
            d.attrs["MATLAB_class"] = np.bytes_("cell")
    _matlab_header(path)
    return path


def _matlab_header(path: Path) -> None:
    with open(path, "r+b") as fh:  # MATLAB's text header lives in the userblock
        fh.write(MATLAB_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


#: crafted files (a few KB each) whose declarations would exhaust memory if trusted, and odd pixel types
CRAFTED = ("records", "huge_image", "unwritten", "float01", "float255", "complex", "negative", "string")


def write_crafted_gtsegs(path: Path, kind: str) -> Path:
    """A MATLAB v7.3 file in gtsegs_ijcv.mat's layout with one odd record (``kind`` in :data:`CRAFTED`):

    * ``records``: /value/img and /value/gt declare 10^9 records (nothing stored: a few KB);
    * ``huge_image``: record 0's image declares 3 x 60000 x 60000 (and its mask 60000 x 60000), nothing stored;
    * ``unwritten``: record 0's image declares a plausible 3 x 300 x 200 that was never written;
    * ``float01`` (valid) / ``float255``: a float64 image with values in [0, 1] / [0, 255];
    * ``complex``, ``negative`` (int16 with values down to -100), ``string`` (an array of 1-byte strings).
    """
    import h5py

    rng = np.random.default_rng(0)
    h, w = 12, 10
    mask = np.zeros((h, w), np.uint8)
    mask[3:9, 2:7] = 1
    pixels = {
        "float01": lambda: rng.random((h, w, 3)),
        "float255": lambda: rng.random((h, w, 3)) * 255.0,
        "complex": lambda: (rng.random((h, w, 3)) + 1j * rng.random((h, w, 3))).astype(np.complex64),
        "negative": lambda: rng.integers(-100, 100, (h, w, 3)).astype(np.int16),
        "string": lambda: np.full((h, w, 3), b"a", dtype="S1"),
    }
    if kind in pixels:
        return write_gtsegs(path, [pixels[kind]()], [mask], ["n01440764_1"])
    if kind not in CRAFTED:
        raise ValueError(kind)
    write_gtsegs(path, [rng.integers(0, 256, (h, w, 3), np.uint8)], [mask], ["n01440764_1"])
    with h5py.File(path, "r+") as f:
        if kind == "records":
            for name in ("img", "gt", "id"):
                first = f["value"][name][0, 0]
                del f["value"][name]
                d = f["value"].create_dataset(name, (10**9, 1), dtype=h5py.ref_dtype, chunks=(1, 1))
                d[0, 0] = first
        else:
            del f["#refs#"]["img0"], f["#refs#"]["mask0"]
            shape = (3, 60000, 60000) if kind == "huge_image" else (3, 200, 300)
            d = f["#refs#"].create_dataset("img0", shape, dtype=np.uint8, chunks=(1, 64, 64), compression="gzip")
            m = f["#refs#"].create_dataset("mask0", shape[1:], dtype=np.uint8, chunks=(64, 64), compression="gzip")
            f["value"]["img"][0, 0] = d.ref
            f["#refs#"]["gtcell0"][0, 0] = m.ref
    return path
