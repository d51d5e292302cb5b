"""The ``aitbc-miner`` command: console (default), ``--headless``, and subcommands.

Exit codes (``codes.ExitCode``): 0 clean stop, 1 other fatal error, 2 config or usage
error, 3 the coordinator refused the miner key. An operator error (config, a folder or
address the miner cannot use) is one line on stderr, never a traceback; a fatal error
while running names its causes (the errors inside an exception group, not the group).
Global flags work before or after the subcommand (``config check --config x.yaml``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn

from .. import __version__
from ..codes import ExitCode
from ..config import ConfigError, Settings, load_settings, render_effective
from ..engine import Engine
from ..handoff import handed_over, reexec_without
from ..identity.rigkey import RigKeyError
from ..identity.token import TokenError
from ..logs import describe_exception, is_journal_stream, journal_prefix, redact, setup_logging
from . import allocator, fleetcmd, keys
from .control import SOCKET_NAME, read_only_socket_path
from .ctl import COMMANDS, run_ctl
from .lock import AlreadyRunning, StateLock
from .reload import Reloader
from .runtime import (
    Host,
    MissingKey,
    build_engine,
    control_access,
    control_socket_path,
    ensure_private_dir,
)

log = logging.getLogger("aitbc_miner.host.cli")

LOG_FILE = "aitbc-miner.log"  # where the console's logs go, in the state dir
#: Where the systemd unit's miner listens (RuntimeDirectory=aitbc-miner).
SERVICE_SOCKET = Path("/run/aitbc-miner") / SOCKET_NAME
_SOCKET_HELP = ("the control socket to use (default: the first that exists of the configured "
                "one, the service's in /run/aitbc-miner, the per-user one; control.ro.sock "
                "with --read-only)")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # usage errors exit 2 with one line
        self.print_usage(sys.stderr)
        self.exit(ExitCode.CONFIG, f"{self.prog}: error: {message}\n")


def _global_flags(p: argparse.ArgumentParser, *, top: bool) -> None:
    """The flags every command takes, before or after its name. On a subcommand they
    default to SUPPRESS, so a flag given only before the subcommand keeps its value."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    p.add_argument("--config", type=Path, metavar="PATH", default=default(None),
                   help="YAML config file")
    p.add_argument("--coordinator", metavar="URL", default=default(None),
                   help="coordinator base URL (overrides config)")
    p.add_argument("--headless", action="store_true", default=default(False),
                   help="no console: JSON-lines logs on stdout (automatic when stdout is no TTY)")
    p.add_argument("--exit-when-drained", action="store_true", default=default(False),
                   help="after a drain (any source), exit once running jobs are done")
    p.add_argument("--theme", default=default(None), help="console theme")
    p.add_argument("--log-level", type=str.upper, default=default(None),
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="lowest level logged (overrides log.level)")


