"""Sequence activations (N, T, D): the explicit policies (tokens, mean, first, flatten), padding
left out by the attention mask, a clear refusal without a policy, and the policy recorded in
each row. The transformer is a tiny BERT built from transformers' config classes (no download)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from repsim.capture import capture_activations
from repsim.compare import compare_models
from repsim.measures import linear_cka
from repsim.measures.inputs import SEQ_POLICIES, reduce_sequence
from repsim.policies import Policies, Reduction, pair_reduction, plan_reductions

REPO = Path(__file__).resolve().parents[2]
LAYERS = ["embeddings", "encoder.layer.?"]


def test_reduce_sequence_by_hand():
    t = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(reduce_sequence(t, "tokens"), t.reshape(6, 2))
    assert torch.equal(reduce_sequence(t, "tokens", mask=mask), torch.cat([t[0, :2], t[1]]))
    assert torch.equal(reduce_sequence(t, "mean", mask=mask), torch.stack([t[0, :2].mean(0), t[1].mean(0)]))
    assert torch.equal(reduce_sequence(t, "mean"), t.mean(1))
    assert torch.equal(reduce_sequence(t, "first", mask=mask), t[:, 0])
    assert torch.equal(reduce_sequence(t, "flatten", mask=mask), t.reshape(2, 6))
    assert reduce_sequence(t, "mean").dtype == torch.float32  # the source's precision is kept
    with pytest.raises(ValueError, match=r"choose one of \('tokens', 'mean', 'first', 'flatten'\)"):
        reduce_sequence(t, None)
    with pytest.raises(ValueError, match=r"attention mask is \(2, 2\) but the activation has \(N, T\) = \(2, 3\)"):
        reduce_sequence(t, "tokens", mask=mask[:, :2])
    with pytest.raises(ValueError, match="input 0 has no real token"):
        reduce_sequence(t, "mean", mask=torch.tensor([[0, 0, 0], [1, 1, 1]]))
    with pytest.raises(ValueError, match=r"3-D .*reduce_sequence.*--seq"):
        linear_cka(t, t)


def test_pairs_of_sequences_fall_back_to_one_row_per_input():
    seq, pooled = (8, 5, 4), (8, 4)
    policies = Policies(seq="tokens")
    assert pair_reduction(seq, seq, policies) == Reduction(None, "tokens")
    assert pair_reduction(seq, pooled, policies) == Reduction(None, "mean")
    assert pair_reduction(seq, (8, 7, 4), policies) == Reduction(None, "mean")  # another length
    assert pair_reduction(seq, (8, 3, 2, 2), policies) == Reduction("mean", "mean")  # a map at 2x2
    assert pair_reduction(seq, pooled, Policies(seq="first")) == Reduction(None, "first")
    with pytest.raises(ValueError, match="seq_fallback=.*--seq-fallback"):
        plan_reductions([("s", "p", False)], {"s": seq}, {"p": pooled}, Policies(seq="tokens", seq_fallback=None))
    with pytest.raises(ValueError, match=r"layers \{'s': \(8, 5, 4\)\} output sequences.*--seq"):
        plan_reductions([("s", "s", True)], {"s": seq}, {"s": seq}, Policies())


@pytest.fixture(scope="module")
def bert():
    transformers = pytest.importorskip("transformers")

    def build(seed: int) -> torch.nn.Module:
        config = transformers.BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=16,
        )
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return transformers.BertModel(config).eval()

    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(1, 50, size=(24, 10)))
    mask = torch.ones(24, 10, dtype=torch.int64)
    mask[::2, 7:] = 0  # every other input has 3 padding tokens
    ids[mask == 0] = 0
    return {"a": build(0), "b": build(1), "inputs": {"input_ids": ids, "attention_mask": mask}}


def test_a_sequence_without_a_policy_is_refused_naming_the_option(bert):
    with pytest.raises(ValueError, match=r"output sequences \(N, T, D\).*seq= one of.*--seq"):
        compare_models(bert["a"], bert["b"], bert["inputs"], layers_a=LAYERS, progress=False)


def _masked(acts, mask, policy):
    """The representation of one layer by hand."""
    keep = mask.bool()
    if policy == "tokens":
        return acts[keep]
    if policy == "mean":
        return torch.stack([acts[i, keep[i]].double().mean(0) for i in range(len(acts))]).float()
    if policy == "first":
        return acts[:, 0]
    return acts.reshape(len(acts), -1)


@pytest.mark.parametrize("policy", SEQ_POLICIES)
def test_each_policy_equals_the_measure_on_the_representation_by_hand(bert, policy):
    inputs, mask = bert["inputs"], bert["inputs"]["attention_mask"]
    df = compare_models(bert["a"], bert["b"], inputs, layers_a=LAYERS, seq=policy, measures=("cka",), progress=False)
    acts_a = capture_activations(bert["a"], inputs, LAYERS, progress=False)
    acts_b = capture_activations(bert["b"], inputs, LAYERS, progress=False)
    assert list(df["layer_a"]) == ["embeddings", "encoder.layer.0", "encoder.layer.1"]
    real = int(mask.sum())
    assert real == 24 * 10 - 12 * 3
    for row in df.itertuples():
        x, y = _masked(acts_a[row.layer_a], mask, policy), _masked(acts_b[row.layer_b], mask, policy)
        assert row.value == pytest.approx(float(linear_cka(x, y)), abs=1e-12)
        assert (row.seq, row.conv, row.n, row.d_a) == (policy, "none", x.shape[0], x.shape[1])
    assert df["n"].iloc[0] == {"tokens": real, "flatten": 24}.get(policy, 24)


def test_padding_changes_nothing_it_should_not(bert):
    """Changing what sits in padded positions changes no tokens- or mean-policy similarity."""
    inputs = {k: v.clone() for k, v in bert["inputs"].items()}
    other = {k: v.clone() for k, v in inputs.items()}
    other["input_ids"][other["attention_mask"] == 0] = 7
    for policy in ("tokens", "mean"):
        first = compare_models(
            bert["a"], bert["b"], inputs, layers_a=LAYERS, seq=policy, measures="cka", progress=False
        )
        again = compare_models(bert["a"], bert["b"], other, layers_a=LAYERS, seq=policy, measures="cka", progress=False)
        np.testing.assert_allclose(first["value"], again["value"], rtol=0, atol=1e-6)


def test_tokens_stream_over_batches_exactly(bert):
    kwargs = {"layers_a": LAYERS, "seq": "tokens", "measures": ("cka", "cca"), "pairs": "all", "progress": False}
    whole = compare_models(bert["a"], bert["b"], bert["inputs"], **kwargs)
    batched = compare_models(bert["a"], bert["b"], bert["inputs"], batch_size=5, **kwargs)
    facts = ["layer_a", "layer_b", "measure", "conv", "seq", "n", "d_a", "d_b", "matched"]
    pd.testing.assert_frame_equal(batched[facts], whole[facts])
    np.testing.assert_allclose(batched["value"], whole["value"], rtol=0, atol=1e-8)


def test_pooled_layers_against_tokens_use_the_fallback_in_the_heatmap(bert):
    layers = ["encoder.layer.1", "pooler"]
    kwargs = {"seq": "tokens", "pairs": "all", "measures": "cka", "progress": False}
    df = compare_models(bert["a"], bert["b"], bert["inputs"], layers_a=layers, **kwargs)
    assert df["value"].notna().all()
    assert list(df["seq"]) == ["tokens", "mean", "mean", "none"]
    assert list(df["n"]) == [int(bert["inputs"]["attention_mask"].sum()), 24, 24, 24]


def test_the_command_line_records_the_policy(bert, tmp_path):
    from repsim.weights import save_state_dict

    (tmp_path / "tiny_bert.py").write_text(
        "import torch\nfrom transformers import BertConfig, BertModel\n\n\n"
        "def build():\n"
        "    return BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,"
        " intermediate_size=32, max_position_embeddings=16))\n"
    )
    save_state_dict(tmp_path / "a.safetensors", bert["a"].state_dict())
    save_state_dict(tmp_path / "b.safetensors", bert["b"].state_dict())
    np.savez(tmp_path / "tokens.npz", **{k: v.numpy() for k, v in bert["inputs"].items()})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    args = ["--model", "tiny_bert:build", "--a", tmp_path / "a.safetensors", "--b", tmp_path / "b.safetensors"]
    args += ["--inputs", tmp_path / "tokens.npz", "--layers", "embeddings,encoder.layer.?", "--measures", "cka"]

    def run(*more):
        command = [sys.executable, "-m", "repsim", "compare", *map(str, args), *map(str, more), "--no-progress"]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    refused = run("--out", tmp_path / "none")
    assert refused.returncode == 2 and "output sequences" in refused.stderr and "--seq" in refused.stderr
    assert not (tmp_path / "none").exists()
    done = run("--seq", "tokens", "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    df = pd.read_csv(tmp_path / "out" / "similarity.csv", keep_default_na=False)
    assert set(df["seq"]) == {"tokens"} and len(df) == 9 and df["value"].notna().all()
    assert '"seq": "tokens"' in (tmp_path / "out" / "settings.json").read_text()
