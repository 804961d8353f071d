"""detkit: train YOLO-style object detectors from the shell."""

__version__ = "0.1.0"
