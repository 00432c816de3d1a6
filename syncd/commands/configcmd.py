"""`syncd config validate` and `syncd config show`: the configuration, offline.

Neither contacts Ultimo, Exchange or the database. An invalid file never gets here: the
command line's loading reports every problem with its path and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from syncd.config.effective import effective_yaml
from syncd.config.schema import Config
from syncd.service.health import parse_listen
from syncd.store import db


def _path(cfg: Config, args: argparse.Namespace) -> Path:
    return Path(getattr(args, "config_path", None) or "config.yaml")


def cmd_config_validate(cfg: Config, args: argparse.Namespace) -> int:
    """`syncd config validate`: one line saying the file is valid and what it names; 0."""
    rooms = len(cfg.rooms)
    listen = cfg.service.health_listen
    if listen:
        parse_listen(listen)   # a non-loopback address is a ConfigError (exit 2), as `run` would say
    parts = [f"{rooms} room{'' if rooms == 1 else 's'}", f"calendar backend {cfg.calendar.backend}",
             f"database {db.describe(cfg.database.url)}"]
    if listen:
        parts.append(f"health and metrics on {listen}")
    print(f"{_path(cfg, args)}: valid ({'; '.join(parts)}); nothing was sent to either system")
    return 0


def cmd_config_show(cfg: Config, args: argparse.Namespace) -> int:
    """`syncd config show`: the effective configuration as YAML on standard output; 0."""
    sys.stdout.write(effective_yaml(cfg, _path(cfg, args)))
    return 0
