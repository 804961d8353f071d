"""Artifacts on disk: atomic writes, versioned ``.npz`` files, sidecar manifests.

Every file detkit writes goes through :func:`atomic_path`, so an interrupted run never
leaves a half-written file that ``make`` would take as fresh. Every artifact gets a
``NAME.manifest.json`` beside it (see :func:`write_manifest`).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import platform
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from detkit import __version__
from detkit.errors import ArtifactError, ArtifactMismatchError

#: Settings two artifacts must agree on before one stage consumes another's output.
AGREEMENT_KEYS = ("anchors", "class_names", "input_size")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name keeps the final name as its suffix (``.tmp-<id>-best.weights.h5``)
    so writers that check extensions (Keras, h5py) accept it. On any exception the
    temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (NumPy scalars and arrays allowed)."""
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_strings(items: Iterable[str]) -> str:
    """Hex sha256 of a sequence of strings (e.g. an image list), order-sensitive."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that shape results (only those imported)."""
    versions = {"python": platform.python_version(), "detkit": __version__,
                "numpy": np.__version__}
    for name in ("keras", "tensorflow", "jax", "torch", "cv2", "h5py"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "unknown")
    if "keras" in sys.modules:
        versions["keras_backend"] = sys.modules["keras"].backend.backend()
    return versions


def manifest_path(path: str | os.PathLike) -> Path:
    """``dir/NAME.manifest.json`` for artifact ``dir/NAME``."""
    path = Path(path)
    return path.with_name(path.name + ".manifest.json")


def write_manifest(path: str | os.PathLike, *, command: str, config: Mapping[str, Any],
                   inputs: Iterable[str | os.PathLike] = (), seed: int | None = None,
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Write the sidecar manifest of artifact ``path``.

    Args:
        path: the artifact the manifest describes.
        command: the subcommand that made it (e.g. ``"encode-labels"``).
        config: the resolved configuration (flags merged over the config file).
        inputs: input files; each is recorded with its sha256 (folders by name only).
        seed: the random seed, if the command has one.
        extra: anything else worth recording (settings, counts, metrics).

    Returns:
        The manifest's path.
    """
    hashes = {}
    for item in inputs:
        item = Path(item)
        hashes[str(item)] = sha256_file(item) if item.is_file() else None
    manifest = {
        "artifact": Path(path).name,
        "command": command,
        "argv": sys.argv,
        "config": dict(config),
        "inputs": hashes,
        "seed": seed,
        "versions": library_versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        manifest.update(extra)
    return write_json(manifest_path(path), manifest)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read the sidecar manifest of artifact ``path`` ({} when there is none)."""
    mpath = manifest_path(path)
    if not mpath.exists():
        return {}
    try:
        return json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ArtifactError(f"corrupt manifest: {err.msg}", path=mpath, line=err.lineno) from None


def save_npz(path: str | os.PathLike, arrays: Mapping[str, Any], *, kind: str,
             format_version: int, compress: bool = True) -> Path:
    """Atomically write a versioned ``.npz``.

    Args:
        path: output file (``.npz``).
        arrays: the documented keys; strings and lists of strings are stored as
            unicode arrays so they load without pickle.
        kind: what the file is (e.g. ``"labels"``), checked on load.
        format_version: the layout version of ``kind``, checked on load.
    """
    payload = {key: np.asarray(value) for key, value in arrays.items()}
    for key, value in payload.items():
        if value.dtype == object:
            raise TypeError(f"npz key {key!r} would need pickle; store a typed array")
    payload["kind"] = np.asarray(kind)
    payload["format_version"] = np.asarray(format_version, dtype=np.int32)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            (np.savez_compressed if compress else np.savez)(handle, **payload)
    return Path(path)


def load_npz(path: str | os.PathLike, *, kind: str, format_version: int,
             required: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Read a ``.npz`` written by :func:`save_npz` (never unpickles).

    Raises:
        ArtifactError: missing or corrupt file, another kind, another format version,
            or a required key absent.
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError("file not found", path=path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ArtifactError(f"not a readable .npz file ({err})", path=path) from None
    found_kind = str(arrays.get("kind", ""))
    if found_kind != kind:
        raise ArtifactError(f"expected a {kind!r} file, found {found_kind or 'no kind'!r}",
                            path=path)
    found_version = int(arrays.get("format_version", -1))
    if found_version != format_version:
        raise ArtifactError(f"format_version {found_version} is not supported "
                            f"(this detkit reads {format_version}); re-create the file",
                            path=path)
    missing = [key for key in required if key not in arrays]
    if missing:
        raise ArtifactError(f"missing keys: {', '.join(missing)}", path=path)
    return arrays


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return str(a) == str(b)
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.dtype.kind in "fiu" and b_arr.dtype.kind in "fiu":
        return a_arr.shape == b_arr.shape and np.allclose(a_arr, b_arr, rtol=0, atol=1e-3)
    return a_arr.shape == b_arr.shape and bool(np.all(a_arr.astype(str) == b_arr.astype(str)))


def _show(value: Any) -> str:
    value = np.asarray(value)
    text = np.array2string(value, separator=",", max_line_width=10_000, threshold=20)
    return text if len(text) <= 120 else text[:117] + "..."


def check_agree(name_a: str, settings_a: Mapping[str, Any], name_b: str,
                settings_b: Mapping[str, Any], keys: Iterable[str] = AGREEMENT_KEYS) -> None:
    """Raise if two sets of settings disagree on any of ``keys`` present in both.

    Args:
        name_a, name_b: how to name each side in the message (a file or "this command").
        settings_a, settings_b: mappings of setting name to value.
        keys: the settings to compare (anchors, class names, input size by default).

    Raises:
        ArtifactMismatchError: naming every differing key with both values.
    """
    differences = []
    for key in keys:
        if key in settings_a and key in settings_b and not _same(settings_a[key],
                                                                  settings_b[key]):
            differences.append(f"  {key}: {name_a} has {_show(settings_a[key])}, "
                               f"{name_b} has {_show(settings_b[key])}")
    if differences:
        raise ArtifactMismatchError(f"{name_a} and {name_b} disagree:\n" +
                                    "\n".join(differences))
