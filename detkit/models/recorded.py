"""The settings trained weights carry, and a command's options resolved against them.

``train``, ``distill`` and ``import-darknet`` record beside every ``.weights.h5`` (in
``NAME.weights.h5.manifest.json``) the model, width, backbone, input size, anchors and
class names it was made with. ``predict``, ``eval-map --model`` and ``export`` take each
of these from there when its flag is not given, and refuse a flag, anchors
file or set of class names that contradicts it: weights are never decoded with another
model's anchors, nor their classes relabelled by another dataset's names.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional, Sequence, TypeVar

import numpy as np

from detkit.artifacts import check_agree, manifest_path, read_manifest, settings_agree
from detkit.errors import ArtifactError, ArtifactMismatchError
from detkit.options import is_given

#: The architecture settings a weights manifest may record, with their flags.
FLAGS = {"model": "--model", "width": "--width", "backbone": "--backbone",
         "input_size": "--input-size"}

#: The commands that write ``.weights.h5`` files (with a weights manifest).
WEIGHTS_COMMANDS = ("train", "distill", "import-darknet", "cache-bottlenecks")
OptionsT = TypeVar("OptionsT")


@dataclasses.dataclass(frozen=True)
class RecordedSettings:
    """What a weights manifest says the weights were made with.

    Attributes:
        manifest: the manifest file (named in messages).
        values: the architecture settings it records (keys of :data:`FLAGS`).
        anchors: ``(K, 2)`` anchors in input pixels, if recorded.
        class_names: one name per class index, if recorded.
    """

    manifest: Path
    values: dict[str, Any]
    anchors: Optional[np.ndarray]
    class_names: Optional[list[str]]
    #: How messages name the record.
    what: str = "the weights' manifest"
    #: Settings recorded in another file than ``manifest`` (named in their messages).
    sources: dict[str, Path] = dataclasses.field(default_factory=dict)

    @property
    def model(self) -> Optional[str]:
        """The recorded ``--model`` (``None``: not recorded)."""
        return self.values.get("model")


def read_recorded(weights: Path) -> Optional[RecordedSettings]:
    """The settings recorded beside ``weights`` (``None``: no manifest, or none recorded).

    Raises:
        ArtifactError: a manifest that is not valid JSON (named, with the line).
    """
    manifest = read_manifest(weights)
    values = {key: manifest[key] for key in FLAGS if manifest.get(key) is not None}
    anchors, names = manifest.get("anchors"), manifest.get("class_names")
    command = manifest.get("command")
    if command is not None and command not in WEIGHTS_COMMANDS:
        raise ArtifactError(f"not a weights manifest: written by {_short(command)} (the "
                            f"file may have been written over by another command)",
                            path=manifest_path(weights))
    if not values and anchors is None and names is None:
        if manifest and command is None:     # not one detkit wrote: a report, a list
            raise ArtifactError("not a weights manifest: it records no command, model or "
                                "class names (the file may have been written over by "
                                "another command)", path=manifest_path(weights))
        return None
    _check_recorded(manifest_path(weights), values, anchors, names)
    return RecordedSettings(
        manifest=manifest_path(weights), values=values,
        anchors=None if anchors is None else np.asarray(anchors, np.float32).reshape(-1, 2),
        class_names=None if names is None else [str(name) for name in names])


def _check_recorded(path: Path, values: dict[str, Any], anchors: Any, names: Any) -> None:
    """Refuse a manifest whose settings are not what a weights manifest writes (e.g. a
    report written over it), naming the key and the file.

    Raises:
        ArtifactError: a value of the wrong type.
    """
    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    fits = {"model": lambda v: isinstance(v, str), "backbone": lambda v: isinstance(v, str),
            "width": lambda v: number(v) and v > 0,
            "input_size": lambda v: number(v) and v == int(v) and v > 0}
    wrong = [key for key, value in values.items() if not fits[key](value)]
    if anchors is not None:
        flat = np.asarray(anchors, dtype=object).ravel() if isinstance(anchors, list) else None
        if flat is None or not len(flat) or len(flat) % 2 or not all(map(number, flat)):
            wrong.append("anchors")
    if names is not None and not (isinstance(names, list) and
                                  all(isinstance(name, str) for name in names)):
        wrong.append("class_names")
    if wrong:
        key = wrong[0]
        shown = {"anchors": anchors, "class_names": names}.get(key, values.get(key))
        raise ArtifactError(f"not a weights manifest: {key!r} is {_short(shown)} (the "
                            f"file may have been written over by another command)",
                            path=path)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def start_architecture(weights: Optional[Path]) -> Optional[RecordedSettings]:
    """What a run starting from ``weights`` must share with them: the model, width and
    backbone their manifest records (not its anchors, input size or class names: a
    start may be of another dataset). ``None``: no weights file, or none recorded.

    Raises:
        ArtifactError: a manifest that is not valid JSON.
    """
    if weights is None or not Path(weights).is_file():
        return None
    recorded = read_recorded(Path(weights))
    values = {} if recorded is None else {key: value for key, value in
                                          recorded.values.items() if key != "input_size"}
    if not values:
        return None
    return RecordedSettings(manifest=recorded.manifest, values=values, anchors=None,
                            class_names=None)


def resolve_options(opts: OptionsT, recorded: Optional[RecordedSettings]
                    ) -> tuple[OptionsT, list[str]]:
    """``opts`` with each recorded setting whose flag is not given.

    A flag counts as given when the user set it (:func:`detkit.options.is_given`: typed
    or in ``--config``; through the Python API, when it differs from its default).
    ``--input-size`` may differ from the recorded size (the networks are fully
    convolutional): that gives a note, not an error.

    Returns:
        ``(resolved options, notes)``.

    Raises:
        ArtifactMismatchError: ``--model``, ``--width`` or ``--backbone`` given with
            another value than the manifest records (naming the manifest).
    """
    if recorded is None:
        return opts, []
    changes: dict[str, Any] = {}
    notes: list[str] = []
    for name, flag in FLAGS.items():
        if name not in recorded.values:
            continue
        given, value = getattr(opts, name), recorded.values[name]
        if given is None or not is_given(opts, name):
            changes[name] = value
        elif settings_agree(given, value):
            continue
        elif name == "input_size":
            source = recorded.sources.get(name, recorded.manifest)
            notes.append(f"running at input {given}; the weights were trained at {value} "
                         f"({source.name})")
        else:
            raise ArtifactMismatchError(f"{flag} {given} disagrees with {recorded.what}, "
                                        f"which records {value}", path=recorded.manifest)
    return dataclasses.replace(opts, **changes), notes


def resolve_anchors(family, anchors_file, recorded: Optional[RecordedSettings]
                    ) -> tuple[np.ndarray, Optional[Path]]:
    """The anchors to decode with: ``--anchors`` (checked against the recorded ones),
    else the recorded ones, else the family's defaults.

    Returns:
        ``(anchors (K, 2) float32 input pixels, the file read or None when recorded)``.

    Raises:
        ArtifactMismatchError: an anchors file that differs from the recorded anchors, or
            whose count does not fit the family.
    """
    if recorded is None or recorded.anchors is None:
        return family.resolve_anchors(anchors_file)
    if anchors_file is None:
        return recorded.anchors, None
    anchors, path = family.resolve_anchors(anchors_file)
    check_agree(str(path), {"anchors": anchors}, str(recorded.manifest),
                {"anchors": recorded.anchors}, keys=("anchors",))
    return anchors, path


def check_class_names(names: Sequence[str], source: str,
                      recorded: Optional[RecordedSettings]) -> None:
    """Refuse class names (from ``source``: ``--classes`` or the dataset) that differ
    from the ones the weights were trained on.

    Raises:
        ArtifactMismatchError: naming both sides and both lists.
    """
    if recorded is not None and recorded.class_names is not None:
        check_agree(source, {"class_names": list(names)}, str(recorded.manifest),
                    {"class_names": recorded.class_names}, keys=("class_names",),
                    hint="a dataset's classes must be the weights' (a VOC or CSV "
                         "dataset's may be some of them)")
