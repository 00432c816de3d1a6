"""The effective configuration as an operator may see it: every value after `${VAR}` and
`<secret>_file` substitution and the defaults filled in, every secret replaced by where it
came from (`<redacted from /etc/syncd/credentials/ultimo-api-key>`, `<redacted from
$EWS_PASSWORD>`, `<redacted from /etc/syncd/config.yaml>` when written inline).

    effective_yaml(cfg, path) -> str

Reads the file again (not the systems); never gives a secret's value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from syncd import logs
from syncd.config.load import SECRET_KEYS, _read_yaml
from syncd.config.schema import Config

_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")


def _sources(raw: Any, folder: Path, loc: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], str]:
    """(path of a secret) -> where its value came from, read from the file as written."""
    out: dict[tuple[Any, ...], str] = {}
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            out.update(_sources(item, folder, (*loc, i)))
        return out
    if not isinstance(raw, dict):
        return out
    for key, value in raw.items():
        if isinstance(value, dict | list):
            out.update(_sources(value, folder, (*loc, key)))
        elif key in SECRET_KEYS:
            out[(*loc, key)] = _from_text(value)
        elif isinstance(key, str) and key.endswith("_file") and key[:-5] in SECRET_KEYS:
            out[(*loc, key[:-5])] = _file_named(value, folder)
    return out


def _from_text(value: Any) -> str:
    """`$NAME` when the value is (or contains) a `${NAME}` reference that is set, else ""
    (meaning: written in the configuration file itself)."""
    if not isinstance(value, str):
        return ""
    names = [m.group(1) for m in _VAR_RE.finditer(value)]
    given = [f"${n}" for n in names if n in os.environ]
    return ", ".join(given)


def _file_named(value: Any, folder: Path) -> str:
    if not isinstance(value, str):
        return ""
    text = _VAR_RE.sub(lambda m: os.environ.get(m.group(1), m.group(0)), value)
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else folder / path)


def _redacted(source: str, file: Path) -> str:
    return f"<redacted from {source or file}>"


def _database_url(url: str, raw_url: Any, file: Path) -> str:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return url
    if not parsed.password:
        return url
    marker = "REDACTEDPASSWORDMARKER"
    shown = parsed.set(password=marker).render_as_string(hide_password=False)
    return shown.replace(marker, _redacted(_from_text(raw_url), file))


def effective_config(cfg: Config, file: Path) -> dict[str, Any]:
    """The configuration as a plain mapping, secrets replaced by `<redacted from ...>`."""
    raw = _read_yaml(file)
    sources = _sources(raw, file.parent)
    data = cfg.model_dump(mode="json")

    def walk(node: Any, loc: tuple[Any, ...]) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k in SECRET_KEYS:
                    out[k] = None if v is None else _redacted(sources.get((*loc, k), ""), file)
                else:
                    out[k] = walk(v, (*loc, k))
            return out
        if isinstance(node, list):
            return [walk(v, (*loc, i)) for i, v in enumerate(node)]
        return node

    shown = walk(data, ())
    raw_db = raw.get("database")
    raw_url = raw_db.get("url") if isinstance(raw_db, dict) else None
    shown["database"]["url"] = _database_url(cfg.database.url, raw_url, file)
    return shown


def effective_yaml(cfg: Config, file: Path) -> str:
    """`effective_config` as YAML text, headed by the file it came from. Any registered
    secret that reached another value (a `${VAR}` in a plain key) is masked as well."""
    body = yaml.safe_dump(effective_config(cfg, file), sort_keys=False, default_flow_style=False,
                          allow_unicode=True)
    header = (f"# effective configuration of {file}\n"
              "# (defaults filled in, ${VAR} and *_file substituted, secrets redacted)\n")
    return header + "\n".join(logs.scrub_text(line) for line in body.splitlines()) + "\n"
