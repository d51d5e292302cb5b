"""The host around the engine: the entry point, the runtime that builds and runs an engine,
the control socket and its viewers (``ctl``, ``attach``), metrics, systemd notify, the demo
and the ledger reports. Nothing in the engine imports this package."""
