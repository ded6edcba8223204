"""Batch sizes and memory bounds.

``batch_size=auto`` (model batches of perturbed inputs) and ``explain_batch_size=auto`` (samples explained and
evaluated together) are chosen here, deterministically for a model and device, and every size -- automatic or
given -- is bounded so that a run never asks for more than a stated share of the free memory:

* **CPU**, model batches: about :data:`CPU_TOKENS_PER_BATCH` tokens per batch (a model's tokens per input are
  ``prefix + frames * h * w`` of its first stage), a power of two in [1, 64].  On 2 cores small models run
  fastest at moderate batches (larger ones leave the caches); the figure comes from ``bench/bench_overhead.py``.
* **GPU**, model batches: one probe pass measures the activation memory of one input; the batch is the power of
  two that keeps :data:`GPU_SHARE` of the free device memory, at most 1024.
* **Samples together** (``explain_batch_size``): 8 on a CPU, 32 on a GPU, and never more than what fits in
  :data:`HOST_SHARE` of the available host memory (the samples' pixels and masks, and per method arm the
  explanations and the metrics' working copies: :func:`held_bytes`).
* **Traces**: attention records grow with the square of the token count; a batch whose traced records would
  exceed :data:`HOST_SHARE` (CPU) or :data:`GPU_SHARE` (GPU) of the free memory is traced in chunks, and a
  trace's records are freed with it (nothing of a batch outlives the batch).

Elsewhere, by the same rule: perturbation masks are drawn 4096 at a time and composed one model batch within
``perturb.INPUT_SHARE`` of the free memory, whatever ``nr_runs`` / ``n_steps``; the output cache stops at
``perturb.CACHE_SHARE`` (:func:`xaibench.perturb.cache_rows`); SHAP / LIME coalitions that would take more
than half of the available memory are refused at plan time
(:meth:`xaibench.methods._perturbation.CoalitionMethod.check_memory`).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

CPU_TOKENS_PER_BATCH = 4096
GPU_SHARE = 0.5
HOST_SHARE = 0.25


def available_host_bytes() -> int:
    """``MemAvailable`` of /proc/meminfo (Linux), else 8 GiB as a conservative guess."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2 ** 30


def free_device_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return available_host_bytes()


def tokens_per_input(adapter) -> int:
    L = adapter.layout
    return int(L.n_tokens(0)) if hasattr(L, "n_tokens") else 256


def _pow2_floor(x: float, lo: int = 1, hi: int = 1024) -> int:
    x = max(lo, min(hi, x))
    return int(2 ** math.floor(math.log2(x)))


def model_batch(adapter, requested, device: torch.device) -> int:
    """The model batch size for perturbed inputs (``requested``: an int or ``"auto"``)."""
    if requested != "auto":
        return int(requested)
    if device.type == "cuda":
        return _gpu_batch(adapter, device)
    return _pow2_floor(CPU_TOKENS_PER_BATCH / max(1, tokens_per_input(adapter)), 1, 64)


def _gpu_batch(adapter, device) -> int:  # pragma: no cover - needs a GPU
    x = torch.zeros(2, *adapter.input_shape, device=device)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with adapter.counting() as n:
        adapter.predict(x, batch_size=2)
    for k in n:
        adapter.passes[k] -= n[k]
    per_input = max(1, (torch.cuda.max_memory_allocated(device) - base) // 2)
    return _pow2_floor(GPU_SHARE * free_device_bytes(device) / per_input, 1, 1024)


def sample_bytes(adapter) -> int:
    """Host bytes of one sample: float32 pixels plus a boolean mask."""
    T, C, H, W = adapter.input_shape
    return T * C * H * W * 4 + T * H * W


#: what one sample of a batch holds, in units of :func:`sample_bytes`: the sample, its stacked copy and the
#: model's view of it (``SAMPLE_COPIES``), and per method arm its explanation and the metrics' working copies
#: (baseline, feature ids, composed rows: ``ARM_COPIES``).  Measured on the 64x64 synthetic ViT (53 KB a
#: sample): about 2.7 units with one arm and localisation, about 30 with six arms and deletion_auc.
SAMPLE_COPIES = 4
ARM_COPIES = 6


def held_bytes(adapter, arms: int = 1) -> int:
    """Host bytes one sample of a batch holds while it is explained and evaluated by ``arms`` method arms."""
    return (SAMPLE_COPIES + ARM_COPIES * max(1, int(arms))) * sample_bytes(adapter)


def explain_batch(adapter, requested, device: torch.device, n_samples: int, arms: int = 1) -> tuple:
    """(samples explained together, note or ''): ``requested`` (int or ``"auto"``) bounded by host memory --
    at most :data:`HOST_SHARE` of the available memory at :func:`held_bytes` a sample."""
    want = (32 if device.type == "cuda" else 8) if requested == "auto" else int(requested)
    bound = max(1, int(HOST_SHARE * available_host_bytes() // max(1, held_bytes(adapter, arms))))
    got = max(1, min(want, bound, max(1, n_samples)))
    note = ""
    if got < min(want, max(1, n_samples)):
        note = (f"explain_batch_size={requested} would hold more than {HOST_SHARE:.0%} of the free memory; "
                f"using {got}")
    return got, note


def trace_chunk(adapter, device: torch.device, grads: bool = True) -> int:
    """How many samples one traced pass may hold: the attention records of every layer (and their gradients)
    within the memory share."""
    n = tokens_per_input(adapter)
    layers = max(1, getattr(adapter, "num_layers", 12))
    heads = 12
    per_sample = layers * heads * n * n * 4 * (3 if grads else 1) + sample_bytes(adapter) * 4
    share = GPU_SHARE if device.type == "cuda" else HOST_SHARE
    return max(1, int(share * free_device_bytes(device) // per_sample))


def describe(adapter, device, batch: int, explain: int, chunk: int) -> str:
    return (f"{adapter.name}: model batches of {batch}, {explain} samples explained together"
            + (f" (traced {chunk} at a time)" if chunk < explain else "") + f" on {device}")


def clamp_requested(value: Optional[int]) -> Optional[int]:
    return None if value is None else max(1, int(value))
