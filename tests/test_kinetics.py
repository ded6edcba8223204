"""Kinetics-400 loader on real-format fixtures: MP4s written with PyAV in both on-disk
layouts with an official-style annotation CSV (tests/realdata_fixtures.py)."""

import csv
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from realdata_fixtures import CLASSES, STEP, frame_level, make_kinetics, write_video
from xaibench import datasets
from xaibench.datasets.base import SkipSample
from xaibench.datasets.kinetics400 import Kinetics400
from xaibench.datasets.realdata import read_class_list, resize_short_crop, select_subset
from xaibench.errors import UserError

N_FRAMES = 12


@pytest.fixture(scope="module")
def kin(tmp_path_factory):
    return make_kinetics(tmp_path_factory.mktemp("k400"), n_frames=N_FRAMES, per_class=3)


def collect(ds):
    """Iterate as the runner does: good samples by id, SkipSample reasons by id."""
    good, skipped = {}, {}
    for i in range(len(ds)):
        try:
            s = ds[i]
            good[s.sample_id] = s
        except SkipSample as e:
            skipped[e.sample_id] = e.reason
            assert str(e).startswith(e.sample_id) and e.reason in str(e)
    return good, skipped


def test_packaged_class_list_is_the_canonical_one():
    names = read_class_list()
    assert len(names) == 400 and len(set(names)) == 400
    assert names == sorted(names)  # canonical alphabetical order (index = line - 1)
    assert names[0] == "abseiling" and names[-1] == "zumba"


def test_tree_layout_decodes_first_frames_and_skips_bad_videos(kin):
    ds = datasets.create("kinetics400", root=str(kin["tree"]), split="test", sampling="first", frames=8,
                         size=32)
    assert len(ds) == 9  # every annotated clip of the split, the absent one included
    good, skipped = collect(ds)
    assert set(skipped) == {kin["missing"], kin["corrupt"], kin["short"]}
    assert skipped[kin["missing"]].startswith("missing")
    assert skipped[kin["corrupt"]].startswith("unreadable")
    assert skipped[kin["short"]].startswith("too short: 3 decodable frame(s), 8 needed")
    assert sorted(ds.skipped) == sorted(skipped.items())
    assert len(good) == 6
    canon = read_class_list()
    for s in good.values():
        assert s.x.shape == (8, 3, 32, 32) and s.x.dtype == torch.float32
        assert 0.0 <= float(s.x.min()) and float(s.x.max()) <= 1.0
        np.testing.assert_array_equal(frame_level(s.x), np.arange(8))  # frames 0..7 in order
        assert s.label == canon.index(s.meta["class_name"])
    assert {s.label for s in good.values()} == {0, 1, 399}


def test_uniform_sampling_takes_segment_centres(kin):
    ds = Kinetics400(root=kin["tree"], split="test", frames=8, size=32, sampling="uniform")
    good, _ = collect(ds)
    expected = [int((k + 0.5) * N_FRAMES / 8) for k in range(8)]  # 0, 2, 3, 5, 6, 8, 9, 11
    assert expected == [0, 2, 3, 5, 6, 8, 9, 11]
    for s in good.values():
        np.testing.assert_array_equal(frame_level(s.x), expected)


def test_flat_layout_gives_the_same_clips(kin):
    tree = Kinetics400(root=kin["tree"], split="test", frames=8, size=32)
    flat = Kinetics400(root=kin["flat"], list_file="test_list.txt", frames=8, size=32)
    assert flat.layout == "flat" and len(flat) == len(tree)
    g_tree, _ = collect(tree)
    g_flat, s_flat = collect(flat)
    assert set(s_flat) == set(kin["flat_ids"].values())
    by_yid = {sid.rsplit("_", 2)[0]: s for sid, s in g_tree.items()}
    assert set(by_yid) == set(g_flat)
    for yid, s in g_flat.items():
        assert s.label == by_yid[yid].label
        torch.testing.assert_close(s.x, by_yid[yid].x)


def test_resize_and_centre_crop_match_torchvision():
    from torchvision.transforms.v2 import functional as TF

    g = torch.Generator().manual_seed(0)
    for shape, r, c in [((2, 3, 36, 48), 40, 32), ((2, 3, 50, 30), 37, 33), ((1, 3, 24, 24), 24, 24)]:
        x = torch.rand(shape, generator=g)
        for mode, im in (("bilinear", TF.InterpolationMode.BILINEAR), ("bicubic", TF.InterpolationMode.BICUBIC)):
            ref = TF.center_crop(TF.resize(x, r, interpolation=im, antialias=True), c).clamp(0, 1)
            torch.testing.assert_close(resize_short_crop(x, r, c, mode), ref)


