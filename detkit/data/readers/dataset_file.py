"""Ultralytics dataset files (``data.yaml``): the splits, class names and keypoints.

Such a file names its splits (``train``, ``val``, ``test``) as paths under its ``path``
(relative to the file, else to the working folder; without one, the file's folder); a
``../`` split is also tried under ``path`` itself, Ultralytics' rule for Roboflow's
``../train/images``, and an ``images`` folder stands for the YOLO folder holding it. Its
``names`` (or ``nc``) name the classes and ``kpt_shape`` makes it a pose dataset. Each
split is a dataset of any format detkit reads.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from detkit.data.readers.common import TEXT_ENCODING, display_path
from detkit.data.readers.yolo import IMAGES_DIR, is_yolo_folder, keypoint_values, names_of
from detkit.errors import DataError, invalid_yaml

#: Suffixes of a dataset file.
SUFFIXES = (".yaml", ".yml")
#: The splits a dataset file may name.
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class DatasetFile:
    """What a dataset file says: its split values as written, where they resolve, names
    (``None`` without ``names`` or ``nc``) and keypoint values per line (0: not pose)."""

    path: Path
    values: dict[str, Any]
    names: list[str] | None
    keypoints: int
    #: Its ``path``: the folder the splits are under ("" for the file's own).
    root: str = ""
    #: Whether it gives ``names`` (not only a class count ``nc``, which names ``"0"``..).
    named: bool = False

    def has(self, split: str) -> bool:
        """Whether the file names ``split``."""
        return split in self.values

    def split(self, split: str) -> list[Path]:
        """The datasets of ``split``: one, or each of a list (Ultralytics' VOC.yaml trains
        on four).

        Raises:
            DataError: no such split, a value that is not a path, another dataset file,
                or a path that does not exist (naming this file).
        """
        if split not in self.values:
            raise DataError(f"the dataset file names no '{split}' split (it has "
                            f"{', '.join(self.values)})", path=self.path)
        value = self.values[split]
        values = value if isinstance(value, list) else [value]
        found = []
        for item in values:
            if not isinstance(item, str):
                raise DataError(f"'{split}' must be a path or a list of paths, got "
                                f"{item!r}", path=self.path)
            part = self._resolve(item)
            if part.suffix.lower() in SUFFIXES:
                raise DataError(f"'{split}' names another dataset file, {part}",
                                path=self.path)
            if not part.exists():
                raise DataError(f"the '{split}' split, {part}, does not exist",
                                path=self.path)
            found.append(part)
        if not found:
            raise DataError(f"'{split}' is an empty list", path=self.path)
        return found

    def _resolve(self, value: str) -> Path:
        root = self.path.parent
        if self.root:
            beside, here = root / self.root, Path(self.root)
            root = here if not beside.exists() and here.exists() else beside
        found = root / value
        if not found.exists() and value.startswith("../"):
            found = root / value[3:]
        if found.name == IMAGES_DIR and is_yolo_folder(found.parent):
            found = found.parent
        return Path(display_path(found))


def read_dataset_file(path: str | Path) -> DatasetFile | None:
    """The dataset file ``path`` (``None`` when it is no yaml naming a ``train`` split).

    Raises:
        DataError: bad ``names`` or ``kpt_shape`` (naming the file).
    """
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES or not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding=TEXT_ENCODING))
    except yaml.YAMLError as err:   # a .yaml given as a dataset is meant as one
        raise invalid_yaml(err, DataError, path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read the dataset file: {err}", path=path) from None
    if not isinstance(data, dict) or data.get("train") is None:
        return None
    has_names = "names" in data or "nc" in data
    values = {split: data[split] for split in SPLITS if data.get(split) is not None}
    return DatasetFile(path, values,
                       names_of(path, data) if has_names else None,
                       keypoint_values(path, data), str(data.get("path") or ""),
                       named="names" in data)
