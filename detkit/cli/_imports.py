"""Keep a command's start-up short: imports that detkit never uses are skipped.

- TensorFlow 2.21 imports JAX at start-up whenever it is installed (``tensorflow.lite``'s
  utilities try ``from jax import jit``, for converting JAX functions), which costs about
  1.2 s of CPU per command (``python -X importtime``); detkit never converts JAX functions
  with TensorFlow. With ``KERAS_BACKEND=tensorflow`` the command marks JAX as absent in
  its own process, so that import fails at once and TensorFlow goes on without it.
- Keras imports ``matplotlib.pyplot`` at start-up when matplotlib is installed
  (``keras.src.visualization``'s image and box galleries, ~1 s of CPU), though only those
  two functions use it and detkit calls neither. While those two Keras modules run, the
  command hides matplotlib from them, so that they take the "not installed" branch they
  already have; matplotlib stays importable for everything else (detkit's own plots
  import it when they draw).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

#: The Keras modules that import matplotlib at start-up only for themselves.
KERAS_GALLERIES = ("keras.src.visualization.plot_image_gallery",
                   "keras.src.visualization.plot_bounding_box_gallery")


def skip_jax_under_tensorflow() -> None:
    """With ``KERAS_BACKEND=tensorflow`` and JAX not yet imported, make ``import jax``
    raise ImportError in this process (no-op otherwise: the backend may be JAX, set in
    ``keras.json``)."""
    if os.environ.get("KERAS_BACKEND") == "tensorflow" and "jax" not in sys.modules:
        sys.modules["jax"] = None


class _WithoutMatplotlib(importlib.abc.Loader):
    """Runs a module with ``matplotlib`` absent (unless it is imported already)."""

    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        hide = "matplotlib" not in sys.modules
        if hide:
            sys.modules["matplotlib"] = None  # `import matplotlib...` raises ImportError
        try:
            self.loader.exec_module(module)
        finally:
            if hide and sys.modules.get("matplotlib", False) is None:
                del sys.modules["matplotlib"]


class _KerasGalleriesFinder(importlib.abc.MetaPathFinder):
    """Finds :data:`KERAS_GALLERIES` as usual, to be run by :class:`_WithoutMatplotlib`."""

    def find_spec(self, name, path, target=None):
        if name not in KERAS_GALLERIES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _WithoutMatplotlib(spec.loader)
        return spec


def skip_pyplot_in_keras() -> None:
    """Let Keras start without importing matplotlib (see the module doc); no-op once
    Keras is imported or when the finder is in place."""
    if "keras" in sys.modules or any(isinstance(f, _KerasGalleriesFinder)
                                     for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _KerasGalleriesFinder())


def skip_unused_imports() -> None:
    """Both start-up savings of this module, for the CLI's entry point."""
    skip_jax_under_tensorflow()
    skip_pyplot_in_keras()
