"""``python -m slimtorch`` runs the command-line interface."""

from slimtorch.cli import main

raise SystemExit(main())
