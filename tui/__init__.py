"""The operator console (Textual 8.2.8): ``tui.app.MinerConsole`` over any ``EngineLike``.

It reads engine snapshots and events and acts only through the engine's command API.
Panels live in ``tui.widgets``, dialogs in ``tui.screens``, theme files in ``themes/``
(packaged as ``tui.themes``), and ``tui.fake`` holds a scripted engine for tests.
"""
