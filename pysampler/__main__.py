"""``python -m pysampler``: the same as the ``pysampler`` command."""

import sys

from .cli import main

sys.exit(main())
