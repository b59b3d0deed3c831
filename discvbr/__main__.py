"""``python -m discvbr`` runs the CLI."""

import sys

from discvbr.cli import main

sys.exit(main())
