"""The configuration file as its users meet it: through `syncd ... check` / `db upgrade`.

Every broken configuration exits 2 with a message naming where the problem is, and
touches nothing (no database file appears). Secrets never show in the output.
"""

from __future__ import annotations

import copy
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from syncd.commands.cli import main
from syncd.config import load as configload
from syncd.config.schema import Config
from syncd.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
API_KEY = "ultimo-key-Vx81Zq"
EWS_PASSWORD = "ews-pass-Qm29Lt"

VALID: dict[str, Any] = {
    "database": {"url": "sqlite:///syncd.db"},
    "ultimo": {"base_url": "https://customer.ultimo.com/api/V1", "api_key": "${ULTIMO_API_KEY}"},
    "calendar": {
        "backend": "ews",
        "ews": {"endpoint": "https://mail.example.com/EWS/Exchange.asmx", "auth": "ntlm",
                "username": "svc-syncd@example.com", "password": "${EWS_PASSWORD}"},
    },
    "rooms": [{"mailbox": "room.c25@example.com", "space_id": "C-25"},
              {"mailbox": "room.c26@example.com", "space_id": "C-26"}],
    "applicants": {"default": "ULTIMO", "by_email": {"alice@example.com": "00042"}},
}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ULTIMO_API_KEY", API_KEY)
    monkeypatch.setenv("EWS_PASSWORD", EWS_PASSWORD)
    monkeypatch.delenv("SYNCD_CONFIG", raising=False)
    monkeypatch.delenv("NOPE_UNSET", raising=False)
    monkeypatch.chdir(tmp_path)


def write(folder: Path, content: dict | str, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


# --- mutations of the valid configuration ---------------------------------------------


def _walk(d: Any, dotted: str) -> tuple[Any, str | int]:
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in dotted.split(".")]
    for p in parts[:-1]:
        d = d[p]
    return d, parts[-1]


def setv(dotted: str, value: Any) -> Callable[[dict], dict]:
    def f(c: dict) -> dict:
        parent, key = _walk(c, dotted)
        parent[key] = value
        return c
    return f


def drop(dotted: str) -> Callable[[dict], dict]:
    def f(c: dict) -> dict:
        parent, key = _walk(c, dotted)
        del parent[key]
        return c
    return f


def both(*fs: Callable[[dict], dict]) -> Callable[[dict], dict]:
    def f(c: dict) -> dict:
        for g in fs:
            c = g(c)
        return c
    return f


def raw(text: str) -> Callable[[dict], str]:
    return lambda c: text


