"""``xaibench-fetch``: download a real dataset into the layout its loader reads.

    xaibench-fetch imagenet_seg                              # gtsegs_ijcv.mat
    xaibench-fetch kinetics400                               # the whole validation split
    xaibench-fetch kinetics400 --classes 10 --per-class 5    # a subset: 10 classes x 5 clips
    xaibench-fetch kinetics400 --split test --per-class 1    # the STAA protocol's split
    xaibench-fetch NAME --dry-run                            # list the files and their sizes only
    xaibench-fetch NAME --dest DIR --url BASE_URL            # another data folder / mirror

Files go to the data folder (``--dest``, else ``$XAIBENCH_DATA``, else
``~/.cache/xaibench/data``), where the loaders look when neither the dataset
config nor their environment variable names a location
(:func:`xaibench.datasets.realdata.env_path`):

* ``imagenet_seg``: ``<data>/imagenet_seg/gtsegs_ijcv.mat``;
* ``kinetics400``: the loader's tree layout ``<data>/kinetics400/<split>/<label>/
  <youtube_id>_<start:06d>_<end:06d>.mp4`` with ``<data>/kinetics400/annotations/<split>.csv``.

Every file is streamed (urllib, tqdm progress bar) into ``<file>.part`` and a
dropped transfer resumes from where it stopped with an HTTP ``Range`` request,
also in a later run.  Neither source publishes checksums (docs/fetch.md), so a
download is checked against its announced size and its format (an HDF5 file
with the ``gtsegs_ijcv.mat`` layout whose every record reads; a gzip tar archive
read to its CRC-32 trailer) before it is moved where the loaders read it; a
corrupt file is deleted with a clear message.  Sources and URLs: docs/fetch.md.
"""

from __future__ import annotations

import argparse
import csv
import errno
import gzip
import hashlib
import http.client
import posixpath
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zlib
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from urllib.parse import urljoin, urlparse

from tqdm import tqdm

from ..datasets.kinetics400 import canonical_split, read_annotations
from ..datasets.realdata import DATA_ENV, FETCHED, data_home, path_component_problem
from ..errors import UserError, check_range

# Public locations (docs/fetch.md says where each was found).
BASE_URLS = {
    "imagenet_seg": "http://calvin-vision.net/bigstuff/proj-imagenet/data/",
    "kinetics400": "https://s3.amazonaws.com/kinetics/400/",
}
NAMES = tuple(BASE_URLS)
GTSEGS = "gtsegs_ijcv.mat"
GTSEGS_RECORDS = 4276  # Guillaumin et al.'s ImageNet-segmentation set
SHA256: Dict[str, str] = {}  # file name -> published SHA-256; none is published today (docs/fetch.md)
CHUNK = 1 << 20
TIMEOUT = 60  # seconds without data before a transfer counts as dropped
RETRIES = 3  # automatic resumes of a dropped transfer within one run


class CorruptDownload(UserError):
    """A downloaded file failed its checksum or format check."""


# ------------------------------------------------------------------- output
def _size(n: Optional[int]) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0


def _say(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, flush=True)


