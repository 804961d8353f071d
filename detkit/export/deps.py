"""The optional ``export`` extra: import a runtime or converter, or say how to get it."""

from __future__ import annotations

import importlib
from types import ModuleType

from detkit.errors import UsageError

#: What to install for every optional module export and the runtimes use.
INSTALL_HINT = "pip install 'detkit[export]'"


def require(module: str, needed_for: str) -> ModuleType:
    """Import ``module`` or raise one clear line naming what needs it.

    Args:
        module: the importable name (``onnxruntime``, ``tf2onnx``).
        needed_for: what the user asked for (``--format onnx``).

    Raises:
        UsageError: the module is not installed (exit 2).
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"{needed_for} needs the Python package {module!r}, which is not "
                         f"installed: {INSTALL_HINT}") from None


def first_available(modules: tuple[str, ...], needed_for: str) -> ModuleType:
    """The first of ``modules`` that imports (e.g. LiteRT, then TensorFlow's TF Lite)."""
    for module in modules:
        try:
            return importlib.import_module(module)
        except ImportError:
            continue
    raise UsageError(f"{needed_for} needs one of the Python packages "
                     f"{', '.join(map(repr, modules))}, none is installed: {INSTALL_HINT}")
