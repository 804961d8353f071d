"""Artifacts on disk: atomic writes, versioned ``.npz`` files, sidecar manifests.

Every file detkit writes goes through :func:`atomic_path`, so an interrupted run never
leaves a half-written file that ``make`` would take as fresh. Every artifact gets a
``NAME.manifest.json`` beside it (see :func:`write_manifest`), written before the
artifact is renamed into place, so the artifact never appears without it.

Before a command works, :func:`check_outputs` refuses an output that is (or links to)
one of its inputs and one that cannot be written; a run directory is held by
:func:`run_lock`; a consumed artifact whose recorded inputs changed since is refused by
:func:`check_fresh`.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import platform
import shutil
import socket
import sys
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

import numpy as np

from detkit import __version__
from detkit.errors import ArtifactError, ArtifactMismatchError, UsageError
from detkit.options import RolePath, Spec, io_paths

#: Settings two artifacts must agree on before one stage consumes another's output.
AGREEMENT_KEYS = ("anchors", "class_names", "input_size")
#: Numeric settings agree within this absolute tolerance: anchors in input pixels (read
#: back from text files and float32 arrays), widths, input sizes, counts.
SETTINGS_ATOL = 1e-3
#: Prefix of the temporary files of :func:`atomic_path` (``.tmp-<id>-NAME``).
TMP_PREFIX = ".tmp-"
#: Least free space an output's file system must have before a command starts.
MIN_FREE_BYTES = 1 << 20
#: The lock file of a run directory (:func:`run_lock`).
LOCK_NAME = ".detkit.lock"
#: A lock file younger than this may still be being written (not stale when unreadable).
LOCK_GRACE_S = 5.0
#: The files of a training run directory (:mod:`detkit.training.callbacks`): an input
#: among them is refused, and a new run over them needs an explicit overwrite.
#: A run's weights: the best by its monitor, the last epoch's, and the resume state (the
#: network's and the optimizer's variables, read by ``--resume``).
BEST_WEIGHTS, LAST_WEIGHTS, STATE_WEIGHTS = ("best.weights.h5", "last.weights.h5",
                                             "state.weights.h5")
#: A run's resume state (its epoch count, best value and settings), and its manifest.
STATE_JSON, RUN_MANIFEST = "state.json", "manifest.json"
RUN_FILES = (BEST_WEIGHTS, f"{BEST_WEIGHTS}.manifest.json", LAST_WEIGHTS,
             f"{LAST_WEIGHTS}.manifest.json", STATE_WEIGHTS, STATE_JSON,
             "history.csv", RUN_MANIFEST)
#: The run files that keep an epoch: a folder without them holds no run worth keeping
#: (its manifest, the history of an epoch whose checkpoint failed).
CHECKPOINT_FILES = (BEST_WEIGHTS, LAST_WEIGHTS, STATE_WEIGHTS, STATE_JSON)


class DetkitWarning(UserWarning):
    """Something the user should know that does not stop the command (the CLI prints it
    as one ``warning:`` line; a :class:`Note` message as ``note:``)."""


class Note(str):
    """A message that tells what a command chose, not that something is wrong (the CLI
    prints it as ``note:`` where a plain one is a ``warning:``)."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name keeps the final name as its suffix (``.tmp-<id>-best.weights.h5``)
    so writers that check extensions (Keras, h5py) accept it. On any exception the
    temporary file is removed and ``path`` is left untouched; an ``OSError`` that names
    no file (a full disk while writing) is raised again naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if err.filename is not None:
            raise
        raise OSError(err.errno, err.strerror or " ".join(str(err).split()),
                      str(path)) from err
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def json_text(obj: Any) -> str:
    """``obj`` as the indented JSON detkit writes (NumPy scalars and arrays allowed)."""
    return json.dumps(obj, indent=2, default=_json_default) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (NumPy scalars and arrays allowed)."""
    return write_text(path, json_text(obj))


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
    """``dir/NAME.manifest.json`` for artifact ``dir/NAME`` (of a folder given as ``.``
    or ``/``, the manifest beside the folder it names)."""
    path = Path(path)
    if not path.name:
        path = Path(os.path.abspath(path))
        if not path.name:           # the root folder: no place beside it
            return path / ".manifest.json"
    return path.with_name(path.name + ".manifest.json")


def write_manifest(path: str | os.PathLike, *, command: str, config: Mapping[str, Any],
                   inputs: Iterable[str | os.PathLike] = (), seed: int | None = None,
                   extra: Mapping[str, Any] | None = None,
                   data: str | os.PathLike | None = None) -> Path:
    """Write the sidecar manifest of artifact ``path``.

    Write it before the artifact is renamed into place (inside :func:`atomic_path`'s
    block, passing the temporary file as ``data``), so the artifact appears last and
    only with its manifest.

    Args:
        path: the artifact the manifest describes.
        command: the subcommand that made it (e.g. ``"encode-labels"``).
        config: the resolved configuration (flags merged over the config file).
        inputs: input files; each is recorded with its sha256 (folders by name only).
        seed: the random seed, if the command has one.
        extra: anything else worth recording (settings, counts, metrics).
        data: the file holding the artifact's bytes now (its temporary file); its size
            is recorded as ``bytes``, which :func:`check_fresh` compares.

    Returns:
        The manifest's path.
    """
    hashes, resolved = {}, {}
    for item in inputs:
        item = Path(item)
        hashes[str(item)] = sha256_file(item) if item.is_file() else None
        resolved[str(item)] = str(item.resolve())
    manifest = {
        "artifact": Path(path).name,
        "command": command,
        "argv": sys.argv,
        "config": dict(config),
        "inputs": hashes,
        "input_paths": resolved,
        "seed": seed,
        "versions": library_versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if data is not None:
        manifest["bytes"] = Path(data).stat().st_size
    if extra:
        manifest.update(extra)
    return write_json(manifest_path(path), manifest)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read the sidecar manifest of artifact ``path`` ({} when there is none)."""
    mpath = manifest_path(path)
    if not mpath.exists():
        return {}
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ArtifactError(f"corrupt manifest: {err.msg}", path=mpath, line=err.lineno) from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"not a manifest: a json {type(manifest).__name__}, not an object "
                            f"(the file may have been written over by another command)",
                            path=mpath)
    return manifest