# --------------------------------------------------------------------- HTTP
def _request(url: str, *, method: str = "GET", start: int = 0):
    """Open ``url`` (a ``Range: bytes=start-`` request when ``start`` > 0); an
    HTTP 416 answer is returned (it carries the file size), other failures are
    :class:`UserError`."""
    headers = {"User-Agent": "xaibench-fetch"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        opener = urllib.request.build_opener()  # built per call: honours the current proxy variables
        return opener.open(urllib.request.Request(url, method=method, headers=headers), timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        if e.code == 416:
            return e
        raise UserError(f"{url}: HTTP error {e.code} ({e.reason}). The file is not at that address: check --url "
                        f"(a base URL, see docs/fetch.md) or try again later") from None
    except ValueError as e:
        raise UserError(f"{url!r} is not a valid URL ({e}); give --url as http(s)://host/folder/") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise UserError(f"cannot reach {urlparse(url).netloc or url}: {reason}. Check the internet connection and "
                        f"proxy settings (https_proxy), or point --url at a mirror") from None


def remote_size(url: str) -> Optional[int]:
    """Size announced by a HEAD request (``None`` when the server does not say)."""
    with _request(url, method="HEAD") as r:
        n = r.headers.get("Content-Length")
    return int(n) if n and n.isdigit() else None


def _read_small(url: str, limit: int = 10 << 20, *, retries: int = RETRIES) -> bytes:
    """The whole body of a small file (a path list), read into memory.

    Complete or an error: the bytes received must equal the announced ``Content-Length`` (a dropped or cut
    transfer is fetched again, up to ``retries`` times, then refused with both numbers); chunked answers
    end with their terminating chunk (http.client raises otherwise)."""
    for attempt in range(retries + 1):
        with _request(url) as r:
            length = r.headers.get("Content-Length")
            announced = int(length) if length and length.strip().isdigit() else None
            if announced is not None and announced > limit:
                raise UserError(f"{url} is {_size(announced)}, larger than {_size(limit)}; it is not a path list, "
                                f"check --url")
            try:
                data = r.read(limit + 1)
                cut = None
            except http.client.IncompleteRead as e:
                data, cut = e.partial, e
            except (http.client.HTTPException, OSError) as e:
                data, cut = b"", e
        if len(data) > limit:
            raise UserError(f"{url} is larger than {_size(limit)}; it is not a path list, check --url")
        if cut is None and (announced is None or len(data) == announced):
            return data
        got = (f"the server announced {announced} bytes and sent {len(data)}" if announced is not None
               else f"the transfer broke off after {len(data)} bytes ({cut})")
        if attempt < retries:
            continue
        raise UserError(f"{url} is truncated: {got} ({retries + 1} tries); nothing was used. Run the command again "
                        f"later, or point --url at another mirror")
    raise AssertionError("unreachable")


# ------------------------------------------------------------ disk and files
def writable_folder(folder: Path) -> Path:
    """Create ``folder`` and check that a file can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".xaibench-fetch-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to {folder}: {e.strerror or e}. Choose a writable folder with --dest or "
                        f"${DATA_ENV}") from None
    return folder


def check_space(folder: Path, needed: int) -> None:
    """Refuse to start when ``folder``'s file system has less than ``needed`` bytes free."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise UserError(f"not enough disk space in {folder}: {_size(needed)} needed, {_size(free)} free. Free some "
                        f"space or choose another folder with --dest or ${DATA_ENV}")


def _disk_error(path: Path, e: OSError) -> UserError:
    if e.errno == errno.ENOSPC:
        return UserError(f"the disk is full while writing {path}; free some space and run the same command again "
                         f"(the transfer resumes where it stopped)")
    return UserError(f"cannot write {path}: {e.strerror or e}; choose another folder with --dest")


def _open_write(path: Path, mode: str):
    try:
        return open(path, mode)
    except OSError as e:
        raise _disk_error(path, e) from None


def _write(fh, data: bytes, path: Path) -> None:
    try:
        fh.write(data)
    except OSError as e:
        raise _disk_error(path, e) from None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def check_sha256(path: Path, name: str) -> None:
    """Compare with the published SHA-256 of ``name`` when there is one (:data:`SHA256`)."""
    want = SHA256.get(name)
    if want and sha256(path) != want.lower():
        raise CorruptDownload(f"{name} does not match its published SHA-256 {want}")


# ----------------------------------------------------------------- download
def download(url: str, part: Path, *, retries: int = RETRIES, extract_space: bool = False,
             quiet: bool = False) -> int:
    """Stream ``url`` into ``part`` and return its size.

    An existing ``part`` is resumed with ``Range: bytes=<its size>-`` (a server
    that ignores the range answers 200 and the file restarts from 0; 416 means
    it is already complete).  A connection that drops before the announced size
    is resumed up to ``retries`` times; after that a :class:`UserError` says how
    much is kept in ``part`` for the next run.  ``extract_space``: also
    require the file's size again in free space (to extract it).
    """
    label = part.name[: -len(".part")] if part.name.endswith(".part") else part.name
    size = total = None
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        resp = _request(url, start=have)
        with resp:
            status = getattr(resp, "status", None) or resp.code
            length = resp.headers.get("Content-Length")
            if status == 416:  # nothing after `have`: complete, or the remote file changed
                m = re.fullmatch(r"bytes \*/(\d+)", resp.headers.get("Content-Range", "").strip())
                if m and int(m[1]) == have:
                    return have
                part.unlink()
                raise UserError(f"{part} ({have} bytes) does not match {url} (the server has "
                                f"{m[1] + ' bytes' if m else 'less'}); it was deleted, run the command again")
            if status == 206:
                m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", "").strip())
                if not m or int(m[1]) != have:
                    part.unlink()
                    raise UserError(f"{url}: the server answered the resume request with the range "
                                    f"{resp.headers.get('Content-Range')!r} instead of bytes {have}-; the partial "
                                    f"file was deleted, run the command again")
                total = int(m[2]) if m[2] != "*" else None
            else:  # 200: the whole file
                have = 0
                total = int(length) if length and length.isdigit() else None
            check_space(part.parent, (total - have if total else 0) + (total or 0) * extract_space)
            bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1000, desc=label,
                       disable=quiet, leave=False)
            with _open_write(part, "ab" if have else "wb") as fh, bar:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except (http.client.HTTPException, OSError):  # dropped connection, timeout
                        break
                    if not chunk:
                        break
                    _write(fh, chunk, part)
                    bar.update(len(chunk))
        size = part.stat().st_size
        if total is None or size == total:
            return size
        if size > total:
            part.unlink()
            raise UserError(f"{url}: received {size} bytes but the server announced {total}; the partial file was "
                            f"deleted, run the command again")
        if attempt < retries:
            _say(f"transfer of {label} dropped at {size} of {total} bytes; resuming ({attempt + 1}/{retries})",
                 quiet)
    raise UserError(f"the transfer of {url} was interrupted {retries + 1} times; {size} of {total} bytes are kept "
                    f"in {part}: run the same command again to resume it")


