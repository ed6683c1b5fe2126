"""``python -m precisionlab``: the precisionlab command."""

import sys

from .cli import main

sys.exit(main())
