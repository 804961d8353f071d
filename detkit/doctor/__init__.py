"""The dataset doctor: a health report of a dataset before training (``detkit doctor``).

- :mod:`detkit.doctor.boxes`: the boxes as flat columns, letterboxed as training sees
  them; class, size and aspect statistics (vectorized: no loop per box).
- :mod:`detkit.doctor.images`: image files found, missing, unreadable, mismatched in
  size, truncated, duplicated (``--check-images`` sets how deep).
- :mod:`detkit.doctor.anchor_fit`: anchor quality and the k-means suggestion.
- :mod:`detkit.doctor.findings`: what is fatal, what is a warning (thresholds).
- :mod:`detkit.doctor.plots`: the PNG figures (matplotlib, optional).
- :func:`diagnose` ties them together into a :class:`Diagnosis`.
"""

from detkit.doctor.diagnose import REPORT_VERSION, Diagnosis, diagnose
from detkit.doctor.findings import FATAL, NOTE, WARNING, Finding, Thresholds
from detkit.doctor.images import CHECK_MODES

__all__ = ["CHECK_MODES", "Diagnosis", "FATAL", "Finding", "NOTE", "REPORT_VERSION",
           "Thresholds", "WARNING", "diagnose"]
