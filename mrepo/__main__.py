"""``python -m mrepo`` runs the command-line interface."""

from .cli import main

main()
