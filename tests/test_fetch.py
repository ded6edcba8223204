"""``xaibench-fetch`` end to end against a local HTTP server (127.0.0.1, a thread
running ``http.server`` with Range support) serving real-format fixtures: a
MATLAB v7.3 file laid out like ``gtsegs_ijcv.mat`` and Kinetics tar.gz archives
of PyAV-written MP4s with the annotation CSV and the path list.  Any connection
or name lookup other than 127.0.0.1 fails the test."""

import csv
import hashlib
import io
import re
import shutil
import socket
import tarfile
import threading
from collections import Counter, namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from realdata_fixtures import CLASSES, HEADER, frame_level, write_crafted_gtsegs, write_gtsegs, write_video
from xaibench.tools import fetch
from xaibench.datasets.imagenet_seg import ImageNetSeg
from xaibench.datasets.kinetics400 import Kinetics400
from xaibench.errors import UserError

LOCAL = ("127.0.0.1", "localhost", "::1")


@pytest.fixture(autouse=True)
def local_only(monkeypatch, tmp_path):
    """No real network; the data folder and the loaders' environment point at tmp."""
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self, addr):
        if isinstance(addr, tuple) and addr[0] not in LOCAL:
            raise AssertionError(f"network access attempted: {addr}")
        return real_connect(self, addr)

    def getaddrinfo(host, *a, **kw):
        if host not in LOCAL:
            raise AssertionError(f"name lookup attempted: {host}")
        return real_getaddrinfo(host, *a, **kw)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                "XAIBENCH_KINETICS_ROOT", "XAIBENCH_IMAGENET_SEG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("XAIBENCH_DATA", str(tmp_path / "data"))


# -------------------------------------------------------------- the server
class Server:
    """Serves ``files`` (URL path -> bytes) with HEAD, GET and ``Range: bytes=N-``.

    ``drop[path] = K``: the next GET of ``path`` sends K body bytes, then closes
    the connection; ``cut[path] = K``: every GET does (a server that announces
    the whole length and always sends less).  ``ignore_range``: answer every
    GET with the whole file (200), as servers without range support do.
    ``log``: (method, path, Range) of every request; ``sent``: body bytes sent
    per path."""

    def __init__(self, files):
        self.files, self.drop, self.cut, self.ignore_range = dict(files), {}, {}, False
        self.log, self.sent = [], Counter()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                owner.serve(self, head=True)

            def do_GET(self):
                owner.serve(self, head=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def serve(self, h, head):
        rng = h.headers.get("Range")
        self.log.append((h.command, h.path, rng))
        data = self.files.get(h.path)
        if data is None:
            h.send_error(404)
            return
        start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1]) if rng and not self.ignore_range else 0
        if start >= len(data) > 0:
            h.send_response(416)
            h.send_header("Content-Range", f"bytes */{len(data)}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(206 if start else 200)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        body = data[start:]
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        if head:
            return
        k = (self.drop.pop(h.path, None) or self.cut.get(h.path)) if h.command == "GET" else None
        if k is not None:
            body = body[:k]
        h.wfile.write(body)
        h.wfile.flush()
        self.sent[h.path] += len(body)
        if k is not None:
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)

    def gets(self, path):
        return [r for m, p, r in self.log if m == "GET" and p == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ------------------------------------------------------------- the fixtures
IDS = ["n01440764_18", "n01443537_2", "n01484850_7"]


@pytest.fixture(scope="module")
def gtsegs(tmp_path_factory):
    d = tmp_path_factory.mktemp("gtsegs")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (20 + 2 * i, 24, 3), np.uint8) for i in range(len(IDS))]
    masks = [(rng.random(im.shape[:2]) > 0.5).astype(np.uint8) for im in images]
    path = write_gtsegs(d / "gtsegs_ijcv.mat", images, masks, IDS)
    return {"bytes": path.read_bytes(), "images": images, "masks": masks}


