"""``python -m edge_vl`` runs the ``edge-vl`` command."""

from edge_vl.cli import main

main()
