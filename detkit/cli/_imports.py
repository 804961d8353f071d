"""Keep a command's start-up short: no JAX import under the TensorFlow backend.

TensorFlow 2.21 imports JAX at start-up whenever it is installed (``tensorflow.lite``'s
utilities try ``from jax import jit``, for converting JAX functions), which costs about
1.2 s of CPU per command (``python -X importtime``); detkit never converts JAX functions
with TensorFlow. With ``KERAS_BACKEND=tensorflow`` the command marks JAX as absent in its
own process, so that import fails at once and TensorFlow goes on without it.
"""

from __future__ import annotations

import os
import sys


def skip_jax_under_tensorflow() -> None:
    """With ``KERAS_BACKEND=tensorflow`` and JAX not yet imported, make ``import jax``
    raise ImportError in this process (no-op otherwise: the backend may be JAX, set in
    ``keras.json``)."""
    if os.environ.get("KERAS_BACKEND") == "tensorflow" and "jax" not in sys.modules:
        sys.modules["jax"] = None
