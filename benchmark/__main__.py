"""``python -m benchmark`` is the ``regbench`` command."""

import sys

from .cli import main

sys.exit(main())
