"""``python -m sessionize`` runs the CLI."""

from sessionize.cli import main

main()