def _tar_gz(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _stem(r):
    return f"{r['youtube_id']}_{r['time_start']:06d}_{r['time_end']:06d}"


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory):
    """The CVDF mirror's val split in miniature: 3 classes x 3 clips in the CSV,
    two tarballs of flat ``<stem>.mp4`` members (one under a folder, one clip
    not in the CSV, a README), one CSV clip in no tarball, and the path list
    with the real bucket's absolute URLs (the fetcher must rebase them)."""
    d = tmp_path_factory.mktemp("k400")
    rows = [{"label": c, "youtube_id": f"y{ci}{j}-{c[:3]}", "time_start": 10 * j, "time_end": 10 * j + 10,
             "split": "val", "is_cc": 0} for ci, c in enumerate(CLASSES) for j in range(3)]
    clips = {}
    for k, r in enumerate(rows):
        clips[_stem(r)] = write_video(d / f"{k}.mp4", 6, h=24, w=32).read_bytes()
    by = {(r["label"], int(r["youtube_id"][2])): _stem(r) for r in rows}
    part0 = [(f"{by['abseiling', 0]}.mp4", clips[by["abseiling", 0]]), ("README.txt", b"not a clip"),
             (f"val_part0/{by['air drumming', 0]}.mp4", clips[by["air drumming", 0]]),
             (f"{by['abseiling', 1]}.mp4", clips[by["abseiling", 1]]),
             ("notinthecsv_000000_000010.mp4", clips[by["zumba", 2]]),
             (f"{by['zumba', 0]}.mp4", clips[by["zumba", 0]])]
    part1 = [(f"{by[c, j]}.mp4", clips[by[c, j]]) for c, j in
             [("abseiling", 2), ("air drumming", 1), ("air drumming", 2), ("zumba", 1)]]  # zumba 2: nowhere
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=HEADER, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    files = {
        "/annotations/val.csv": out.getvalue().encode(),
        "/val/k400_val_path.txt": b"https://s3.amazonaws.com/kinetics/400/val/part_0.tar.gz\n"
                                  b"https://s3.amazonaws.com/kinetics/400/val/part_1.tar.gz\n",
        "/val/part_0.tar.gz": _tar_gz(part0),
        "/val/part_1.tar.gz": _tar_gz(part1),
    }
    return {"files": files, "rows": rows, "clips": clips, "missing": by["zumba", 2],
            "first": {"abseiling": by["abseiling", 0], "air drumming": by["air drumming", 0]}}


@pytest.fixture
def server(gtsegs, kinetics):
    files = dict(kinetics["files"])
    files["/gtsegs_ijcv.mat"] = gtsegs["bytes"]
    s = Server(files)
    yield s
    s.close()


def run(capsys, *argv):
    rc = fetch.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


# ------------------------------------------------------------ imagenet_seg
def test_imagenet_seg_resumes_a_dropped_transfer_and_the_loader_reads_it(server, gtsegs, tmp_path, capsys):
    size = len(gtsegs["bytes"])
    k = size // 3
    server.drop["/gtsegs_ijcv.mat"] = k
    rc, out, err = run(capsys, "imagenet_seg", "--url", server.url)
    assert rc == 0, err
    assert server.gets("/gtsegs_ijcv.mat") == [None, f"bytes={k}-"]
    assert server.sent["/gtsegs_ijcv.mat"] == size  # resumed, nothing sent twice
    target = tmp_path / "data" / "imagenet_seg" / "gtsegs_ijcv.mat"
    assert target.read_bytes() == gtsegs["bytes"]
    assert not target.with_name("gtsegs_ijcv.mat.part").exists()
    assert "dropped" in out and "3 records" in out

    ds = ImageNetSeg(size=16)  # no path, no XAIBENCH_IMAGENET_SEG: the data folder
    assert ds.path == target and len(ds) == len(IDS)
    for i in range(len(IDS)):
        img, mask, image_id = ds.read_raw(i)
        np.testing.assert_array_equal(img, gtsegs["images"][i])
        np.testing.assert_array_equal(mask, gtsegs["masks"][i])
        assert image_id == IDS[i]
    ds.close()

    rc, out, _ = run(capsys, "imagenet_seg", "--url", server.url)  # a second run verifies and stops
    assert rc == 0 and "already there" in out and len(server.gets("/gtsegs_ijcv.mat")) == 2


