"""The GPU figures, fp32 against bf16, in one short run (estimated 5-7 minutes on an H100 / H200).

Not yet run on a GPU (no device was lent when it was written): the estimate is from the model sizes.

    python bench/bench_gpu.py --out DIR [--device cuda:N] [--precisions fp32,bf16] [--budget-s 420]
    python bench/bench_gpu.py --out DIR --quick          # CPU smoke test: tiny models and sizes

Three sections, each written to its CSV in ``--out`` as soon as it is done
(so a run cut short keeps what it finished), each at every precision of
``--precisions`` (autocast for the model's passes, ``adapter.to(device,
precision)``; fp32 is full fp32, torch's default, TF32 off):

1. ``methods.csv`` -- explain time per method as a ratio to one forward pass
   (``bench_methods.bench_model``: the same definitions and targets as
   ``bench/bench_methods.py``) on random-init TimeSformer-base (8 x 224 x 224,
   400 classes), ViT-B/16 and Swin-T (224 px, 1000 classes), at explain batch
   sizes 1 and 8; SHAP / LIME with 256 evaluations (``budget=coarsen``);
2. ``e2e.csv`` -- end-to-end samples per second of runs of the harness
   (:class:`xaibench.run.runner.Runner`, options as ``make run`` but no
   report, gallery or printed summary) shaped like the two paper experiments
   on synthetic data with ground truth at the papers' sizes:

   * ``staa_paper``: random-init TimeSformer-base, 8 synthetic clips of 8 x
     224 x 224, the staa_paper methods (STAA raw and enhanced, SHAP with one feature
     per frame, LIME with one feature per patch of each frame, Grad-CAM,
     rollout, Chefer) and metrics (STAA faithfulness and monotonicity,
     faithfulness correlation, cost), with the SHAP / LIME budgets scaled down
     from 512 / 1000 to 64 / 200 evaluations to fit the time;
   * ``stdnorm_paper``: random-init ViT-B/16 and Swin-T on 32 synthetic images
     of 224 px each (``synthetic_image`` with ``size=224``; its masks play the
     ImageNet-segmentation masks), the stdnorm_paper methods and the
     segmentation metrics;

   ``samples_per_s`` = samples / the runner's wall time (model building
   included);
3. ``metrics.csv`` -- metric throughput as a fraction of batched model
   throughput (``bench_metrics.bench_overhead``: ``ratio`` = metric time /
   (its forward passes x per-input seconds of a batched forward pass)) for
   every metric, on TimeSformer-base (video) and ViT-B/16 (image) with 2
   synthetic samples at 224 px each, 2 repeats.

Every row has ``speedup_vs_fp32``: the seconds of the same measurement at
fp32 / its seconds (explain time, run wall time, metric time per sample).
``--budget-s``: a step (one section at one precision) that would start after
this many seconds is skipped and listed at the end, so the run ends in time on
a lent GPU.  Without a CUDA GPU the script refuses (exit 2) unless ``--quick``,
which runs every section end to end on the CPU with the small test models at
64 px, a few samples and tiny budgets (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import common
from common import BIG

import bench_methods  # noqa: E402
import bench_metrics  # noqa: E402
from xaibench.errors import UserError  # noqa: E402

#: sizes of the full (GPU) run and of the --quick CPU smoke test
SIZES = {
    "full": dict(method_models={k: BIG[k] for k in ("timesformer_base", "vit_b16", "swin_t")},
                 explain_batch_sizes=[1, 8], repeats=5, pert_samples=256, pert_batch=32,
                 metric_models={"video": ("timesformer_base", dict(frames=8, size=224)),
                                "image": ("vit_b16", dict(size=224))},
                 metric_samples=2, metric_repeats=2, metric_batch=32,
                 staa_clips=8, stdnorm_images=32, frame_px=224, shap_samples=64, lime_samples=200),
    "quick": dict(method_models={"hf_timesformer": ("hf_timesformer", {}), "hf_vit": ("hf_vit", {}),
                                 "hf_swin": ("hf_swin", {})},
                  explain_batch_sizes=[1, 2], repeats=1, pert_samples=64, pert_batch=16,
                  metric_models={"video": ("hf_timesformer", dict(frames=8, size=64)),
                                 "image": ("hf_vit", dict(size=64))},
                  metric_samples=1, metric_repeats=1, metric_batch=16,
                  staa_clips=2, stdnorm_images=2, frame_px=64, shap_samples=32, lime_samples=16),
}
SECTIONS = ("methods", "e2e", "metrics")


# ------------------------------------------------------------------ end to end
def model_entry(config: str, label: str, spec) -> dict:
    """An experiment's model entry: a model config with the sizes of ``spec`` (``(builder, kwargs)``)."""
    kw = {k: list(v) if isinstance(v, tuple) else v for k, v in spec[1].items()}
    return {"config": config, "label": label, **kw}