# ------------------------------------------------------------- imagenet_seg
def verify_gtsegs(path: Path, quiet: bool = False) -> int:
    """Number of records of a ``gtsegs_ijcv.mat`` file; :class:`CorruptDownload` unless it is an HDF5 file with
    the layout whose every record passes the loader's checks (:class:`~xaibench.datasets.imagenet_seg.GtsegsFile`:
    declared sizes within bounds and backed by stored bytes, before anything is read; 8-bit or [0, 1] pixels)
    and reads back (MATLAB v7.3 data is deflate-compressed, so reading every record also detects damaged
    bytes)."""
    import h5py

    from ..datasets.imagenet_seg import GtsegsFile

    try:
        with h5py.File(path, "r") as f:
            records = GtsegsFile(f, path, help="")
            for i in tqdm(range(records.n), desc="verifying", unit=" records", disable=quiet, leave=False):
                records.read(i)
    except UserError as e:
        raise CorruptDownload(f"{path.name} is not a valid gtsegs_ijcv.mat: {e}") from None
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise CorruptDownload(f"{path.name} is not a valid gtsegs_ijcv.mat (an HDF5 file with /value/img and "
                              f"/value/gt whose records all read): {type(e).__name__}: {e}") from None
    return records.n


def fetch_imagenet_seg(data: Path, base: str, *, dry_run: bool = False, quiet: bool = False) -> Path:
    url = base if base.endswith(".mat") else urljoin(base, GTSEGS)
    target = data / FETCHED["XAIBENCH_IMAGENET_SEG"][1]
    if dry_run:
        _say(f"imagenet_seg: {url}  {_size(remote_size(url))}  -> {target}"
             + ("  (already there)" if target.exists() else ""))
        return target
    if target.exists():
        try:
            n = verify_gtsegs(target, quiet)
            _say(f"{target} is already there ({n} records); nothing to do", quiet)
            return target
        except UserError as e:
            _say(f"{target} is already there but {e}; downloading it again", quiet)
    part = writable_folder(target.parent) / (target.name + ".part")
    download(url, part, quiet=quiet)
    try:
        check_sha256(part, GTSEGS)
        n = verify_gtsegs(part, quiet)
    except CorruptDownload as e:
        part.unlink(missing_ok=True)
        raise UserError(f"the download from {url} is corrupt and was deleted: {e}. Run the command again; if it "
                        f"fails again, the server is sending a broken file: try another --url") from None
    part.replace(target)
    if n != GTSEGS_RECORDS:
        _say(f"note: {target} has {n} records; the published file has {GTSEGS_RECORDS}", quiet)
    _say(f"imagenet_seg: {target} ({n} records)")
    return target


