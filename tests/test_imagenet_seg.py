"""ImageNet-segmentation loader on a MATLAB v7.3 file laid out like gtsegs_ijcv.mat
(HDF5 with a 512-byte MATLAB userblock and object references; tests/realdata_fixtures.py)."""

import pickle

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from realdata_fixtures import write_crafted_gtsegs, write_gtsegs
from xaibench import datasets
from xaibench.datasets.base import SkipSample
from xaibench.datasets.imagenet_seg import ImageNetSeg
from xaibench.errors import UserError

IDS = ["n01440764_18", "n01443537_2", "n99999999_1", "n01440764_5", "n01484850_7", "n01443537_9"]


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    d = tmp_path_factory.mktemp("seg")
    rng = np.random.default_rng(0)
    images, masks = [], []
    for i in range(len(IDS)):
        h, w = 20 + 3 * i, 30 - 2 * i
        images.append(rng.integers(0, 256, (h, w, 3), np.uint8))
        m = np.zeros((h, w), np.uint8)
        m[h // 4 : h // 2 + i, w // 3 :] = 1
        masks.append(m)
    path = write_gtsegs(d / "gtsegs_ijcv.mat", images, masks, IDS)
    return {"path": path, "images": images, "masks": masks, "dir": d}


def imagenet_descriptions():
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return info, [info.index_to_description(i) for i in range(1000)]


def test_fixture_is_a_matlab_v73_file(seg):
    raw = seg["path"].read_bytes()
    assert raw.startswith(b"MATLAB 7.3 MAT-file") and raw[126:128] == b"IM"
    with h5py.File(seg["path"], "r") as f:
        assert f.userblock_size == 512
        assert f["/value/img"].dtype == h5py.ref_dtype and f["/value/img"].shape == (len(IDS), 1)
        assert f[f["/value/img"][0, 0]].shape == (3, 30, 20)  # column-major: (3, W, H)


def test_records_are_read_back_exactly(seg):
    ds = ImageNetSeg(path=str(seg["path"]), size=16)
    assert ds.total == len(IDS) and len(ds) == len(IDS)
    for i in range(len(IDS)):
        img, mask, image_id = ds.read_raw(i)
        np.testing.assert_array_equal(img, seg["images"][i])
        np.testing.assert_array_equal(mask, seg["masks"][i])
        assert image_id == IDS[i]


def test_items_are_resized_like_the_reference_protocol(seg):
    """Image: bilinear resize of the whole image to size x size (torchvision); mask: PIL nearest."""
    from torchvision.transforms.v2 import functional as TF

    S = 16
    ds = datasets.create("imagenet_seg", path=str(seg["path"]), size=S)
    for k in range(len(ds)):
        s = ds[k]
        i = s.meta["index"]
        assert s.x.shape == (1, 3, S, S) and s.mask.shape == (1, S, S) and s.mask.dtype == torch.bool
        src = torch.from_numpy(seg["images"][i]).permute(2, 0, 1)[None].float() / 255
        ref = TF.resize(src, [S, S], antialias=True).clamp(0, 1)
        torch.testing.assert_close(s.x, ref)
        pil = np.asarray(Image.fromarray(seg["masks"][i] * 255).resize((S, S), Image.NEAREST)) > 0
        np.testing.assert_array_equal(s.mask[0].numpy(), pil)
        assert s.meta["synset"] == IDS[i].split("_")[0] and s.sample_id == f"gtsegs-{i:05d}"


def test_no_imagenet_labels_gives_label_none(seg):
    ds = ImageNetSeg(path=str(seg["path"]), size=16, labels=["a", "b", "c", "d"])
    assert all(s.label is None for s in ds)
    ds = ImageNetSeg(path=str(seg["path"]), size=16)  # nothing known about the model
    assert all(s.label is None for s in ds)


def test_synsets_map_to_the_models_imagenet_labels(seg):
    info, desc = imagenet_descriptions()
    synsets = info.label_names()
    rev = desc[::-1]  # a model with another class order: found by name, not position
    ds = ImageNetSeg(path=str(seg["path"]), size=16, labels=rev)
    for s in ds:
        if s.meta["synset"] == "n99999999":  # not an ImageNet-1k class
            assert s.label is None
        else:
            assert s.label == 999 - synsets.index(s.meta["synset"])
    unnamed = ImageNetSeg(path=str(seg["path"]), size=16, labels=[f"LABEL_{i}" for i in range(1000)])
    assert [s.label for s in unnamed][:2] == [0, 1]  # canonical order for unnamed 1000-class heads
    by_synset = ImageNetSeg(path=str(seg["path"]), size=16, labels=synsets)
    assert [s.label for s in by_synset][:2] == [0, 1]
    none = ImageNetSeg(path=str(seg["path"]), size=16, labels=rev, label_mode="none")
    assert all(s.label is None for s in none)


def test_bind_adopts_the_model_size_and_labels(seg):
    from xaibench.models.family import raw_model, wrap

    _, desc = imagenet_descriptions()
    torch.manual_seed(0)
    net = raw_model("hf_vit", num_labels=1000, image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                    num_attention_heads=2)
    net.config.id2label = {i: d for i, d in enumerate(desc)}  # a model with named ImageNet labels
    vit = wrap("hf_vit", net)
    ds = ImageNetSeg(path=str(seg["path"])).bind(vit)
    s = ds[0]
    assert s.x.shape == (1, 3, 32, 32) and s.mask.shape == (1, 32, 32) and s.label == 0
    assert vit.predict(s.x[None]).shape == (1, 1000)


def test_subset_selection_is_seeded(seg):
    a = ImageNetSeg(path=str(seg["path"]), n_samples=3, seed=4)
    b = ImageNetSeg(path=str(seg["path"]), n_samples=3, seed=4)
    assert a.indices == b.indices and len(a) == 3
    assert len({tuple(ImageNetSeg(path=str(seg["path"]), n_samples=3, seed=s).indices) for s in range(8)}) > 1
    pc = ImageNetSeg(path=str(seg["path"]), n_per_class=1, seed=0)
    syn = [IDS[i].split("_")[0] for i in pc.indices]
    assert sorted(syn) == sorted(set(s.split("_")[0] for s in IDS))  # one image of each of the 4 synsets


def test_truncated_and_foreign_files_are_explained(seg, tmp_path, monkeypatch):
    raw = seg["path"].read_bytes()
    (tmp_path / "trunc.mat").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="truncated") as e:
        ImageNetSeg(path=str(tmp_path / "trunc.mat"))
    assert "gtsegs_ijcv.mat" in str(e.value) and "XAIBENCH_IMAGENET_SEG" in str(e.value)
    (tmp_path / "v5.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(600))
    with pytest.raises(UserError, match="not a MATLAB v7.3"):
        ImageNetSeg(path=str(tmp_path / "v5.mat"))
    with h5py.File(tmp_path / "other.mat", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(UserError, match="does not have the gtsegs_ijcv.mat layout"):
        ImageNetSeg(path=str(tmp_path / "other.mat"))
    with pytest.raises(UserError, match="does not exist"):
        ImageNetSeg(path=str(tmp_path / "nothere.mat"))
    monkeypatch.delenv("XAIBENCH_IMAGENET_SEG", raising=False)
    with pytest.raises(UserError, match="XAIBENCH_IMAGENET_SEG"):
        datasets.create("imagenet_seg")
    monkeypatch.setenv("XAIBENCH_IMAGENET_SEG", str(seg["path"]))
    assert len(datasets.create("imagenet_seg", n_samples=2)) == 2


def test_default_path_is_the_fetched_copy_in_the_data_folder(seg, tmp_path, monkeypatch):
    monkeypatch.delenv("XAIBENCH_IMAGENET_SEG", raising=False)
    data = tmp_path / "data"
    monkeypatch.setenv("XAIBENCH_DATA", str(data))
    with pytest.raises(UserError, match="xaibench-fetch imagenet_seg"):
        datasets.create("imagenet_seg")
    (data / "imagenet_seg").mkdir(parents=True)
    (data / "imagenet_seg" / "gtsegs_ijcv.mat").write_bytes(seg["path"].read_bytes())  # where xaibench-fetch puts it
    ds = datasets.create("imagenet_seg", size=16)
    assert len(ds) == len(IDS) and ds[0].x.shape == (1, 3, 16, 16)


def test_a_record_of_the_wrong_structure_is_refused_before_any_work(seg, tmp_path):
    """A gt reference that points at a char array instead of a cell of references is a declaration the
    reader refuses when the dataset is created, naming the file and the record."""
    p = tmp_path / "broken.mat"
    p.write_bytes(seg["path"].read_bytes())
    with h5py.File(p, "r+") as f:
        f["/value/gt"][1, 0] = f["/value/id"][1, 0]  # gt of record 1 -> a char array, not a cell of refs
    with pytest.raises(UserError, match=r"broken.mat, record 1 \(sample gtsegs-00001\): /value/gt\[1\] should "
                                        r"reference a 1x1 cell"):
        ImageNetSeg(path=str(p), size=16)
    assert len(ImageNetSeg(path=str(p), size=16, n_samples=1, seed=0)) == 1  # a subset without record 1 reads


def test_damaged_bytes_skip_the_record(tmp_path):
    """A record whose compressed bytes are damaged (its declarations are fine) is skipped with its reason."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (20, 30, 3), np.uint8) for _ in range(3)]
    masks = [np.ones((20, 30), np.uint8)] * 3
    p = write_gtsegs(tmp_path / "gtsegs_ijcv.mat", images, masks, IDS[:3], compression="gzip")
    with h5py.File(p, "r") as f:
        chunk = f["#refs#/img1"].id.get_chunk_info(0)  # byte_offset: an absolute file offset
    raw = bytearray(p.read_bytes())
    for k in range(chunk.byte_offset + 20, chunk.byte_offset + chunk.size - 8):
        raw[k] ^= 0x5A
    p.write_bytes(bytes(raw))
    ds = ImageNetSeg(path=str(p), size=16)
    got, skipped = [], []
    for k in range(len(ds)):
        try:
            got.append(ds[k].sample_id)
        except SkipSample as e:
            skipped.append(e.sample_id)
    assert skipped == ["gtsegs-00001"] and got == ["gtsegs-00000", "gtsegs-00002"]
    assert ds.skipped[0][0] == "gtsegs-00001" and "unreadable record 1 of gtsegs_ijcv.mat" in ds.skipped[0][1]


# ----------------------------------------------------------------------------- crafted files (issue 20.3)
@pytest.mark.parametrize("kind,match", [
    ("records", r"/value/img declares 1,000,000,000 records, which a file of [\d,]+ bytes cannot hold"),
    ("huge_image", r"record 0 \(sample gtsegs-00000\): its image declares shape 3x60000x60000 of uint8 "
                   r"\(10,800,000,000 bytes\), beyond the bounds"),
    ("unwritten", r"record 0 \(sample gtsegs-00000\): its image declares 180,000 bytes \(3x200x300 uint8\) but 0 "
                  r"bytes are stored"),
    ("complex", r"record 0 \(sample gtsegs-00000\): its image has type complex64 \(complex\); images must be "
                r"8-bit integer levels \(uint8\) or floats in \[0, 1\]"),
    ("string", r"record 0 \(sample gtsegs-00000\): its image has type \|S1 \(byte string\)"),
])
def test_crafted_declarations_are_refused_before_anything_is_allocated(tmp_path, kind, match):
    """A few-KB file that declares 10^9 records or a 3 x 60000 x 60000 image (10.8 GB) is refused when the
    dataset is created, with at most a few MB traced (numpy's allocations are traced by tracemalloc)."""
    import tracemalloc

    p = write_crafted_gtsegs(tmp_path / "gtsegs_ijcv.mat", kind)
    assert p.stat().st_size < 20_000
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match=match) as e:
            ImageNetSeg(path=str(p), size=16)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    assert str(p) in str(e.value) and "Traceback" not in str(e.value)


def test_pixel_rule_uint8_divided_floats_in_unit_range_used_as_they_are(tmp_path):
    """The documented rule: uint8 / 255; a float image in [0, 1] is used without rescaling (it was divided by
    255 a second time before: mean 0.002); floats outside [0, 1] and negative integers are errors naming the
    file and the record, when the record is read."""
    from torchvision.transforms.v2 import functional as TF

    p = write_crafted_gtsegs(tmp_path / "f01.mat", "float01")
    ds = ImageNetSeg(path=str(p), size=8)
    img, _, _ = ds.read_raw(0)
    assert img.dtype == np.float64 and 0 <= img.min() and img.max() <= 1
    ref = TF.resize(torch.from_numpy(img).permute(2, 0, 1)[None].float(), [8, 8], antialias=True).clamp(0, 1)
    torch.testing.assert_close(ds[0].x, ref)
    assert 0.4 < float(ds[0].x.mean()) < 0.6  # uniform [0, 1) pixels, not near-black

    for kind, match in (("float255", r"its float image has values in \[0.0\d+, 254.\d+\]; float images must be in "
                                     r"\[0, 1\] \(they are used as they are, not divided by 255\)"),
                        ("negative", r"its int16 image has values in \[-100, 99\]; integer images must hold 8-bit "
                                     r"levels 0..255")):
        p = write_crafted_gtsegs(tmp_path / f"{kind}.mat", kind)
        ds = ImageNetSeg(path=str(p), size=8)
        with pytest.raises(UserError, match=match) as e:
            ds[0]
        assert f"{p}, record 0 (sample gtsegs-00000)" in str(e.value)

    rng = np.random.default_rng(1)
    levels = rng.integers(0, 256, (9, 7, 3)).astype(np.int32)  # 8-bit levels in a wider integer type: / 255
    p = write_gtsegs(tmp_path / "int32.mat", [levels], [np.ones((9, 7), np.uint8)], ["n01440764_1"])
    x = ImageNetSeg(path=str(p), size=8)[0].x
    ref = TF.resize(torch.from_numpy(levels).permute(2, 0, 1)[None].float() / 255, [8, 8], antialias=True).clamp(0, 1)
    torch.testing.assert_close(x, ref)


# ------------------------------------------------------------------------- ids and fingerprint (issue 20.1)
def test_sample_ids_need_no_pixels_and_the_fingerprint_sees_a_replaced_file(seg, tmp_path, monkeypatch):
    from xaibench.datasets.imagenet_seg import GtsegsFile

    ds = ImageNetSeg(path=str(seg["path"]), size=16, n_samples=4, seed=1)
    expected = [ds[k].sample_id for k in range(len(ds))]

    def no_pixels(self, i):
        raise AssertionError("pixels read")

    monkeypatch.setattr(GtsegsFile, "read", no_pixels)
    assert [ds.sample_id(k) for k in range(len(ds))] == expected
    fp = ds.fingerprint()
    assert fp == ImageNetSeg(path=str(seg["path"]), size=16, n_samples=4, seed=1).fingerprint()  # stable
    assert fp["path"] == str(seg["path"].resolve()) and fp["n"] == 4 and fp["records"] == len(IDS)
    assert fp["file"][0] == seg["path"].stat().st_size
    assert ImageNetSeg(path=str(seg["path"]), size=16, n_samples=4, seed=2).fingerprint()["sample_ids_sha256"] \
        != fp["sample_ids_sha256"]  # another subset

    copy = tmp_path / "gtsegs_ijcv.mat"  # the same bytes elsewhere: another path
    copy.write_bytes(seg["path"].read_bytes())
    other = ImageNetSeg(path=str(copy), size=16, n_samples=4, seed=1).fingerprint()
    assert other["path"] != fp["path"] and other["sample_ids_sha256"] == fp["sample_ids_sha256"]
    # replaced in place by a file with other images and ids: same sample ids (indices), other image ids
    images = [np.full_like(im, 7) for im in seg["images"]]
    write_gtsegs(copy, images, seg["masks"], [f"n0{i}000000_{i}" for i in range(len(IDS))])
    replaced = ImageNetSeg(path=str(copy), size=16, n_samples=4, seed=1).fingerprint()
    assert replaced["sample_ids_sha256"] == other["sample_ids_sha256"]
    assert replaced["image_ids_sha256"] != other["image_ids_sha256"] and replaced["file"] != other["file"]


# ------------------------------------------------------------------------------ typed config (issue 20.10)
def test_typed_config_ranges_and_huge_subsets(seg):
    import tracemalloc

    from xaibench.datasets.imagenet_seg import ImageNetSegConfig

    assert datasets.DATASETS.config("imagenet_seg") is ImageNetSegConfig
    with pytest.raises(UserError, match=r"dataset.size=4 is out of range: allowed range is \[8, 1024\]"):
        datasets.create("imagenet_seg", path=str(seg["path"]), size=4)
    with pytest.raises(UserError, match="dataset.n_samples=0 is out of range"):
        datasets.create("imagenet_seg", path=str(seg["path"]), n_samples=0)
    with pytest.raises(UserError, match="dataset.label_mode=maps is not allowed: valid values are map, none"):
        datasets.create("imagenet_seg", path=str(seg["path"]), label_mode="maps")
    with pytest.raises(UserError, match="Did you mean 'n_per_class'"):
        datasets.create("imagenet_seg", path=str(seg["path"]), n_per_clas=1)
    tracemalloc.start()
    try:  # a huge subset size means "all of them" and allocates nothing by its size (it was refused before)
        ds = datasets.create("imagenet_seg", path=str(seg["path"]), n_samples=10**15, n_per_class=10**12)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(ds) == len(IDS) and peak < 64 << 20  # (timm's ImageNet class table is most of it)
    assert ds.cfg.params()["n_samples"] == 10**15


def test_dataset_pickles_and_reopens_the_file(seg):
    ds = ImageNetSeg(path=str(seg["path"]), size=16)
    first = ds[0].x
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._h5 is None
    torch.testing.assert_close(clone[0].x, first)