def experiments(sz: dict, quick: bool) -> dict:
    """The two paper-shaped experiments (module docstring, section 2)."""
    px = sz["frame_px"]
    if quick:
        tsf = {"config": "hf_timesformer_tiny", "label": "timesformer_small"}
        vit = {"config": "hf_vit_tiny", "label": "vit_small"}
        swin = {"config": "hf_swin_tiny", "label": "swin_small"}
    else:
        tsf = model_entry("hf_timesformer_tiny", "timesformer_base", BIG["timesformer_base"])
        vit = model_entry("hf_vit_tiny", "vit_b16", BIG["vit_b16"])
        swin = model_entry("hf_swin_tiny", "swin_t", BIG["swin_t"])
    video = {"config": "synthetic_video", "frames": 8, "size": px, "n_samples": sz["staa_clips"]}
    image = {"config": "synthetic_image", "size": px, "n_samples": sz["stdnorm_images"]}
    return {
        "staa_paper": {
            "name": "gpu_staa_paper", "benchmarks": [{"model": tsf, "dataset": video}],
            "methods": ["staa_raw", "staa",
                        {"config": "shap", "label": "shap", "cell": px, "frames_per_group": 1,
                         "n_samples": sz["shap_samples"]},
                        {"config": "lime", "label": "lime", "n_samples": sz["lime_samples"], "frames_per_group": 1,
                         "budget": "allow"},
                        "gradcam", "rollout", "chefer"],
            "metrics": ["staa_faithfulness", "staa_monotonicity", "faithfulness_correlation", "cost"]},
        "stdnorm_paper": {
            "name": "gpu_stdnorm_paper",
            "benchmarks": [{"model": vit, "dataset": image}, {"model": swin, "dataset": image}],
            "methods": ["attention", "rollout", "gradcam", "chefer", "stdnorm", "stdnorm_nostd"],
            "metrics": ["segmentation"]},
    }


def run_experiment(exp: dict, device: str, precision: str, out: Path):
    """(seconds, provenance) of one Runner run of ``exp``."""
    import xaibench.run.app  # noqa: F401  (registers the config schema the top-level config extends)
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from xaibench.run.runner import Runner

    with initialize_config_module(config_module="xaibench.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"device={device}", f"precision={precision}", "print_summary=false",
                                           "report=false", "gallery=0", "save_figures=0"])
    OmegaConf.set_struct(cfg, False)
    cfg.experiment = OmegaConf.create(exp)
    t, (summary, status) = common.timed(lambda: Runner(cfg, out).run(), device)
    if status != "complete":
        raise RuntimeError(f"{exp['name']}: run {status}")
    return t, json.loads((out / "provenance.json").read_text())


def warm_up(device):
    """One-time costs kept out of the first timed run: imports of the SHAP / LIME / scikit-learn stacks and,
    on a GPU, the CUDA context and the matmul libraries."""
    import lime.lime_base  # noqa: F401
    import shap  # noqa: F401
    import sklearn.linear_model  # noqa: F401

    a = torch.ones(64, 64, device=device)
    for dtype in (torch.float32, torch.bfloat16):
        (a.to(dtype) @ a.to(dtype)).sum().item()


def section_e2e(sz, quick, device, precision, rows):
    exps = experiments(sz, quick)
    dev = torch.device(device)
    warm_up(device)
    for shape, exp in exps.items():
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        with tempfile.TemporaryDirectory() as d:
            t, prov = run_experiment(exp, device, precision, Path(d) / "run")
        n = sum(c["dataset_info"]["n"] for c in prov["components"])
        passes = prov["passes"]
        row = dict(section="e2e", shape=shape, models=" ".join(c["model"] for c in prov["components"]),
                   precision=precision, n_samples=n, n_methods=len(exp["methods"]), wall_s=t,
                   samples_per_s=n / t,
                   forward=passes["forward"], backward=passes["backward"], cache_hits=passes["cache_hits"],
                   forward_per_s=passes["forward"] / t,
                   forward_time_s=json.dumps(prov.get("forward_time_s", {}), sort_keys=True),
                   peak_gpu_mb=torch.cuda.max_memory_allocated(dev) / 2 ** 20 if dev.type == "cuda" else None)
        rows.append(row)
        print(f"e2e {shape:14s} {precision}: {n} samples in {t:.1f} s = {n / t:.2f} samples/s "
              f"({passes['forward']} forward passes, {passes['cache_hits']} cache hits)", flush=True)


# ------------------------------------------------------------ methods, metrics
def section_methods(sz, device, precision, rows):
    for label, spec in sz["method_models"].items():
        adapter = common.build(label, spec, torch.device(device), precision)
        rows += bench_methods.bench_model(adapter, repeats=sz["repeats"], n_samples=sz["pert_samples"],
                                          budget="coarsen", batch_size=sz["pert_batch"],
                                          explain_batch_sizes=sz["explain_batch_sizes"])
        del adapter
        free(device)


