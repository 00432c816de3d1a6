"""The command line: `syncd [--config PATH] [--log-level L] COMMAND`.

Parses, loads the configuration, sets up logging, then hands over to the command's
module (imported only when that command runs). One error translator turns every
expected failure into `syncd: error: ...` lines on stderr and the exit status of
interface.md: 0 done, 1 some rooms or actions failed, 2 bad configuration or usage,
3 a system could not be reached or refused the credentials; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from syncd import __version__, logs
from syncd.errors import ConfigError, SyncdError

PROG = "syncd"
LEVELS = ("debug", "info", "warning", "error")

# command -> (module, function, needs a configuration)
HANDLERS: dict[str, tuple[str, str, bool]] = {
    "check": ("syncd.commands.check", "cmd_check", True),
    "db upgrade": ("syncd.commands.cli", "cmd_db_upgrade", True),
    "reconcile": ("syncd.commands.reconcile", "cmd_reconcile", True),
    "run": ("syncd.service.daemon", "cmd_run", True),
    "status": ("syncd.commands.status", "cmd_status", True),
    "conflicts list": ("syncd.commands.report", "cmd_conflicts_list", True),
    "conflicts export": ("syncd.commands.report", "cmd_conflicts_export", True),
    "sandbox": ("syncd.sandbox.serve", "cmd_sandbox", False),
    "demo": ("syncd.commands.demo", "cmd_demo", False),
}


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with `syncd: error: ...` (its usual behaviour), kept explicit."""

    def error(self, message: str) -> Any:  # noqa: ANN401 - never returns
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_since(value: str) -> date | datetime:
    """`--since` checked at the command line: an ISO date (gives a date, meaning its UTC
    midnight) or an ISO date-time (gives an aware datetime; without an offset, UTC)."""
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO date or date-time (2026-11-01 or 2026-11-01T08:00+01:00)"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0..65535)")
    return port


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; `args.command` names the handler key in HANDLERS."""
    p = _Parser(prog=PROG, description="Keeps Exchange room calendars and IFS Ultimo reservations in agreement.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    p.add_argument("--config", metavar="PATH",
                   help="configuration file (default: $SYNCD_CONFIG, ./config.yaml, /etc/syncd/config.yaml)")
    p.add_argument("--log-level", choices=LEVELS, type=str.lower, help="overrides logging.level")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True, parser_class=_Parser)

    s = sub.add_parser("check", help="validate the configuration and read from both systems")
    s.set_defaults(command="check")

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_cmd", metavar="ACTION", required=True, parser_class=_Parser)
    db_sub.add_parser("upgrade", help="bring the schema to the newest version").set_defaults(command="db upgrade")

    s = sub.add_parser("reconcile", help="one full sync of every room (or the named ones), then exit")
    s.add_argument("--room", action="append", default=[], metavar="ROOM",
                   help="a room's mailbox or space id; repeatable")
    s.add_argument("--dry-run", action="store_true", help="print the plan, write nothing anywhere")
    s.add_argument("--accept-empty", action="store_true",
                   help="a room whose bookings all vanished on one side really is empty: cancel on the other side")
    s.set_defaults(command="reconcile")

    sub.add_parser("run", help="the long-running service").set_defaults(command="run")
    sub.add_parser("status", help="per-room state, last runs, open conflicts").set_defaults(command="status")

    c = sub.add_parser("conflicts", help="the conflict report")
    c_sub = c.add_subparsers(dest="conflicts_cmd", metavar="ACTION", required=True, parser_class=_Parser)
    s = c_sub.add_parser("list", help="open conflicts as a table")
    s.add_argument("--all", action="store_true", help="resolved conflicts too")
    s.set_defaults(command="conflicts list")
    s = c_sub.add_parser("export", help="the conflict report as csv, json or html")
    s.add_argument("--format", required=True, choices=("csv", "json", "html"), type=str.lower)
    s.add_argument("--output", metavar="FILE", help="write here instead of standard output")
    s.add_argument("--all", action="store_true", help="resolved conflicts too")
    s.add_argument("--since", type=parse_since, metavar="DATE",
                   help="only conflicts detected at or after DATE (ISO date or date-time)")
    s.set_defaults(command="conflicts export")

    s = sub.add_parser("sandbox", help="run the bundled Ultimo and EWS sandboxes on loopback")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--ultimo-port", type=_port, default=0)
    s.add_argument("--ews-port", type=_port, default=0)
    s.set_defaults(command="sandbox")

    s = sub.add_parser("demo", help="sandboxes + example bookings + a reconcile, needs nothing else")
    s.add_argument("--dir", metavar="DIR", help="where the demo's database and report go (default: a new temp folder)")
    s.set_defaults(command="demo")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one syncd command; gives its exit status (also for usage errors: 2)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        return _dispatch(args)
    except ConfigError as e:
        source = getattr(e, "source", None)
        for problem in e.problems:
            _say(f"{source}: {problem}" if source else problem)
        return e.exit_status
    except SyncdError as e:
        _say(str(e) or type(e).__name__)
        return e.exit_status
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:  # a bug: log it in full (scrubbed), say one line
        logs.get_logger("syncd.cli").exception("unexpected error", command=args.command)
        _say(f"unexpected {type(e).__name__}: {e} (this is a bug; the log has the details)")
        return 1


def _say(message: str) -> None:
    for line in (message.splitlines() or [""]):
        print(f"{PROG}: error: {logs.scrub_text(line)}", file=sys.stderr)


def _dispatch(args: argparse.Namespace) -> int:
    module_name, func_name, needs_config = HANDLERS[args.command]
    if needs_config:
        from syncd.config.load import load_config

        cfg, path = load_config(args.config)
        args.config_path = path
        logs.configure(args.log_level or cfg.logging.level, cfg.logging.format)
        handler = _handler(module_name, func_name, args.command)
        return int(handler(cfg, args))
    logs.configure(args.log_level or "info", "auto")
    handler = _handler(module_name, func_name, args.command)
    return int(handler(args))


def _handler(module_name: str, func_name: str, command: str) -> Callable[..., int]:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (e.name == module_name or module_name.startswith(e.name + ".")):
            raise SyncdError(f"`{PROG} {command}` is not available in this build ({module_name} is missing)") from None
        raise
    return getattr(module, func_name)  # type: ignore[no-any-return]


def cmd_db_upgrade(cfg: Any, args: argparse.Namespace) -> int:
    """`syncd db upgrade`: prints the revision reached."""
    from syncd.store import db

    engine = db.make_engine(cfg.database.url)
    try:
        before = db.current_revision(engine)
        reached = db.upgrade(engine)
    finally:
        engine.dispose()
    where = db.describe(engine.url)
    if before == reached:
        print(f"{where}: schema already at revision {reached} (newest)")
    else:
        print(f"{where}: schema upgraded from {before or 'empty'} to revision {reached} (newest)")
    return 0
