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


# ------------------------------------------------------------------- paths from data files (issue 20.10)
def _compose(overrides):
    """The run config as `xaibench <overrides>` composes it (Hydra, the packaged configs and schemas)."""
    from hydra import compose

    from xaibench.run import plan as C
    from xaibench.run.app import register_schemas

    register_schemas()
    with C.hydra_context():
        return compose(config_name="config", overrides=overrides)


def _csv(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["label", "youtube_id", "time_start", "time_end", "split"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_names_from_data_files_never_lead_out_of_the_data_root(tmp_path):
    """A CSV youtube_id '../../../../x' (a clip planted where it points) or a label '..' is refused with the
    file and line, never read; list-file entries with '..' or an absolute path too."""
    root = tmp_path / "deep" / "er" / "root"
    (root / "test" / "abseiling").mkdir(parents=True)
    outside = tmp_path / "deep" / "x_000000_000010.mp4"  # where '../../../../x' leads from <root>/test/abseiling
    write_video(outside, 8)
    assert (root / "test" / "abseiling" / "../../../../x_000000_000010.mp4").resolve() == outside.resolve()
    row = {"label": "abseiling", "youtube_id": "ok_id-1", "time_start": 0, "time_end": 10, "split": "test"}
    for bad, match in ((dict(row, youtube_id="../../../../x"), r"test.csv:3: youtube_id '../../../../x' is not a "
                                                               r"YouTube id"),
                       (dict(row, label=".."), r"test.csv:3: label '..' is not a file or folder name"),
                       (dict(row, label="a/../../b"), r"test.csv:3: label 'a/../../b' contains a path separator")):
        (root / "annotations").mkdir(exist_ok=True)
        _csv(root / "annotations" / "test.csv", [row, bad])
        with pytest.raises(UserError, match=match):
            Kinetics400(root=root, split="test", frames=8, size=32)

    write_video(tmp_path / "videos" / "good.mp4", 8)
    for entry in ("../deep/x_000000_000010.mp4", str(outside), "sub/../../x.mp4"):
        (tmp_path / "videos" / "list.txt").write_text(f"good.mp4 0\n{entry} 0\n")
        with pytest.raises(UserError, match=r"list.txt:2: .*(absolute path|leads out of its folder)"):
            Kinetics400(list_file=tmp_path / "videos" / "list.txt", frames=8, size=32)
    (tmp_path / "videos" / "list.txt").write_text("good.mp4 0\n")  # an ordinary list still reads
    assert len(Kinetics400(list_file=tmp_path / "videos" / "list.txt", frames=8, size=32)) == 1


# ----------------------------------------------------------------- flat layout without root (issue 19.9)
def test_flat_layout_needs_no_root(kin, tmp_path, monkeypatch):
    """docs/real_data.md's flat layout: list_file + video_dir, no dataset.root, no $XAIBENCH_KINETICS_ROOT, an
    empty data folder; relative paths are read from the current folder."""
    monkeypatch.delenv("XAIBENCH_KINETICS_ROOT", raising=False)
    monkeypatch.setenv("XAIBENCH_DATA", str(tmp_path / "empty"))
    ref = Kinetics400(root=kin["flat"], list_file="test_list.txt", frames=8, size=32)
    ds = datasets.create("kinetics400", list_file=str(kin["list"]), video_dir=str(kin["flat"]), frames=8, size=32)
    assert ds.root is None and ds.layout == "flat" and len(ds) == len(ref) == 9
    assert [e.sample_id for e in ds.entries] == [e.sample_id for e in ref.entries]
    good, skipped = collect(ds)
    assert set(skipped) == set(kin["flat_ids"].values()) and len(good) == 6
    sid = sorted(good)[0]
    torch.testing.assert_close(good[sid].x, ref[[e.sample_id for e in ref.entries].index(sid)].x)
    # video_dir defaults to the list file's folder; relative paths from the current folder
    assert len(datasets.create("kinetics400", list_file=str(kin["list"]))) == 9
    monkeypatch.chdir(kin["flat"].parent)
    ds = datasets.create("kinetics400", list_file="flat/test_list.txt", video_dir="flat")
    assert ds.video_dir == Path("flat") and len(collect(ds)[0]) == 6
    with pytest.raises(UserError, match=r"list file nothere.txt does not exist \(relative paths are read from the "
                                        r"current folder .* \(no dataset.root"):
        datasets.create("kinetics400", list_file="nothere.txt")


def test_the_documented_staa_paper_flat_command_builds_its_dataset(kin, tmp_path, monkeypatch):
    """`xaibench experiment=staa_paper dataset.list_file=... dataset.video_dir=...` (the comment in
    conf/experiment/staa_paper.yaml) builds the dataset with no root set anywhere (it needed dataset.root)."""
    from xaibench.run import plan as C

    monkeypatch.delenv("XAIBENCH_KINETICS_ROOT", raising=False)
    monkeypatch.setenv("XAIBENCH_DATA", str(tmp_path / "empty"))
    cfg = _compose(["experiment=staa_paper", f"dataset.list_file={kin['list']}", f"dataset.video_dir={kin['flat']}"])
    p = C.plan(cfg, {})
    (_, data_c), = p.benchmarks
    ds = data_c.create()
    assert ds.layout == "flat" and ds.root is None and ds.sampling == "first" and len(ds) == 3  # 1 per class


def test_settings_that_cannot_fit_fail_when_the_config_is_checked(kin):
    cases = [
        (dict(layout="flat"), "dataset.layout=flat needs dataset.list_file"),
        (dict(layout="tree", list_file="x.txt"),
         "dataset.list_file belongs to the flat layout but dataset.layout=tree"),
        (dict(video_dir="/videos"), "dataset.video_dir belongs to the flat layout"),
        (dict(list_file="x.txt", annotations="a.csv"), "dataset.annotations belongs to the tree layout"),
        (dict(size=64, resize=32), r"dataset.resize=32 is smaller than dataset.size=64"),
        (dict(frames=0), r"dataset.frames=0 is out of range: allowed range is \[1, 256\]"),
        (dict(split="valdiation"), "dataset.split=valdiation is not allowed: valid splits are train, val"),
        (dict(n_per_class=0), r"dataset.n_per_class=0 is out of range"),
        (dict(interpolation="nearest"), "valid values are bilinear, bicubic"),
    ]
    for values, match in cases:
        with pytest.raises(UserError, match=match):
            datasets.DATASETS.build_config("kinetics400", values)  # before any file is touched
    # an explicit resize is kept by bind (it was replaced by the model's), and must hold the model's crop
    from xaibench import models

    tsf = models.create("hf_timesformer", num_labels=400, image_size=32, patch_size=8, num_frames=4, hidden_size=32,
                        num_hidden_layers=1, num_attention_heads=2)
    assert Kinetics400(root=kin["tree"], split="test", resize=40).bind(tsf).resize == 40
    assert Kinetics400(root=kin["tree"], split="test").bind(tsf).resize == 32
    with pytest.raises(UserError, match=r"dataset.resize=24 is smaller than the 32-px input"):
        Kinetics400(root=kin["tree"], split="test", resize=24).bind(tsf)


# ------------------------------------------------------------------------------------ typed configs
def test_yaml_configs_extend_the_schema_with_only_their_differences():
    import yaml

    from xaibench.config import build
    from xaibench.datasets.imagenet_seg import ImageNetSegConfig
    from xaibench.datasets.kinetics400 import Kinetics400Config
    from xaibench.run import plan as C

    conf = Path(__file__).parents[1] / "conf" / "dataset"
    for name, cls in (("kinetics400", Kinetics400Config), ("kinetics400_staa", Kinetics400Config),
                      ("imagenet_seg", ImageNetSegConfig)):
        raw = yaml.safe_load((conf / f"{name}.yaml").read_text())
        assert raw.pop("defaults") == [f"/schema/dataset/{cls.registry_name}@_here_", "_self_"]
        defaults = build(cls, {}).values()
        assert all(raw[k] != defaults[k] for k in raw), name  # only what differs from the dataclass
        composed = C.load("dataset", name)
        assert composed.pop("name") == cls.registry_name
        assert composed == build(cls, raw).values()
    staa = C.load("dataset", "kinetics400_staa")
    assert (staa["sampling"], staa["frames"], staa["resize"], staa["n_per_class"], staa["split"]) == \
        ("first", 8, 224, 1, "val")


def test_null_on_the_command_line_unsets_a_parameter_of_a_selected_dataset(kin, monkeypatch):
    from xaibench.run import plan as C

    monkeypatch.setenv("XAIBENCH_KINETICS_ROOT", str(kin["tree"]))
    cfg = _compose(["dataset=kinetics400_staa", "dataset.n_per_class=null", "dataset.split=test",
                    "model=hf_timesformer_tiny"])
    p = C.plan(cfg, {"dataset": "kinetics400_staa", "model": "hf_timesformer_tiny"})
    (_, data_c), = p.benchmarks
    assert data_c.params["n_per_class"] is None and len(data_c.create()) == 9  # every clip, not 1 per class


def test_null_on_the_command_line_unsets_a_parameter_of_the_experiments_dataset(kin, monkeypatch):
    from xaibench.run import plan as C

    p = C.plan(_compose(["experiment=staa_paper", "dataset.n_per_class=null"]), {})
    (_, data_c), = p.benchmarks
    assert data_c.params["n_per_class"] is None


def test_huge_subset_sizes_allocate_nothing(kin):
    """n_samples / n_per_class cap a choice among the annotated clips: any size is accepted (they were refused
    above 10^8 / 10^6) and nothing is allocated by it."""
    import tracemalloc

    tracemalloc.start()
    try:
        ds = Kinetics400(root=kin["tree"], split="test", n_samples=10**15, n_per_class=10**12)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(ds) == 9 and peak < 16 << 20


# ---------------------------------------------------------------------------- fingerprint (issue 20.1)
def test_sample_ids_without_decoding_and_a_fingerprint_that_sees_the_data_change(kin, tmp_path, monkeypatch):
    """The runner keys work by sample_id (no decoding) and refuses a resume whose fingerprint differs: a
    changed $XAIBENCH_KINETICS_ROOT or a replaced clip must change it; nothing else may."""
    monkeypatch.delenv("XAIBENCH_KINETICS_ROOT", raising=False)
    root = tmp_path / "a"
    shutil.copytree(kin["tree"], root)
    monkeypatch.setenv("XAIBENCH_KINETICS_ROOT", str(root))
    ds = datasets.create("kinetics400", split="test", n_per_class=2, frames=8, size=32)
    decoded = []
    monkeypatch.setattr(Kinetics400, "decode", lambda self, p, sid: decoded.append(sid))
    ids = [ds.sample_id(i) for i in range(len(ds))]
    assert ids == [e.sample_id for e in ds.entries] and len(set(ids)) == 6
    fp = ds.fingerprint()
    assert not decoded
    assert fp == datasets.create("kinetics400", split="test", n_per_class=2).fingerprint()
    assert fp["root"] == str(root.resolve()) and fp["n"] == 6
    assert fp["index_file"]["path"] == str((root / "annotations" / "test.csv").resolve())

    other = tmp_path / "b"  # the same data at another root: the same ids and sizes, another root
    shutil.copytree(root, other)
    monkeypatch.setenv("XAIBENCH_KINETICS_ROOT", str(other))
    moved = datasets.create("kinetics400", split="test", n_per_class=2).fingerprint()
    assert moved["root"] != fp["root"]
    assert (moved["sample_ids_sha256"], moved["files_sha256"]) == (fp["sample_ids_sha256"], fp["files_sha256"])

    monkeypatch.setenv("XAIBENCH_KINETICS_ROOT", str(root))
    present = next(e.path for e in ds.entries if e.path is not None and e.sample_id != kin["corrupt"])
    write_video(present, 12, step=7)  # the clip replaced by another one
    changed = datasets.create("kinetics400", split="test", n_per_class=2).fingerprint()
    assert changed["files_sha256"] != fp["files_sha256"] and changed["sample_ids_sha256"] == fp["sample_ids_sha256"]
    data = present.read_bytes()
    present.write_bytes(data[::-1])  # same size, new bytes: only the time shows it
    os.utime(present, ns=(1, 1))
    touched = datasets.create("kinetics400", split="test", n_per_class=2).fingerprint()
    assert touched["files_sha256"] == changed["files_sha256"] and touched["mtimes_sha256"] != changed["mtimes_sha256"]
    present.unlink()
    assert datasets.create("kinetics400", split="test", n_per_class=2).fingerprint()["n_present"] == \
        changed["n_present"] - 1


# ------------------------------------------------------------------------ bounded decoding (issue 20.3)
def test_uniform_sampling_holds_t_frames_and_needs_no_declared_count(tmp_path, monkeypatch):
    """A Matroska clip declares no frame count: the loader counts, then decodes again keeping T frames; an MP4
    declares it and is decoded once.  Either way exactly T frames are converted (memory: T frames, not the clip),
    and the frames are the segment centres."""
    import importlib

    K = importlib.import_module("xaibench.datasets.kinetics400")  # (the package exports a function of that name)

    write_video(tmp_path / "v" / "a.mkv", 12)
    write_video(tmp_path / "v" / "b.mp4", 12)
    (tmp_path / "v" / "l.txt").write_text("a.mkv 0\nb.mp4 0\n")
    ds = Kinetics400(list_file=tmp_path / "v" / "l.txt", frames=8, size=32, sampling="uniform")
    calls = []
    real = K.resize_short_crop
    monkeypatch.setattr(K, "resize_short_crop", lambda x, *a, **kw: calls.append(x.shape[0]) or real(x, *a, **kw))
    for i, name in enumerate(("a", "b")):
        calls.clear()
        s = ds[i]
        np.testing.assert_array_equal(frame_level(s.x), [0, 2, 3, 5, 6, 8, 9, 11])
        assert calls == [1] * 8, name  # one frame at a time, 8 in all
    monkeypatch.setattr(K, "MAX_FRAME_PIXELS", 48 * 36 - 1)  # a stream declaring larger frames: never decoded
    with pytest.raises(SkipSample, match="declares 48x36 frames, larger than the 1,727 pixels"):
        ds[1]