def save_npz(path: str | os.PathLike, arrays: Mapping[str, Any], *, kind: str,
             format_version: int, compress: bool = True,
             before_commit: Optional[Callable[[Path], Any]] = None) -> Path:
    """Atomically write a versioned ``.npz``.

    Args:
        path: output file (``.npz``).
        arrays: the documented keys; strings and lists of strings are stored as
            unicode arrays so they load without pickle.
        kind: what the file is (e.g. ``"labels"``), checked on load.
        format_version: the layout version of ``kind``, checked on load.
        before_commit: called with the finished temporary file before it is renamed
            onto ``path`` (write the manifest there: ``data=tmp``).
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
        if before_commit is not None:
            before_commit(tmp)
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


def settings_agree(a: Any, b: Any) -> bool:
    """Whether two values of one setting agree (the one comparison of settings in detkit).

    Numbers and arrays of numbers agree when their shapes match and every element is
    within :data:`SETTINGS_ATOL`; anything else (names, hashes) when its text is equal.
    """
    if isinstance(a, str) or isinstance(b, str):
        return str(a) == str(b)
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.dtype.kind in "fiu" and b_arr.dtype.kind in "fiu":
        return a_arr.shape == b_arr.shape and np.allclose(a_arr, b_arr, rtol=0,
                                                          atol=SETTINGS_ATOL)
    return a_arr.shape == b_arr.shape and bool(np.all(a_arr.astype(str) == b_arr.astype(str)))


def _show(value: Any) -> str:
    """``value`` on one line of at most 120 characters (arrays as nested lists)."""
    value = np.asarray(value)
    text = (json.dumps(value.tolist()) if value.dtype.kind in "iu" else
            json.dumps(np.round(value.astype(float), 4).tolist()) if value.dtype.kind == "f"
            else json.dumps(value.astype(str).tolist(), ensure_ascii=False))
    return text if len(text) <= 120 else text[:117] + "..."


def check_agree(name_a: str, settings_a: Mapping[str, Any], name_b: str,
                settings_b: Mapping[str, Any], keys: Iterable[str] = AGREEMENT_KEYS,
                hint: str = "") -> None:
    """Raise if two sets of settings disagree on any of ``keys`` present in both.

    Args:
        name_a, name_b: how to name each side in the message (a file or "this command").
        settings_a, settings_b: mappings of setting name to value.
        keys: the settings to compare (anchors, class names, input size by default).

        hint: what to do about it, appended to the message (``re-run encode-labels``).

    Raises:
        ArtifactMismatchError: one line naming every differing key with both values
            (with their counts when the counts differ: 6 anchors against 9).
    """
    differences = []
    for key in keys:
        if key in settings_a and key in settings_b and not settings_agree(settings_a[key],
                                                                           settings_b[key]):
            a, b = settings_a[key], settings_b[key]
            counts = np.ndim(a) and np.ndim(b) and len(a) != len(b)
            differences.append(f"{key}: {name_a} has " + (f"{len(a)} " if counts else "")
                               + f"{_show(a)}, {name_b} has "
                               + (f"{len(b)} " if counts else "") + _show(b))
    if differences:
        raise ArtifactMismatchError(f"{name_a} and {name_b} disagree: " +
                                    "; ".join(differences) + (f": {hint}" if hint else ""))


# --------------------------------------------------------------------------- outputs

def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file or folder (after links, or hard links)."""
    a, b = Path(a), Path(b)
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):  # a link loop
        pass
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _written_by(path: Path, spec: Any) -> list[Path]:
    """Every path an output option writes: its own, then the ones derived from it."""
    if spec.writes is not None:
        derived = [Path(p) for p in spec.writes(path)]
    else:
        derived = [] if spec.folder else [manifest_path(path)]
    return [path] + [p for p in derived if p != path]


