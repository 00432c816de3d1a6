"""Loading the configuration file: where it is, `${VAR}` substitution, `<secret>_file`,
validation against `syncd.config.schema`, and problems reported all at once with their paths.

    load_config(path) -> (Config, Path)      raises ConfigError(problems)

Each problem reads `path: message` (`rooms[2].space_id: field required`); the error's
`source` attribute names the file (the command line prints `FILE: path: message`). No problem
ever shows a secret's value: pydantic's input echo is never used, and every secret
(including one inside a database URL) is registered with `syncd.logs` before anything
can be printed.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from syncd import logs
from syncd.config.schema import Config
from syncd.errors import ConfigError

ENV_VAR = "SYNCD_CONFIG"
SEARCH_PATHS = (Path("config.yaml"), Path("/etc/syncd/config.yaml"))
SECRET_KEYS = ("api_key", "password", "client_secret")
# Keys holding a file path: relative paths are taken from the configuration's folder.
PATH_KEYS = (("ultimo", "client_cert"), ("ultimo", "client_key"), ("ultimo", "verify_tls"),
             ("calendar", "ews", "verify_tls"), ("calendar", "graph", "certificate_file"),
             ("calendar", "graph", "private_key_file"), ("calendar", "graph", "ca_file"))

# `$${` writes a literal `${`; a lone `$` (as in a password) is left alone.
_REF_RE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_NAME_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.DOTALL)


def find_config(path: str | None) -> Path:
    """The configuration file to read: `path`, else $SYNCD_CONFIG, else ./config.yaml,
    else /etc/syncd/config.yaml. Raises ConfigError naming where it looked."""
    if path:
        chosen = Path(path)
        if not chosen.is_file():
            raise ConfigError(f"{chosen}: configuration file not found (given with --config)")
        return chosen
    env = os.environ.get(ENV_VAR)
    if env:
        chosen = Path(env)
        if not chosen.is_file():
            raise ConfigError(f"{chosen}: configuration file not found (named by ${ENV_VAR})")
        return chosen
    for candidate in SEARCH_PATHS:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(p.absolute()) for p in SEARCH_PATHS)
    raise ConfigError(f"no configuration file: looked at {looked}; give --config PATH or set ${ENV_VAR}")


def load_config(path: str | None = None, *, secrets: bool = True) -> tuple[Config, Path]:
    """Find, read, substitute and validate the configuration.

    Gives the Config (its SQLite URL made absolute) and the file's absolute path.
    Raises ConfigError with every problem found, each as `path: message`. With
    secrets=False no secret is read (each is `SECRET_NOT_READ`): for commands that need
    none, run by someone who cannot read them (`syncd status` outside the unit)."""
    file = find_config(path).absolute()
    data = _read_yaml(file)
    if not secrets:
        _stub_secrets(data)
    problems: list[str] = []
    done: set[str] = set()     # paths already reported: pydantic's echo of them is dropped
    data = _substitute(data, (), problems, done)
    _load_secret_files(data, (), file.parent, problems, done)
    _register_secrets(data)
    _check_secrets_not_empty(data, problems, done)
    _resolve_paths(data, file.parent)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        problems.extend(p for p in _pydantic_problems(e) if not _covered(p, done))
        raise _problems_in(file, problems) from None
    if problems:
        raise _problems_in(file, problems)
    url = _absolute_sqlite_url(cfg.database.url, file.parent)
    if url != cfg.database.url:
        cfg = cfg.model_copy(update={"database": cfg.database.model_copy(update={"url": url})})
    return cfg, file


def _problems_in(file: Path, problems: list[str]) -> ConfigError:
    """A ConfigError whose `source` names the file (the CLI prefixes each line with it)."""
    error = ConfigError([logs.scrub_text(p) for p in problems])
    error.source = file  # type: ignore[attr-defined]
    return error


# --- reading ------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last silently."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, typing.Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen[key] = True
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(x for x in (e.context, e.problem) if x) or "invalid YAML"
        raise ConfigError(f"{file}: YAML syntax error{where}: {what}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{file}: YAML syntax error: {e}") from None
    if data is None:
        raise ConfigError(f"{file}: the file is empty; see config.example.yaml")
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: must be a mapping of keys (database:, ultimo:, ...), not a {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


# --- ${VAR} substitution ------------------------------------------------------------


def _fmt(loc: tuple[Any, ...]) -> str:
    """('rooms', 2, 'space_id') -> 'rooms[2].space_id'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][\w-]*", str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f'["{part}"]'
    return out


