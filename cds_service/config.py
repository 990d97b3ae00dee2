"""Typed service settings read from environment variables, validated once at start-up.

Every variable, its default and its meaning (see also docs/cds-hooks.md):

=============================  ==========================================================================
CDS_DEV_MODE                   ``1``/``true`` enables development mode: client authentication OFF, http
                               FHIR servers on loopback allowed, CORS ``*`` by default. Default off.
DATABASE_URL                   SQLAlchemy URL of the feedback store. Default
                               ``sqlite:///<cwd>/instance/feedback.sqlite3``; PostgreSQL via
                               ``postgresql+psycopg://user:pass@host/db``.
CDS_PUBLIC_BASE_URL            The externally visible base URL (``https://cds.example.org``). Required
                               outside development: JWT ``aud`` and card links are built from it, never
                               from the request's Host header (a TLS proxy changes it).
CDS_CORS_ORIGINS               Comma-separated allowed browser origins, or ``*``. Default ``*`` in
                               development, none otherwise.
CDS_HOOK_DEADLINE_S            Overall budget of one hook call, FHIR fallback included (default 2.5).
CDS_FHIR_TIMEOUT_S             Cap on the budget of one FHIR call, pagination excluded. Default: none, each
                               call may use whatever is left before the hook deadline.
CDS_FHIR_MAX_PAGES             Bundle pages followed per query (default 10).
CDS_PREFETCH_LOOKBACK_DAYS     Observation date window of the service's own FHIR queries (default 60).
CDS_MAX_REQUEST_BYTES          Largest accepted request body (default 20 MB); larger gets 413.
CDS_SMART_LAUNCH_URL           Launch URL of the SMART dashboard linked from cards (default none).
CDS_WORKERS / CDS_THREADS      gunicorn worker processes / threads per worker (default: CPU count / 4).
CDS_TRUSTED_CLIENTS_FILE       JSON or YAML file of trusted CDS clients (issuer, keys, allowed FHIR
                               servers; see docs/trusted-clients.md). Required outside development mode
                               (or CDS_TRUSTED_CLIENTS); in development mode it turns JWT checks on.
CDS_TRUSTED_CLIENTS            The same document inline (JSON), instead of a file.
CDS_JWT_LEEWAY_S               Clock-skew leeway for exp/iat/nbf (default 60; at most 300).
CDS_JWT_MAX_LIFETIME_S         Largest accepted exp - iat (default 3600 s: seen jtis are kept that long).
CDS_JWKS_CACHE_TTL_S           How long a fetched JWKS is used before it is fetched again (default 3600).
CDS_JWKS_MIN_REFRESH_S         Least time between two fetches of one JWKS URL, e.g. on unknown kids
                               (default 60): a flood of bad kids cannot turn into a flood of fetches.
CDS_JWKS_TIMEOUT_S             Budget of one JWKS fetch (default 2.0).
CDS_BENCH_FLOOR                ``1`` adds POST /_bench/floor (parses the body, answers no cards) and
                               POST /_bench/read/<id> (reads a hook call's data, answers no cards) for
                               the benchmarks in benchmarks/ (cds_service.web.bench_floor); default off.
CDS_PREVIEW_BUILDER            ``1`` serves the preview page's request builder (POST /preview/hook-request);
                               default on in development, off otherwise (an anonymous CPU cost).
CDS_PREVIEW_EVIDENCE           ``1`` serves the evidence view (POST /preview/evidence: the dashboard's
                               criteria, sources, data quality and UNVERIFIED list for a hook request,
                               without SMART); default on in development, off otherwise.
CDS_PREVIEW_EHR_LAUNCH_URL     Development only: an EHR launch endpoint (``make stack``'s
                               ``http://127.0.0.1:8091/ehr/launch``) through which the preview page opens
                               the card's SMART link; when it is not reachable the link opens the
                               evidence view. Default none (``make run`` sets it to make stack's).
CDS_RATE_LIMIT                 Requests per client address to each anonymous cost centre (SMART launch,
                               preview builder), e.g. ``60/minute`` (default; ``limits`` notation).
CDS_RATE_LIMIT_STORAGE_URI     Where the rate-limit counters live (``limits`` storage URI): default
                               ``memory://``, per worker process; ``redis://...`` or ``memcached://...``
                               shares them across workers and instances.
CDS_TRUSTED_PROXY_HOPS         Reverse proxies in front of the service whose X-Forwarded-For is trusted
                               for the client address (default 0; 1 behind deploy/nginx).
CDS_CONFIG_FILE                Optional YAML or JSON file holding any of these variables by name; the
                               environment wins over it (cds_service.ops.config_file).
=============================  ==========================================================================

The watch list (cds_service.watch; docs/watch-list.md):

=============================  ==========================================================================
CDS_WATCH                      ``1`` runs the watch list (enrolment, polling, notifications, /watch).
                               Default on in development mode or when CDS_WATCH_SERVERS_FILE is set.
CDS_WATCH_SERVERS_FILE         JSON or YAML file of the FHIR servers the watcher reads, each with its
                               SMART Backend Services client (client id, private key file, scopes).
CDS_WATCH_WINDOW_DAYS          Risk window after the infusion, in days (default 30): enrolment within it,
                               leaving at its end.
CDS_WATCH_POLL_S               Poll interval per patient (default 900).
CDS_WATCH_POLL_TIGHT_S         Poll interval while IEC-HS is possible or met (default 300).
CDS_WATCH_REEVALUATE_S         Full re-evaluation without new data at least this often (default 21600).
CDS_WATCH_TICK_S               How often the in-process scheduler looks for due patients (default 30).
CDS_WATCH_SCHEDULER            ``0`` runs no scheduler in ``cds-service serve`` (cron-style deployments
                               run ``cds-service watch --once``); default on.
CDS_WATCH_CONCURRENCY          Patients evaluated at once per process (default 4).
CDS_WATCH_LEASE_S              How long a claimed patient or notification stays claimed (default 120).
CDS_WATCH_FETCH_BUDGET_S       Time budget of one patient's FHIR reads (default 30).
CDS_WATCH_POLL_OVERLAP_S       ``_lastUpdated`` polls reach this far before the watermark (default 5).
CDS_WATCH_WEBHOOK_URL          Where status changes are POSTed (signed, Standard Webhooks); none: off.
CDS_WATCH_WEBHOOK_SECRET       The webhook signing secret (``whsec_`` + base64, at least 24 bytes).
CDS_WATCH_WEBHOOK_TIMEOUT_S    Budget of one webhook delivery (default 5).
CDS_WATCH_WEBHOOK_MAX_ATTEMPTS Deliveries tried before a notification is given up (default 12).
CDS_WATCH_WEBHOOK_RETRY_S      First retry delay; it doubles per attempt up to an hour, with jitter (30).
CDS_WATCH_WRITE_BACK           ``Communication`` or ``Flag``: also write the change to the EHR (write
                               scope needed); default ``off``.
CDS_WATCH_SUBSCRIPTIONS        ``0`` never creates rest-hook Subscriptions (polling only); default on.
CDS_WATCH_ENROLL_FILE          A site's list of patients to watch (JSON or YAML), synced every cycle.
=============================  ==========================================================================
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from cds_service.errors import ConfigurationError
from cds_service.ops.config_file import apply_config_file

T = TypeVar("T")
WATCH_VARIABLES = (
    "CDS_WATCH",
    "CDS_WATCH_SERVERS_FILE",
    "CDS_WATCH_WINDOW_DAYS",
    "CDS_WATCH_POLL_S",
    "CDS_WATCH_POLL_TIGHT_S",
    "CDS_WATCH_REEVALUATE_S",
    "CDS_WATCH_TICK_S",
    "CDS_WATCH_SCHEDULER",
    "CDS_WATCH_CONCURRENCY",
    "CDS_WATCH_LEASE_S",
    "CDS_WATCH_FETCH_BUDGET_S",
    "CDS_WATCH_POLL_OVERLAP_S",
    "CDS_WATCH_WEBHOOK_URL",
    "CDS_WATCH_WEBHOOK_SECRET",
    "CDS_WATCH_WEBHOOK_TIMEOUT_S",
    "CDS_WATCH_WEBHOOK_MAX_ATTEMPTS",
    "CDS_WATCH_WEBHOOK_RETRY_S",
    "CDS_WATCH_WRITE_BACK",
    "CDS_WATCH_SUBSCRIPTIONS",
    "CDS_WATCH_ENROLL_FILE",
)
ENV_VARIABLES = (
    "CDS_DEV_MODE",
    "DATABASE_URL",
    "CDS_PUBLIC_BASE_URL",
    "CDS_CORS_ORIGINS",
    "CDS_HOOK_DEADLINE_S",
    "CDS_FHIR_TIMEOUT_S",
    "CDS_FHIR_MAX_PAGES",
    "CDS_PREFETCH_LOOKBACK_DAYS",
    "CDS_MAX_REQUEST_BYTES",
    "CDS_SMART_LAUNCH_URL",
    "CDS_WORKERS",
    "CDS_THREADS",
    "CDS_TRUSTED_CLIENTS_FILE",
    "CDS_TRUSTED_CLIENTS",
    "CDS_JWT_LEEWAY_S",
    "CDS_JWT_MAX_LIFETIME_S",
    "CDS_JWKS_CACHE_TTL_S",
    "CDS_JWKS_MIN_REFRESH_S",
    "CDS_JWKS_TIMEOUT_S",
    "CDS_BENCH_FLOOR",
    "CDS_PREVIEW_BUILDER",
    "CDS_PREVIEW_EVIDENCE",
    "CDS_PREVIEW_EHR_LAUNCH_URL",
    "CDS_RATE_LIMIT",
    "CDS_RATE_LIMIT_STORAGE_URI",
    "CDS_TRUSTED_PROXY_HOPS",
    "CDS_CONFIG_FILE",
    *WATCH_VARIABLES,
)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_DATABASE_DRIVERS = {"sqlite", "postgresql"}
_SECRET_WORDS = ("secret", "password", "token", "private")


WRITE_BACK_KINDS = ("off", "Communication", "Flag")


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """The watch list's settings (CDS_WATCH_*; docs/watch-list.md). `enabled` False: no watcher at all."""

    enabled: bool = False
    servers_file: Path | None = None
    window_days: int = 30
    poll_s: float = 900.0
    poll_tight_s: float = 300.0
    reevaluate_s: float = 21600.0
    tick_s: float = 30.0
    scheduler: bool = True
    concurrency: int = 4
    lease_s: float = 120.0
    fetch_budget_s: float = 30.0
    poll_overlap_s: float = 5.0
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_timeout_s: float = 5.0
    webhook_max_attempts: int = 12
    webhook_retry_s: float = 30.0
    write_back: str = "off"
    subscriptions: bool = True
    enroll_file: Path | None = None

    def check(self, dev_mode: bool) -> None:
        """Rules between the watch variables."""
        if not self.enabled:
            return
        if self.servers_file is None and not dev_mode:
            raise ConfigurationError(
                "CDS_WATCH_SERVERS_FILE", "required when the watch list runs outside development mode"
            )
        if self.poll_tight_s > self.poll_s:
            raise ConfigurationError("CDS_WATCH_POLL_TIGHT_S", "must not exceed CDS_WATCH_POLL_S")
        if self.lease_s <= self.fetch_budget_s:
            raise ConfigurationError("CDS_WATCH_LEASE_S", "must exceed CDS_WATCH_FETCH_BUDGET_S")
        if self.webhook_url is not None:
            if not dev_mode and urlsplit(self.webhook_url).scheme != "https":
                raise ConfigurationError("CDS_WATCH_WEBHOOK_URL", "must be https outside development mode")
            if self.webhook_secret is None:
                raise ConfigurationError("CDS_WATCH_WEBHOOK_SECRET", "required with CDS_WATCH_WEBHOOK_URL")