def check_no_clobber(opts: Any, extra_outputs: Iterable[tuple[str, Path]] = (),
                     extra_inputs: Iterable[tuple[str, Path]] = ()) -> None:
    """Refuse an output of ``opts`` that is, or links to, one of its inputs or an input's
    manifest (which travels with it: the settings of weights, the digest of labels).

    Inputs and outputs are the fields with ``role="input"``/``"output"``
    (:func:`detkit.options.io_paths`); each output also counts the files derived from it
    (its manifest, a report beside it, the files of a run directory).

    Args:
        opts: a command's options.
        extra_outputs: ``(flag, path)`` of outputs not in a field (e.g. a default
            computed from an input).
        extra_inputs: ``(flag, path)`` of inputs not in a field (the ``--config`` file).

    Raises:
        UsageError: naming the output and the input, with both flags.
    """
    inputs, _ = io_paths(opts)
    inputs += [RolePath(flag, Path(path), Spec(help="")) for flag, path in extra_inputs]
    for flag, out, paths in _written(opts, extra_outputs):
        for target in paths:
            for source in inputs:
                for protected, what in ((source.path, "the input"),
                                        (manifest_path(source.path), "the manifest of")):
                    if not same_file(target, protected):
                        continue
                    same_name = os.path.abspath(target) == os.path.abspath(protected)
                    relation = "is the same path" if same_name else "links to it"
                    how = (f"{flag} {out} {relation}" if target == out else
                           f"{flag} {out} also writes {target}, which {relation}")
                    whose = "" if protected == source.path else f" ({protected})"
                    raise UsageError(f"{flag} would overwrite {what} {source.flag} "
                                     f"{source.path}{whose}: {how}; choose another {flag}")