BROKEN: list[tuple[str, Callable[[dict], dict | str], str]] = [
    ("missing section", drop("ultimo"), "ultimo: field required"),
    ("missing key", drop("ultimo.base_url"), "ultimo.base_url: field required"),
    ("missing key in a list item", drop("rooms.1.space_id"), "rooms[1].space_id: field required"),
    ("missing applicants.default", drop("applicants.default"), "applicants.default: field required"),
    ("wrong type: text for a number", setv("ultimo.calls_per_10s", "many"), "ultimo.calls_per_10s: input should be a valid integer"),
    ("wrong type: number for a text", setv("rooms.0.space_id", 25), "rooms[0].space_id: input should be a valid string (put it in quotes"),
    ("wrong type: section not a mapping", setv("ultimo", "yes"), "ultimo: must be a mapping of keys"),
    ("wrong type: rooms not a list", setv("rooms", {"mailbox": "a@b"}), "rooms: input should be a valid list"),
    ("wrong type: union", setv("ultimo.verify_tls", 3), "ultimo.verify_tls: "),
    ("unknown key, top level", setv("databse", {"url": "sqlite:///x.db"}), "databse: unknown key (did you mean database?)"),
    ("unknown key, section", both(drop("ultimo.api_key"), setv("ultimo.api_kee", "x")), "ultimo.api_kee: unknown key (did you mean api_key?)"),
    ("unknown key, nested section", setv("calendar.ews.pasword", "x"), "calendar.ews.pasword: unknown key (did you mean password?)"),
    ("unknown key, list item", setv("rooms.1.capacity", 8), "rooms[1].capacity: unknown key"),
    ("bad URL", setv("ultimo.base_url", "customer.ultimo.com/api"), "ultimo.base_url: string should match pattern"),
    ("budget over 10000", setv("ultimo.daily_call_budget", 20000), "ultimo.daily_call_budget: input should be less than or equal to 10000"),
    ("calls_per_10s over 100", setv("ultimo.calls_per_10s", 101), "ultimo.calls_per_10s: input should be less than or equal to 100"),
    ("bad timezone", setv("ultimo.timezone", "Europe/Amsterdamm"), "ultimo.timezone: unknown time zone 'Europe/Amsterdamm'"),
    ("bad ews timezone", setv("calendar.ews.timezone", "CET+1"), "calendar.ews.timezone: unknown time zone"),
    ("bad auth", setv("calendar.ews.auth", "kerberos"), "calendar.ews.auth: input should be 'basic', 'ntlm' or 'oauth2'"),
    ("oauth2 without tenant_id", both(setv("calendar.ews.auth", "oauth2"), setv("calendar.ews.client_id", "c"),
                                      setv("calendar.ews.client_secret", "s")), "calendar.ews: auth oauth2 needs tenant_id"),
    ("bad access", setv("calendar.ews.access", "admin"), "calendar.ews.access: input should be"),
    ("unknown backend", setv("calendar.backend", "caldav"), "calendar.backend: input should be 'ews' or 'graph'"),
    ("graph without its section", setv("calendar.backend", "graph"), "calendar: backend graph needs a calendar.graph section"),
    ("duplicate room", setv("rooms.1.mailbox", "ROOM.C25@example.com"), "rooms: room ROOM.C25@example.com listed twice (rooms[0] and rooms[1])"),
    ("duplicate space_id", setv("rooms.1.space_id", "C-25"), "rooms: space_id C-25 listed twice"),
    ("empty rooms", setv("rooms", []), "rooms: list should have at least 1 item"),
    ("mailbox not an address", setv("rooms.0.mailbox", "room c25"), "rooms[0].mailbox: string should match pattern"),
    ("unset ${VAR}", setv("ultimo.api_key", "${NOPE_UNSET}"), "ultimo.api_key: environment variable NOPE_UNSET is not set"),
    ("bad ${...} name", setv("ultimo.base_url", "https://${1HOST}/api"), "ultimo.base_url: bad reference ${1HOST}"),
    ("unterminated ${", setv("calendar.ews.endpoint", "https://${HOST/EWS"), "calendar.ews.endpoint: unterminated ${ reference"),
    ("empty secret", setv("calendar.ews.password", "${NOPE_UNSET:-}"), "calendar.ews.password: is empty"),
    ("missing *_file", both(drop("ultimo.api_key"), setv("ultimo.api_key_file", "secrets/ultimo.key")),
     "ultimo.api_key_file: cannot read "),
    ("both key and key_file", setv("ultimo.api_key_file", "ultimo.key"), "ultimo: give api_key or api_key_file, not both"),
    ("client_key without client_cert", setv("ultimo.client_key", "k.pem"), "ultimo: client_key given without client_cert"),
    ("bad sqlite scheme", setv("database.url", "sqlite3:///syncd.db"), "database.url: must be a sqlite:/// or postgresql+psycopg:// URL"),
    ("sqlite with two slashes", setv("database.url", "sqlite://syncd.db"), "database.url: a SQLite URL has three slashes"),
    ("unsupported driver", setv("database.url", "postgresql+asyncpg://u@h/db"), "database.url: unsupported PostgreSQL driver 'asyncpg'"),
    ("bad template", setv("sync", {"description_template": "{subjet} ({organizer})"}), "sync.description_template: bad template"),
    ("bad event template", setv("sync", {"event_subject_template": "{title}"}), "sync.event_subject_template: bad template"),
    ("negative past_days", setv("sync", {"past_days": -1}), "sync.past_days: input should be greater than or equal to 0"),
    ("bad choice", setv("sync", {"on_changed_on_both_sides": "newest_wins"}), "sync.on_changed_on_both_sides: input should be"),
    ("busy hours backwards", setv("sync", {"busy_hours": "19:00-07:00"}), "sync.busy_hours: use whole local hours, the first before the second"),
    ("busy hours not whole", setv("sync", {"busy_hours": "07:30-18:00"}), "sync.busy_hours: use whole local hours"),
    ("bad log level", setv("logging", {"level": "verbose"}), "logging.level: input should be"),
    ("bad element id", setv("ultimo.application_element_ids", {"get": "not-a-guid"}), "ultimo.application_element_ids.get: string should match"),
    ("YAML syntax error", raw("ultimo:\n  base_url: https://x\n   api_key: [oops\n"), "YAML syntax error at line 3"),
    ("duplicate YAML key", raw("ultimo:\n  base_url: https://a\n  base_url: https://b\n"), "duplicate key 'base_url'"),
    ("empty file", raw(""), "the file is empty"),
    ("comments only", raw("# nothing here\n"), "the file is empty"),
    ("not a mapping", raw("- ultimo\n- rooms\n"), "must be a mapping of keys (database:, ultimo:, ...), not a list"),
]


@pytest.mark.parametrize("command", [["check"], ["db", "upgrade"], ["config", "validate"], ["config", "show"]],
                         ids=["check", "db-upgrade", "config-validate", "config-show"])
