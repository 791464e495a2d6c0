"""Shared test settings: one intra-op thread, a fixed seed per test, the real data's location."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
OMNIGLOT_DIR = Path(os.environ.get("OMNIGLOT_DIR", REPO.parent / "shared" / "data" / "omniglot"))

torch.set_num_threads(1)
torch.set_flush_denormal(True)


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, seeded numpy generator for each test."""
    return np.random.default_rng(20200426)


@pytest.fixture
def omniglot_dir() -> Path:
    """The folder with the official Omniglot zips; the test is skipped where it is absent."""
    needed = ("images_background.zip", "images_evaluation.zip")
    if not all((OMNIGLOT_DIR / name).exists() for name in needed):
        pytest.skip(f"real Omniglot not found in {OMNIGLOT_DIR} (set OMNIGLOT_DIR)")
    return OMNIGLOT_DIR
