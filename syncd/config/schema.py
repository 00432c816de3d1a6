"""The configuration file (interface.md, "Configuration file"): its schema.

Loading (file search order, `${VAR}` substitution, `<secret>_file`, error formatting)
lives in `syncd.config.load`; this module only says what a valid configuration is.
Every key not in interface.md is documented in config.example.yaml.
"""

from __future__ import annotations

import os
import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Strict):
    url: str = "sqlite:///syncd.db"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        m = re.match(r"^(sqlite|postgresql|postgres)(\+\w+)?://([^/?#]*)", v)
        if not m:
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        scheme, driver, authority = m.group(1), (m.group(2) or "")[1:], m.group(3)
        if scheme == "sqlite":
            if driver not in ("", "pysqlite"):
                raise ValueError(f"unsupported SQLite driver {driver!r}; use sqlite:///")
            if authority:
                # sqlite://name.db parses "name.db" as a host and opens nothing.
                raise ValueError("a SQLite URL has three slashes: sqlite:///relative.db or sqlite:////absolute.db")
        elif driver not in ("", "psycopg"):
            raise ValueError(f"unsupported PostgreSQL driver {driver!r}; use postgresql+psycopg://")
        return v


ULTIMO_ELEMENT_IDS = {
    "create": "0167a94a-5dae-4efe-bf13-029a47728b97",
    "update": "3736d834-fa5e-4edc-9abd-f38962ff8afd",
    "cancel": "5d5a10ee-7b14-4dd4-8683-33822ea56f12",
    "get": "860ea091-4d76-47d9-a733-c3bb18440dde",
}

_GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class ElementIds(_Strict):
    """ApplicationElementId per workflow; the documented GUIDs unless overridden."""

    create: str = Field(ULTIMO_ELEMENT_IDS["create"], pattern=_GUID)
    update: str = Field(ULTIMO_ELEMENT_IDS["update"], pattern=_GUID)
    cancel: str = Field(ULTIMO_ELEMENT_IDS["cancel"], pattern=_GUID)
    get: str = Field(ULTIMO_ELEMENT_IDS["get"], pattern=_GUID)


def _check_zone(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r}") from None
    return v


class UltimoConfig(_Strict):
    base_url: str = Field(pattern=r"^https?://\S+$")
    api_key: SecretStr
    timezone: str = "Europe/Amsterdam"
    daily_call_budget: int = Field(5000, ge=1, le=10000)
    calls_per_10s: int = Field(50, ge=1, le=100)
    timeout_seconds: float = Field(30.0, gt=0, le=600)
    max_retries: int = Field(4, ge=0, le=10)
    application_element_ids: ElementIds = ElementIds()
    applicant_field: Literal["both", "ApplicantId", "Applicant"] = "both"
    page_limit: int = Field(100, ge=2, le=10000)   # a Get returning this many rows may be truncated
    client_cert: str | None = None                  # PEM file, for the mTLS (api-) host
    client_key: str | None = None
    verify_tls: bool | str = True                   # or a CA bundle path
    accept_language: str | None = None

    _zone = field_validator("timezone")(classmethod(lambda cls, v: _check_zone(v)))

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @model_validator(mode="after")
    def _key_with_cert(self) -> UltimoConfig:
        if self.client_key and not self.client_cert:
            raise ValueError("client_key given without client_cert")
        return self


class EwsConfig(_Strict):
    endpoint: str = Field(pattern=r"^https?://\S+$")
    auth: Literal["basic", "ntlm", "oauth2"] = "ntlm"
    username: str | None = None
    password: SecretStr | None = None
    access: Literal["impersonation", "delegate"] = "impersonation"
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    token_url: str | None = None          # overrides the Microsoft identity platform token URL
    server_version: str | None = Field(None, pattern=r"^\d+\.\d+\.\d+\.\d+$")  # pin, e.g. 15.1.2507.6
    timezone: str = "Europe/Amsterdam"    # zone syncd writes events in
    timeout_seconds: float = Field(60.0, gt=0, le=600)
    throttle_max_wait_seconds: float = Field(60.0, ge=0, le=3600)
    verify_tls: bool | str = True

    _zone = field_validator("timezone")(classmethod(lambda cls, v: _check_zone(v)))

    @model_validator(mode="after")
    def _credentials_for_auth(self) -> EwsConfig:
        if self.auth in ("basic", "ntlm"):
            missing = [k for k in ("username", "password") if getattr(self, k) is None]
        else:
            missing = [k for k in ("tenant_id", "client_id", "client_secret") if getattr(self, k) is None]
        if missing:
            raise ValueError(f"auth {self.auth} needs {', '.join(missing)}")
        return self


