"""``python -m pushforward``."""

import sys

from pushforward.cli.main import main

sys.exit(main())