def _substitute(value: Any, loc: tuple[Any, ...], problems: list[str], done: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, (*loc, k), problems, done) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*loc, i), problems, done) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def replace(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        ref = _NAME_RE.match(m.group(1))
        if not ref:
            problems.append(f"{_fmt(loc)}: bad reference ${{{m.group(1)}}}; use ${{NAME}} or ${{NAME:-default}}")
            done.add(_fmt(loc))
            return ""
        name, default = ref.group(1), ref.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        problems.append(f"{_fmt(loc)}: environment variable {name} is not set (and no ${{{name}:-default}} given)")
        done.add(_fmt(loc))
        return ""

    if "${" in _REF_RE.sub("", value):
        problems.append(f"{_fmt(loc)}: unterminated ${{ reference (missing }})")
        done.add(_fmt(loc))
        return value
    return _REF_RE.sub(replace, value)


# --- secrets ------------------------------------------------------------------------


def _load_secret_files(node: Any, loc: tuple[Any, ...], folder: Path, problems: list[str], done: set[str]) -> None:
    """Replace each `<secret>_file: PATH` by `<secret>: <content>` in place."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            _load_secret_files(item, (*loc, i), folder, problems, done)
        return
    if not isinstance(node, dict):
        return
    for key in list(node):
        if isinstance(node.get(key), dict | list):
            _load_secret_files(node[key], (*loc, key), folder, problems, done)
    for secret in SECRET_KEYS:
        file_key = f"{secret}_file"
        if file_key not in node:
            continue
        where = _fmt((*loc, file_key))
        raw = node.pop(file_key)
        done.update({where, _fmt((*loc, secret))})
        if secret in node:
            problems.append(f"{_fmt(loc)}: give {secret} or {file_key}, not both")
            continue
        node[secret] = ""   # keeps the "needs password" check quiet: the real problem is reported here
        if not isinstance(raw, str) or not raw:
            problems.append(f"{where}: must be a file path")
            continue
        path = Path(raw).expanduser()
        path = path if path.is_absolute() else folder / path
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            problems.append(f"{where}: cannot read {path}: {getattr(e, 'strerror', None) or e}")
            continue
        content = content.rstrip("\r\n")
        if not content:
            problems.append(f"{where}: {path} is empty")
            continue
        node[secret] = content


SECRET_NOT_READ = "<not read>"


def _stub_secrets(node: Any) -> None:
    """Replace every secret (and `<secret>_file`) by SECRET_NOT_READ, in place."""
    if isinstance(node, list):
        for item in node:
            _stub_secrets(item)
        return
    if not isinstance(node, dict):
        return
    for key in list(node):
        name = key.removesuffix("_file") if isinstance(key, str) else key
        if name in SECRET_KEYS:
            node.pop(key)
            node[name] = SECRET_NOT_READ
        else:
            _stub_secrets(node[key])


def _walk_secrets(node: Any, loc: tuple[Any, ...] = ()) -> typing.Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k in SECRET_KEYS:
                yield (*loc, k), v
            yield from _walk_secrets(v, (*loc, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk_secrets(v, (*loc, i))


def _register_secrets(data: dict[str, Any]) -> None:
    for _, value in _walk_secrets(data):
        if isinstance(value, str | int | float):
            logs.register_secret(str(value))
    db = data.get("database")
    url = db.get("url") if isinstance(db, dict) else None
    if isinstance(url, str):
        try:
            logs.register_secret(make_url(url).password)
        except (ArgumentError, ValueError):
            # Unparseable: the validator reports it; mask what looks like a password anyway.
            m = re.match(r"^[^:/]+://[^:/@]*:([^@]*)@", url)
            if m:
                logs.register_secret(m.group(1))


def _check_secrets_not_empty(data: dict[str, Any], problems: list[str], done: set[str]) -> None:
    for loc, value in _walk_secrets(data):
        where = _fmt(loc)
        if value == "" and where not in done:
            problems.append(f"{where}: is empty")
            done.add(where)


# --- paths --------------------------------------------------------------------------


def _resolve_paths(data: dict[str, Any], folder: Path) -> None:
    for keys in PATH_KEYS:
        node: Any = data
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        value = node.get(keys[-1])
        if not isinstance(value, str) or not value:
            continue
        if keys[-1] == "verify_tls" and value.lower() in _BOOL_WORDS:
            # `${VERIFY:-false}` arrives as a string: it means the boolean, not a CA file.
            node[keys[-1]] = _BOOL_WORDS[value.lower()]
            continue
        p = Path(value).expanduser()
        node[keys[-1]] = str(p if p.is_absolute() else folder / p)


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _absolute_sqlite_url(url: str, folder: Path) -> str:
    """A relative SQLite path made relative to `folder`; other URLs unchanged."""
    if not url.startswith("sqlite"):
        return url
    parsed = make_url(url)
    db = parsed.database
    if not db or db == ":memory:" or db.startswith("file:") or os.path.isabs(db):
        return url
    return parsed.set(database=str((folder / db).resolve())).render_as_string(hide_password=False)


# --- pydantic errors as `path: message` ---------------------------------------------


def _covered(problem: str, done: set[str]) -> bool:
    path = problem.split(": ", 1)[0]
    return any(path == d or path.startswith(d + ".") or path.startswith(d + "[") for d in done)


def _pydantic_problems(error: ValidationError) -> list[str]:
    by_path: dict[str, list[str]] = {}
    for err in error.errors(include_url=False, include_context=False):
        loc, hint_model = _clean_loc(err["loc"])
        path = _fmt(loc) or "(top level)"
        msg = _message(err, hint_model)
        msgs = by_path.setdefault(path, [])
        if msg not in msgs:
            msgs.append(msg)
    return [f"{path}: {' or '.join(msgs)}" for path, msgs in by_path.items()]


def _clean_loc(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], type[BaseModel] | None]:
    """Drop pydantic's union-member tags from `loc` by walking the schema alongside it.

    Also gives the model owning the last key (to suggest a known key for a typo)."""
    out: list[Any] = []
    tp: Any = Config
    owner: type[BaseModel] | None = None
    for part in loc:
        tp = _unwrap_optional(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            out.append(part)
            owner = tp
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            tp = field.annotation if field else None
        elif typing.get_origin(tp) is list and isinstance(part, int):
            out.append(part)
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is dict:
            out.append(part)
            tp = typing.get_args(tp)[1]
        elif tp is None:
            out.append(part)
        else:
            continue  # a union member's tag ("bool", "str", ...): not part of the user's path
    return tuple(out), owner


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _message(err: Any, owner: type[BaseModel] | None) -> str:
    kind = err["type"]
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        known = list(owner.model_fields) if owner else []
        close = difflib.get_close_matches(key, known, n=1)
        return "unknown key" + (f" (did you mean {close[0]}?)" if close else "")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a mapping of keys"
    msg = str(err["msg"])
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "string_type" and isinstance(err.get("input"), int | float | bool):
        msg += " (put it in quotes in YAML)"
    return msg[:1].lower() + msg[1:] if not msg[:2].isupper() else msg
