"""``python -m daemon`` runs the ``wardd`` command line."""

import sys

from daemon.cli import main

sys.exit(main())