# -------------------------------------------------------------- kinetics400
def _stem(row: dict) -> str:
    return f"{row['youtube_id']}_{row['time_start']:06d}_{row['time_end']:06d}"


def _folder_name(label: str) -> str:
    """Class folder name: the label with spaces as ``_`` (the loader maps them back)."""
    return re.sub(r"[\\/\s]+", "_", label.strip())


def parse_path_list(text: str, list_url: str) -> List[str]:
    """The tarball file names of a Kinetics path list, checked for completeness.

    One absolute tarball URL per line.  Refused: a line that is not a tar archive's URL (or, for the last
    line of a list without a final newline, a cut line: "truncated"), a name listed twice, and a list of
    ``part_<i>`` archives whose numbers have a gap (a list that lost lines)."""
    lines = text.splitlines()
    ended = text.endswith(("\n", "\r"))
    names = []
    for k, raw in enumerate(lines):
        line = raw.strip()
        if not line:
            continue
        name = posixpath.basename(urlparse(line).path)
        if not re.fullmatch(r"[\w.-]+\.(tar\.gz|tgz|tar)", name):
            if k == len(lines) - 1 and not ended and names:
                raise UserError(f"{list_url} is truncated: it ends in the middle of a line ({line[-60:]!r}) after "
                                f"{len(names)} complete tarball URL(s); run the command again, or use another --url")
            raise UserError(f"{list_url} line {k + 1} lists {line[:100]!r}, not a tar archive; it is not a Kinetics "
                            f"path list, check --url")
        names.append(name)
    if not names:
        raise UserError(f"{list_url} lists no tarballs; check --url")
    dup = [n for n, c in Counter(names).items() if c > 1]
    if dup:
        raise UserError(f"{list_url} lists {dup[0]} {Counter(names)[dup[0]]} times; it is not a valid path list")
    nums = [re.fullmatch(r"part_(\d+)\.(?:tar\.gz|tgz|tar)", n) for n in names]
    if all(nums):
        have = sorted(int(m[1]) for m in nums)
        gaps = sorted(set(range(have[0], have[-1] + 1)) - set(have))
        if gaps:
            raise UserError(f"{list_url} is incomplete: it lists {len(names)} part_<i> tarballs but not part_{gaps[0]}"
                            + (f" (and {len(gaps) - 1} more)" if len(gaps) > 1 else "")
                            + "; run the command again, or use another --url")
    ext = [n[n.index(".tar") if ".tar" in n else n.rindex("."):] for n in names]
    if not ended and len(names) > 1 and ext[-1] not in ext[:-1] and len(set(ext[:-1])) == 1:
        raise UserError(f"{list_url} is truncated: its last line ends in {names[-1]!r} without a line end, where "
                        f"every other tarball ends in {ext[0]!r}; run the command again, or use another --url")
    return names