def _written(opts: Any, extra_outputs: Iterable[tuple[str, Path]] = ()
             ) -> list[tuple[str, Path, list[Path]]]:
    """``(flag, output, every file it writes)`` of the outputs of ``opts``."""
    _, outputs = io_paths(opts)
    written = [(item.flag, item.path, _written_by(item.path, item.spec)) for item in outputs]
    written += [(flag, Path(path), [Path(path), manifest_path(path)])
                for flag, path in extra_outputs]
    return written


def check_spares_files(opts: Any, files: Iterable[str], what: str,
                       extra_outputs: Iterable[tuple[str, Path]] = ()) -> None:
    """Refuse an output of ``opts`` (or a file it writes) that is one of ``files``, the
    files an input is made of that no option names (a dataset's images, annotation and
    class names files). Only outputs that exist now are compared (by file identity).

    Args:
        what: what ``files`` are, for the message (``a file of the dataset DATA x``).

    Raises:
        UsageError: naming the output and the file.
    """
    targets = [(flag, out, target) for flag, out, paths in _written(opts, extra_outputs)
               for target in paths if os.path.isfile(target)]
    if not targets:
        return
    names = tuple({os.path.basename(target) for *_, target in targets})
    for file in files:
        if not file.endswith(names):
            continue
        for flag, out, target in targets:
            if same_file(target, file):
                writes = "" if target == out else f" (it writes {target})"
                raise UsageError(f"{flag} {out}{writes} would overwrite {file}, {what}; "
                                 f"choose another {flag}")


def check_folder_replaceable(opts: Any, flag: str, folder: Path, marker: str) -> None:
    """Refuse to replace the output ``folder`` (a SavedModel export is written whole) when
    it holds one of ``opts``' inputs, or files of something else: a non-empty folder
    without ``marker`` (the file every such output has, e.g. ``saved_model.pb``).

    Raises:
        UsageError: naming the folder and the input or the reason.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    inputs, _ = io_paths(opts)
    for source in inputs:
        inside = Path(os.path.realpath(source.path))
        if inside.is_relative_to(os.path.realpath(folder)):
            raise UsageError(f"{flag} {folder} holds the input {source.flag} "
                             f"{source.path}, which writing {flag} would delete; choose "
                             f"another {flag}")
    if any(folder.iterdir()) and not (folder / marker).exists():
        raise UsageError(f"{flag} {folder} is a folder of other files (it has no {marker}), "
                         f"which writing {flag} would delete; choose a new or empty folder")


def check_side_file(flag: str, out: str | os.PathLike, side: str | os.PathLike,
                    key: str) -> None:
    """Refuse a file a command writes beside its output ``out`` (unnamed by the user:
    e.g. the report ``anchors.json`` beside ``anchors.txt``) when it would replace a file
    that is not that output's: one the manifest of ``out`` does not record under ``key``
    as its own (a COCO ground truth ``val.json`` beside ``--out val.anchors``).

    Raises:
        UsageError: naming the output and the file (exit 2).
    """
    side = Path(side)
    if not os.path.lexists(side):
        return
    try:
        recorded = read_manifest(out).get(key)
    except ArtifactError:
        recorded = None
    if recorded == side.name:
        return
    raise UsageError(f"{flag} {out} also writes {side}, which already exists and is not "
                     f"a file {flag} {out} wrote before (its manifest names no such "
                     f"report); choose another {flag}, or remove {side} if it is an old "
                     f"report")


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (as a file or a folder)."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def check_writable(path: str | os.PathLike, *, flag: str = "--out", folder: bool = False,
                   need_bytes: int = MIN_FREE_BYTES) -> None:
    """One clear error, before any work, when ``path`` cannot be written.

    Creates nothing: a probe file is made and removed in the nearest existing folder.

    Args:
        path: the output file (or folder, with ``folder=True``).
        flag: how to name the option in the message.
        need_bytes: free space the file system must have.

    Raises:
        UsageError: a folder is wanted and ``path`` is a file (exit 2).
        ArtifactError: ``path`` is a folder where a file is wanted, lies under a file,
            is not writable, or its disk is (nearly) full (exit 1).
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise UsageError(f"{flag} must be a folder: {path} exists and is not a folder")
    if not folder and path.is_dir():
        raise ArtifactError(f"cannot write {flag} {path}: it is a folder; give a file "
                            f"name (e.g. {path / 'NAME'})")
    base = _existing_ancestor(path if folder else path.parent)
    if not base.is_dir():
        raise ArtifactError(f"cannot write {flag} {path}: {base} is a file, not a folder")
    probe = base / f"{TMP_PREFIX}probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        probe.unlink()
    except OSError as err:
        raise ArtifactError(f"cannot write {flag} {path}: {err.strerror or err} "
                            f"(in {base})") from None
    free = shutil.disk_usage(base).free
    if free < need_bytes:
        raise ArtifactError(f"cannot write {flag} {path}: no space left on its disk "
                            f"({free / 2**20:.1f} MiB free in {base}, "
                            f"{need_bytes / 2**20:.1f} MiB needed)")


