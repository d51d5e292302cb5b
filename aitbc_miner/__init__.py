"""aitbc-miner: sell GPU and CPU compute on the AITBC network.

This package is the engine and never imports Textual; the console lives in ``tui``.
"""

__version__ = "0.1.0"
