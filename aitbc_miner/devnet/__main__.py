"""``python -m aitbc_miner.devnet``."""

import sys

from .cli import main

sys.exit(main())