def check_outputs(opts: Any, extra_outputs: Iterable[tuple[str, Path]] = (),
                  extra_inputs: Iterable[tuple[str, Path]] = (),
                  command: Optional[str] = None) -> None:
    """Everything a command checks about its outputs before it starts: none is an input
    (:func:`check_no_clobber`, exit 2), each can be written (:func:`check_writable`,
    exit 1) and, given the ``command``'s name, an existing output file is one it made
    (:func:`check_replaces_own`, exit 2)."""
    extra_outputs = list(extra_outputs)
    check_no_clobber(opts, extra_outputs, extra_inputs)
    _, outputs = io_paths(opts)
    for item in outputs:
        check_writable(item.path, flag=item.flag, folder=item.spec.folder)
    for flag, path in extra_outputs:
        check_writable(path, flag=flag)
    if command is not None:
        check_replaces_own(opts, command)


def made_by(path: str | os.PathLike) -> Optional[str]:
    """The command that made artifact ``path``, as its manifest records (``None``: no
    manifest, or one that names no command)."""
    try:
        command = read_manifest(path).get("command")
    except ArtifactError:
        return None
    return command if isinstance(command, str) else None


def check_replaces_own(opts: Any, command: str) -> None:
    """An existing output file is replaced only when ``command`` made it (its manifest
    says so), as a re-run or ``make`` does; a file of the user's or another command's
    artifact is refused, unless the command's ``--exist-ok`` is given. The same holds for
    the files written beside or inside an output with a manifest of their own (a cache's
    init weights, import-darknet's anchors, doctor's report).

    Raises:
        UsageError: naming the output and who made it (exit 2).
    """
    if getattr(opts, "exist_ok", False):
        return
    _, outputs = io_paths(opts)
    for item in outputs:
        if item.spec.writes is run_files:    # a run folder: check_run_folder's rule
            continue
        written = _written_by(item.path, item.spec)
        for path in written:
            own = path == item.path and not item.spec.folder
            if own or (path != item.path and manifest_path(path) in written):
                check_own_file(item.flag, path, command)


def check_own_file(flag: str, path: str | os.PathLike, command: str) -> None:
    """Refuse to replace an existing file ``path`` (the output ``flag``) that ``command``
    did not make (see :func:`check_replaces_own`).

    Raises:
        UsageError: naming the file and who made it (exit 2).
    """
    if not os.path.isfile(path):
        return
    maker = made_by(path)
    if maker == command:
        return
    why = (f"was made by {maker}" if maker else
           f"has no {manifest_path(path).name} saying {command} made it (a file of yours?)")
    raise UsageError(f"{flag} {path} already exists and {why}: choose another {flag}, or "
                     f"remove the file to replace it")