def tarball_urls(base: str, split: str) -> List[str]:
    """The split's tarballs, from the mirror's path list ``<base>/<split>/k400_<split>_path.txt``
    (complete: :func:`_read_small`, :func:`parse_path_list`).

    The list holds absolute URLs of the CVDF bucket; only their file names are
    kept and resolved against ``base``, so ``--url`` redirects the tarballs too."""
    list_url = urljoin(base, f"{split}/k400_{split}_path.txt")
    text = _read_small(list_url).decode("utf-8", errors="replace")
    return [urljoin(base, f"{split}/{name}") for name in parse_path_list(text, list_url)]


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _open_tar(path: Path):
    """``(raw stream, tarfile in stream mode)``: gzip-decompressed when the file starts with the gzip magic."""
    raw = gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")
    return raw, tarfile.open(fileobj=raw, mode="r|")


def _check_tar_end(path: Path) -> None:
    """An uncompressed tar archive must end with its end-of-archive marker (two zero blocks of 512 bytes);
    one cut at a member boundary reads without error but lacks it.  (A gzip archive is checked by its
    CRC-32 and length trailer instead.)"""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(size - 1024, 0))
        tail = fh.read()
    if size % 512 or len(tail) < 1024 or tail.strip(b"\x00"):
        raise CorruptDownload(f"{path.name.removesuffix('.part')} is truncated: a tar archive ends with two "
                              f"empty 512-byte blocks, this one ({size} bytes) does not")


def extract_clips(archive: Path, wanted: Dict[str, Tuple[str, Path]], staging: Path,
                  limit: Optional[Dict[str, int]] = None, quiet: bool = False) -> Dict[str, Path]:
    """Read a whole tar(.gz) archive and extract its ``.mp4`` members whose file
    stem is a key of ``wanted`` (stem -> (label, final path)), at most
    ``limit[label]`` per label when ``limit`` is given (in archive order).

    Members are copied into ``staging`` (never with names taken from the
    archive: the final path comes from the annotation CSV) and moved to their
    final paths only after the archive has been read to its end, where gzip
    checks its CRC-32 and length; a corrupt archive leaves nothing behind.
    Returns stem -> final path of the extracted clips.
    """
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    staged: Dict[str, Path] = {}
    taken: Counter = Counter()
    try:
        raw, tar = _open_tar(archive)
        with raw, tar:
            for m in tqdm(tar, desc=f"reading {archive.name}", unit=" files", disable=quiet, leave=False):
                name = posixpath.basename(m.name)
                stem = name[: -len(".mp4")] if name.endswith(".mp4") else None
                if not m.isfile() or stem not in wanted or stem in staged:
                    continue
                label = wanted[stem][0]
                if limit is not None and taken[label] >= limit.get(label, 0):
                    continue
                tmp = staging / f"{len(staged)}.mp4"
                src = tar.extractfile(m)
                with _open_write(tmp, "wb") as out:
                    for block in iter(lambda: src.read(CHUNK), b""):  # read errors: a damaged archive
                        _write(out, block, tmp)
                staged[stem] = tmp
                taken[label] += 1
            while raw.read(CHUNK):  # to the end: gzip verifies its CRC-32 and length trailer
                pass
        if not _is_gzip(archive):
            _check_tar_end(archive)
    except UserError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except (OSError, EOFError, zlib.error, tarfile.TarError, ValueError) as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise CorruptDownload(f"{archive.name.removesuffix('.part')} is not a readable tar archive: "
                              f"{type(e).__name__}: {e}") from None
    out = {}
    for stem, tmp in staged.items():
        final = wanted[stem][1]
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.replace(final)
        out[stem] = final
    shutil.rmtree(staging, ignore_errors=True)
    return out