@pytest.mark.parametrize("mutate, expected", [pytest.param(m, e, id=i) for i, m, e in BROKEN])
def test_broken_configuration_exits_2_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str], mutate: Callable, expected: str
) -> None:
    (tmp_path / "ultimo.key").write_text("from-a-file\n")
    path = write(tmp_path, mutate(copy.deepcopy(VALID)))
    assert main(["--config", str(path), *command]) == 2
    out, err = capsys.readouterr()
    assert expected in err, err
    assert out == ""
    assert all(line.startswith("syncd: error: ") for line in err.splitlines()), err
    assert "Traceback" not in err
    assert API_KEY not in err and EWS_PASSWORD not in err
    assert list(tmp_path.glob("*.db*")) == []     # nothing touched


def test_there_are_at_least_25_distinct_broken_configurations() -> None:
    assert len({expected for _, _, expected in BROKEN}) >= 25


def test_every_problem_is_reported_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = copy.deepcopy(VALID)
    c["ultimo"]["calls_per_10s"] = 500
    c["ultimo"]["timezone"] = "Nowhere/Land"
    del c["rooms"][1]["space_id"]
    c["calendar"]["ews"]["auth"] = "kerberos"
    c["sync"] = {"interval_seconds": "often", "future_days": 0}
    c["extra"] = 1
    c["applicants"]["default"] = "${NOPE_UNSET}"
    file = write(tmp_path, c)
    assert main(["--config", str(file), "check"]) == 2
    err = capsys.readouterr().err
    for path in ("ultimo.calls_per_10s", "ultimo.timezone", "rooms[1].space_id", "calendar.ews.auth",
                 "sync.interval_seconds", "sync.future_days", "extra", "applicants.default"):
        assert f"syncd: error: {file}: {path}: " in err, (path, err)
    assert len(err.splitlines()) == 8     # one line each, no echo of the same path twice


def test_missing_config_file_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.yaml"), "check"]) == 2
    assert f"{tmp_path / 'nope.yaml'}: configuration file not found" in capsys.readouterr().err


# --- the example ---------------------------------------------------------------------


def test_the_example_is_valid_and_means_the_defaults() -> None:
    cfg, path = configload.load_config(str(REPO / "config.example.yaml"))
    assert path == REPO / "config.example.yaml"
    assert cfg.ultimo.api_key.get_secret_value() == API_KEY
    assert cfg.calendar.ews.password is not None and cfg.calendar.ews.password.get_secret_value() == EWS_PASSWORD
    assert cfg.database.url == "sqlite:////var/lib/syncd/syncd.db"     # the unit's StateDirectory=
    # Every value written in the example is the schema's default (apart from the required ones).
    bare = Config.model_validate({k: VALID[k] for k in ("ultimo", "calendar", "rooms", "applicants")}
                                 | {"ultimo": {**VALID["ultimo"], "api_key": "k"}})
    for section in ("sync", "service", "logging"):
        assert getattr(cfg, section) == getattr(bare, section), section
    for key in ("timezone", "daily_call_budget", "calls_per_10s", "timeout_seconds", "max_retries",
                "application_element_ids", "applicant_field", "page_limit", "verify_tls"):
        assert getattr(cfg.ultimo, key) == getattr(bare.ultimo, key), key


def _all_keys(model: type[BaseModel]) -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(name)
        tp = field.annotation
        for t in (tp, *typing.get_args(tp)):
            if isinstance(t, type) and issubclass(t, BaseModel):
                keys |= _all_keys(t)
    return keys


def test_the_example_documents_every_key() -> None:
    text = (REPO / "config.example.yaml").read_text()
    documented = set(re.findall(r"^\s*#?\s*-?\s*([a-z_0-9]+):", text, re.MULTILINE))
    missing = _all_keys(Config) - documented
    assert not missing, f"config.example.yaml does not mention {sorted(missing)}"
    for secret in ("api_key_file", "password_file", "client_secret_file"):
        assert secret in text


# --- substitution, secrets in files, relative paths ----------------------------------------


def test_environment_substitution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ULTIMO_HOST", "acme.ultimo.com")
    monkeypatch.setenv("BUDGET", "1234")
    c = copy.deepcopy(VALID)
    c["ultimo"]["base_url"] = "https://${ULTIMO_HOST}/api/${API_VERSION:-V1}/"
    c["ultimo"]["daily_call_budget"] = "${BUDGET}"
    c["ultimo"]["timezone"] = "${NOPE_UNSET:-Europe/Brussels}"
    c["rooms"][0]["space_id"] = "$${NOT_A_VAR}"
    c["applicants"]["default"] = "pa$word ${NOPE_UNSET:-}x"
    cfg, _ = configload.load_config(str(write(tmp_path, c)))
    assert cfg.ultimo.base_url == "https://acme.ultimo.com/api/V1"
    assert cfg.ultimo.daily_call_budget == 1234
    assert cfg.ultimo.timezone == "Europe/Brussels"
    assert cfg.rooms[0].space_id == "${NOT_A_VAR}"
    assert cfg.applicants.default == "pa$word x"
    assert cfg.ultimo.api_key.get_secret_value() == API_KEY