def ensure_space(folder: str | os.PathLike, need_bytes: int, what: str) -> None:
    """Raise before writing ``what`` when ``folder``'s disk has less than ``need_bytes``.

    Raises:
        ArtifactError: naming the folder, the space free and needed.
    """
    free = shutil.disk_usage(_existing_ancestor(Path(folder))).free
    if free < need_bytes:
        raise ArtifactError(f"no space left to write {what}: {free / 2**20:.1f} MiB free, "
                            f"about {need_bytes / 2**20:.1f} MiB needed", path=folder)


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the ``.tmp-*`` files an interrupted writer left in ``folder`` (not below).

    Call it only while holding the folder (:func:`run_lock`): another writer's
    temporary files would go too.

    Returns:
        The files removed.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for item in folder.iterdir():
        if item.name.startswith(TMP_PREFIX) and item.is_file():
            with contextlib.suppress(FileNotFoundError):
                item.unlink()
                removed.append(item)
    return removed


# ----------------------------------------------------------------------- weights files

def weights_file_error(path: str | os.PathLike) -> ArtifactError | None:
    """Why ``path`` is not a model's weights file, or ``None`` when it is one.

    A run folder names the run's weights to give; a run's :data:`STATE_WEIGHTS` is its
    resume state, not a model's weights.
    """
    path = Path(path)
    if path.is_dir():
        return ArtifactError(f"a folder, not a weights file{run_weights_hint(path)}",
                             path=path)
    if not path.is_file():
        return ArtifactError("weights file not found", path=path)
    if path.name == STATE_WEIGHTS:
        return ArtifactError("a run's resume state (the weights with the optimizer's, read "
                             "by --resume), not a model's weights: give best.weights.h5 or "
                             "last.weights.h5 of the run", path=path)
    return None


def run_weights_hint(folder: Path) -> str:
    """``": give run/best.weights.h5 or last.weights.h5"`` for a run folder, else ``""``."""
    found = [folder / name for name in (BEST_WEIGHTS, LAST_WEIGHTS)
             if (folder / name).is_file()]
    if not found:
        return ""
    return f": give {found[0]}" + (f" or {found[1].name}" if len(found) > 1 else "")