def section_metrics(sz, device, precision, rows):
    for kind, (label, data_kw) in sz["metric_models"].items():
        spec = BIG.get(label) or (label, bench_metrics.ARCH[label])
        adapter = common.build(label, spec, torch.device(device), precision)
        dataset = bench_metrics.SYNTH[kind][2]
        data = bench_metrics.samples(dataset, sz["metric_samples"], adapter, **data_kw)
        bench_metrics.bench_overhead(kind, adapter, f"{label} (random init)", data, sz["metric_repeats"],
                                     sz["metric_batch"], rows)
        del adapter, data
        free(device)


#: per section: the columns that identify a measurement, and its seconds (for speedup_vs_fp32)
SPEEDUP_KEYS = {"methods": (("model", "method", "explain_batch_size"), "explain_s"),
                "e2e": (("shape",), "wall_s"), "metrics": (("kind", "metric"), "ours_s")}


def add_speedups(section, rows):
    """``speedup_vs_fp32`` = the fp32 row's seconds / this row's seconds, for the same measurement."""
    keys, col = SPEEDUP_KEYS[section]
    fp32 = {tuple(r.get(k) for k in keys): r.get(col) for r in rows if r["precision"] == "fp32"}
    for r in rows:
        base, t = fp32.get(tuple(r.get(k) for k in keys)), r.get(col)
        r["speedup_vs_fp32"] = base / t if base and t else None


def free(device):
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------ main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for methods.csv, e2e.csv, metrics.csv")
    p.add_argument("--quick", action="store_true", help="CPU smoke test with tiny models and sizes")
    p.add_argument("--device", default="cuda", help="the GPU (cuda or cuda:N; ignored with --quick)")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"any of {', '.join(SECTIONS)}")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="skip a step that would start after this many seconds (default 420)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    if args.quick:
        device = "cpu"
    else:
        if not torch.cuda.is_available():
            raise UserError(f"no CUDA GPU here (torch {torch.__version__}, cuda build "
                            f"{torch.version.cuda or 'none'}): this benchmark is for a GPU machine. Run it there, "
                            f"or pass --quick for a CPU smoke test with tiny models")
        device = str(common.resolve_device(args.device))
    precisions = [common.check_precision(v) for v in args.precisions.split(",") if v]
    sections = [s for s in args.sections.split(",") if s]
    for s in sections:
        if s not in SECTIONS:
            raise UserError(f"--sections: {s!r}; valid: {', '.join(SECTIONS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sz = SIZES["quick" if args.quick else "full"]
    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "none (cpu)"
    print(f"torch {torch.__version__}, device {device} ({gpu}), precisions {precisions}, "
          f"{'quick CPU smoke test' if args.quick else 'full sizes'}; budget {args.budget_s:.0f} s", flush=True)
    run = {"methods": section_methods, "metrics": section_metrics,
           "e2e": lambda sz_, dev, prec, rows: section_e2e(sz_, args.quick, dev, prec, rows)}
    skipped = []
    for section in sections:
        rows = []
        for prec in precisions:
            elapsed = time.perf_counter() - t_start
            if elapsed > args.budget_s:
                skipped.append(f"{section}/{prec}")
                print(f"-- skipping {section} at {prec}: {elapsed:.0f} s > budget {args.budget_s:.0f} s", flush=True)
                continue
            print(f"-- {section} at {prec} (t = {elapsed:.0f} s)", flush=True)
            step = []
            run[section](sz, device, prec, step)
            for r in step:
                r.update(gpu=gpu, quick=args.quick)
            rows += step
            add_speedups(section, rows)
            common.write_csv(rows, out / f"{section}.csv", csv_columns(section, rows))
        if rows:
            print(f"\n== {section} ==")
            print_section(section, rows)
    print(f"\ndone in {time.perf_counter() - t_start:.0f} s; CSVs in {out}"
          + (f"; skipped (over budget): {', '.join(skipped)}" if skipped else ""))


def csv_columns(section, rows):
    extra = ["speedup_vs_fp32", "gpu", "quick"]
    base = {"methods": bench_methods.COLUMNS, "metrics": bench_metrics.COLUMNS}.get(section) or list(rows[0])
    return [c for c in base if c not in extra] + extra


def print_section(section, rows):
    cols = {"methods": ["model", "precision", "method", "explain_batch_size", "explain_s", "reference_s", "ratio",
                        "target", "met", "speedup_vs_batch_1", "speedup_vs_fp32", "note"],
            "e2e": ["shape", "models", "precision", "n_samples", "wall_s", "samples_per_s", "speedup_vs_fp32",
                    "forward", "cache_hits", "peak_gpu_mb"],
            "metrics": ["kind", "model", "precision", "metric", "n_forward", "forward_s_per_input", "ratio",
                        "ratio_same_calls", "own_work_s", "ratio_own", "speedup_vs_fp32", "ok"]}[section]
    common.print_table(rows, cols)


if __name__ == "__main__":
    common.run_main(main)