def _format_flag(p: argparse.ArgumentParser, choices: list[str], default: str | None,
                 json_alias: bool = False) -> None:
    """``--format``: one spelling for every command (``table`` is read as ``text``)."""
    p.add_argument("--format", type=lambda v: "text" if v.lower() == "table" else v.lower(),
                   choices=choices, default=default,
                   help=f"output format: {', '.join(choices)} (default {default or 'text'})")
    if json_alias:  # the old spelling, kept for scripts
        p.add_argument("--json", dest="format", action="store_const", const="json",
                       help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="aitbc-miner", description="Sell GPU/CPU compute on the AITBC network.")
    p.add_argument("--version", action="version", version=f"aitbc-miner {__version__}")
    _global_flags(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    config = sub.add_parser("config", help="inspect the configuration")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True,
                                       parser_class=_Parser)
    check = config_sub.add_parser(
        "check", help="validate and print the effective config (secrets redacted)")
    sub.add_parser("devnet", help="run the reference coordinator (see: devnet --help)",
                   add_help=False)
    receipts = sub.add_parser("receipts", help="list, verify again and export stored receipts")
    _format_flag(receipts, ["text", "json", "csv"], "text")
    receipts.add_argument("--output", type=Path, metavar="FILE", help="write here, not stdout")
    earnings = sub.add_parser("earnings", help="earnings summary from the local journal")
    _format_flag(earnings, ["text", "json"], "text")
    attach = sub.add_parser("attach", help="open the console on a running (headless) miner")
    attach.add_argument("--read-only", action="store_true",
                        help="watch only, through the read-only socket; keys do nothing")
    attach.add_argument("--socket", type=Path, metavar="PATH", help=_SOCKET_HELP)
    attach.add_argument("--give-up-after", type=float, default=300.0, metavar="SECONDS",
                        help="when the miner stops answering, retry this long, then exit 1 "
                        "(default 300; a socket file gone for 30 s ends it sooner)")
    ctl = sub.add_parser("ctl", help="control a running miner through its socket")
    ctl.add_argument("action", choices=COMMANDS)
    ctl.add_argument("job_id", nargs="?", help="the job to cancel")
    ctl.add_argument("--exit", action="store_true", help="drain: exit once drained")
    _format_flag(ctl, ["text", "json"], None, json_alias=True)  # events: json by default
    ctl.add_argument("--read-only", action="store_true",
                     help="use the read-only socket (commands are refused there)")
    ctl.add_argument("--socket", type=Path, metavar="PATH", help=_SOCKET_HELP)
    status = sub.add_parser("status", help="what a running miner is doing (= ctl status, "
                            "through the read-only socket)")
    _format_flag(status, ["text", "json"], "text", json_alias=True)
    status.add_argument("--socket", type=Path, metavar="PATH", help=_SOCKET_HELP)
    status.set_defaults(read_only=True)
    demo = sub.add_parser("demo", help="reference coordinator + feeder + miner on loopback")
    demo.add_argument("--dialect", choices=["2026-01", "2026-08"], default="2026-01")
    demo.add_argument("--slots", type=int, default=4, help="CPU slots (default 4)")
    demo.add_argument("--simulate-gpus", type=int, default=2, metavar="N",
                      help="SIMULATED GPUs running the reference Ollama (default 2; 0 = none)")
    demo.add_argument("--exit-after", type=int, metavar="N",
                      help="drain and exit after N outcomes are delivered")
    demo.add_argument("--metrics", metavar="HOST:PORT",
                      help="serve Prometheus metrics, /healthz and /readyz there (port 0: any)")
    identity = keys.add_parsers(sub)  # key show|generate|import|export-public, verify-result
    fleet = fleetcmd.add_parser(sub)  # the fleet console, JSON, commands (Redis)
    for command in (config, check, receipts, earnings, attach, ctl, status, demo, *identity,
                    fleet):
        _global_flags(command, top=False)
    return p


def main(argv: list[str] | None = None) -> int:
    allocator.tune()  # before any thread starts (see the module)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["devnet"]:
        from ..devnet.cli import main as devnet_main

        return devnet_main(argv[1:])
    args = build_parser().parse_args(argv)
    headless = args.headless or not sys.stdout.isatty()
    try:
        if args.command == "config":
            print(render_effective(_settings(args)), end="")
            return ExitCode.OK
        if args.command == "attach":
            return _attach(args)
        if args.command == "ctl":
            if args.action == "cancel" and not args.job_id:
                print("aitbc-miner ctl cancel: name the job to cancel", file=sys.stderr)
                return ExitCode.CONFIG
            return run_ctl(socket_for(args), args.action, args.job_id, args.exit,
                           fmt=args.format)
        if args.command == "status":
            return run_ctl(socket_for(args), "status", fmt=args.format)
        if args.command in ("receipts", "earnings"):
            return _report(args)
        if args.command == "demo":
            return _run_demo(args, headless)
        if args.command in keys.COMMANDS:
            return keys.run(args, lambda: _settings(args))
        if args.command == "fleet":
            return fleetcmd.run(args, lambda: _settings(args), operator_error)
        _leave_the_environment(args)
        return _run_miner(args, headless)
    except ConfigError as exc:
        return operator_error(str(exc), ExitCode.CONFIG)
    except MissingKey as exc:
        return operator_error(f"config error: {exc}", ExitCode.CONFIG)
    except (RigKeyError, TokenError) as exc:  # the rig key: a wrong PIN, a refused key file
        return operator_error(f"aitbc-miner: rig key: {exc}", ExitCode.CONFIG)
    except (OSError, sqlite3.Error) as exc:  # a folder, file or address it cannot use
        return operator_error(f"aitbc-miner: error: {_os_error(exc)}", ExitCode.FATAL)
    except AlreadyRunning as exc:
        print(str(exc), file=sys.stderr)
        return ExitCode.CONFIG
    except KeyboardInterrupt:
        return ExitCode.OK
    except BrokenPipeError:  # `aitbc-miner ctl status | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK


def operator_error(text: str, code: int) -> int:
    """One line on stderr (at journald's error priority under systemd); returns ``code``."""
    prefix = journal_prefix(logging.ERROR) if is_journal_stream(sys.stderr) else ""
    print(prefix + " ".join(text.split()), file=sys.stderr)
    return code