def check_weights_file(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`Path` when it is a weights file.

    Raises:
        ArtifactError: see :func:`weights_file_error`.
    """
    error = weights_file_error(path)
    if error is not None:
        raise error
    return Path(path)


# --------------------------------------------------------------------------- run locks

def run_files(run_dir: str | os.PathLike) -> list[Path]:
    """The paths of :data:`RUN_FILES` in ``run_dir``."""
    return [Path(run_dir) / name for name in RUN_FILES]


def check_run_folder(run_dir: str | os.PathLike, *, resume: bool, exist_ok: bool) -> None:
    """What a training run's ``--out`` must be: with ``resume``, a folder that keeps an
    epoch; else no folder holding a run, unless ``exist_ok`` (a manifest, or the history
    of an epoch whose checkpoint failed, is no run: nothing to lose).

    Raises:
        UsageError: naming the folder and the flags to use (exit 2).
    """
    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / STATE_JSON).is_file():
            raise nothing_to_resume(run_dir)
        return
    found = [path.name for path in run_files(run_dir) if path.exists()]
    if exist_ok or not any(name in CHECKPOINT_FILES for name in found):
        return
    shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
    raise UsageError(f"--out {run_dir} already holds a run ({shown}): pass --resume to "
                     f"continue it, --exist-ok to replace it, or choose another --out")


def nothing_to_resume(run_dir: str | os.PathLike) -> UsageError:
    """The error of ``--resume`` into a folder that keeps no epoch (exit 2)."""
    return UsageError(f"--resume: {run_dir} holds no run to resume (no {STATE_JSON} of a "
                      f"kept epoch); drop --resume to start one")


def _lock_holder(lock: Path) -> dict[str, Any]:
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OSError:
        return True
    return True


def _is_stale(lock: Path, holder: Mapping[str, Any]) -> bool:
    """A lock whose process is gone (same host), or unreadable and not just created."""
    if not holder:
        try:
            return time.time() - lock.stat().st_mtime > LOCK_GRACE_S
        except FileNotFoundError:
            return True
    if holder.get("host") != socket.gethostname():
        return False  # another machine: its processes cannot be checked from here
    pid = holder.get("pid")
    return isinstance(pid, int) and pid != os.getpid() and not _pid_alive(pid)


def _describe_holder(holder: Mapping[str, Any]) -> str:
    if not holder:
        return "an unknown process (unreadable lock)"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started "
            f"{holder.get('started', '?')}")


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, command: str = "detkit") -> Iterator[list[str]]:
    """Hold ``folder`` (created if needed) for one run: ``FOLDER/.detkit.lock``.

    The lock file is created with ``O_EXCL`` and holds the pid, host and start time; it
    is removed on exit. A lock left by a process that is gone (same host) is taken over
    with a note; a live one stops this run.

    Yields:
        Notes for the user (a stale lock taken over).

    Raises:
        ArtifactError: another live process holds the folder (naming it).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    notes: list[str] = []
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(lock)
            if not _is_stale(lock, holder):
                raise ArtifactError(
                    f"in use by another run: {_describe_holder(holder)} holds {lock}; wait "
                    f"for it to finish or choose another --out (delete the lock only if "
                    f"no run is using the folder)", path=folder) from None
            whose = (f"of {_describe_holder(holder)} (no longer running)" if holder else
                     f"(unreadable, untouched for over {LOCK_GRACE_S:g} s)")
            notes.append(f"took over the stale lock {lock} {whose}")
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(mine, handle)
        break
    else:
        raise ArtifactError(f"could not take the lock {lock}: other runs keep taking it",
                            path=folder)
    try:
        yield notes
    finally:
        if _lock_holder(lock).get("pid") == mine["pid"]:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()


# --------------------------------------------------------------------------- freshness

def check_fresh(path: str | os.PathLike, *, remake: str | None = None) -> None:
    """Refuse artifact ``path`` when its manifest no longer describes it or its inputs.

    Compares the sha256 recorded for each input file with the file now (inputs that no
    longer exist are skipped: moved data cannot be compared) and the recorded size of
    the artifact with its size now.

    Args:
        path: the artifact being consumed (``labels.npz``, a bottleneck cache).
        remake: the command that re-creates it (default: the manifest's command).

    Raises:
        ArtifactMismatchError: an input changed since (naming it and the artifact).
        ArtifactError: the manifest was written for another version of the file.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if not manifest:
        return
    remake = remake or manifest.get("command") or "the command that made it"
    recorded = manifest.get("bytes")
    if isinstance(recorded, int) and path.is_file() and path.stat().st_size != recorded:
        raise ArtifactError(f"{manifest_path(path).name} describes a file of {recorded} "
                            f"bytes, this one has {path.stat().st_size}: an interrupted "
                            f"write? re-run {remake}", path=path)
    resolved = manifest.get("input_paths") or {}
    for name, digest in (manifest.get("inputs") or {}).items():
        if not digest:
            continue
        current = next((Path(p) for p in (resolved.get(name), name)
                        if p and Path(p).is_file()), None)
        if current is None:
            continue
        if sha256_file(current) != digest:
            raise ArtifactMismatchError(
                f"stale: its input {name} changed after it was made (the sha256 in "
                f"{manifest_path(path).name} differs); re-run {remake}", path=path)