def test_secrets_from_files_relative_to_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc"
    (folder / "creds").mkdir(parents=True)
    (folder / "creds" / "ultimo").write_text("key-from-file\n")
    (folder / "creds" / "ews").write_text("password-from-file")
    (folder / "creds" / "cs").write_text("secret-from-file\r\n")
    c = copy.deepcopy(VALID)
    del c["ultimo"]["api_key"], c["calendar"]["ews"]["password"]
    c["ultimo"]["api_key_file"] = "creds/ultimo"
    c["calendar"]["ews"]["password_file"] = str(folder / "creds" / "ews")
    path = write(folder, c)
    monkeypatch.chdir(tmp_path)   # elsewhere: the paths still resolve from the file's folder
    cfg, _ = configload.load_config(str(path))
    assert cfg.ultimo.api_key.get_secret_value() == "key-from-file"
    assert cfg.calendar.ews.password.get_secret_value() == "password-from-file"   # type: ignore[union-attr]
    c["calendar"]["ews"].update(auth="oauth2", tenant_id="t", client_id="c", client_secret_file="creds/cs")
    cfg, _ = configload.load_config(str(write(folder, c)))
    assert cfg.calendar.ews.client_secret.get_secret_value() == "secret-from-file"  # type: ignore[union-attr]


def test_relative_sqlite_path_is_next_to_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "srv"
    folder.mkdir()
    c = copy.deepcopy(VALID)
    c["database"]["url"] = "sqlite:///data/syncd.db"
    path = write(folder, c)
    cfg, _ = configload.load_config(str(path))
    assert cfg.database.url == f"sqlite:///{folder / 'data' / 'syncd.db'}"
    c["database"]["url"] = f"sqlite:///{tmp_path / 'abs.db'}"
    cfg, _ = configload.load_config(str(write(folder, c)))
    assert cfg.database.url == f"sqlite:///{tmp_path / 'abs.db'}"
    del c["database"]
    cfg, _ = configload.load_config(str(write(folder, c)))
    assert cfg.database.url == f"sqlite:///{folder / 'syncd.db'}"   # the default, too


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def config_naming(space: str, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        c = copy.deepcopy(VALID)
        c["rooms"] = [{"mailbox": "room@example.com", "space_id": space}]
        return write(folder, c)

    etc = config_naming("etc", tmp_path / "etc" / "syncd")
    monkeypatch.setattr(configload, "SEARCH_PATHS", (Path("config.yaml"), etc))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    def found() -> str:
        return configload.load_config(None)[0].rooms[0].space_id

    assert found() == "etc"
    config_naming("cwd", work)
    assert found() == "cwd"
    env = config_naming("env", tmp_path / "env")
    monkeypatch.setenv("SYNCD_CONFIG", str(env))
    assert found() == "env"
    flag = config_naming("flag", tmp_path / "flag")
    assert configload.load_config(str(flag))[0].rooms[0].space_id == "flag"
    monkeypatch.setenv("SYNCD_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError, match=r"gone.yaml: configuration file not found \(named by \$SYNCD_CONFIG\)"):
        found()


def test_nothing_found_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(configload, "SEARCH_PATHS", (Path("config.yaml"), tmp_path / "etc" / "config.yaml"))
    with pytest.raises(ConfigError) as info:
        configload.load_config(None)
    message = str(info.value)
    assert str(tmp_path / "config.yaml") in message and str(tmp_path / "etc" / "config.yaml") in message
    assert "--config" in message and "SYNCD_CONFIG" in message


# --- secrets never shown -------------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate",
    [
        # The secret lands where a validator echoes its input.
        setv("ultimo.timezone", "${ULTIMO_API_KEY}"),
        setv("calendar.ews.server_version", "${EWS_PASSWORD}"),
        setv("rooms.0.mailbox", "${EWS_PASSWORD}"),
        # A secret from a file, next to an unrelated error.
        both(drop("ultimo.api_key"), setv("ultimo.api_key_file", "k"), setv("sync", {"past_days": "x"})),
        # The password inside a database URL.
        setv("database.url", f"postgresql+asyncpg://u:{EWS_PASSWORD}@h/db"),
    ],
    ids=["tz", "server-version", "mailbox", "key-file", "db-url"],
)
def test_secrets_never_appear_in_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate: Callable) -> None:
    (tmp_path / "k").write_text(API_KEY + "\n")
    assert main(["--config", str(write(tmp_path, mutate(copy.deepcopy(VALID)))), "check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("syncd: error: ")
    assert API_KEY not in err and EWS_PASSWORD not in err, err

