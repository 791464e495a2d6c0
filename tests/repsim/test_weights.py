"""Loading weights and models from files: a damaged file is called damaged (with the offset or
the field), only a file carrying code is called dangerous (naming the global), weights of the
wrong kind of dtype are refused by name, and a factory named by a file is imported only from the
allowlist."""

from __future__ import annotations

import json
import os
import struct
import sys

import pytest
import torch
import toy_models

from repsim.tensor_files import DamagedFileError, UnsafeCheckpointError
from repsim.weights import (
    UntrustedFactoryError,
    allow_factory,
    apply_state_dict,
    build_model,
    load_state_dict,
    save_state_dict,
    trusted_factories,
)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "w.safetensors"
    save_state_dict(path, toy_models.mlp(seed=0).state_dict())
    return path


def test_a_file_cut_inside_its_header_is_damaged(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[:20])
    with pytest.raises(DamagedFileError, match="bytes 0-7 give a header of .* bytes, but the file has only 12"):
        load_state_dict(saved)


def test_an_impossible_header_length_is_damaged(saved):
    data = saved.read_bytes()
    saved.write_bytes(struct.pack("<Q", 2**62) + data[8:])
    with pytest.raises(DamagedFileError, match=f"header of {2**62} bytes"):
        load_state_dict(saved)


def test_a_header_that_is_not_json_names_the_byte(saved):
    data = bytearray(saved.read_bytes())
    data[9] = ord("!")  # the character after the opening brace
    saved.write_bytes(bytes(data))
    with pytest.raises(DamagedFileError, match="not valid JSON at byte 9"):
        load_state_dict(saved)


def test_data_cut_short_names_the_tensor(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[:-8])
    with pytest.raises(DamagedFileError, match="tensor '.*' needs bytes"):
        load_state_dict(saved)


def test_random_bytes_are_neither_format(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(os.urandom(4096).replace(b"\x80", b"\x00").replace(b"PK", b"pk"))
    with pytest.raises(DamagedFileError, match="neither a safetensors file nor a torch.save file"):
        load_state_dict(path)


def test_a_cut_torch_save_file_is_damaged_not_dangerous(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save(toy_models.mlp(seed=0).state_dict(), path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DamagedFileError, match="damaged torch.save file"):
        load_state_dict(path)


class SystemCall:
    def __reduce__(self):
        return (os.system, ("true",))


def test_a_pickle_that_runs_code_names_the_blocked_global(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"fc1.weight": torch.zeros(2), "x": SystemCall()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"the global posix\.system"):
        load_state_dict(path)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_weights_of_a_non_floating_dtype_are_refused_by_name(dtype):
    model = toy_models.mlp(seed=0)
    state = {k: v.to(dtype) if k == "fc1.weight" else v for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"fc1\.weight \({str(dtype).removeprefix('torch.')}\)"):
        apply_state_dict(model, state)


def test_integer_buffers_stay_allowed():
    model = toy_models.convnet(running_stats=True)
    assert any(not v.is_floating_point() for v in model.state_dict().values())  # num_batches_tracked
    apply_state_dict(model, model.state_dict())


def planted_factory(folder, marker):
    """A module whose import writes ``marker``: if it is ever imported, the test sees it."""
    (folder / "planted_factory.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\nimport torch\ndef build():\n    return torch.nn.Linear(2, 2)\n"
    )
    return "planted_factory:build"


def test_a_factory_named_by_a_file_is_refused_before_any_import(tmp_path, monkeypatch):
    marker = tmp_path / "IMPORTED"
    spec = planted_factory(tmp_path, marker)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UntrustedFactoryError, match="planted_factory:build.*--model planted_factory:build"):
        build_model(spec, {}, source=tmp_path / "config.json")
    assert not marker.exists() and "planted_factory" not in sys.modules
    model = build_model(spec, {}, source=tmp_path / "config.json", trusted=[spec])  # named by the user
    assert marker.exists() and isinstance(model, torch.nn.Linear)


def test_registered_and_declared_factories_are_trusted(tmp_path, monkeypatch):
    assert "meta.core.models:conv4" in trusted_factories()  # declared in the package's entry points
    spec = planted_factory(tmp_path, tmp_path / "IMPORTED")
    monkeypatch.syspath_prepend(str(tmp_path))
    allow_factory(spec)
    assert spec in trusted_factories()
    build_model(spec, {}, source=tmp_path / "manifest.json")


def test_a_failing_factory_is_a_spec_error_not_a_traceback(tmp_path, monkeypatch):
    (tmp_path / "failing_factory.py").write_text("def build():\n    raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="failed with kwargs .*RuntimeError: no GPU here"):
        build_model("failing_factory:build", {}, source=None)


def test_the_snapshot_manifest_json_is_what_names_the_factory(tmp_path):
    toy_models.write_toy_snapshot(tmp_path, tasks=1, steps=1)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["model"]["factory"] == toy_models.SNAPSHOT_FACTORY
    assert toy_models.SNAPSHOT_FACTORY not in trusted_factories()