def _os_error(exc: OSError | sqlite3.Error) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return describe_exception(exc)


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    if args.log_level:
        overrides["log"] = {"level": args.log_level}
    if args.coordinator:
        overrides["coordinator"] = {"url": args.coordinator}
    if args.theme:
        overrides["console"] = {"theme": args.theme}
    return load_settings(args.config, overrides=overrides)


def socket_for(args: argparse.Namespace, settings: Settings | None = None) -> Path:
    """``--socket``, else the first socket that exists of: the one the config names
    (``control.socket_dir`` or ``paths.state_dir``), the service's (``/run/aitbc-miner``),
    the per-user one; the read-only one of each with ``--read-only``. The config is not
    read when ``--socket`` names the socket: a service's config file may be unreadable to
    the operator who reaches its socket."""
    if args.socket is not None:
        return Path(args.socket)
    settings = settings or _settings(args)
    own = control_socket_path(settings)
    named = settings.control.socket_dir is not None or settings.paths.state_dir is not None
    candidates = [own, SERVICE_SOCKET] if named else [SERVICE_SOCKET, own]
    if args.read_only:
        candidates = [read_only_socket_path(path) for path in candidates]
    found = next((path for path in candidates if _may_exist(path)), None)
    return found or candidates[0 if named else 1]


def _may_exist(path: Path) -> bool:
    try:
        return path.is_socket()
    except PermissionError:  # a closed folder on the way: run_ctl says so
        return True


def _report(args: argparse.Namespace) -> int:
    from ..energy import tariff_from
    from .reports import earnings_report, receipts_report

    settings = _settings(args)
    journal = settings.paths.journal_path
    if not journal.exists():
        print(f"no journal at {journal}: this miner has not run yet", file=sys.stderr)
        return ExitCode.FATAL
    if args.command == "earnings":
        text = earnings_report(journal, fmt=args.format, tariff=tariff_from(settings))
    else:
        text = receipts_report(journal, pinned_key=settings.coordinator.public_key,
                               miner_id=settings.miner.id, miner_key=settings.miner_key(),
                               fmt=args.format)
    if getattr(args, "output", None):
        args.output.write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return ExitCode.OK


def _attach(args: argparse.Namespace) -> int:
    """The console over a running miner's control socket; quitting leaves it running."""
    from .remote import AgentUnreachable, RemoteEngine

    settings = _settings(args)
    _log_to_file(settings.paths.effective_state_dir, settings.log.level)

    async def attached() -> str | None:
        from tui.app import MinerConsole

        remote = RemoteEngine(socket_for(args, settings), read_only=args.read_only,
                              give_up_after_s=args.give_up_after)
        await remote.connect()
        try:
            await MinerConsole(remote, theme=args.theme, default_theme=settings.console.theme,
                               prefs_path=settings.paths.effective_state_dir / "console.json",
                               bell=settings.console.bell).run_async()
        finally:
            await remote.close()
        return remote.gone

    try:
        gone = asyncio.run(attached())
    except AgentUnreachable as exc:
        print(str(exc), file=sys.stderr)
        return ExitCode.FATAL
    if gone:  # said after the console gave the terminal back
        print(f"aitbc-miner attach: {gone}", file=sys.stderr)
        return ExitCode.FATAL
    return ExitCode.OK


class Console:
    """The Textual console as a coroutine over an engine (``await Console(...)(engine)``);
    imported only when used. ``hang_up()`` closes it at once: the host calls it on SIGHUP,
    when the terminal is gone.

    ``theme`` is ``--theme`` (wins over the one remembered from ``t``, kept in
    ``state_dir/console.json``); ``default_theme`` is the config's, used when neither is set."""

    def __init__(self, theme: str | None, default_theme: str | None = None,
                 state_dir: Path | None = None, bell: bool = False) -> None:
        self.theme, self.default_theme, self.state_dir = theme, default_theme, state_dir
        self.bell = bell  # console.bell: ring with each alert toast
        self.app: Any = None
        self.hung_up = False

    async def __call__(self, engine: Engine) -> None:
        from tui.app import MinerConsole

        if self.hung_up:  # the terminal went before the console could open on it
            return
        extra: dict[str, Any] = (
            {"prefs_path": self.state_dir / "console.json"} if self.state_dir else {})
        self.app = MinerConsole(engine, theme=self.theme, default_theme=self.default_theme,
                                bell=self.bell, **extra)
        await self.app.run_async()

    def hang_up(self) -> None:
        self.hung_up = True
        if self.app is not None:
            self.app.terminal_lost("SIGHUP")


