"""Checkpoint loading (safe, remapped) and layer-by-layer comparison of two models."""

from __future__ import annotations

import builtins
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import toy_models

from repsim.tensor_files import UnsafeCheckpointError
from repsim.weights import (
    CheckpointKeyError,
    ModelSpecError,
    apply_state_dict,
    build_model,
    load_model,
    load_state_dict,
    parse_json_object,
    parse_rename,
    save_state_dict,
)


class Payload:
    """Pickles to ``exec(code)``: unpickling it with plain pickle writes ``target``."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.target)!r}, 'w').write('pwned')",))


# --------------------------------------------------------------------------- model specs


def test_build_model_from_spec():
    model = build_model("toy_models:mlp", {"hidden": 5, "seed": 0}, source=None)
    assert isinstance(model, toy_models.MLP) and model.fc1.out_features == 5
    assert build_model("toy_models:MLP", None, source=None).fc1.out_features == 8


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("toy_models.mlp", {}, "one colon"),
        ("no_such_module_xyz:f", {}, "cannot import module 'no_such_module_xyz'"),
        ("toy_models:nope", {}, "has no attribute 'nope'.*mlp"),
        ("toy_models:NOT_CALLABLE", {}, "is a int, not callable"),
        ("toy_models:not_a_module", {}, "returned a int, not a torch.nn.Module"),
        ("toy_models:mlp", {"bogus": 1}, "rejected kwargs"),
        ("toy_models:mlp", [1], "must be a JSON object"),
    ],
)
def test_bad_model_specs(spec, kwargs, message):
    with pytest.raises(ModelSpecError, match=message):
        build_model(spec, kwargs, source=None)


def test_parse_json_object():
    assert parse_json_object('{"hidden": 4}') == {"hidden": 4}
    assert parse_json_object(None) == {}
    with pytest.raises(ValueError, match="--model-kwargs are not valid JSON"):
        parse_json_object("{hidden: 4}", "--model-kwargs")
    with pytest.raises(ValueError, match="JSON object"):
        parse_json_object("[4]")


# --------------------------------------------------------------------------- checkpoints


def _assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b) or set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".bin"])
def test_checkpoint_round_trips(tmp_path, suffix):
    model = toy_models.convnet(seed=4, running_stats=True)
    state = model.state_dict()
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_state_dict(path, state)
    else:
        torch.save(state, path)
    _assert_same_state(load_state_dict(path), state)
    loaded = load_model("toy_models:convnet", {"running_stats": True}, path, source=None)
    _assert_same_state(loaded.state_dict(), state)


@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_checkpoint_dict_with_state_dict_key(tmp_path, key):
    state = toy_models.mlp(seed=1).state_dict()
    torch.save({key: state, "epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "ckpt.pt")
    _assert_same_state(load_state_dict(tmp_path / "ckpt.pt"), state)


def test_safetensors_detected_by_content_not_name(tmp_path):
    state = toy_models.mlp(seed=1).state_dict()
    save_state_dict(tmp_path / "weights.ckpt", state)
    _assert_same_state(load_state_dict(tmp_path / "weights.ckpt"), state)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4:UserWarning")
def test_malicious_pickle_is_refused_and_never_executed(tmp_path):
    control = tmp_path / "control.txt"
    pickle.loads(pickle.dumps(Payload(control)))  # the payload is real: plain pickle runs it
    assert control.read_text() == "pwned"

    target = tmp_path / "pwned.txt"
    state = {"fc1.weight": torch.zeros(2, 2), "evil": Payload(target)}
    files = [tmp_path / "evil.pt", tmp_path / "evil.safetensors", tmp_path / "p2.pkl", tmp_path / "p4.pkl"]
    torch.save(state, files[0])
    torch.save(state, files[1])
    for path, protocol in zip(files[2:], (2, 4)):
        with path.open("wb") as f:
            pickle.dump(state, f, protocol=protocol)
    for path in files:
        with pytest.raises(UnsafeCheckpointError, match="refusing to load") as info:
            load_state_dict(path)
        assert str(path) in str(info.value) and "run code" in str(info.value)
        assert isinstance(info.value, ValueError)
        if path.suffix != ".pkl":  # plain pickles of tensors are refused even before exec
            assert "the global exec" in str(info.value)
        assert isinstance(info.value, ValueError)
    assert not target.exists()


def test_pickled_module_is_refused(tmp_path):
    torch.save(toy_models.mlp(), tmp_path / "model.pt")
    with pytest.raises(UnsafeCheckpointError, match="model.pt"):
        load_state_dict(tmp_path / "model.pt")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"hello, certainly not a checkpoint")
    with pytest.raises(ValueError, match="neither a safetensors file nor a torch.save file"):
        load_state_dict(tmp_path / "junk.bin")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a state_dict"):
        load_state_dict(tmp_path / "list.pt")
    with pytest.raises(ValueError, match="does not exist"):
        load_state_dict(tmp_path / "missing.pt")


def test_strip_prefix_and_rename(tmp_path):
    state = toy_models.mlp(seed=2).state_dict()
    wrapped = {f"module.body.{k}": v for k, v in state.items()}
    save_state_dict(tmp_path / "dp.safetensors", wrapped)
    model = toy_models.mlp()
    with pytest.raises(CheckpointKeyError) as info:
        apply_state_dict(model, load_state_dict(tmp_path / "dp.safetensors"))
    assert "fc1.weight" in info.value.missing and "module.body.fc1.weight" in info.value.unexpected
    assert "missing keys" in str(info.value)
    assert "behind 'module.body.': use --strip-prefix module.body." in str(info.value)

    stripped = load_state_dict(tmp_path / "dp.safetensors", strip_prefixes=["module.", "body."])
    _assert_same_state(stripped, state)
    renamed = load_state_dict(tmp_path / "dp.safetensors", strip_prefixes=["module."], rename=parse_rename(["body.="]))
    _assert_same_state(renamed, state)
    partial = load_state_dict(tmp_path / "dp.safetensors", rename={"module.body.fc": "fc"})
    assert "fc1.weight" in partial and "module.body.head.weight" in partial
    with pytest.raises(ValueError, match="both become"):
        load_state_dict(tmp_path / "dp.safetensors", rename={"module.body.fc1": "x", "module.body.fc2": "x"})
    with pytest.raises(ValueError, match="OLD=NEW"):
        parse_rename(["nothing"])


def test_shape_mismatch_names_the_tensors_and_where_the_kwargs_come_from(tmp_path):
    save_state_dict(tmp_path / "w.safetensors", toy_models.mlp(hidden=4).state_dict())
    with pytest.raises(ValueError, match="does not fit the model") as info:
        load_model("toy_models:mlp", {"hidden": 5}, tmp_path / "w.safetensors", source=None)
    message = str(info.value)
    assert "fc1.weight: checkpoint (4, 6) vs model (5, 6)" in message
    assert "kwargs {'hidden': 5}" in message and "config.json" in message and "--a RUN_DIR" in message
    with pytest.raises(ValueError, match="spec in 'runs/x/config.json'") as info:
        load_model(
            "toy_models:mlp", {"hidden": 5}, tmp_path / "w.safetensors", source=None, kwargs_from="runs/x/config.json"
        )
    assert "fc1.weight: checkpoint (4, 6) vs model (5, 6)" in str(info.value)


# --------------------------------------------------------------------------- comparison

from repsim.capture import LayerNotFoundError, RepeatedCallWarning, capture_activations  # noqa: E402
from repsim.compare import COLUMNS, UndefinedSimilarityWarning, compare_models  # noqa: E402
from repsim.io import write_csv  # noqa: E402

EXPECTED_HEADER = "layer_a,layer_b,measure,value,conv,seq,n,d_a,d_b,matched,reason"


def _measure(name):
    from repsim.measures import get_measure

    return get_measure(name)


def _reloaded(model, tmp_path, name):
    """A fresh model of the same factory loaded from a safetensors checkpoint of ``model``."""
    save_state_dict(tmp_path / f"{name}.safetensors", model.state_dict())
    return load_state_dict(tmp_path / f"{name}.safetensors")


def test_checkpoint_against_itself_is_one_on_every_layer(tmp_path):
    state = _reloaded(toy_models.convnet(seed=5), tmp_path, "a")
    a = apply_state_dict(toy_models.convnet(), state)
    b = apply_state_dict(toy_models.convnet(), state)
    x = toy_models.randn(20, 1, 8, 8)
    df = compare_models(a, b, x, layers_a=["conv1", "conv2", "head"], measures=("cca", "cka"), progress=False)
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 6 and df["matched"].all() and (df["reason"] == "").all()
    np.testing.assert_allclose(df["value"], 1.0, rtol=0, atol=1e-8)
    conv1 = df[df["layer_a"] == "conv1"].iloc[0]
    assert (conv1["conv"], conv1["n"], conv1["d_a"]) == ("channels", 20 * 4 * 4, 4)
    head = df[df["layer_a"] == "head"].iloc[0]
    assert (head["conv"], head["n"], head["d_b"]) == ("none", 20, 3)


def test_different_inits_are_less_similar_and_match_direct_computation():
    a, b = toy_models.mlp(seed=1), toy_models.mlp(seed=2)
    x = toy_models.randn(64, 6)
    measures = ("cca", "cka", "debiased_cka")
    df = compare_models(a, b, x, layers_a=["fc2", "head"], measures=measures, progress=False)
    assert (df["value"] < 0.99).all()
    acts_a = capture_activations(a, x, ["fc2", "head"], progress=False)
    acts_b = capture_activations(b, x, ["fc2", "head"], progress=False)
    for row in df.itertuples():
        expected = _measure(row.measure)(acts_a[row.layer_a], acts_b[row.layer_b])
        assert row.value == pytest.approx(float(expected), abs=1e-12)


def test_same_object_runs_once_and_equals_two_copies():
    a = toy_models.reuse(seed=0)
    copy = toy_models.reuse(seed=0)
    x = toy_models.randn(30, 6)
    with pytest.warns(RepeatedCallWarning):
        same = compare_models(a, a, x, layers_a=["fc1", "shared"], measures=("cka",), progress=False)
        two = compare_models(a, copy, x, layers_a=["fc1", "shared"], measures=("cka",), progress=False)
    assert list(same["layer_a"]) == ["fc1", "shared[0]", "shared[1]"]
    pd.testing.assert_frame_equal(same, two)


def test_two_architectures_with_explicit_layer_lists():
    a, b = toy_models.mlp(seed=1), toy_models.mlp(hidden=16, seed=3)
    x = toy_models.randn(50, 6)
    layers = {"layers_a": ["fc1", "fc2"], "layers_b": ["fc2", "head"]}
    df = compare_models(a, b, x, **layers, measures=("cka",), progress=False)
    assert list(zip(df["layer_a"], df["layer_b"])) == [("fc1", "fc2"), ("fc2", "head")]
    assert list(zip(df["d_a"], df["d_b"])) == [(8, 16), (8, 3)]
    assert ((df["value"] > 0) & (df["value"] < 1)).all()
    full = compare_models(a, b, x, **layers, pairs="all", measures=("cka",), progress=False)
    assert len(full) == 4 and full["matched"].sum() == 2
    pd.testing.assert_frame_equal(full[full["matched"]].reset_index(drop=True), df)
    with pytest.raises(ValueError, match="equal counts"):
        compare_models(a, b, x, layers_a=["fc1", "fc2"], layers_b=["head"], progress=False)
    with pytest.raises(LayerNotFoundError, match="fc3"):
        compare_models(a, b, x, layers_a=["fc3"], progress=False)
    with pytest.raises(ValueError, match="unknown measure"):
        compare_models(a, b, x, layers_a=["fc1"], measures="cka,nope", progress=False)


def test_undefined_values_are_nan_with_a_reason():
    a, b = toy_models.convnet(seed=1), toy_models.convnet(seed=2)
    tiny = toy_models.randn(3, 1, 8, 8)
    with pytest.warns(UndefinedSimilarityWarning, match="NaN"):
        head = compare_models(a, b, tiny, layers_a=["head"], measures=("cca", "cka"), progress=False)
    assert np.isnan(head["value"].iloc[0]) and "CCA is trivially 1" in head["reason"].iloc[0]
    assert np.isfinite(head["value"].iloc[1]) and head["reason"].iloc[1] == ""


def test_cross_layer_pairs_use_the_fallback_where_the_datapoints_differ():
    a, b = toy_models.convnet(seed=1), toy_models.convnet(seed=2)
    x = toy_models.randn(12, 1, 8, 8)
    df = compare_models(a, b, x, layers_a=["conv1", "conv2", "head"], pairs="all", measures=("cka",), progress=False)
    assert len(df) == 9 and df["value"].notna().all() and (df["reason"] == "").all()
    policy = {(r.layer_a, r.layer_b): (r.conv, r.n) for r in df.itertuples()}
    # the diagonal keeps the paper's policy: conv1 is 4x4 per image, conv2 2x2
    assert policy["conv1", "conv1"] == ("channels", 12 * 16) and policy["conv2", "conv2"] == ("channels", 12 * 4)
    # conv1 (4x4) against conv2 (2x2), and a map against the head: one row per image
    assert policy["conv1", "conv2"] == ("mean", 12) and policy["conv2", "head"] == ("mean", 12)
    assert policy["head", "head"] == ("none", 12)
    by_hand = compare_models(
        a, b, x, layers_a=["conv1"], layers_b=["conv2"], conv="mean", measures="cka", progress=False
    )
    assert df.set_index(["layer_a", "layer_b"]).loc[("conv1", "conv2"), "value"] == by_hand["value"].iloc[0]
    with pytest.raises(ValueError, match=r"different datapoints.*conv_fallback=.*--conv-fallback.*pairs='diagonal'"):
        compare_models(a, b, x, layers_a="conv*", pairs="all", conv_fallback=None, measures="cka", progress=False)
    flatten = compare_models(
        a, b, x, layers_a="conv*", pairs="all", conv_fallback="flatten", measures="cka", progress=False
    )
    assert list(flatten["conv"]) == ["channels", "flatten", "flatten", "channels"]


def test_csv_schema(tmp_path):
    a, b = toy_models.mlp(seed=1), toy_models.mlp(seed=2)
    x = toy_models.randn(20, 6)
    df = compare_models(a, b, x, layers_a="fc*", pairs="all", measures="cka,cca", progress=False)
    write_csv(tmp_path / "similarity.csv", df)
    text = (tmp_path / "similarity.csv").read_text().splitlines()
    assert text[0] == EXPECTED_HEADER
    assert len(text) == 1 + 2 * 2 * 2
    back = pd.read_csv(tmp_path / "similarity.csv", keep_default_na=False)
    np.testing.assert_array_equal(back["value"].to_numpy(float), df["value"].to_numpy())


@pytest.mark.parametrize(
    ("factory", "shape", "layers"),
    [
        (lambda seed: toy_models.mlp(in_features=16, hidden=6, seed=seed), (70, 16), ["fc1", "fc2", "head"]),
        (lambda seed: toy_models.convnet(running_stats=True, seed=seed), (30, 1, 8, 8), ["conv1", "conv2", "head"]),
    ],
    ids=["mlp", "convnet-channels"],
)
@pytest.mark.filterwarnings("ignore::repsim.compare.UndefinedSimilarityWarning")
def test_batched_streaming_equals_one_batch(factory, shape, layers):
    a, b = factory(seed=1), factory(seed=2)
    x = toy_models.randn(*shape)
    measures = ("cka", "debiased_cka", "cca", "svcca", "pwcca", "procrustes")
    whole = compare_models(a, b, x, layers_a=layers, pairs="all", measures=measures, progress=False)
    batched = compare_models(a, b, x, layers_a=layers, pairs="all", measures=measures, batch_size=8, progress=False)
    facts = ["layer_a", "layer_b", "measure", "conv", "seq", "n", "d_a", "d_b", "matched"]
    pd.testing.assert_frame_equal(batched[facts], whole[facts])
    np.testing.assert_array_equal(batched["reason"] == "", whole["reason"] == "")
    np.testing.assert_allclose(batched["value"], whole["value"], rtol=0, atol=1e-8)
    assert whole["value"].notna().sum() >= len(layers) * len(measures)


def test_memory_limit_for_in_memory_measures():
    a, b = toy_models.mlp(seed=1), toy_models.mlp(seed=2)
    x = toy_models.randn(40, 6)
    with pytest.raises(ValueError, match=r"\['procrustes'\] need all activations"):
        compare_models(
            a, b, x, layers_a=["fc1"], measures=("cka", "procrustes"), batch_size=8, memory_limit=100, progress=False
        )
    streamed = compare_models(
        a, b, x, layers_a=["fc1"], measures=("cka",), batch_size=8, memory_limit=100, progress=False
    )
    assert np.isfinite(streamed["value"]).all()


def test_compare_figures_are_written(tmp_path):
    from repsim.plots import compare_figures

    a, b = toy_models.convnet(seed=1), toy_models.convnet(seed=2)
    x = toy_models.randn(12, 1, 8, 8)
    df = compare_models(
        a, b, x, layers_a=["conv1", "conv2", "head"], pairs="all", conv="mean", measures=("cka", "cca"), progress=False
    )
    paths = compare_figures(df, tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["heatmap_cca.png", "heatmap_cka.png", "per_layer.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    diagonal = compare_models(a, b, x, layers_a=["conv1", "conv2"], conv="mean", measures="cka", progress=False)
    assert [p.name for p in compare_figures(diagonal, tmp_path / "d")] == ["per_layer.png"]
