"""Atomic writes, safe file names and journal repair (xaibench.io)."""

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from xaibench.io import atomic_path, atomic_to_csv, atomic_to_parquet, atomic_write_text, repair_jsonl, safe_name


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]


def test_atomic_writers_write_the_same_as_pandas(tmp_path):
    df = pd.DataFrame({"a": [1.5, np.nan], "b": ["x", "y"]})
    atomic_to_csv(df, tmp_path / "t.csv", index=False)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t.csv"), df)
    atomic_to_parquet(df, tmp_path / "t.parquet", index=False)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), df)
    atomic_to_csv(df, tmp_path / "t.csv.gz", index=False)  # the suffix still selects the compression
    assert (tmp_path / "t.csv.gz").read_bytes()[:2] == b"\x1f\x8b"
    atomic_write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_write_leaves_the_previous_file(tmp_path, exc):
    target = tmp_path / "summary.csv"
    target.write_text("old,complete\n")
    with pytest.raises(exc):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path
            tmp.write_text("new,half")
            raise exc()
    assert target.read_text() == "old,complete\n"
    assert _leftovers(tmp_path) == []


def test_an_interrupted_to_csv_leaves_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "summary.csv"
    old = pd.DataFrame({"a": [1, 2]})
    atomic_to_csv(old, target, index=False)

    def half_then_ctrl_c(self, path, **kw):
        open(path, "w").write("a\n1")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        atomic_to_csv(pd.DataFrame({"a": range(100)}), target, index=False)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(pd.read_csv(target), old)
    assert _leftovers(tmp_path) == []


def test_sigint_during_repeated_writes_never_leaves_a_partial_file(tmp_path):
    """A real Ctrl-C (SIGINT) at an arbitrary moment of a loop of large writes."""
    target = tmp_path / "big.csv"
    child = textwrap.dedent(f"""
        import sys, numpy as np, pandas as pd
        from xaibench.io import atomic_to_csv
        df = pd.DataFrame(np.arange(400_000).reshape(-1, 4), columns=list("abcd"))
        atomic_to_csv(df, {str(target)!r}, index=False)
        print("ready", flush=True)
        try:
            while True:
                atomic_to_csv(df, {str(target)!r}, index=False)
        except KeyboardInterrupt:
            sys.exit(0)
    """)
    p = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # the child is now inside one of its writes (each takes ~0.1 s)
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=30) == 0
    finally:
        p.kill()
    back = pd.read_csv(target)
    assert back.shape == (100_000, 4) and back["d"].iloc[-1] == 399_999
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("s", ["abc123", "dQw4w9WgXcQ", "a-b_c.mp4", "x" * 80])
def test_safe_names_are_kept(s):
    assert safe_name(s) == s


@pytest.mark.parametrize("s", ["../../../../x/evil", "..", ".", "", "a/b", "a\\b", "/etc/passwd", "é", "a b",
                               ".hidden", "x" * 81, "nul\0byte", "C:\\x"])
def test_unsafe_names_are_changed_into_a_safe_one(s):
    n = safe_name(s)
    assert n != s and n not in (".", "..") and not n.startswith(".")
    assert 0 < len(n) <= 80 and all(c.isascii() and (c.isalnum() or c in "._-") for c in n)


def test_a_traversal_attempt_stays_inside_the_folder(tmp_path):
    folder = tmp_path / "figures"
    folder.mkdir()
    for evil in ["../../../../x/evil", "..", "../..", "/abs/path", "a/../../b"]:
        p = (folder / f"{safe_name(evil)}.png").resolve()
        assert p.parent == folder.resolve(), evil
        p.write_bytes(b"")  # and it is a usable file name
    assert len(list(folder.iterdir())) == 5


def test_safe_name_is_stable_and_collision_free():
    inputs = ["a/b", "a_b", "a b", "a:b", "a\\b", "../a", "..a", ".a", "a", "x" * 81, "x" * 82, "", ".", ".."]
    names = [safe_name(s) for s in inputs]
    assert len(set(names)) == len(inputs)
    assert names == [safe_name(s) for s in inputs]  # stable across calls (a hash, not a counter)
    assert safe_name("a/b") == "a_b_" + __import__("hashlib").sha256(b"a/b").hexdigest()[:16]
    # a valid input crafted to look like the hashed name of another input is hashed too: no collision
    assert safe_name(safe_name("a/b")) != safe_name("a/b")
    assert len(safe_name("y" * 500, max_len=30)) == 30
    with pytest.raises(ValueError):
        safe_name("x", max_len=10)


def _journal(path, records, tail=b""):
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + tail)


def test_repair_jsonl_drops_a_cut_last_line(tmp_path):
    p = tmp_path / "rows.jsonl"
    good = [{"kind": "sample", "key": [1]}, {"kind": "sample", "key": [2], "v": "é"}]
    _journal(p, good)
    size = p.stat().st_size
    assert repair_jsonl(p) == 0 and p.stat().st_size == size
    cut = b'{"kind": "sample", "key": [3], "rows": [{"va'
    _journal(p, good, cut)
    assert repair_jsonl(p) == len(cut)
    assert [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()] == good
    # a record appended now starts on its own line
    with open(p, "a") as f:
        f.write(json.dumps({"key": [3]}) + "\n")
    assert len([json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()]) == 3


def test_repair_jsonl_other_cut_forms(tmp_path):
    p = tmp_path / "rows.jsonl"
    _journal(p, [{"a": 1}], b'{"a": 2}')  # complete JSON but no newline: dropped (recomputed on resume)
    assert repair_jsonl(p) == 8 and p.read_bytes() == b'{"a": 1}\n'
    _journal(p, [{"a": 1}], b'{"a": 2\n')  # a newline but invalid JSON
    assert repair_jsonl(p) == 8 and p.read_bytes() == b'{"a": 1}\n'
    p.write_bytes('{"a": "é'.encode()[:-1])  # only line, cut inside a multi-byte character
    assert repair_jsonl(p) == 8 and p.read_bytes() == b""
    assert repair_jsonl(p) == 0
    assert repair_jsonl(tmp_path / "missing.jsonl") == 0
