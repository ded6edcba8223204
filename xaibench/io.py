"""Safe file writing for run folders.

* :func:`atomic_path` / :func:`atomic_write_text` / :func:`atomic_to_csv` /
  :func:`atomic_to_parquet`: write to a temporary file in the target's folder
  and ``os.replace`` it into place only when the write finished.  ``os.replace``
  is atomic on POSIX and Windows when both paths are on one file system (same
  folder), so a reader, a crash or a Ctrl-C sees either the previous file or the
  complete new one, never a truncated or empty file.
* :func:`safe_name`: a file-name-safe, collision-free version of a string taken
  from data (a Kinetics ``youtube_id``, a sample id, a method label).
* :func:`repair_jsonl`: drop the last line of a JSON-lines journal when a kill cut
  it, so that the next appended record starts on a line of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

import pandas as pd

PathLike = Union[str, os.PathLike]


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``.

    The temporary name is ``.tmp-<random>-<name>`` in the same folder (same file
    system, so ``os.replace`` is atomic; the original name is kept at the end so
    that libraries that infer the format or compression from the suffix, such as
    pandas' ``compression="infer"``, still do).  The caller creates the file.  If
    the block raises anything, ``KeyboardInterrupt`` included, the temporary file
    is removed and ``path`` is left as it was.  Before the move the data are
    flushed to disk (``fsync``) so that a power loss cannot leave an empty file
    under the final name either.
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{secrets.token_hex(6)}-{path.name}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """``Path(path).write_text(text)``, atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def atomic_to_csv(df: pd.DataFrame, path: PathLike, **kw) -> None:
    """``df.to_csv(path, **kw)``, atomically; ``kw`` as in pandas (so pass ``index=False`` to drop the index)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kw)


def atomic_to_parquet(df: pd.DataFrame, path: PathLike, **kw) -> None:
    """``df.to_parquet(path, **kw)``, atomically; ``kw`` as in pandas."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, **kw)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_HASH_LEN = 16  # hex digits of SHA-256: 64 bits
_LOOKS_HASHED = re.compile(rf"_[0-9a-f]{{{_HASH_LEN}}}$")


def safe_name(s, max_len: int = 80) -> str:
    """A file name made from ``s`` that is safe to join to a folder.

    The result has only ``[A-Za-z0-9._-]``, does not start with a dot (so it is
    never ``.``, ``..`` or hidden) and has at most ``max_len`` characters; it
    therefore has no path separator and ``folder / safe_name(s)`` stays inside
    ``folder``.

    ``s`` is returned unchanged when it already is such a name (and does not end
    like a hashed name, see below).  Otherwise every other character becomes
    ``_``, leading dots are dropped, the text is cut to leave room, and
    ``_`` + the first 16 hex digits of SHA-256 of the original (UTF-8) are
    appended.  Unchanged names never end in ``_`` + 16 hex digits while changed
    names always do, so two different inputs give the same name only if their
    64-bit hashes collide (and their cleaned prefixes agree).

    Not handled: names that differ only in case collide on case-insensitive file
    systems (macOS, Windows), and Windows' reserved device names (``CON``...).
    """
    if max_len < _HASH_LEN + 1:
        raise ValueError(f"max_len must be at least {_HASH_LEN + 1}, got {max_len}")
    s = str(s)
    if s and not _UNSAFE.search(s) and not s.startswith(".") and len(s) <= max_len and not _LOOKS_HASHED.search(s):
        return s
    digest = hashlib.sha256(s.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]
    stem = _UNSAFE.sub("_", s).lstrip(".")[: max_len - _HASH_LEN - 1]
    return f"{stem}_{digest}" if stem else digest


def repair_jsonl(path: PathLike) -> int:
    """Truncate a JSON-lines file after its last complete line; return the number of bytes dropped.

    The last line counts as cut (a kill during the write) when it does not end
    with a newline or is not valid JSON; the file is then truncated to the end of
    the line before it.  Only the last line is looked at: earlier lines were
    complete when the next one was appended.  A missing or empty file gives 0.
    A record without its newline is dropped even if it parses: its sample is
    simply recomputed when the run resumes.
    """
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data:
        return 0
    body = data[:-1] if data.endswith(b"\n") else data
    start = body.rfind(b"\n") + 1  # start of the last line (0 if the file has one line)
    if data.endswith(b"\n"):
        try:
            json.loads(body[start:])
            return 0
        except ValueError:  # includes UnicodeDecodeError (a multi-byte character cut in half)
            pass
    with open(path, "r+b") as f:
        f.truncate(start)
    return len(data) - start