_TENANT = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[A-Za-z0-9][\w.-]*)$"


class GraphConfig(_Strict):
    """Microsoft Graph, app-only (client credentials): a secret, or a certificate and its key."""

    tenant_id: str = Field(pattern=_TENANT)            # directory (tenant) id or a verified domain
    client_id: str = Field(pattern=_GUID)              # the app registration's application (client) id
    client_secret: SecretStr | None = None
    certificate_file: str | None = None                # PEM certificate uploaded to the app registration
    private_key_file: str | None = None                # its PEM private key (unencrypted)
    authority: str = Field("https://login.microsoftonline.com", pattern=r"^https://\S+$")
    graph_url: str = Field("https://graph.microsoft.com/v1.0", pattern=r"^https?://\S+$")
    ca_file: str | None = None                         # trust a private CA (a TLS-inspecting proxy, the sandbox)
    timezone: str = "Europe/Amsterdam"                 # zone syncd writes events in; all-day fallback
    timeout_seconds: float = Field(60.0, gt=0, le=600)
    throttle_max_wait_seconds: float = Field(60.0, ge=0, le=3600)
    # Open questions only a real tenant settles (graph.md section 11); the defaults follow the documentation.
    max_concurrent_requests: int = Field(4, ge=1, le=4)   # Outlook allows 4 per app (one reading: per mailbox)
    page_size: int = Field(100, ge=10, le=1000)            # Prefer: odata.maxpagesize
    check_change_key_before_write: bool = False         # GET and compare first, for a tenant ignoring If-Match

    _zone = field_validator("timezone")(classmethod(lambda cls, v: _check_zone(v)))

    @field_validator("authority", "graph_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @model_validator(mode="after")
    def _one_credential(self) -> GraphConfig:
        cert = self.certificate_file is not None or self.private_key_file is not None
        if self.client_secret is not None and cert:
            raise ValueError("give client_secret or certificate_file + private_key_file, not both")
        if not cert and self.client_secret is None:
            raise ValueError("needs client_secret (or client_secret_file), or certificate_file + private_key_file")
        if cert:
            missing = [k for k in ("certificate_file", "private_key_file") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"a certificate needs {' and '.join(missing)} too")
            from syncd.config.certs import load_certificate

            load_certificate(self.certificate_file or "", self.private_key_file or "")
        if self.ca_file is not None and not os.path.isfile(self.ca_file):
            raise ValueError(f"ca_file {self.ca_file}: no such file")
        return self


class CalendarConfig(_Strict):
    backend: Literal["ews", "graph"] = "ews"
    ews: EwsConfig | None = None
    graph: GraphConfig | None = None

    @model_validator(mode="after")
    def _section_for_backend(self) -> CalendarConfig:
        if getattr(self, self.backend) is None:
            raise ValueError(f"backend {self.backend} needs a calendar.{self.backend} section")
        return self


class RoomConfig(_Strict):
    mailbox: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    space_id: str = Field(min_length=1, max_length=100)


class ApplicantsConfig(_Strict):
    default: str = Field(min_length=1)
    by_email: dict[str, str] = {}

    @field_validator("by_email")
    @classmethod
    def _lower(cls, v: dict[str, str]) -> dict[str, str]:
        return {k.lower(): str(val) for k, val in v.items()}


class SyncConfig(_Strict):
    interval_seconds: int = Field(60, ge=5, le=86400)
    past_days: int = Field(1, ge=0, le=365)
    future_days: int = Field(30, ge=1, le=700)
    description_template: str = "{subject} ({organizer})"   # Ultimo Description; {subject} {organizer}
    private_subject: str = "Private meeting"                  # what a private meeting is shown as
    mask_private: bool = True
    event_subject_template: str = "{description}"             # Exchange subject for an Ultimo reservation
    max_cancellations_per_cycle: int = Field(20, ge=0)
    on_changed_on_both_sides: Literal["record_only", "exchange_wins", "ultimo_wins"] = "record_only"
    # Ultimo refuses an Outlook meeting (1015): decline_new = the room declines it, except on
    # the first pass over a room (its existing clashes are only reported); decline = always;
    # record_only (or record) = only report it.
    on_room_unavailable: Literal["decline_new", "decline", "record_only", "record"] = "decline_new"
    near_term_days: int = Field(2, ge=1, le=30)               # "today and tomorrow": read from Ultimo more often
    # Local hours (ultimo.timezone) the service takes as busy until it has learned the day:
    # whole hours, e.g. 07:00-19:00; 00:00-24:00 for a site busy round the clock.
    busy_hours: str = "07:00-19:00"

    @field_validator("description_template")
    @classmethod
    def _template(cls, v: str) -> str:
        try:
            v.format(subject="s", organizer="o")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"bad template: {e}; use {{subject}} and {{organizer}}") from None
        return v

    @field_validator("busy_hours")
    @classmethod
    def _busy_hours(cls, v: str) -> str:
        m = re.fullmatch(r"\s*(\d{1,2}):00\s*-\s*(\d{1,2}):00\s*", v)
        if m is None or not 0 <= int(m[1]) < int(m[2]) <= 24:
            raise ValueError("use whole local hours, the first before the second, e.g. 07:00-19:00 "
                             "(00:00-24:00: busy round the clock)")
        return f"{int(m[1]):02d}:00-{int(m[2]):02d}:00"

    @property
    def busy_hour_range(self) -> tuple[int, int]:
        """`busy_hours` as (first hour, hour after the last)."""
        start, end = self.busy_hours.split("-")
        return int(start[:2]), int(end[:2])

    @field_validator("event_subject_template")
    @classmethod
    def _event_template(cls, v: str) -> str:
        try:
            v.format(description="d", applicant="a", ultimo_id="1")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"bad template: {e}; use {{description}}, {{applicant}}, {{ultimo_id}}") from None
        return v


