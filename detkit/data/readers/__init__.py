"""Annotation readers: every format into :class:`~detkit.data.records.ImageRecord` lists.

Each reader is ``read_<format>(path, class_names=None, fixes=None) -> ReadResult``; use
:func:`detkit.data.dataset.load_dataset` to detect the format and resolve class names.
"""

from detkit.data.readers.coco import read_coco_json
from detkit.data.readers.common import ReadResult, read_class_names
from detkit.data.readers.csv_boxes import read_csv_boxes
from detkit.data.readers.imagesize import image_size
from detkit.data.readers.voc import read_voc_folder
from detkit.data.readers.yolo import read_yolo_folder
from detkit.data.readers.yolo3 import read_yolo3_lines

#: Reader of each format name.
READERS = {
    "yolo3": read_yolo3_lines,
    "coco": read_coco_json,
    "voc": read_voc_folder,
    "yolo": read_yolo_folder,
    "csv": read_csv_boxes,
}

__all__ = ["READERS", "ReadResult", "image_size", "read_class_names", "read_coco_json",
           "read_csv_boxes", "read_voc_folder", "read_yolo3_lines", "read_yolo_folder"]