@dataclass(frozen=True, slots=True)
class Settings:
    """The service's validated configuration (immutable; build with :meth:`from_env`)."""

    dev_mode: bool = False
    database_url: str = ""
    public_base_url: str | None = None
    cors_origins: tuple[str, ...] = ()
    hook_deadline_s: float = 2.5
    fhir_timeout_s: float | None = None  # None: each FHIR call may use the time left before the deadline
    fhir_max_pages: int = 10
    prefetch_lookback_days: int = 60
    max_request_bytes: int = 20 * 1024 * 1024
    smart_launch_url: str | None = None
    workers: int = max(1, os.cpu_count() or 1)
    threads: int = 4
    trusted_clients_file: Path | None = None
    trusted_clients_json: str | None = None
    jwt_leeway_s: float = 60.0
    jwt_max_lifetime_s: int = 3600
    jwks_cache_ttl_s: float = 3600.0
    jwks_min_refresh_s: float = 60.0
    jwks_timeout_s: float = 2.0
    bench_floor: bool = False
    preview_builder: bool = False
    preview_evidence: bool = False
    preview_ehr_launch_url: str | None = None
    rate_limit: str = "60/minute"
    rate_limit_storage_uri: str = "memory://"
    trusted_proxy_hops: int = 0
    watch: WatchSettings = field(default_factory=lambda: WatchSettings())

    @property
    def trusted_clients_configured(self) -> bool:
        """A trusted-clients document is configured (file or inline): client JWTs are verified."""
        return self.trusted_clients_file is not None or self.trusted_clients_json is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every variable (CDS_CONFIG_FILE values under the environment's); raises
        ConfigurationError naming the first bad one, and the file when the value came from it."""
        env, from_file = apply_config_file(os.environ if environ is None else environ, ENV_VARIABLES)
        try:
            return cls._from_variables(env)
        except ConfigurationError as exc:
            raise from_file.explain(exc) from None

    @classmethod
    def _from_variables(cls, env: Mapping[str, str]) -> Settings:
        dev = _parse("CDS_DEV_MODE", env, _boolean, False)
        settings = cls(
            dev_mode=dev,
            database_url=_parse("DATABASE_URL", env, _database_url, default_database_url()),
            public_base_url=_parse("CDS_PUBLIC_BASE_URL", env, _base_url, None),
            cors_origins=_parse("CDS_CORS_ORIGINS", env, _origins, ("*",) if dev else ()),
            hook_deadline_s=_parse("CDS_HOOK_DEADLINE_S", env, _positive(float, 60.0), 2.5),
            fhir_timeout_s=_parse("CDS_FHIR_TIMEOUT_S", env, _positive(float, 60.0), None),
            fhir_max_pages=_parse("CDS_FHIR_MAX_PAGES", env, _positive(int, 1000), 10),
            prefetch_lookback_days=_parse("CDS_PREFETCH_LOOKBACK_DAYS", env, _positive(int, 3650), 60),
            max_request_bytes=_parse("CDS_MAX_REQUEST_BYTES", env, _positive(int, 1 << 30), 20 << 20),
            smart_launch_url=_parse("CDS_SMART_LAUNCH_URL", env, _absolute_url, None),
            workers=_parse("CDS_WORKERS", env, _positive(int, 64), max(1, os.cpu_count() or 1)),
            threads=_parse("CDS_THREADS", env, _positive(int, 64), 4),
            bench_floor=_parse("CDS_BENCH_FLOOR", env, _boolean, False),
            preview_builder=_parse("CDS_PREVIEW_BUILDER", env, _boolean, dev),
            preview_evidence=_parse("CDS_PREVIEW_EVIDENCE", env, _boolean, dev),
            preview_ehr_launch_url=_parse("CDS_PREVIEW_EHR_LAUNCH_URL", env, _base_url, None),
            rate_limit=_parse("CDS_RATE_LIMIT", env, _rate_limit, "60/minute"),
            rate_limit_storage_uri=_parse("CDS_RATE_LIMIT_STORAGE_URI", env, _storage_uri, "memory://"),
            trusted_proxy_hops=_parse("CDS_TRUSTED_PROXY_HOPS", env, _non_negative_int(5), 0),
            watch=_watch_settings(env, dev),
            **_auth_settings(env),
        )
        settings.check_consistency()
        return settings

    def check_consistency(self) -> None:
        """Rules between variables (production needs a public https base URL)."""
        if not self.dev_mode:
            if self.public_base_url is None:
                raise ConfigurationError(
                    "CDS_PUBLIC_BASE_URL", "required outside development mode (JWT aud is built from it)"
                )
            if not self.public_base_url.startswith("https://"):
                raise ConfigurationError("CDS_PUBLIC_BASE_URL", "must be https outside development mode")
        if self.fhir_timeout_s is not None and self.fhir_timeout_s > self.hook_deadline_s:
            raise ConfigurationError("CDS_FHIR_TIMEOUT_S", "must not exceed CDS_HOOK_DEADLINE_S")
        if self.trusted_clients_file is not None and self.trusted_clients_json is not None:
            raise ConfigurationError(
                "CDS_TRUSTED_CLIENTS", "set either CDS_TRUSTED_CLIENTS_FILE or CDS_TRUSTED_CLIENTS, not both"
            )
        self.watch.check(self.dev_mode)

    def summary(self) -> dict[str, str]:
        """Printable view of the settings, with any database or rate-limit storage password masked."""
        shown = {f.name: str(getattr(self, f.name)) for f in fields(self) if f.name != "watch"}
        shown |= {f"watch_{f.name}": str(getattr(self.watch, f.name)) for f in fields(self.watch)}
        shown["database_url"] = make_url(self.database_url).render_as_string(hide_password=True)
        shown["rate_limit_storage_uri"] = _without_credentials(self.rate_limit_storage_uri)
        shown["cors_origins"] = ", ".join(self.cors_origins) or "(none)"
        shown["trusted_clients_json"] = "(set)" if self.trusted_clients_json else "(none)"
        for name, value in shown.items():  # settings whose name says they are secret stay hidden too
            if any(word in name for word in _SECRET_WORDS) and value not in ("None", ""):
                shown[name] = "(set, hidden)"
        return shown


def _without_credentials(uri: str) -> str:
    """`redis://user:secret@host/0` -> `redis://***@host/0` (a storage URI may carry a password)."""
    scheme, separator, rest = uri.partition("://")
    userinfo, at, host = rest.rpartition("@")
    return f"{scheme}{separator}***@{host}" if at and userinfo else uri


def _auth_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The client-authentication variables (documented in docs/trusted-clients.md)."""
    return {
        "trusted_clients_file": _parse("CDS_TRUSTED_CLIENTS_FILE", env, _existing_file, None),
        "trusted_clients_json": _parse("CDS_TRUSTED_CLIENTS", env, lambda _name, raw: raw, None),
        "jwt_leeway_s": _parse("CDS_JWT_LEEWAY_S", env, _non_negative(300.0), 60.0),
        "jwt_max_lifetime_s": _parse("CDS_JWT_MAX_LIFETIME_S", env, _positive(int, 86400), 3600),
        "jwks_cache_ttl_s": _parse("CDS_JWKS_CACHE_TTL_S", env, _positive(float, 86400.0), 3600.0),
        "jwks_min_refresh_s": _parse("CDS_JWKS_MIN_REFRESH_S", env, _non_negative(3600.0), 60.0),
        "jwks_timeout_s": _parse("CDS_JWKS_TIMEOUT_S", env, _positive(float, 30.0), 2.0),
    }


def _watch_settings(env: Mapping[str, str], dev: bool) -> WatchSettings:
    """The CDS_WATCH_* variables (documented in docs/watch-list.md and docs/configuration.md)."""
    servers_file = _parse("CDS_WATCH_SERVERS_FILE", env, _existing_file, None)
    return WatchSettings(
        enabled=_parse("CDS_WATCH", env, _boolean, dev or servers_file is not None),
        servers_file=servers_file,
        window_days=_parse("CDS_WATCH_WINDOW_DAYS", env, _positive(int, 365), 30),
        poll_s=_parse("CDS_WATCH_POLL_S", env, _positive(float, 86400.0), 900.0),
        poll_tight_s=_parse("CDS_WATCH_POLL_TIGHT_S", env, _positive(float, 86400.0), 300.0),
        reevaluate_s=_parse("CDS_WATCH_REEVALUATE_S", env, _positive(float, 7 * 86400.0), 21600.0),
        tick_s=_parse("CDS_WATCH_TICK_S", env, _positive(float, 3600.0), 30.0),
        scheduler=_parse("CDS_WATCH_SCHEDULER", env, _boolean, True),
        concurrency=_parse("CDS_WATCH_CONCURRENCY", env, _positive(int, 64), 4),
        lease_s=_parse("CDS_WATCH_LEASE_S", env, _positive(float, 3600.0), 120.0),
        fetch_budget_s=_parse("CDS_WATCH_FETCH_BUDGET_S", env, _positive(float, 600.0), 30.0),
        poll_overlap_s=_parse("CDS_WATCH_POLL_OVERLAP_S", env, _non_negative(3600.0), 5.0),
        webhook_url=_parse("CDS_WATCH_WEBHOOK_URL", env, _plain_url, None),
        webhook_secret=_parse("CDS_WATCH_WEBHOOK_SECRET", env, _webhook_secret, None),
        webhook_timeout_s=_parse("CDS_WATCH_WEBHOOK_TIMEOUT_S", env, _positive(float, 60.0), 5.0),
        webhook_max_attempts=_parse("CDS_WATCH_WEBHOOK_MAX_ATTEMPTS", env, _positive(int, 100), 12),
        webhook_retry_s=_parse("CDS_WATCH_WEBHOOK_RETRY_S", env, _positive(float, 3600.0), 30.0),
        write_back=_parse("CDS_WATCH_WRITE_BACK", env, _write_back, "off"),
        subscriptions=_parse("CDS_WATCH_SUBSCRIPTIONS", env, _boolean, True),
        enroll_file=_parse("CDS_WATCH_ENROLL_FILE", env, _existing_file, None),
    )


def _plain_url(name: str, raw: str) -> str:
    url = _absolute_url(name, raw)
    parts = urlsplit(url)
    if parts.username or parts.password or parts.fragment:
        raise ConfigurationError(name, "must not carry credentials or a fragment")
    return url


def _webhook_secret(name: str, raw: str) -> str:
    """A Standard Webhooks secret: ``whsec_`` and base64 of at least 24 random bytes."""
    body = raw.removeprefix("whsec_")
    try:
        key = base64.b64decode(body + "==", validate=False)
    except (ValueError, binascii.Error):
        raise ConfigurationError(name, "expected 'whsec_' followed by base64") from None
    if len(key) < 24:
        raise ConfigurationError(
            name, "must hold at least 24 bytes (e.g. 'whsec_' + base64 of 32 random bytes)"
        )
    return raw


def _write_back(name: str, raw: str) -> str:
    for kind in WRITE_BACK_KINDS:
        if raw.lower() == kind.lower():
            return kind
    raise ConfigurationError(name, f"expected one of {', '.join(WRITE_BACK_KINDS)}, got {raw!r}")


def _existing_file(name: str, raw: str) -> Path:
    path = Path(raw)
    if not path.is_file():
        raise ConfigurationError(name, f"no such file: {raw!r}")
    return path


def _non_negative(maximum: float) -> Callable[[str, str], float]:
    """A parser for a float in [0, maximum] (0 is meaningful: no leeway, no refresh interval)."""
    return _in_range(float, "a number", maximum)


def _non_negative_int(maximum: int) -> Callable[[str, str], int]:
    return _in_range(int, "an integer", maximum)


def _in_range(convert: Callable[[str], N], kind: str, maximum: N) -> Callable[[str, str], N]:
    """A parser for a number in [0, maximum] (`kind` names it in the error)."""

    def parse(name: str, raw: str) -> N:
        try:
            value = convert(raw)
        except ValueError:
            raise ConfigurationError(name, f"expected {kind}, got {raw!r}") from None
        if not 0 <= value <= maximum:
            raise ConfigurationError(name, f"must be >= 0 and <= {maximum:g}, got {raw!r}")
        return value

    return parse


def _rate_limit(name: str, raw: str) -> str:
    from limits import parse_many

    try:
        parse_many(raw)
    except ValueError:
        raise ConfigurationError(name, f"expected a rate such as '60/minute', got {raw!r}") from None
    return raw


def _storage_uri(name: str, raw: str) -> str:
    from limits.storage import storage_from_string

    if raw.startswith("async+"):
        raise ConfigurationError(name, f"an async storage cannot serve this (synchronous) service: {raw!r}")
    try:
        storage_from_string(raw)  # checks the scheme and the storage's client package; connects lazily
    except Exception as exc:  # limits raises ConfigurationError or ValueError, by storage
        raise ConfigurationError(name, f"not a usable limits storage URI ({type(exc).__name__})") from None
    return raw


def default_database_url() -> str:
    """SQLite file under ./instance/ (relative to the working directory at start-up)."""
    return f"sqlite:///{Path.cwd() / 'instance' / 'feedback.sqlite3'}"


def _parse(name: str, env: Mapping[str, str], parse: Callable[[str, str], T], default: T) -> T:
    raw = env.get(name)
    if raw is None or (raw.strip() == "" and name != "CDS_DEV_MODE"):
        return default
    return parse(name, raw.strip())


def _boolean(name: str, raw: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigurationError(name, f"expected 1/0/true/false/yes/no/on/off, got {raw!r}")


N = TypeVar("N", int, float)


def _positive(kind: type[N], maximum: float) -> Callable[[str, str], N]:
    """A parser for a number in (0, maximum] of type `kind` (int or float)."""

    def parse(name: str, raw: str) -> N:
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigurationError(name, f"expected a {kind.__name__}, got {raw!r}") from None
        if not 0 < value <= maximum:
            raise ConfigurationError(name, f"must be > 0 and <= {maximum:g}, got {raw!r}")
        return value

    return parse


def _absolute_url(name: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigurationError(name, f"expected an absolute http(s) URL, got {raw!r}")
    return raw


def _base_url(name: str, raw: str) -> str:
    url = _absolute_url(name, raw).rstrip("/")
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ConfigurationError(name, "must not have a query or fragment")
    return url


def _origins(name: str, raw: str) -> tuple[str, ...]:
    origins = tuple(item.strip().rstrip("/") for item in raw.split(",") if item.strip())
    for origin in origins:
        parts = urlsplit(origin)
        if origin != "*" and (parts.scheme not in {"http", "https"} or not parts.netloc or parts.path):
            raise ConfigurationError(
                name, f"expected '*' or origins like https://ehr.example.org, got {origin!r}"
            )
    if "*" in origins and len(origins) > 1:
        raise ConfigurationError(name, "'*' cannot be combined with explicit origins")
    return origins


def _database_url(name: str, raw: str) -> str:
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigurationError(name, "not a valid SQLAlchemy database URL") from None
    if url.get_backend_name() not in _DATABASE_DRIVERS:
        raise ConfigurationError(
            name, f"unsupported database '{url.get_backend_name()}' (sqlite or postgresql)"
        )
    return raw
