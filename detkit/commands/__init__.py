"""The library behind the CLI: one module per subcommand, named after it.

``detkit.commands.<name>`` holds ``Options`` (a keyword-only dataclass declaring every
option once: type, default, help and bounds; see :mod:`detkit.options`) and
``run(options, progress) -> Result``. It orchestrates the stages and never prints or
exits; :mod:`detkit.cli` derives the command line from ``Options`` and renders the
result. Modules import Keras inside ``run`` so that ``detkit --help`` stays fast.
"""
