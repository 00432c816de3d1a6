"""The command line: `syncd [--config PATH] [--log-level L] COMMAND` (the global options
may also come after the command: `syncd reconcile --log-level debug`).

Parses, loads the configuration, sets up logging, then hands over to the command's
module (imported only when that command runs). One error translator turns every
expected failure into `syncd: error: ...` lines on stderr and the exit status of
interface.md: 0 done, 1 some rooms or actions failed, 2 bad configuration or usage,
3 a system could not be reached or refused the credentials; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
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
    "config validate": ("syncd.commands.configcmd", "cmd_config_validate", True),
    "config show": ("syncd.commands.configcmd", "cmd_config_show", True),
    "conflicts list": ("syncd.commands.report", "cmd_conflicts_list", True),
    "conflicts export": ("syncd.commands.report", "cmd_conflicts_export", True),
    "sandbox": ("syncd.sandbox.serve", "cmd_sandbox", False),
    "demo": ("syncd.commands.demo", "cmd_demo", False),
}


# Commands that need no secret: the configuration is loaded without reading any, so an
# operator who cannot read them (the unit's credentials) can still run these.
WITHOUT_SECRETS = frozenset({"status"})


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with `syncd: error: ...` (its usual behaviour), kept explicit."""

    def error(self, message: str) -> Any:  # noqa: ANN401 - never returns
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


_RELATIVE_RE = re.compile(r"^(\d+)\s*(m|min|h|d|w)$")
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}
SINCE_FORMS = "an ISO date or date-time (2026-11-01, 2026-11-01T08:00+01:00), 7d, 24h, 30m, 2w, today or yesterday"


def parse_since(value: str, now: datetime | None = None) -> date | datetime:
    """`--since` checked at the command line. An ISO date gives a date (meaning its UTC
    midnight), an ISO date-time an aware datetime (without an offset: UTC); `today` and
    `yesterday` give that UTC date; `7d`, `24h`, `30m`, `2w` give `now` less that long."""
    text = value.strip().lower()
    now = now or datetime.now(UTC)
    if text in ("today", "yesterday"):
        return now.astimezone(UTC).date() - timedelta(days=1 if text == "yesterday" else 0)
    relative = _RELATIVE_RE.match(text)
    if relative:
        return now - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not {SINCE_FORMS}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0..65535)")
    return port