def _leave_the_environment(args: argparse.Namespace) -> None:
    """``host.start`` took the settings variables out of the environment block; the settings
    may name one more holding a secret (``identity.token.pin_env``): take it out the same
    way (exec again, same PID; ``handoff``). Returns at once when there is none."""
    pin_env = _settings(args).identity.token.pin_env
    if not pin_env or pin_env not in os.environ:
        return
    try:
        reexec_without([pin_env])
    except OSError as exc:
        raise OSError(exc.errno, "cannot start again without the secrets in the "
                      f"environment: {exc.strerror or exc}") from None


def _fleet(settings: Settings,
           engine: Engine) -> Callable[[], Coroutine[Any, Any, None]] | None:
    """The fleet's loops when ``fleet.redis_url`` is set (Redis is only imported then)."""
    if settings.fleet.redis_url is None:
        return None
    from ..fleet.rig import FleetRig

    return FleetRig(engine, settings.fleet).run


def _run_miner(args: argparse.Namespace, headless: bool) -> int:
    if headless:  # until the host handles it, a reload must not kill a starting service
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    settings = _settings(args)
    ensure_private_dir(settings.paths.effective_state_dir)
    lock = StateLock.acquire(settings.paths.effective_state_dir)  # before anything else
    key = settings.miner_key()
    if headless:
        setup_logging(settings.log.level, secrets=[key] if key else (),
                      on_output_closed=_end_quietly)
    else:  # the console owns the terminal: logs go to a file beside the journal
        _log_to_file(settings.paths.effective_state_dir, settings.log.level, key)
    engine = build_engine(settings, exit_when_drained=args.exit_when_drained)
    if moved := handed_over():  # after the sandbox: a line without isolation=OFF misleads
        log.info("taken out of the process environment at start: %s", ", ".join(moved),
                 extra={"event_name": "environment_cleared", "variables": moved})
    host = Host(engine, drain_grace_s=settings.jobs.drain_grace_s,
                control_socket=control_socket_path(settings),
                control_access=control_access(settings),
                metrics_address=settings.metrics.address,
                reload=Reloader(engine, settings, lambda: _settings(args)),
                fleet=_fleet(settings, engine))
    ui = None if headless else Console(args.theme, settings.console.theme,
                                       settings.paths.effective_state_dir,
                                       settings.console.bell)
    try:
        return _said(asyncio.run(host.run(ui)), host,
                     None if headless else settings.paths.effective_state_dir / LOG_FILE)
    except Exception as exc:  # last resort: one line naming the causes, never the key
        return _fatal(exc, None if headless else settings.paths.effective_state_dir / LOG_FILE)
    finally:
        lock.release()


def _fatal(exc: BaseException, log_file: Path | None) -> int:
    """Log a fatal error with its causes (at any level); with the console, the terminal
    gets the same line, since the log went to a file."""
    cause = describe_exception(exc)
    log.error("fatal error: %s; exiting", cause, exc_info=exc,
              extra={"event_name": "fatal_error"})
    if log_file is not None:
        operator_error(redact(f"aitbc-miner: fatal error: {cause} (log: {log_file})"),
                       ExitCode.FATAL)
    return ExitCode.FATAL


def _said(code: int, host: Host, log_file: Path | None) -> int:
    """With the console, why the miner stopped on its own (the key refused) goes to the
    terminal the console gave back: the log went to a file."""
    if host.reason and log_file is not None and not host.hung_up:
        operator_error(redact(f"aitbc-miner: stopped: {host.reason} (log: {log_file})"), code)
    return code


def _end_quietly() -> None:
    """stdout's reader left (``aitbc-miner --headless | head``): drain and exit, as on
    SIGTERM, without a word (logging goes to /dev/null from now on)."""
    os.kill(os.getpid(), signal.SIGTERM)


def _log_to_file(folder: Path, level: str, key: str | None = None) -> Path:
    """JSON-lines logs to ``folder/aitbc-miner.log`` (the console owns stdout/stderr),
    rotated (``logs.LOG_FILE_MAX_BYTES``, ``logs.LOG_FILE_BACKUPS``)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / LOG_FILE
    setup_logging(level, file=path, secrets=[key] if key else ())
    return path


def _run_demo(args: argparse.Namespace, headless: bool) -> int:
    from .demo import run_demo

    level = args.log_level or "INFO"
    if headless:
        setup_logging(level, on_output_closed=_end_quietly)
    ui = None if headless else Console(args.theme)
    log_dir = None if headless else _log_to_file
    return asyncio.run(run_demo(dialect=args.dialect, slots=args.slots, gpus=args.simulate_gpus,
                                exit_after=args.exit_after, ui=ui, log_to=log_dir,
                                log_level=level, metrics=args.metrics))
