"""ImageNet-segmentation loader on a MATLAB v7.3 file laid out like gtsegs_ijcv.mat
(HDF5 with a 512-byte MATLAB userblock and object references; tests/realdata_fixtures.py)."""

import pickle

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from realdata_fixtures import write_gtsegs
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
    from xaibench import models

    _, desc = imagenet_descriptions()
    vit = models.create("hf_vit", num_labels=1000, image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, id2label={i: d for i, d in enumerate(desc)})
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


def test_unreadable_record_is_skipped(seg, tmp_path):
    """A record whose reference points at nothing usable is skipped with its reason."""
    p = tmp_path / "broken.mat"
    p.write_bytes(seg["path"].read_bytes())
    with h5py.File(p, "r+") as f:
        f["/value/gt"][1, 0] = f["/value/id"][1, 0]  # gt of record 1 -> a char array, not a cell of refs
    ds = ImageNetSeg(path=str(p), size=16)
    got, skipped = [], []
    for k in range(len(ds)):
        try:
            got.append(ds[k].sample_id)
        except SkipSample as e:
            skipped.append(e.sample_id)
    assert skipped == ["gtsegs-00001"] and len(got) == len(IDS) - 1
    assert ds.skipped[0][0] == "gtsegs-00001" and "record 1" in ds.skipped[0][1]


def test_dataset_pickles_and_reopens_the_file(seg):
    ds = ImageNetSeg(path=str(seg["path"]), size=16)
    first = ds[0].x
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._h5 is None
    torch.testing.assert_close(clone[0].x, first)
