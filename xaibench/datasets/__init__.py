"""Datasets by name: ``synthetic_video``, ``synthetic_image`` (embedded, generated
on the fly), and the real-data loaders ``kinetics400`` and ``imagenet_seg``."""

from ..registry import Registry

DATASETS = Registry("dataset")

from .base import Dataset, Sample  # noqa: E402,F401
from .synthetic import synthetic_image, synthetic_video  # noqa: E402

DATASETS.register("synthetic_video")(synthetic_video)
DATASETS.register("synthetic_image")(synthetic_image)

from .base import SkipSample  # noqa: E402,F401
from .imagenet_seg import imagenet_seg  # noqa: E402
from .kinetics400 import kinetics400  # noqa: E402

DATASETS.register("kinetics400")(kinetics400)
DATASETS.register("imagenet_seg")(imagenet_seg)


def create(name: str, **params) -> Dataset:
    return DATASETS.create(name, **params)


def available():
    return DATASETS.available()