def test_an_interrupted_run_is_resumed_by_the_next_run(server, gtsegs, tmp_path, capsys):
    size, k = len(gtsegs["bytes"]), 1000
    part = tmp_path / "data" / "imagenet_seg" / "gtsegs_ijcv.mat.part"
    part.parent.mkdir(parents=True)
    server.drop["/gtsegs_ijcv.mat"] = k
    with pytest.raises(UserError, match="run the same command again to resume"):
        fetch.download(server.url + "gtsegs_ijcv.mat", part, retries=0, quiet=True)
    assert part.read_bytes() == gtsegs["bytes"][:k]
    rc, _, err = run(capsys, "imagenet_seg", "--url", server.url, "-q")
    assert rc == 0, err
    assert server.gets("/gtsegs_ijcv.mat") == [None, f"bytes={k}-"] and server.sent["/gtsegs_ijcv.mat"] == size
    assert (part.parent / "gtsegs_ijcv.mat").read_bytes() == gtsegs["bytes"]


def test_a_complete_part_file_and_a_server_without_ranges(server, gtsegs, tmp_path, capsys):
    folder = tmp_path / "data" / "imagenet_seg"
    folder.mkdir(parents=True)
    (folder / "gtsegs_ijcv.mat.part").write_bytes(gtsegs["bytes"])  # complete: the server answers 416
    assert run(capsys, "imagenet_seg", "--url", server.url, "-q")[0] == 0
    assert server.sent["/gtsegs_ijcv.mat"] == 0 and (folder / "gtsegs_ijcv.mat").read_bytes() == gtsegs["bytes"]

    (folder / "gtsegs_ijcv.mat").unlink()
    (folder / "gtsegs_ijcv.mat.part").write_bytes(b"junk from elsewhere")  # Range ignored: restart from 0
    server.ignore_range = True
    assert run(capsys, "imagenet_seg", "--url", server.url, "-q")[0] == 0
    assert (folder / "gtsegs_ijcv.mat").read_bytes() == gtsegs["bytes"]


