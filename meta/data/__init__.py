"""Few-shot data: Omniglot, miniImageNet and the built-in glyphs set, served as episodes.

This package's public names: :func:`load_split` (every data set, :mod:`meta.data.registry`),
:class:`FewShotSplit`, the episode sampler and fixed evaluation tasks
(:mod:`meta.data.episodes`), the cache folder (:func:`cache_root`) and :class:`DatasetError`.

Imports: :mod:`meta.data` only (it imports :mod:`meta.validation`, and :mod:`repsim.io` for writes).
"""

from meta.data.base import FewShotSplit
from meta.data.cache import DatasetError, cache_root
from meta.data.episodes import (
    Episode,
    EpisodeBatch,
    EpisodeSampler,
    FixedTasks,
    TaskIndices,
    fixed_task_seed,
    fixed_tasks,
)
from meta.data.miniimagenet import MINIIMAGENET_MEAN, MINIIMAGENET_STD, load_miniimagenet
from meta.data.omniglot import load_omniglot
from meta.data.registry import DATASETS, PROTOCOLS, load_split

__all__ = [
    "DATASETS",
    "DatasetError",
    "Episode",
    "EpisodeBatch",
    "EpisodeSampler",
    "FewShotSplit",
    "FixedTasks",
    "MINIIMAGENET_MEAN",
    "MINIIMAGENET_STD",
    "PROTOCOLS",
    "TaskIndices",
    "cache_root",
    "fixed_task_seed",
    "fixed_tasks",
    "load_miniimagenet",
    "load_omniglot",
    "load_split",
]
