"""``python -m detkit``: same as the ``detkit`` console script."""

from detkit.cli import main

if __name__ == "__main__":
    main()