def test_decoded_clip_is_resized_short_side_then_centre_cropped(tmp_path):
    """A 36x60 frame with white columns 0..19: short side 24 -> 24x40 (white columns 0..13.3), the
    centre crop starts at column 8, so columns 0..4 of the crop are white and 6.. are black."""
    import av

    p = tmp_path / "stripe.mp4"
    h, w = 36, 60
    with av.open(str(p), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt, s.options = w, h, "yuv420p", {"qscale": "1"}
        a = np.zeros((h, w, 3), np.uint8)
        a[:, :20] = 255
        for _ in range(4):
            for pk in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    (tmp_path / "l.txt").write_text("stripe.mp4 0\n")
    ds = Kinetics400(root=tmp_path, list_file="l.txt", frames=2, size=24, resize=24)
    x = ds[0].x
    assert x.shape == (2, 3, 24, 24)
    col = x[0].mean(dim=(0, 1))
    assert col[:5].min() > 0.9 and col[7:].max() < 0.05
    from torchvision.transforms.v2 import functional as TF

    src = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
    ref = TF.center_crop(TF.resize(src, 24, antialias=True), 24)[0]
    assert (x[1] - ref).abs().mean() < 0.02  # the same pipeline up to mpeg4 coding noise


def test_subset_selection_is_seeded_per_class_and_in_total(kin):
    a = Kinetics400(root=kin["tree"], split="test", n_per_class=2, seed=0, frames=8, size=32)
    b = Kinetics400(root=kin["tree"], split="test", n_per_class=2, seed=0, frames=8, size=32)
    ids = [e.sample_id for e in a.entries]
    assert ids == [e.sample_id for e in b.entries]
    per_class = {c: sum(e.class_name == c for e in a.entries) for c in CLASSES}
    assert per_class == {c: 2 for c in CLASSES}
    choices = {tuple(e.sample_id for e in Kinetics400(root=kin["tree"], split="test", n_per_class=1, seed=s).entries)
               for s in range(8)}
    assert len(choices) > 1  # the seed matters
    tot = Kinetics400(root=kin["tree"], split="test", n_samples=4, seed=3)
    assert len(tot) == 4 and [e.sample_id for e in tot.entries] == \
        [e.sample_id for e in Kinetics400(root=kin["tree"], split="test", n_samples=4, seed=3).entries]


def test_selection_does_not_depend_on_annotation_row_order(kin, tmp_path):
    rows = list(csv.DictReader(open(kin["csv"])))
    random.Random(1).shuffle(rows)
    shuffled = tmp_path / "shuffled.csv"
    with open(shuffled, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    a = Kinetics400(root=kin["tree"], split="test", n_per_class=1, seed=5)
    b = Kinetics400(root=kin["tree"], split="test", annotations=str(shuffled), n_per_class=1, seed=5)
    assert [e.sample_id for e in a.entries] == [e.sample_id for e in b.entries]


def test_select_subset_by_hand():
    keys = ["d", "a", "c", "b", "e"]
    classes = ["x", "x", "y", "y", "y"]
    # candidates ordered by (class, key): x -> a(1), d(0); y -> b(3), c(2), e(4)
    assert select_subset(keys, classes) == [1, 0, 3, 2, 4]
    rng = np.random.default_rng(7)  # one generator, classes in sorted order, kept items in candidate order
    px = sorted(rng.permutation(2)[:2])
    py = sorted(rng.permutation(3)[:2])
    assert select_subset(keys, classes, n_per_class=2, seed=7) == [[1, 0][j] for j in px] + [[3, 2, 4][j] for j in py]
    keep = sorted(np.random.default_rng(11).permutation(5)[:3])
    assert select_subset(keys, [""] * 5, n_samples=3, seed=11) == [[1, 3, 2, 0, 4][j] for j in keep]
    assert select_subset(keys, classes, n_samples=10, seed=0) == [1, 0, 3, 2, 4]  # more than available: all


def test_labels_map_to_the_model_id2label(kin):
    canon = read_class_list()
    model_labels = canon[::-1]  # a model with another label order
    model_labels[model_labels.index("air drumming")] = "Air_Drumming"  # another spelling of the same class
    ds = Kinetics400(root=kin["tree"], split="test", labels=model_labels, frames=8, size=32)
    good, _ = collect(ds)
    for s in good.values():
        assert s.label == 399 - canon.index(s.meta["class_name"])


def test_unmappable_names_are_listed(kin):
    canon = read_class_list()
    labels = [c for c in canon if c not in ("zumba", "abseiling")] + ["other1", "other2"]
    with pytest.raises(UserError) as e:
        Kinetics400(root=kin["tree"], split="test", labels=labels)
    assert "['abseiling', 'zumba']" in str(e.value) and "label_mode=none" in str(e.value)


def test_unnamed_labels_need_400_outputs_or_label_mode_none(kin):
    from xaibench import models

    small = models.create("hf_timesformer", num_labels=4, image_size=32, patch_size=8, num_frames=4, hidden_size=32,
                          num_hidden_layers=1, num_attention_heads=2)
    ds = Kinetics400(root=kin["tree"], split="test")
    with pytest.raises(UserError, match="4 unnamed classes"):
        ds.bind(small)
    ds = Kinetics400(root=kin["tree"], split="test", label_mode="none").bind(small)
    assert (ds.frames, ds.size) == (4, 32)
    good, _ = collect(ds)
    assert all(s.label is None and s.x.shape == (4, 3, 32, 32) for s in good.values())
    big = models.create("hf_timesformer", num_labels=400, image_size=32, patch_size=8, num_frames=4, hidden_size=32,
                        num_hidden_layers=1, num_attention_heads=2)
    ds = Kinetics400(root=kin["tree"], split="test").bind(big)  # LABEL_0.. LABEL_399 read as the canonical classes
    good, _ = collect(ds)
    assert {s.label for s in good.values()} == {0, 1, 399}
    logits = big.predict(torch.stack([s.x for s in good.values()]))
    assert logits.shape == (len(good), 400)


def test_wrong_csv_header_is_explained(kin, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("class,video,start,end\nabseiling,xyz,0,10\n")
    with pytest.raises(UserError) as e:
        Kinetics400(root=kin["tree"], split="test", annotations=str(bad))
    msg = str(e.value)
    assert "label,youtube_id,time_start,time_end,split" in msg and "class,video,start,end" in msg
    assert "youtube_id" in msg.split("columns")[1]


def test_root_from_environment_and_clear_errors(kin, monkeypatch, tmp_path):
    monkeypatch.delenv("XAIBENCH_KINETICS_ROOT", raising=False)
    with pytest.raises(UserError, match="XAIBENCH_KINETICS_ROOT"):
        datasets.create("kinetics400")
    monkeypatch.setenv("XAIBENCH_KINETICS_ROOT", str(kin["tree"]))
    assert len(datasets.create("kinetics400", split="test", n_samples=2)) == 2
    with pytest.raises(UserError, match="dataset.sampling=random is not allowed: valid values are uniform, first"):
        datasets.create("kinetics400", sampling="random")
    with pytest.raises(UserError, match="no Kinetics-400 annotation CSV"):
        datasets.create("kinetics400", root=str(tmp_path))
    with pytest.raises(UserError, match="dataset.n_sample is not a parameter of kinetics400. Did you mean 'n_samples'"):
        datasets.create("kinetics400", n_sample=1)


def test_the_session_data_folder_is_empty_and_temporary():
    """tests/conftest.py points $XAIBENCH_DATA at an empty temporary folder: nothing fetched on this machine
    (default ~/.cache/xaibench/data) is ever read by a test."""
    from xaibench.datasets.realdata import data_home

    home = data_home()
    assert home == Path(os.environ["XAIBENCH_DATA"]) and home.is_dir()
    assert Path(tempfile.gettempdir()) in home.parents and not any(home.iterdir())


def test_default_root_is_the_fetched_copy_in_the_data_folder(kin, tmp_path, monkeypatch):
    monkeypatch.delenv("XAIBENCH_KINETICS_ROOT", raising=False)
    data = tmp_path / "data"
    monkeypatch.setenv("XAIBENCH_DATA", str(data))
    with pytest.raises(UserError, match="xaibench-fetch kinetics400") as e:
        datasets.create("kinetics400")
    assert str(data / "kinetics400") in str(e.value)
    shutil.copytree(kin["tree"], data / "kinetics400")  # where `xaibench-fetch kinetics400` puts it
    ds = datasets.create("kinetics400", split="test", frames=8, size=32)
    assert len(ds) == 9 and ds.root == data / "kinetics400"


def test_only_present_selects_among_existing_files(kin):
    ds = Kinetics400(root=kin["tree"], split="test", only_present=True)
    assert len(ds) == 8 and ds.n_absent_total == 1
    assert kin["missing"] not in [e.sample_id for e in ds.entries]


def test_runner_style_loop_survives_every_bad_video(kin, tmp_path):
    """A truncated copy of a good video is skipped (too short or unreadable), never raised past SkipSample."""
    src = next((kin["tree"] / "test" / "zumba").glob("*.mp4"))
    data = src.read_bytes()
    (tmp_path / "trunc.mp4").write_bytes(data[: len(data) // 3])
    write_video(tmp_path / "ok.mp4", 8)
    (tmp_path / "list.txt").write_text("trunc.mp4 399\nok.mp4 399\nnothere.mp4 0\n")
    ds = Kinetics400(root=tmp_path, list_file="list.txt", frames=8, size=32)
    good, skipped = collect(ds)
    assert set(good) == {"ok"} and set(skipped) == {"trunc", "nothere"}
    assert skipped["nothere"].startswith("missing")
    assert skipped["trunc"].startswith(("unreadable", "too short"))
    np.testing.assert_array_equal(frame_level(good["ok"].x), np.arange(8))
    assert STEP * 7 < 250
