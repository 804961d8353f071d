"""Load ``*.weights.h5`` files (Keras 3 ``model.save_weights``) by layer name.

Keras 3 stores each layer as a group whose ``vars`` subgroup holds the layer's own
variables as datasets ``0, 1, ...`` and carries the layer's name as the attribute
``name``; sub-layers sit under ``layers/`` (functional models) or under the attribute
name (custom layers). Group keys are generated from class names (``conv2d_3``), so
this module matches layers by the chain of their *names* instead (``body/stem/bn``):
a layer whose variables all have matching shapes is copied, any other is skipped and
reported. A model trained on 80 classes thus gives a 3-class model its body and necks,
and only the class-dependent ``head_out_*`` convs keep their fresh initialization.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from detkit.anchors import ANCHORS_PER_SCALE
from detkit.artifacts import check_weights_file
from detkit.errors import ArtifactError, ArtifactMismatchError
from detkit.keras_compat import direct_sublayers
from detkit.models.detector import HEADS_NAME
from detkit.models.layers import BOX_VALUES, HEAD_OUT_PREFIX
from detkit.models.recorded import FLAGS, read_recorded
from detkit.tables import plural

#: Group holding a layer's own variables; its ``name`` attribute is the layer name.
VARS_GROUP = "vars"
#: Group holding the layers of a functional model.
LAYERS_GROUP = "layers"
#: Separator of layer-name paths in reports.
PATH_SEP = "/"


@dataclasses.dataclass
class SkippedLayer:
    """A layer present in both the model and the file that was not loaded."""

    path: str
    reason: str


@dataclasses.dataclass
class LoadReport:
    """What :func:`load_weights_by_name` did.

    Attributes:
        path: the weights file.
        loaded: name paths of the layers whose variables were copied.
        skipped: layers in both but with other shapes or another variable count.
        missing: weight-holding layers of the model that the file lacks.
        unused: weight-holding layers of the file that the model lacks.
        num_variables: variables copied.
    """

    path: str
    loaded: list[str] = dataclasses.field(default_factory=list)
    skipped: list[SkippedLayer] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    unused: list[str] = dataclasses.field(default_factory=list)
    num_variables: int = 0

    @property
    def complete(self) -> bool:
        """True when every weight-holding layer of the model was loaded."""
        return not self.skipped and not self.missing

    def output_convs_only(self) -> bool:
        """True when every layer not loaded is an output conv (``head_out_*``) with other
        shapes: a start trained on another class count, whose outputs start fresh."""
        return (bool(self.skipped) and not self.missing and all(
            item.path.rsplit("/", 1)[-1].startswith(HEAD_OUT_PREFIX) for item in self.skipped))

    def summary(self) -> str:
        """A few lines: counts, then each skipped/missing layer with its reason (one
        line when only the output convs were skipped: :meth:`output_convs_only`)."""
        lines = [f"loaded {len(self.loaded)} layers ({self.num_variables} variables) "
                 f"from {self.path}"]
        if self.output_convs_only():
            why = "; ".join(f"{item.path}: {item.reason}" for item in self.skipped)
            return (f"{lines[0]}; skipped {len(self.skipped)} output convs of another "
                    f"class count, which start fresh ({why})")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} layers:")
            lines += [f"  {item.path}: {item.reason}" for item in self.skipped]
        if self.missing:
            lines.append(f"not in the file ({len(self.missing)}, left as initialized): "
                         + ", ".join(self.missing))
        if self.unused:
            lines.append(f"in the file but not in the model ({len(self.unused)}): "
                         + ", ".join(self.unused))
        return "\n".join(lines)


def model_layer_variables(model: keras.Layer) -> dict[str, list]:
    """Name path -> own variables (in Keras' save order) of every weight-holding layer.

    The root's own name is left out of the paths, so files of a model with another
    name still match.
    """
    found: dict[str, list] = {}
    _walk_model(model, "", found)
    return found


def _children(layer: keras.Layer) -> list[keras.Layer]:
    if isinstance(layer, keras.Model) and hasattr(layer, "layers"):
        return list(layer.layers)
    return direct_sublayers(layer)


def _walk_model(layer: keras.Layer, prefix: str, found: dict[str, list]) -> None:
    children = _children(layer)
    child_ids = {id(v) for child in children for v in child.weights}
    own = [v for v in layer.weights if id(v) not in child_ids]
    if own and prefix:
        found[prefix] = own
    for child in children:
        _walk_model(child, f"{prefix}{PATH_SEP}{child.name}" if prefix else child.name, found)


def file_layer_arrays(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Name path -> own arrays of every weight-holding layer in a ``.weights.h5`` file.

    Raises:
        ArtifactError: missing file or not an HDF5 weights file.
    """
    return _read_file(path, np.asarray)


def file_layer_shapes(path: str | os.PathLike) -> dict[str, list[tuple[int, ...]]]:
    """Like :func:`file_layer_arrays` but only the shapes (reads no array data)."""
    return _read_file(path, lambda dataset: tuple(dataset.shape))


def _read_file(path: str | os.PathLike, read: Callable) -> dict[str, list]:
    import h5py

    path = check_weights_file(path)
    found: dict[str, list] = {}
    try:
        with h5py.File(path, "r") as handle:
            if VARS_GROUP not in handle and LAYERS_GROUP not in handle:
                raise ArtifactError("not a Keras 3 .weights.h5 file (no 'layers'/'vars' "
                                    "groups)", path=path)
            _walk_file(handle, "", found, read)
    except OSError as err:
        raise ArtifactError(f"not a readable HDF5 weights file ({err})", path=path) from None
    return found


def _walk_file(group, prefix: str, found: dict, read: Callable) -> None:
    import h5py

    for key in group:
        item = group[key]
        if not isinstance(item, h5py.Group):
            continue
        if key == VARS_GROUP:
            values = [read(item[k]) for k in sorted(item, key=_index)
                      if isinstance(item[k], h5py.Dataset)]
            if values and prefix:
                found[prefix] = values
        elif key == LAYERS_GROUP:
            for child_key in item:
                _walk_child(item[child_key], child_key, prefix, found, read)
        else:
            _walk_child(item, key, prefix, found, read)


def _walk_child(group, key: str, prefix: str, found: dict, read: Callable) -> None:
    import h5py

    if not isinstance(group, h5py.Group):
        return
    vars_group = group.get(VARS_GROUP)
    name = key
    if vars_group is not None and "name" in vars_group.attrs:
        name = vars_group.attrs["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
    _walk_file(group, f"{prefix}{PATH_SEP}{name}" if prefix else name, found, read)


def _index(key: str) -> tuple[int, str]:
    return (int(key), key) if key.isdigit() else (1 << 30, key)


def load_weights_by_name(model: keras.Model, path: str | os.PathLike, *,
                         strict: bool = False) -> LoadReport:
    """Copy the variables of every layer whose name path and shapes match.

    A layer is loaded whole or not at all: if any of its variables differs in shape
    (or the variable count differs) it is skipped and reported; nothing crashes.

    Args:
        model: the model to fill (already built).
        path: a ``*.weights.h5`` file saved by Keras 3.
        strict: raise unless every layer of the model is loaded.

    Returns:
        A :class:`LoadReport`.

    Raises:
        ArtifactError: missing or unreadable file.
        ArtifactMismatchError: no layer could be loaded, or ``strict`` and some layer
            was skipped or missing.
    """
    arrays = file_layer_arrays(path)
    variables = model_layer_variables(model)
    report = LoadReport(path=os.fspath(path))
    for name, model_vars in variables.items():
        file_vars = arrays.get(name)
        if file_vars is None:
            report.missing.append(name)
            continue
        reason = _mismatch(model_vars, file_vars)
        if reason:
            report.skipped.append(SkippedLayer(name, reason))
            continue
        for variable, value in zip(model_vars, file_vars):
            variable.assign(value.astype(variable.dtype))
        report.loaded.append(name)
        report.num_variables += len(model_vars)
    report.unused = [name for name in arrays if name not in variables]
    if not report.loaded:
        raise ArtifactMismatchError(
            f"no layer of model {model.name!r} matches the weights file by name and shape "
            f"({plural(len(report.skipped), 'layer')} with other shapes, "
            f"{len(report.missing)} missing); {_saved_from(path)}", path=path)
    if strict and not report.complete:
        raise ArtifactMismatchError("weights do not fully match the model:\n" +
                                    report.summary(), path=path)
    return report


def _saved_from(path: str | os.PathLike) -> str:
    """What made the weights, from their manifest, as the flags to pass (or a question)."""
    try:
        recorded = read_recorded(Path(path))
    except ArtifactError:
        recorded = None
    values = {} if recorded is None else recorded.values
    flags = " ".join(f"{FLAGS[name]} {values[name]:g}" if name == "width"
                     else f"{FLAGS[name]} {values[name]}"
                     for name in ("model", "width", "backbone") if name in values)
    if not flags:
        return "was it saved from another architecture or --width?"
    return f"its manifest says it was saved from {flags}: pass those"


def num_classes_in_file(path: str | os.PathLike,
                        num_anchors_per_scale: int = ANCHORS_PER_SCALE) -> int:
    """Classes ``C`` of a detkit detector's weights, from its ``head_out_0`` bias shape.

    Raises:
        ArtifactError: the file has no ``heads/head_out_0`` layer of a YOLO head's shape.
    """
    shapes = file_layer_shapes(path).get(f"{HEADS_NAME}{PATH_SEP}{HEAD_OUT_PREFIX}0")
    values = shapes[-1][-1] if shapes else 0
    per_anchor = values // num_anchors_per_scale
    if not shapes or per_anchor * num_anchors_per_scale != values or per_anchor <= BOX_VALUES:
        raise ArtifactError("cannot tell the number of classes from the weights (no "
                            "detkit YOLO 'heads/head_out_0' layer); give the class names with "
                            "--classes",
                            path=path)
    return per_anchor - BOX_VALUES


def _mismatch(model_vars: list, file_arrays: list[np.ndarray]) -> str | None:
    if len(model_vars) != len(file_arrays):
        return f"{len(file_arrays)} variables in the file, {len(model_vars)} in the model"
    for variable, array in zip(model_vars, file_arrays):
        if tuple(variable.shape) != tuple(array.shape):
            return (f"{variable.name}: shape {tuple(array.shape)} in the file, "
                    f"{tuple(variable.shape)} in the model")
    return None
