"""``python -m edgevision`` runs the CLI."""

from edgevision.cli import main

main()
