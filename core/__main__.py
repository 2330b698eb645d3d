"""``python -m sealpy.core`` runs the CLI (the same as the ``sealpy`` command)."""

import sys

from sealpy.core.cli import main

sys.exit(main())