@pytest.mark.parametrize("kind", ["truncated", "html", "no_gt"])
def test_a_corrupt_mat_file_is_refused_and_removed(server, gtsegs, tmp_path, capsys, kind):
    if kind == "truncated":
        server.files["/gtsegs_ijcv.mat"] = gtsegs["bytes"][: len(gtsegs["bytes"]) * 2 // 3]
    elif kind == "html":
        server.files["/gtsegs_ijcv.mat"] = b"<html><body>Moved</body></html>"
    else:
        import h5py

        p = tmp_path / "other.mat"
        with h5py.File(p, "w") as f:
            f.create_dataset("value/img", data=np.zeros((2, 1)))
        server.files["/gtsegs_ijcv.mat"] = p.read_bytes()
    rc, _, err = run(capsys, "imagenet_seg", "--url", server.url, "-q")
    assert rc == 2 and "corrupt and was deleted" in err and "gtsegs_ijcv.mat" in err
    assert "Traceback" not in err
    folder = tmp_path / "data" / "imagenet_seg"
    assert list(folder.iterdir()) == []  # neither the file nor its .part is left


def test_the_sha256_is_checked_when_one_is_published(server, gtsegs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(fetch.SHA256, "gtsegs_ijcv.mat", "0" * 64)
    rc, _, err = run(capsys, "imagenet_seg", "--url", server.url, "-q")
    assert rc == 2 and "SHA-256" in err
    assert not (tmp_path / "data" / "imagenet_seg" / "gtsegs_ijcv.mat").exists()
    monkeypatch.setitem(fetch.SHA256, "gtsegs_ijcv.mat", hashlib.sha256(gtsegs["bytes"]).hexdigest())
    assert run(capsys, "imagenet_seg", "--url", server.url, "-q")[0] == 0


@pytest.mark.parametrize("kind,match", [
    ("records", "declares 1,000,000,000 records"),
    ("huge_image", "record 0 (sample gtsegs-00000): its image declares shape 3x60000x60000"),
    ("float255", "record 0 (sample gtsegs-00000): its float image has values in"),
    ("complex", "record 0 (sample gtsegs-00000): its image has type complex64"),
    ("negative", "record 0 (sample gtsegs-00000): its int16 image has values in [-100, 99]"),
    ("string", "record 0 (sample gtsegs-00000): its image has type |S1"),
])
def test_a_crafted_mat_file_fails_cleanly_and_leaves_no_part(server, tmp_path, capsys, kind, match):
    """Issue 20.3 through the fetcher: a few-KB file declaring 10^9 records or a 10.8 GB image, and odd pixel
    types, are refused by the loader's checks before anything is allocated; the .part file is deleted."""
    import tracemalloc

    server.files["/gtsegs_ijcv.mat"] = write_crafted_gtsegs(tmp_path / "crafted.mat", kind).read_bytes()
    tracemalloc.start()
    try:
        rc, _, err = run(capsys, "imagenet_seg", "--url", server.url, "-q")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rc == 2 and "corrupt and was deleted" in err and match in err and "Traceback" not in err
    assert peak < 32 << 20, peak
    assert list((tmp_path / "data" / "imagenet_seg").iterdir()) == []  # neither the file nor its .part


def test_a_float_image_in_the_unit_range_is_accepted(server, tmp_path, capsys):
    server.files["/gtsegs_ijcv.mat"] = write_crafted_gtsegs(tmp_path / "f.mat", "float01").read_bytes()
    rc, out, err = run(capsys, "imagenet_seg", "--url", server.url)
    assert rc == 0 and "(1 records)" in out, err


# -------------------------------------------------------------- kinetics400
def test_kinetics_subset_stops_early_and_the_loader_reads_it(server, kinetics, tmp_path, capsys):
    rc, out, err = run(capsys, "kinetics400", "--url", server.url, "--classes", "2", "--per-class", "1")
    assert rc == 0, err
    assert server.gets("/val/part_1.tar.gz") == []  # part_0 had one clip of each of the 2 classes
    root = tmp_path / "data" / "kinetics400"
    clips = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.mp4"))
    assert clips == [f"val/abseiling/{kinetics['first']['abseiling']}.mp4",
                     f"val/air_drumming/{kinetics['first']['air drumming']}.mp4"]
    assert not list((root / ".fetch").rglob("*.tar.gz*"))  # the tarball was deleted after extraction
    with open(root / "annotations" / "val.csv", newline="") as fh:
        assert sorted(_stem({**r, "time_start": int(r["time_start"]), "time_end": int(r["time_end"])})
                      for r in csv.DictReader(fh)) == sorted(kinetics["first"].values())
    assert (root / "annotations" / "val_official.csv").read_bytes() == kinetics["files"]["/annotations/val.csv"]

    ds = Kinetics400(split="val", sampling="first", frames=4, size=16, resize=16)  # no root, no $XAIBENCH_KINETICS_ROOT
    assert ds.root == root and len(ds) == 2 and ds.n_absent_total == 0
    canon = [c for c in ds.class_names]
    for i in range(len(ds)):
        s = ds[i]
        assert s.x.shape == (4, 3, 16, 16)
        np.testing.assert_array_equal(frame_level(s.x), [0, 1, 2, 3])  # the clip's frames, intact
        assert s.label == canon.index(s.meta["class_name"])


def test_kinetics_whole_split(server, kinetics, tmp_path, capsys):
    rc, out, err = run(capsys, "kinetics400", "--url", server.url, "-q")
    assert rc == 0, err
    root = tmp_path / "data" / "kinetics400"
    on_disk = {p.stem: p.read_bytes() for p in (root / "val").rglob("*.mp4")}
    expected = {s for s in kinetics["clips"] if s != kinetics["missing"]}
    assert set(on_disk) == expected  # the member not in the CSV and the README are not extracted
    assert all(on_disk[s] == kinetics["clips"][s] for s in expected)
    assert (root / "annotations" / "val.csv").read_bytes() == kinetics["files"]["/annotations/val.csv"]
    assert "1 listed in the annotations were not in the 2 tarballs of the path list" in out
    assert (root / ".fetch" / "val" / "done.txt").read_text().split() == ["part_0.tar.gz", "part_1.tar.gz"]

    ds = Kinetics400(split="val", frames=4, size=16, resize=16)
    assert len(ds) == len(kinetics["rows"]) and ds.n_absent_total == 1

    n_get = len([r for r in server.log if r[0] == "GET"])
    assert run(capsys, "kinetics400", "--url", server.url, "-q")[0] == 0  # done tarballs are not fetched again
    assert [r[1] for r in server.log[n_get:] if r[0] == "GET"] == ["/val/k400_val_path.txt"]


def test_a_corrupt_tarball_is_refused_and_leaves_nothing(server, kinetics, tmp_path, capsys):
    bad = bytearray(kinetics["files"]["/val/part_0.tar.gz"])
    bad[len(bad) // 2] ^= 0xFF
    server.files["/val/part_0.tar.gz"] = bytes(bad)
    rc, _, err = run(capsys, "kinetics400", "--url", server.url, "-q")
    assert rc == 2 and "part_0.tar.gz" in err and "corrupt and was deleted" in err and "Traceback" not in err
    root = tmp_path / "data" / "kinetics400"
    assert not (root / "val").exists() and not list(root.rglob("*.mp4")) and not list(root.rglob("*.part"))


# ------------------------------------------------------------------ dry run
def test_dry_run_lists_sizes_and_downloads_nothing(server, kinetics, gtsegs, tmp_path, capsys):
    rc, out, err = run(capsys, "imagenet_seg", "--url", server.url, "--dry-run")
    assert rc == 0, err
    assert server.url + "gtsegs_ijcv.mat" in out and fetch._size(len(gtsegs["bytes"])) in out
    rc, out, err = run(capsys, "kinetics400", "--url", server.url, "--dry-run")
    assert rc == 0, err
    for path in ("/annotations/val.csv", "/val/part_0.tar.gz", "/val/part_1.tar.gz"):
        assert f"{server.url}{path[1:]}  {fetch._size(len(kinetics['files'][path]))}" in out
    assert "2 tarball(s)" in out
    assert {(m, p) for m, p, _ in server.log if m == "GET"} == {("GET", "/val/k400_val_path.txt")}
    assert not (tmp_path / "data").exists()


# ------------------------------------------------------------------- errors
def test_user_errors_exit_2_with_a_clear_message(server, tmp_path, capsys, monkeypatch):
    rc, _, err = run(capsys, "imagenet")
    assert rc == 2 and "unknown dataset 'imagenet'" in err and "imagenet_seg, kinetics400" in err

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    rc, _, err = run(capsys, "imagenet_seg", "--url", f"http://127.0.0.1:{port}/", "-q")
    assert rc == 2 and f"cannot reach 127.0.0.1:{port}" in err

    rc, _, err = run(capsys, "imagenet_seg", "--url", server.url + "nothere/", "-q")
    assert rc == 2 and "HTTP error 404" in err and "--url" in err

    (tmp_path / "afile").write_text("x")
    rc, _, err = run(capsys, "imagenet_seg", "--url", server.url, "--dest", str(tmp_path / "afile" / "d"), "-q")
    assert rc == 2 and "cannot write to" in err

    rc, _, err = run(capsys, "imagenet_seg", "--split", "test")
    assert rc == 2 and "only apply to kinetics400" in err
    rc, _, err = run(capsys, "kinetics400", "--url", server.url, "--classes", "4", "-q")
    assert rc == 2 and "--classes=4 is out of range" in err

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 100, 100))
    rc, _, err = run(capsys, "imagenet_seg", "--url", server.url, "-q")
    assert rc == 2 and "not enough disk space" in err and "100 B free" in err
    assert "Traceback" not in err


def test_loaders_without_data_name_the_fetch_command(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"XAIBENCH_IMAGENET_SEG.*xaibench-fetch imagenet_seg"):
        ImageNetSeg()
    with pytest.raises(UserError, match=r"XAIBENCH_KINETICS_ROOT.*xaibench-fetch kinetics400"):
        Kinetics400()
    monkeypatch.setenv("XAIBENCH_IMAGENET_SEG", str(tmp_path / "elsewhere.mat"))  # the variable still wins
    with pytest.raises(UserError, match="elsewhere.mat does not exist"):
        ImageNetSeg()


# ------------------------------------------------------------- completeness of lists and archives (issue 20.7)
PATH_LIST = "/val/k400_val_path.txt"


def test_a_path_list_cut_short_is_refused_with_both_sizes(server, kinetics, tmp_path, capsys):
    """The server announces the list's 112 bytes and sends 56 (one complete line): before, one tarball was
    never requested and the run exited 0 blaming the tarballs."""
    full = kinetics["files"][PATH_LIST]
    assert len(full) == 112
    server.cut[PATH_LIST] = 56
    rc, out, err = run(capsys, "kinetics400", "--url", server.url, "-q")
    assert rc == 2 and "Traceback" not in err
    assert f"{server.url}val/k400_val_path.txt is truncated: the server announced 112 bytes and sent 56" in err
    assert not [r for r in server.log if r[1].endswith(".tar.gz")]  # nothing was used
    assert not list((tmp_path / "data").rglob("*.mp4"))
    rc, _, err = run(capsys, "kinetics400", "--url", server.url, "--dry-run")
    assert rc == 2 and "announced 112 bytes and sent 56" in err


def test_a_dropped_path_list_is_fetched_again_and_every_tarball_requested(server, kinetics, tmp_path, capsys):
    server.drop[PATH_LIST] = 56  # once: the next try gets it all
    rc, out, err = run(capsys, "kinetics400", "--url", server.url, "-q")
    assert rc == 0, err
    assert len(server.gets(PATH_LIST)) == 2
    assert len(server.gets("/val/part_0.tar.gz")) == 1 and len(server.gets("/val/part_1.tar.gz")) == 1


@pytest.mark.parametrize("body,match", [
    (b"https://s3.amazonaws.com/kinetics/400/val/part_0.tar.gz\nhttps://s3.amazonaws.com/kinetics/400/val/par",
     r"is truncated: it ends in the middle of a line \('https://s3.amazonaws.com/kinetics/400/val/par'\) after 1 "
     r"complete tarball URL"),
    (b"https://s3.amazonaws.com/kinetics/400/val/part_0.tar.gz\nhttps://s3.amazonaws.com/kinetics/400/val/part_1.tar",
     r"is truncated: its last line ends in 'part_1.tar' without a line end"),
    (b"https://s3.amazonaws.com/kinetics/400/val/part_0.tar.gz\n"
     b"https://s3.amazonaws.com/kinetics/400/val/part_2.tar.gz\n",
     r"is incomplete: it lists 2 part_<i> tarballs but not part_1"),
    (b"https://s3.amazonaws.com/kinetics/400/val/part_0.tar.gz\n"
     b"https://s3.amazonaws.com/kinetics/400/val/part_0.tar.gz\n",
     r"lists part_0.tar.gz 2 times"),
    (b"<html>not found</html>\n", r"line 1 lists '<html>not found</html>', not a tar archive; it is not a Kinetics "
                                  r"path list"),
])
def test_the_line_structure_of_a_path_list_is_checked(server, tmp_path, capsys, body, match):
    """A list served whole (its Content-Length is right) whose text is cut mid-line, lost a line or repeats
    one is refused before any tarball is requested."""
    server.files[PATH_LIST] = body
    rc, _, err = run(capsys, "kinetics400", "--url", server.url, "-q")
    assert rc == 2 and re.search(match, err), err
    assert not [r for r in server.log if r[1].endswith(".tar.gz")]


def test_an_uncompressed_tarball_cut_at_a_member_boundary_is_refused(server, kinetics, tmp_path, capsys):
    """A plain .tar that lost its end (cut after a whole member: it reads without error) is refused: it has no
    end-of-archive marker.  (A .tar.gz is checked by gzip's CRC-32 and length trailer.)"""
    def tar(members):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    rows = {r["label"]: _stem(r) for r in kinetics["rows"]}  # one clip of each class (the last of each)
    members = [(f"{s}.mp4", kinetics["clips"][s]) for s in rows.values()]
    whole = tar(members)
    end_of_first = 512 + ((len(members[0][1]) + 511) // 512) * 512
    cut = whole[:end_of_first]  # header + data of the first member, nothing after
    assert tarfile.open(fileobj=io.BytesIO(cut), mode="r|").getnames() == [members[0][0]]  # reads "fine"
    server.files[PATH_LIST] = b"https://s3.amazonaws.com/kinetics/400/val/part_0.tar\n"
    server.files["/val/part_0.tar"] = cut
    rc, _, err = run(capsys, "kinetics400", "--url", server.url, "-q")
    assert rc == 2 and "part_0.tar is truncated: a tar archive ends with two empty 512-byte blocks" in err, err
    assert not list((tmp_path / "data").rglob("*.mp4"))
    server.files["/val/part_0.tar"] = whole  # the whole archive is accepted
    rc, out, err = run(capsys, "kinetics400", "--url", server.url, "-q")
    assert rc == 0, err
    assert len(list((tmp_path / "data" / "kinetics400" / "val").rglob("*.mp4"))) == 3


# ---------------------------------------------------------------------- names from the CSV (issue 20.10)
@pytest.mark.parametrize("field,value", [("label", ".."), ("label", "."), ("label", "../../up"),
                                         ("youtube_id", "../../../../x"), ("youtube_id", "a/b")])
def test_a_csv_row_cannot_place_a_file_outside_its_class_folder(server, kinetics, tmp_path, capsys, field, value):
    """A label '..' put clips one level up inside --dest (<dest>/kinetics400/<clip>.mp4); a youtube_id with
    '../' anywhere.  Such a CSV is refused and nothing is written but the data folder's own bookkeeping."""
    rows = [dict(r) for r in kinetics["rows"]]
    victim = rows[0]
    stem = _stem(victim)
    victim[field] = value
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=HEADER, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    server.files["/annotations/val.csv"] = out.getvalue().encode()
    server.files["/val/part_0.tar.gz"] = _tar_gz([(f"{_stem(victim)}.mp4".replace("/", "_"), kinetics["clips"][stem]),
                                                  (f"{stem}.mp4", kinetics["clips"][stem])])
    dest = tmp_path / "inner" / "dest"
    rc, _, err = run(capsys, "kinetics400", "--url", server.url, "--dest", str(dest), "-q")
    assert rc == 2 and "Traceback" not in err
    assert f"{field} {value!r}" in err
    assert not list(tmp_path.rglob("*.mp4"))  # not outside --dest, not one level up, not anywhere
    assert not (dest / "kinetics400" / "annotations" / "val_official.csv").exists()
