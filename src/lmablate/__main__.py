"""``python -m lmablate`` (also what ``torchrun -m lmablate`` runs)."""

from lmablate.cli import main

raise SystemExit(main())