def _global_options(p: argparse.ArgumentParser, *, after_command: bool, config: bool = True) -> None:
    """--config and --log-level. After the command they only override what was given
    before it (SUPPRESS: absent means "not given here"); `config=False` for the commands
    that read no configuration file (sandbox, demo)."""
    default = argparse.SUPPRESS if after_command else None
    if config:
        p.add_argument("--config", metavar="PATH", default=default,
                       help="configuration file (default: $SYNCD_CONFIG, ./config.yaml, /etc/syncd/config.yaml)")
    p.add_argument("--log-level", choices=LEVELS, type=str.lower, default=default, help="overrides logging.level")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; `args.command` names the handler key in HANDLERS."""
    p = _Parser(prog=PROG, description="Keeps Exchange room calendars and IFS Ultimo reservations in agreement.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _global_options(p, after_command=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, after_command=True)
    no_config = argparse.ArgumentParser(add_help=False)
    _global_options(no_config, after_command=True, config=False)
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True, parser_class=_Parser)
    _add_commands(sub, common, no_config)
    return p


def _add_commands(sub: Any, common: argparse.ArgumentParser, no_config: argparse.ArgumentParser) -> None:
    """Every command's parser; each leaf takes the global options too (`common`; the ones
    that read no configuration file only --log-level: `no_config`)."""
    leaf: dict[str, Any] = {"parents": [common]}
    own: dict[str, Any] = {"parents": [no_config]}
    s = sub.add_parser("check", help="validate the configuration and read the sync window from both systems", **leaf)
    s.set_defaults(command="check")

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_cmd", metavar="ACTION", required=True, parser_class=_Parser)
    db_sub.add_parser("upgrade", help="bring the schema to the newest version", **leaf).set_defaults(command="db upgrade")

    s = sub.add_parser("reconcile", help="one full sync of every room (or the named ones), then exit", **leaf)
    s.add_argument("--room", action="append", default=[], metavar="ROOM",
                   help="a room's mailbox or space id; repeatable")
    s.add_argument("--dry-run", action="store_true", help="print the plan, write nothing anywhere")
    s.add_argument("--accept-empty", action="store_true",
                   help="a room whose bookings all vanished on one side really is empty: cancel on the other side")
    s.set_defaults(command="reconcile")

    s = sub.add_parser("run", help="the long-running service", **leaf)
    s.add_argument("--standby", action="store_true",
                   help="wait for the active instance's lock and take over when it is gone (PostgreSQL only)")
    s.set_defaults(command="run")
    sub.add_parser("status", help="per-room state, last runs, open conflicts", **leaf).set_defaults(command="status")

    c = sub.add_parser("config", help="the configuration, offline")
    c_sub = c.add_subparsers(dest="config_cmd", metavar="ACTION", required=True, parser_class=_Parser)
    c_sub.add_parser("validate", help="load, substitute and validate it; sends nothing; exit 0 or 2",
                     **leaf).set_defaults(command="config validate")
    c_sub.add_parser("show", help="the effective configuration as YAML, every secret redacted",
                     **leaf).set_defaults(command="config show")

    c = sub.add_parser("conflicts", help="the conflict report")
    c_sub = c.add_subparsers(dest="conflicts_cmd", metavar="ACTION", required=True, parser_class=_Parser)
    s = c_sub.add_parser("list", help="open conflicts as a table", **leaf)
    s.add_argument("--all", action="store_true", help="resolved conflicts too")
    s.set_defaults(command="conflicts list")
    s = c_sub.add_parser("export", help="the conflict report as csv, json or html", **leaf)
    s.add_argument("--format", required=True, choices=("csv", "json", "html"), type=str.lower)
    s.add_argument("--output", metavar="FILE", help="write here instead of standard output")
    s.add_argument("--all", action="store_true", help="resolved conflicts too")
    s.add_argument("--since", type=parse_since, metavar="DATE",
                   help="only conflicts detected at or after DATE: an ISO date (UTC midnight) or date-time, "
                        "7d, 24h, 30m, 2w (ago), today or yesterday (UTC)")
    s.set_defaults(command="conflicts export")

    s = sub.add_parser("sandbox", help="run the bundled Ultimo and EWS (and Graph) sandboxes on loopback", **own)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--ultimo-port", type=_port, default=0)
    s.add_argument("--ews-port", type=_port, default=0)
    s.add_argument("--graph-port", type=_port, default=0)
    s.add_argument("--seed", action="store_true", help="fill both systems with the demo's rooms and bookings")
    s.add_argument("--write-config", metavar="FILE",
                   help="write the configuration that points at the sandboxes to FILE instead of printing it")
    s.add_argument("--backend", choices=("ews", "graph"), default="ews", type=str.lower,
                   help="the calendar backend the printed configuration uses; graph also serves the Microsoft "
                        "Graph sandbox on the same room calendars (default: ews)")
    s.set_defaults(command="sandbox")

    s = sub.add_parser("demo", help="sandboxes + example bookings + a reconcile, needs nothing else", **own)
    s.add_argument("--dir", metavar="DIR", default="syncd-demo",
                   help="folder for the demo's configuration, database and conflict report; made when missing, "
                        "its earlier demo database replaced (default: ./syncd-demo)")
    s.add_argument("--backend", choices=("ews", "graph"), default="ews", type=str.lower,
                   help="the calendar backend syncd uses against the sandbox: EWS or Microsoft Graph (default: ews)")
    s.set_defaults(command="demo")


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

        cfg, path = load_config(args.config, secrets=args.command not in WITHOUT_SECRETS)
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
    handler: Callable[..., int] = getattr(module, func_name)
    return handler


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
