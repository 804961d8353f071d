"""Atomic writes, versioned npz files, manifests and the agreement check."""

import json
from pathlib import Path

import numpy as np
import pytest

from detkit.artifacts import (atomic_path, check_agree, load_npz,
                              manifest_path, read_manifest, save_npz,
                              sha256_file, write_json, write_manifest)
from detkit.errors import ArtifactError, ArtifactMismatchError


def test_atomic_path_renames_on_success_and_keeps_suffix(tmp_path):
    target = tmp_path / "sub" / "best.weights.h5"
    with atomic_path(target) as tmp:
        assert tmp.name.endswith("best.weights.h5") and tmp != target
        tmp.write_text("new")
        assert not target.exists()
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["best.weights.h5"]


def test_atomic_path_failure_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "labels.npz"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.npz"]


def test_npz_round_trip_without_pickle(tmp_path):
    path = tmp_path / "labels.npz"
    save_npz(path, {"rows": np.arange(6, dtype=np.float32).reshape(2, 3),
                    "class_names": ["circle", "square"], "input_size": 416},
             kind="labels", format_version=1)
    arrays = load_npz(path, kind="labels", format_version=1,
                      required=["rows", "class_names"])
    np.testing.assert_array_equal(arrays["rows"], np.arange(6).reshape(2, 3))
    assert arrays["class_names"].tolist() == ["circle", "square"]
    assert int(arrays["input_size"]) == 416


def test_npz_refuses_object_arrays(tmp_path):
    with pytest.raises(TypeError, match="pickle"):
        save_npz(tmp_path / "x.npz", {"bad": np.array([{}], dtype=object)}, kind="x",
                 format_version=1)


@pytest.mark.parametrize("kind,version,required,message", [
    ("bottlenecks", 1, [], "expected a 'bottlenecks' file"),
    ("labels", 2, [], "format_version 1 is not supported"),
    ("labels", 1, ["anchors"], "missing keys: anchors"),
])
def test_npz_checks_kind_version_keys(tmp_path, kind, version, required, message):
    path = tmp_path / "labels.npz"
    save_npz(path, {"rows": np.zeros(3)}, kind="labels", format_version=1)
    with pytest.raises(ArtifactError, match=message):
        load_npz(path, kind=kind, format_version=version, required=required)


def test_npz_missing_and_corrupt(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        load_npz(tmp_path / "nope.npz", kind="labels", format_version=1)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="not a readable"):
        load_npz(bad, kind="labels", format_version=1)


def test_manifest_records_hashes_seed_and_versions(tmp_path):
    data = tmp_path / "train.txt"
    data.write_text("a.jpg 1,2,3,4,0\n")
    out = tmp_path / "labels.npz"
    write_manifest(out, command="encode-labels", config={"input_size": 416},
                   inputs=[data], seed=3, extra={"n_boxes": 1})
    assert manifest_path(out).name == "labels.npz.manifest.json"
    manifest = read_manifest(out)
    assert manifest["inputs"][str(data)] == sha256_file(data)
    assert manifest["seed"] == 3 and manifest["n_boxes"] == 1
    assert manifest["config"] == {"input_size": 416}
    assert "numpy" in manifest["versions"]


def test_write_json_handles_numpy(tmp_path):
    path = write_json(tmp_path / "r.json", {"a": np.float32(0.5), "b": np.arange(2)})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1]}


def test_check_agree_names_every_difference():
    a = {"anchors": np.array([[10, 13], [16, 30]]), "class_names": ["a", "b"],
         "input_size": 416}
    check_agree("labels.npz", a, "this command", dict(a))
    b = {"anchors": np.array([[10, 13], [16, 31]]), "class_names": ["a", "c"],
         "input_size": 416}
    with pytest.raises(ArtifactMismatchError) as err:
        check_agree("labels.npz", a, "this command", b)
    text = str(err.value)
    assert "anchors" in text and "class_names" in text and "input_size" not in text
    assert "labels.npz has" in text and "this command has" in text


def test_check_agree_is_one_line_with_counts_when_they_differ_and_the_hint():
    a = {"anchors": np.array([[10, 13], [16, 30]]), "input_size": 416}
    b = {"anchors": np.array([[10, 13], [16, 30], [33, 23]]), "input_size": 320}
    with pytest.raises(ArtifactMismatchError) as err:
        check_agree("l.npz", a, "this command", b, hint="re-run encode-labels")
    assert str(err.value) == (
        "l.npz and this command disagree: anchors: l.npz has 2 [[10, 13], [16, 30]], "
        "this command has 3 [[10, 13], [16, 30], [33, 23]]; input_size: l.npz "
        "has 416, this command has 320: re-run encode-labels")


def test_manifest_path_of_a_folder_given_as_dot(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert manifest_path(".") == tmp_path.parent / f"{tmp_path.name}.manifest.json"
    assert manifest_path("sub/") == Path("sub.manifest.json")
