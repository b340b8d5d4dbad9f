"""``python -m n2c``: the command line (``n2c.cli``)."""

import sys

from n2c.cli.main import main

sys.exit(main())