class DisplayConfig(_Strict):
    timezone: str | None = None          # zone of times shown to people; default: ultimo.timezone

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        return None if v is None else _check_zone(v)


DEFAULT_HEALTH_LISTEN = "127.0.0.1:9310"


class ServiceConfig(_Strict):
    # /healthz, /metrics and /status; `off` (or null) turns the endpoint off.
    health_listen: str | None = Field(DEFAULT_HEALTH_LISTEN,
                                      pattern=r"^(127\.\d+\.\d+\.\d+|localhost|\[::1\]|[\w.:\[\]-]+):\d+$")
    shutdown_grace_seconds: float = Field(10.0, gt=0, le=300)
    # `syncd run` waits for the instance lock instead of refusing to start (PostgreSQL only).
    standby: bool = False

    @field_validator("health_listen", mode="before")
    @classmethod
    def _off(cls, v: object) -> object:
        # YAML reads a bare `off`/`no`/`false` as False.
        if v is False or (isinstance(v, str) and v.strip().lower() in ("off", "none", "")):
            return None
        return v


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Config(_Strict):
    database: DatabaseConfig = DatabaseConfig()
    ultimo: UltimoConfig
    calendar: CalendarConfig
    rooms: list[RoomConfig] = Field(min_length=1)
    applicants: ApplicantsConfig
    sync: SyncConfig = SyncConfig()
    display: DisplayConfig = DisplayConfig()
    service: ServiceConfig = ServiceConfig()
    logging: LoggingConfig = LoggingConfig()

    @property
    def display_zone(self) -> ZoneInfo:
        """The one zone times are shown to people in: display.timezone, else Ultimo's."""
        return ZoneInfo(self.display.timezone or self.ultimo.timezone)

    # A field validator (not a model one) so the problem is reported at `rooms` even
    # when other sections have errors too.
    @field_validator("rooms")
    @classmethod
    def _unique_rooms(cls, rooms: list[RoomConfig]) -> list[RoomConfig]:
        seen_m: dict[str, int] = {}
        seen_s: dict[str, int] = {}
        problems = []
        for i, r in enumerate(rooms):
            if r.mailbox.lower() in seen_m:
                problems.append(f"room {r.mailbox} listed twice (rooms[{seen_m[r.mailbox.lower()]}] and rooms[{i}])")
            if r.space_id in seen_s:
                problems.append(f"space_id {r.space_id} listed twice (rooms[{seen_s[r.space_id]}] and rooms[{i}])")
            seen_m.setdefault(r.mailbox.lower(), i)
            seen_s.setdefault(r.space_id, i)
        if problems:
            raise ValueError("; ".join(problems))
        return rooms

    @model_validator(mode="after")
    def _standby_needs_postgres(self) -> Config:
        if self.service.standby and not self.database.url.startswith(("postgresql", "postgres")):
            raise ValueError("service.standby needs PostgreSQL (database.url is SQLite): on SQLite only one "
                             "machine runs syncd")
        return self