def fetch_kinetics400(data: Path, base: str, *, split: str = "val", classes: Optional[int] = None,
                      per_class: Optional[int] = None, dry_run: bool = False, quiet: bool = False) -> Path:
    """The ``split`` of Kinetics-400 (all of it, or the first ``classes`` class
    names in alphabetical order with at most ``per_class`` clips each) in the
    loader's tree layout under ``<data>/kinetics400``.

    Tarballs are fetched in the order of the mirror's path list, each one
    extracted and deleted before the next; a subset stops as soon as every
    chosen class has its clips (clips already on disk count).  The official
    CSV is kept as ``annotations/<split>_official.csv``; ``annotations/<split>.csv``
    is a copy of it after a whole split, else its rows whose clip is on disk.
    """
    split = canonical_split(split)
    root = data / FETCHED["XAIBENCH_KINETICS_ROOT"][1]
    ann_url = urljoin(base, f"annotations/{split}.csv")
    tars = tarball_urls(base, split)
    subset = classes is not None or per_class is not None
    if dry_run:
        sizes = [remote_size(u) for u in [ann_url] + tars]
        for u, n in zip([ann_url] + tars, sizes):
            _say(f"  {u}  {_size(n)}")
        known = sum(n for n in sizes if n)
        _say(f"kinetics400 {split}: {len(tars)} tarball(s) and the annotation CSV, {_size(known)} in all"
             + (" (a subset stops as soon as it is complete)" if subset else "") + f" -> {root}")
        return root

    work = writable_folder(root / ".fetch" / split)
    official = root / "annotations" / f"{split}_official.csv"
    if not official.exists():
        part = writable_folder(official.parent) / (official.name + ".part")
        download(ann_url, part, quiet=quiet)
        try:
            read_annotations(part)
        except UserError as e:
            part.unlink()
            raise UserError(f"the annotation file from {ann_url} was deleted: {e}") from None
        part.replace(official)
    try:
        rows = [r for r in read_annotations(official) if not r["split"] or canonical_split(r["split"]) == split]
    except UserError as e:
        raise UserError(f"{e}. Delete {official} and run the command again") from None
    if not rows:
        raise UserError(f"{official} has no rows of split {split!r}; delete it and run the command again")
    labels = sorted({r["label"] for r in rows})
    if classes is not None:
        classes = check_range("--classes", classes, 1, len(labels), integer=True)
        labels = labels[:classes]
    if per_class is not None:
        per_class = check_range("--per-class", per_class, 1, 10**6, integer=True)
    chosen = set(labels)

    def final(r: dict) -> Path:
        # the label and youtube_id were checked by read_annotations (one folder name, a YouTube id); the folder
        # name derived from the label is checked again, so no row can place a file outside <root>/<split>/<class>
        folder = _folder_name(r["label"])
        problem = path_component_problem(folder)
        if problem:
            raise UserError(f"{official}: label {r['label']!r} gives the folder name {problem}; delete the file and "
                            f"run the command again")
        return root / split / folder / f"{_stem(r)}.mp4"

    todo = {_stem(r): (r["label"], final(r)) for r in rows if r["label"] in chosen}
    available = Counter(label for label, _ in todo.values())
    have = Counter(label for label, path in todo.values() if path.exists())
    target = {c: min(available[c], per_class) if per_class else available[c] for c in labels}
    done_file = work / "done.txt"
    done = set(done_file.read_text().split()) if done_file.exists() else set()
    read = 0
    for url in tars:
        name = posixpath.basename(urlparse(url).path)
        limit = {c: target[c] - have[c] for c in labels if target[c] > have[c]}
        if not limit:
            break
        if name in done:
            continue
        part = work / (name + ".part")
        download(url, part, quiet=quiet, extract_space=not subset)
        wanted = {s: v for s, v in todo.items() if v[0] in limit and not v[1].exists()}
        try:
            got = extract_clips(part, wanted, work / "staging", limit=limit if per_class else None, quiet=quiet)
        except CorruptDownload as e:
            part.unlink(missing_ok=True)
            raise UserError(f"the download from {url} is corrupt and was deleted: {e}. Run the command again; if "
                            f"it fails again, the server is sending a broken file: try another --url") from None
        part.unlink()
        read += 1
        have.update(todo[s][0] for s in got)
        if not subset:
            with open(done_file, "a") as fh:
                fh.write(name + "\n")
        _say(f"{name}: {len(got)} clip(s) extracted", quiet)

    csv_path = root / "annotations" / f"{split}.csv"
    if subset:
        present = [r for r in rows if final(r).exists()]
        with open(csv_path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(present)
    else:
        shutil.copyfile(official, csv_path)
    n_have, n_target = sum(have[c] for c in labels), sum(target.values())
    # clips missing after the loop: every tarball of the (complete, checked) path list was read, now or before
    _say(f"kinetics400 {split}: {n_have} clip(s) of {len(labels)} class(es) in {root / split}"
         + (f"; {n_target - n_have} listed in the annotations were not in the {len(tars)} tarballs of the path list"
            if n_have < n_target else "")
         + f"; {read} tarball(s) read in this run; annotations in {csv_path}")
    return root


# --------------------------------------------------------------------- CLI
def fetch(name: str, dest=None, url: Optional[str] = None, *, dry_run: bool = False, split: Optional[str] = None,
          classes: Optional[int] = None, per_class: Optional[int] = None, quiet: bool = False) -> Path:
    """Fetch dataset ``name`` into the data folder ``dest`` (default :func:`data_home`); returns its path."""
    if name not in BASE_URLS:
        raise UserError(f"unknown dataset {name!r}; valid names: {', '.join(NAMES)}")
    data = Path(dest).expanduser() if dest else data_home()
    base = url or BASE_URLS[name]
    if not base.endswith("/") and not base.endswith(".mat"):
        base += "/"
    if name == "imagenet_seg":
        extra = [o for o, v in (("--split", split), ("--classes", classes), ("--per-class", per_class)) if v]
        if extra:
            raise UserError(f"{', '.join(extra)} only apply to kinetics400; imagenet_seg is one file")
        return fetch_imagenet_seg(data, base, dry_run=dry_run, quiet=quiet)
    return fetch_kinetics400(data, base, split=split or "val", classes=classes, per_class=per_class,
                             dry_run=dry_run, quiet=quiet)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="xaibench-fetch", description=__doc__.split("\n\nFiles go")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Sources, sizes and the on-disk layout: docs/fetch.md")
    p.add_argument("name", metavar="NAME", help=f"dataset: {' | '.join(NAMES)}")
    p.add_argument("--dest", metavar="DIR", help=f"data folder (default ${DATA_ENV}, else ~/.cache/xaibench/data)")
    p.add_argument("--url", metavar="URL", help="base URL of a mirror (default: the public source, docs/fetch.md)")
    p.add_argument("--dry-run", action="store_true", help="list the files and their sizes; download nothing")
    p.add_argument("--split", help="kinetics400: train | val | test (default val)")
    p.add_argument("--classes", type=int, metavar="N", help="kinetics400: only the first N classes (alphabetical)")
    p.add_argument("--per-class", type=int, metavar="M", help="kinetics400: at most M clips per class")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or per-file messages")
    a = p.parse_args(argv)
    try:
        path = fetch(a.name, a.dest, a.url, dry_run=a.dry_run, split=a.split, classes=a.classes,
                     per_class=a.per_class, quiet=a.quiet)
    except UserError as e:
        print(f"xaibench-fetch: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xaibench-fetch: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    if not a.dry_run and a.dest and Path(a.dest).expanduser().resolve() != data_home().resolve():
        env = next(k for k, (n, _) in FETCHED.items() if n == a.name)
        print(f"{a.dest} is not the default data folder: set {DATA_ENV}={a.dest} (or {env}={path}) so that the "
              f"dataset {a.name} finds it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
