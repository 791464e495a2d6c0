"""`python -m repsim compare|report` end to end in subprocesses, including error exits."""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
import toy_models  # noqa: E402

from repsim.compare import compare_models  # noqa: E402
from repsim.weights import save_state_dict  # noqa: E402

HEADER = "layer_a,layer_b,measure,value,conv,seq,n,d_a,d_b,matched,reason"


def repsim(*args: str) -> subprocess.CompletedProcess:
    """Run ``python -m repsim ARGS`` with tests/ on PYTHONPATH (for the toy_models factories)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])}
    return subprocess.run(
        [sys.executable, "-m", "repsim", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two MLP checkpoints (B saved with a DataParallel 'module.' prefix), a wider MLP, inputs."""
    root = tmp_path_factory.mktemp("cli")
    a, b, wide = toy_models.mlp(seed=1), toy_models.mlp(seed=2), toy_models.mlp(hidden=12, seed=3)
    save_state_dict(root / "a.safetensors", a.state_dict())
    wrapped = {f"module.{k}": v for k, v in b.state_dict().items()}
    torch.save({"state_dict": wrapped, "epoch": 7}, root / "b.pt")
    save_state_dict(root / "wide.safetensors", wide.state_dict())
    x = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32)
    np.savez(root / "x.npz", x=x)
    return {"root": root, "a": a, "b": b, "wide": wide, "x": torch.from_numpy(x)}


def test_compare_end_to_end(files):
    root = files["root"]
    out = root / "out"
    done = repsim(
        "compare",
        "--model",
        "toy_models:mlp",
        "--model-kwargs",
        '{"hidden": 8}',
        "--a",
        root / "a.safetensors",
        "--b",
        root / "b.pt",
        "--strip-prefix",
        "module.",
        "--inputs",
        root / "x.npz",
        "--layers",
        "fc2,head",
        "--measures",
        "cka,cca",
        "--out",
        out,
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    text = (out / "similarity.csv").read_text().splitlines()
    assert text[0] == HEADER and len(text) == 1 + 2 * 2 * 2
    df = pd.read_csv(out / "similarity.csv", keep_default_na=False)
    expected = compare_models(
        files["a"],
        files["b"],
        files["x"],
        layers_a=["fc2", "head"],
        pairs="all",
        measures=("cka", "cca"),
        progress=False,
    )
    assert list(zip(df["layer_a"], df["layer_b"], df["measure"])) == list(
        zip(expected["layer_a"], expected["layer_b"], expected["measure"])
    )
    np.testing.assert_allclose(df["value"].to_numpy(float), expected["value"], rtol=0, atol=1e-12)
    for name in ("heatmap_cka.png", "heatmap_cca.png", "per_layer.png", "settings.json"):
        assert (out / name).stat().st_size > 0, name
        assert f"wrote {out / name}" in done.stdout


def test_compare_two_architectures(files):
    root = files["root"]
    out = root / "two"
    done = repsim(
        "compare",
        "--model",
        "toy_models:mlp",
        "--model-b",
        "toy_models:mlp",
        "--model-b-kwargs",
        '{"hidden": 12}',
        "--a",
        root / "a.safetensors",
        "--b",
        root / "wide.safetensors",
        "--inputs",
        root / "x.npz",
        "--layers",
        "fc1,fc2",
        "--layers-b",
        "fc2",
        "--layers-b",
        "head",
        "--pairs",
        "diagonal",
        "--measures",
        "cka",
        "--out",
        out,
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    df = pd.read_csv(out / "similarity.csv", keep_default_na=False)
    rows = list(zip(df["layer_a"], df["layer_b"], df["d_a"], df["d_b"]))
    assert rows == [("fc1", "fc2", 8, 12), ("fc2", "head", 8, 3)]
    assert not (out / "heatmap_cka.png").exists() and (out / "per_layer.png").exists()


def test_bad_layer_name_exits_2_listing_the_layers(files):
    root = files["root"]
    done = repsim(
        "compare",
        "--model",
        "toy_models:mlp",
        "--a",
        root / "a.safetensors",
        "--b",
        root / "a.safetensors",
        "--inputs",
        root / "x.npz",
        "--layers",
        "fc9",
        "--out",
        root / "bad",
        "--no-progress",
    )
    assert done.returncode == 2
    assert done.stderr.startswith("repsim: error: layer(s) ['fc9'] match no module")
    assert "fc1, relu1, fc2, relu2, head" in done.stderr
    assert not (root / "bad" / "similarity.csv").exists()


class Payload:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.target)!r}, 'w').write('pwned')",))


def test_unsafe_checkpoint_exits_3_and_runs_nothing(files):
    root = files["root"]
    target = root / "pwned.txt"
    torch.save({"fc1.weight": torch.zeros(8, 6), "x": Payload(target)}, root / "evil.pt")
    done = repsim(
        "compare",
        "--model",
        "toy_models:mlp",
        "--a",
        root / "a.safetensors",
        "--b",
        root / "evil.pt",
        "--inputs",
        root / "x.npz",
        "--layers",
        "fc1",
        "--out",
        root / "evil",
        "--no-progress",
    )
    assert done.returncode == 3
    assert "repsim: error: refusing to load" in done.stderr and "evil.pt" in done.stderr
    assert not target.exists()


def test_report_end_to_end(tmp_path):
    toy_models.write_toy_snapshot(tmp_path / "snap", tasks=2, steps=2)
    out = tmp_path / "report"
    untrusted = repsim("report", tmp_path / "snap", "--out", out, "--no-progress")
    assert untrusted.returncode == 3 and "'toy_models:convnet', which is not on the allowlist" in untrusted.stderr
    assert not out.exists()  # refused before anything was written
    trust = ("--model", toy_models.SNAPSHOT_FACTORY)
    done = repsim("report", tmp_path / "snap", *trust, "--out", out, "--measures", "cca,cka", "--no-progress")
    assert done.returncode == 0, done.stderr
    per_task = pd.read_csv(out / "per_task.csv", keep_default_na=False)
    columns = ["task", "inputs", "step", "layer", "measure", "value", "conv", "n", "d", "reason"]
    assert list(per_task.columns) == columns
    assert len(per_task) == 2 * 3 * 3 * 2
    summary = pd.read_csv(out / "summary.csv")
    assert {"mean", "ci_low", "ci_high", "ci_half_width", "n_tasks"} <= set(summary.columns)
    markdown = (out / "summary.md").read_text()
    assert "| inputs | step | layer | cca | cka |" in markdown and "± " in markdown
    for name in ("before_after_query.png", "by_step_query.png", "summary.json", "settings.json"):
        assert (out / name).stat().st_size > 0, name
    missing = repsim("report", tmp_path / "nowhere", "--out", out, "--no-progress")
    assert missing.returncode == 2 and "no manifest.json" in missing.stderr
