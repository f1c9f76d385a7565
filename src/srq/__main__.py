"""``python -m srq`` runs the command line."""

from .cli import main

main()
