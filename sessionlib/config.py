"""Settings for the Redis topology and for sessions, with `dev` and `prod` profiles.

Values come from the profile's YAML, then an optional YAML file of the user's, then
environment variables (prefix `SESSIONLIB_`, nested with `__`), the last one winning.
Every path (YAML, environment, SessionMiddleware keywords) ends in the same validation.
"""

from __future__ import annotations

import difflib
import json
import os
import types
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeGuard, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from sessionlib.encryption import decode_key
from sessionlib.errors import ConfigurationError

Profile = Literal["dev", "prod"]
PROFILES: tuple[Profile, ...] = ("dev", "prod")
ENV_PREFIX = "SESSIONLIB_"
# Read by load_settings() but not settings themselves.
NON_SETTING_VARIABLES = frozenset({f"{ENV_PREFIX}CONFIG_FILE"})


def env_variable(path: str) -> str:
    """The variable that sets a dotted setting: `redis.tls.enabled` is
    `SESSIONLIB_REDIS__TLS__ENABLED`."""
    return ENV_PREFIX + "__".join(part.upper() for part in path.split("."))


class _Strict(BaseModel):
    """Unknown keys are typos: refuse them instead of silently ignoring them."""

    model_config = ConfigDict(extra="forbid")


class TLSSettings(_Strict):
    """TLS towards Redis and Sentinel; off unless `enabled`."""

    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = Field(default=None, description="client certificate (mutual TLS)")
    key_file: Path | None = None
    verify_hostname: bool = True
    allow_plaintext: bool = Field(
        default=False,
        description="let `prod` talk to Redis without TLS (a private network you trust)",
    )

    @model_validator(mode="after")
    def _client_certificate_is_whole(self) -> TLSSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("redis.tls.cert_file and redis.tls.key_file go together")
        return self


class RetrySettings(_Strict):
    """The one retry layer: how long an operation may keep trying, and how it backs off."""

    deadline_seconds: float = Field(default=5.0, gt=0)
    initial_backoff_seconds: float = Field(default=0.05, gt=0)
    max_backoff_seconds: float = Field(default=0.5, gt=0)
    jitter_seconds: float = Field(default=0.05, ge=0)


class RedisSettings(_Strict):
    """Where Redis is and how to reach it."""

    mode: Literal["standalone", "sentinel", "cluster"] = "standalone"
    url: str = "redis://127.0.0.1:6379/0"
    sentinels: list[str] = Field(default_factory=list, description="host:port of each sentinel")
    master_name: str = "mymaster"
    sentinel_username: str | None = None
    sentinel_password: SecretStr | None = None
    cluster_nodes: list[str] = Field(default_factory=list)
    db: int = Field(default=0, ge=0)
    username: str | None = None
    password: SecretStr | None = None
    tls: TLSSettings = Field(default_factory=TLSSettings)
    socket_timeout_seconds: float = Field(default=1.0, gt=0)
    connect_timeout_seconds: float = Field(default=1.0, gt=0)
    max_connections: int = Field(default=64, ge=1)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    watch_sentinels: bool = Field(
        default=True, description="follow +switch-master instead of waiting for errors"
    )

    @field_validator("sentinels", "cluster_nodes")
    @classmethod
    def _host_port_pairs(cls, addresses: list[str]) -> list[str]:
        for address in addresses:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{address!r} is not host:port")
        return addresses

    @model_validator(mode="after")
    def _topology_is_complete(self) -> RedisSettings:
        if self.mode == "sentinel" and not self.sentinels:
            raise ValueError(
                "mode 'sentinel' needs at least one address in redis.sentinels "
                f"({env_variable('redis.sentinels')}), or a redis.url "
                f"({env_variable('redis.url')}) for standalone mode"
            )
        if self.mode == "cluster" and not self.cluster_nodes:
            raise ValueError(
                "mode 'cluster' needs at least one address in redis.cluster_nodes "
                f"({env_variable('redis.cluster_nodes')})"
            )
        return self

    @property
    def uses_tls(self) -> bool:
        """TLS towards Redis: switched on, or asked for by a `rediss://` URL."""
        return self.tls.enabled or (self.mode == "standalone" and self.url.startswith("rediss:"))

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(h, int(p)) for h, _, p in (a.rpartition(":") for a in self.sentinels)]


class DurabilitySettings(_Strict):
    """Optional `WAIT` after each write for this many replicas."""

    replicas: int = Field(default=0, ge=0)
    timeout_ms: int = Field(default=500, ge=1)
    on_shortfall: Literal["fail", "accept"] = "accept"


class EncryptionSettings(_Strict):
    """Encryption at rest of attribute values (AES-256-GCM); metadata stays plain.

    The first key seals, every key opens: rotate by prepending a new key, drop the old
    one once no live session holds values it sealed (after the absolute timeout).
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    enabled: bool = Field(default=False, description="seal attribute values written from now on")
    keys: list[SecretStr] = Field(
        default_factory=list,
        description="32 random bytes each, base64url; values sealed under any key still "
        "open while encryption is off, so keep the keys until old values are gone",
    )

    @field_validator("keys")
    @classmethod
    def _keys_are_32_bytes(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for number, key in enumerate(keys, start=1):
            try:
                decode_key(key.get_secret_value())
            except ValueError as exc:
                raise ValueError(
                    f"key {number} of {len(keys)} {exc}; each key is 32 random bytes, "
                    f"base64url-encoded, in a JSON list in "
                    f"{env_variable('session.encryption.keys')}"
                ) from None
        return keys

    @model_validator(mode="after")
    def _keys_when_enabled(self) -> EncryptionSettings:
        if self.enabled and not self.keys:
            raise ValueError(
                f"session.encryption.enabled ({env_variable('session.encryption.enabled')}) "
                f"needs at least one key in {env_variable('session.encryption.keys')}, "
                "a JSON list of base64url-encoded 32-byte keys"
            )
        return self

    def key_bytes(self) -> list[bytes]:
        return [decode_key(key.get_secret_value()) for key in self.keys]


class NearCacheSettings(_Strict):
    """An opt-in cache, in each process, of sessions read recently: Redis invalidates its
    entries (client-side caching), and it is trusted only while that channel is alive."""

    enabled: bool = False
    max_entries: int = Field(default=10_000, ge=1)
    max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="memory the cached sessions may take"
    )
    max_staleness_seconds: float = Field(
        default=30.0,
        gt=0,
        description="an entry is read from Redis again after this long, invalidated or not",
    )
    health_check_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        description="how often the invalidation channel is PINGed; a pong later than this "
        "flushes the cache until the channel is back",
    )

    @model_validator(mode="after")
    def _checked_within_staleness(self) -> NearCacheSettings:
        if self.health_check_interval_seconds >= self.max_staleness_seconds:
            raise ValueError(
                "session.near_cache.health_check_interval_seconds "
                f"{self.health_check_interval_seconds:g} "
                f"({env_variable('session.near_cache.health_check_interval_seconds')}) must be "
                f"below session.near_cache.max_staleness_seconds {self.max_staleness_seconds:g} "
                f"({env_variable('session.near_cache.max_staleness_seconds')}): a dead "
                "channel must be noticed before an entry would expire anyway"
            )
        return self


class SessionSettings(_Strict):
    """How sessions are identified, kept alive and bounded."""

    # Signing and encryption keys live here: a ValidationError must not print them.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    key_prefix: str = Field(default="sessionlib", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    cookie_name: str = Field(default="session", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    header_name: str = Field(default="X-Session-Id", pattern=r"^[A-Za-z0-9-]{1,64}$")
    expose_id_header: Literal["always", "when_requested", "never"] = Field(
        default="always",
        description="when a response carries a new session id in header_name: 'always'; "
        "'when_requested', only to clients that sent that header (scripts can read a "
        "response header even when the cookie is HttpOnly); 'never'. An endpoint can "
        "still send it with Session.expose_id(), as the gateway's POST /login does",
    )
    cookie_path: str = "/"
    cookie_domain: str | None = None
    cookie_secure: bool = False
    cookie_http_only: bool = True
    cookie_same_site: Literal["lax", "strict", "none"] = "lax"
    cookie_host_prefix: bool = False
    idle_timeout_seconds: int = Field(default=1800, ge=1)
    absolute_timeout_seconds: int = Field(default=12 * 3600, ge=1)
    refresh_throttle_seconds: float = Field(default=60.0, ge=0)
    signing_keys: list[SecretStr] = Field(default_factory=list)
    max_attribute_bytes: int = Field(default=64 * 1024, ge=1)
    max_session_bytes: int = Field(default=256 * 1024, ge=1)
    max_attributes: int = Field(default=256, ge=1)
    max_sessions_per_user: int | None = Field(default=None, ge=1)
    stale_reads_during_failover: bool = Field(
        default=False,
        description="serve loads from the freshest replica while no master answers",
    )
    stale_read_after_seconds: float = Field(default=0.5, gt=0)
    moved_marker_seconds: int = Field(
        default=60,
        ge=1,
        description="how long an id replaced by a login still answers 'moved' (409) "
        "instead of 'no session', so a slow request on it never clears the new cookie",
    )
    durability: DurabilitySettings = Field(default_factory=DurabilitySettings)
    encryption: EncryptionSettings = Field(default_factory=EncryptionSettings)
    near_cache: NearCacheSettings = Field(default_factory=NearCacheSettings)

    @model_validator(mode="after")
    def _coherent(self) -> SessionSettings:
        if self.cookie_same_site == "none" and not self.cookie_secure:
            raise ValueError(
                "session.cookie_same_site 'none' requires session.cookie_secure true "
                f"({env_variable('session.cookie_secure')}; browsers drop SameSite=None "
                "cookies that are not Secure)"
            )
        if self.cookie_host_prefix and (
            not self.cookie_secure or self.cookie_domain or self.cookie_path != "/"
        ):
            raise ValueError(
                f"session.cookie_host_prefix ({env_variable('session.cookie_host_prefix')}) "
                f"needs cookie_secure true ({env_variable('session.cookie_secure')}), no "
                f"cookie_domain ({env_variable('session.cookie_domain')}) and cookie_path '/' "
                f"({env_variable('session.cookie_path')})"
            )
        if self.idle_timeout_seconds > self.absolute_timeout_seconds:
            raise ValueError(
                f"session.idle_timeout_seconds {self.idle_timeout_seconds} "
                f"({env_variable('session.idle_timeout_seconds')}) exceeds "
                f"session.absolute_timeout_seconds {self.absolute_timeout_seconds} "
                f"({env_variable('session.absolute_timeout_seconds')}); lower the first "
                "or raise the second"
            )
        return self


class Settings(BaseSettings):
    """Everything sessionlib needs; build it with `load_settings()`.

    Only `load_settings()` reads the environment (checked for typos, and layered over the
    YAML); validating a Settings never picks up `SESSIONLIB_*` variables on the side.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        hide_input_in_errors=True,  # passwords and keys never reach an error message
    )

    profile: Profile = "dev"
    redis: RedisSettings = Field(default_factory=RedisSettings)
    session: SessionSettings = Field(default_factory=SessionSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    @model_validator(mode="after")
    def _prod_is_safe(self) -> Settings:
        if self.profile == "prod":
            problems = insecure_settings(self)
            if problems:
                raise ValueError(
                    "refusing insecure settings in profile 'prod': " + "; ".join(problems)
                )
        return self


def insecure_settings(settings: Settings) -> list[str]:
    """Each setting that `prod` refuses, named with the variable that fixes it."""
    s, r = settings.session, settings.redis
    problems = []
    if not s.cookie_secure:
        problems.append("session.cookie_secure must be true (SESSIONLIB_SESSION__COOKIE_SECURE)")
    if not s.cookie_http_only:
        problems.append(
            "session.cookie_http_only must be true (SESSIONLIB_SESSION__COOKIE_HTTP_ONLY)"
        )
    if not _redis_password_given(r):
        problems.append(
            "redis.password must be set (SESSIONLIB_REDIS__PASSWORD, or a password in "
            "SESSIONLIB_REDIS__URL in standalone mode)"
        )
    if r.mode == "sentinel" and r.sentinel_password is None:
        problems.append(
            "redis.sentinel_password must be set in sentinel mode "
            "(SESSIONLIB_REDIS__SENTINEL_PASSWORD)"
        )
    if not r.uses_tls and not r.tls.allow_plaintext:
        problems.append(
            "redis.tls.enabled must be true, or plaintext allowed on purpose "
            "(SESSIONLIB_REDIS__TLS__ENABLED, or SESSIONLIB_REDIS__TLS__ALLOW_PLAINTEXT)"
        )
    if r.uses_tls and not r.tls.verify_hostname:
        problems.append(
            "redis.tls.verify_hostname must be true (SESSIONLIB_REDIS__TLS__VERIFY_HOSTNAME)"
        )
    return problems


def _redis_password_given(redis: RedisSettings) -> bool:
    if redis.password is not None and redis.password.get_secret_value():
        return True
    # Only standalone mode connects through the URL; Sentinel mode never reads it.
    return redis.mode == "standalone" and bool(urlsplit(redis.url).password)


def with_session_overrides(settings: Settings, overrides: Mapping[str, Any]) -> Settings:
    """`settings` with some session fields replaced, validated whole again.

    The profile's checks run on the result, so `prod` refuses `cookie_secure=False` from
    SessionMiddleware's `https_only` exactly as from YAML or the environment. An idle
    timeout longer than the absolute timeout, given without an absolute timeout, raises
    the absolute timeout to match: an app asking Starlette's `max_age` of 14 days expects
    sessions to last 14 days. Raises `ConfigurationError`.
    """
    data = settings.model_dump()
    data["session"] = _session_data(settings.session, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc, heading=_overriding(overrides))) from None


def overridden_session(session: SessionSettings, overrides: Mapping[str, Any]) -> SessionSettings:
    """`session` with some fields replaced, where the profile is not known (a store's).

    Validated as session settings (coherence, idle within absolute timeout, the absolute
    timeout raised as in `with_session_overrides`). The profile's checks need the whole
    Settings, which a store does not keep; in their place an override may not switch off
    a protection `session` has on (Secure, HttpOnly): a store built from `prod` settings
    keeps its Secure cookie. To let a profile decide, use `with_session_overrides`.
    Raises `ConfigurationError`.
    """
    try:
        result = SessionSettings.model_validate(_session_data(session, overrides))
    except ValidationError as exc:
        raise ConfigurationError(
            _describe(exc, heading=_overriding(overrides), root=("session",))
        ) from None
    dropped = [
        f"session.{name} ({env_variable('session.' + name)})"
        for name in ("cookie_secure", "cookie_http_only")
        if getattr(session, name) and not getattr(result, name)
    ]
    if dropped:
        raise ConfigurationError(
            f"refusing to switch off {', '.join(dropped)}: the store's settings have it on "
            "and its profile is not known here; leave it on, turn it off in the settings "
            "the store is built from, or pass those settings too so their profile decides"
        )
    return result


def _session_data(session: SessionSettings, overrides: Mapping[str, Any]) -> dict[str, Any]:
    data = {**session.model_dump(), **overrides}
    idle = overrides.get("idle_timeout_seconds")
    if (
        "absolute_timeout_seconds" not in overrides
        and isinstance(idle, int)
        and idle > session.absolute_timeout_seconds
    ):
        data["absolute_timeout_seconds"] = idle
    return data


def _overriding(overrides: Mapping[str, Any]) -> str:
    names = ", ".join(f"session.{name}" for name in overrides) or "nothing"
    return f"invalid sessionlib settings after overriding {names}"


def environment_variables() -> dict[str, str]:
    """Every variable that sets a setting, with the setting's dotted path."""
    return {env_variable(path): path for path in _setting_fields(Settings)}


def _setting_fields(model: type[BaseModel], prefix: str = "") -> dict[str, FieldInfo]:
    fields: dict[str, FieldInfo] = {}
    for name, info in model.model_fields.items():
        fields[prefix + name] = info
        if _is_model(info.annotation):
            fields.update(_setting_fields(info.annotation, f"{prefix}{name}."))
    return fields


def _is_model(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _wants_json(annotation: Any) -> bool:
    """Whether pydantic-settings parses the variable as JSON: lists and whole sections."""
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_wants_json(arg) for arg in get_args(annotation))
    return _is_model(annotation) or get_origin(annotation) in (list, dict, set, tuple)


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or any(_is_secret(arg) for arg in get_args(annotation))


def _check_environment(environ: Mapping[str, str]) -> None:
    """Refuse `SESSIONLIB_*` variables that look like settings but name none, and
    list or section variables that are not JSON, each with the fix.

    A variable looks like a setting when its name has `__` or starts with a section
    (`SESSIONLIB_REDIS_`, `SESSIONLIB_SESSION_`); other `SESSIONLIB_*` names belong to
    tools (`SESSIONLIB_LOCAL_*`, `SESSIONLIB_COMPOSE_ENGINE`, ...) and are left alone.
    """
    known = environment_variables()
    fields = _setting_fields(Settings)
    sections = tuple(
        f"{ENV_PREFIX}{name.upper()}_"
        for name, info in Settings.model_fields.items()
        if _is_model(info.annotation)
    )
    problems = []
    for given, value in sorted(environ.items()):
        name = given.upper()
        if not name.startswith(ENV_PREFIX) or name in NON_SETTING_VARIABLES:
            continue
        path = known.get(name)
        if path is None:
            if "__" in name.removeprefix(ENV_PREFIX) or name.startswith(sections):
                problems.append(_unknown_variable(given, fields))
        elif _wants_json(fields[path].annotation):
            try:
                json.loads(value)
            except ValueError:
                problems.append(_not_json(given, value, fields[path].annotation))
    if problems:
        raise ConfigurationError("invalid sessionlib environment:\n  " + "\n  ".join(problems))


def _unknown_variable(given: str, fields: Mapping[str, FieldInfo]) -> str:
    # Suggest a single setting before a whole section (which takes JSON).
    leaves = [env_variable(path) for path, info in fields.items() if not _is_model(info.annotation)]
    everything = [env_variable(path) for path in fields]
    close = difflib.get_close_matches(given.upper(), leaves, n=1, cutoff=0.6)
    close = close or difflib.get_close_matches(given.upper(), everything, n=1, cutoff=0.6)
    if close:
        return f"{given} is not a sessionlib setting; did you mean {close[0]}?"
    return (
        f"{given} is not a sessionlib setting (levels are joined with a double underscore, "
        "as in SESSIONLIB_REDIS__TLS__ENABLED)"
    )


def _not_json(given: str, value: str, annotation: Any) -> str:
    if _is_model(annotation):
        example = '{"<setting>": <value>}'
    elif _is_secret(annotation):  # never echo a secret into a log
        example = '["<first>","<second>"]'
    else:
        items = [item.strip() for item in value.split(",") if item.strip()]
        example = json.dumps(items, separators=(",", ":"))
    return f"{given} must be JSON (comma-separated lists are not read): {given}='{example}'"


def _url_outranks_mode(layers: Sequence[Mapping[str, Any]]) -> bool:
    """Whether some layer gives redis.url and no layer as high or higher gives redis.mode."""
    url_at = mode_at = -1
    for level, layer in enumerate(layers):
        redis = layer.get("redis")
        if isinstance(redis, Mapping):
            url_at = level if "url" in redis else url_at
            mode_at = level if "mode" in redis else mode_at
        elif redis is not None:  # a whole RedisSettings: it says both
            url_at = mode_at = level
    return url_at > mode_at


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{source}: expected a mapping at the top level")
    return data


def load_settings(
    profile: str | None = None,
    config_file: str | Path | None = None,
    **overrides: Any,
) -> Settings:
    """Resolve settings: profile YAML < config file < environment < `overrides`.

    The profile comes from the argument, else `SESSIONLIB_PROFILE`, else `dev`; the
    config file from the argument, else `SESSIONLIB_CONFIG_FILE`. A layer that gives
    `redis.url` above every layer giving `redis.mode` means `mode: standalone`.
    """
    chosen, named = settings_layers(profile, config_file)
    return settings_from_layers(chosen, [*(layer for _, layer in named), overrides])


def settings_layers(
    profile: str | None = None, config_file: str | Path | None = None
) -> tuple[Profile, list[tuple[str, dict[str, Any]]]]:
    """The profile `load_settings` would choose, and the layers it reads (lowest first),
    each with where it comes from: `profile dev`, the config file's path, `environment`.
    Raises `ConfigurationError` for an unreadable layer or a `SESSIONLIB_*` typo."""
    chosen = profile or os.environ.get(f"{ENV_PREFIX}PROFILE") or "dev"
    if chosen not in PROFILES:
        raise ConfigurationError(
            f"unknown profile {chosen!r} (SESSIONLIB_PROFILE); choose one of {', '.join(PROFILES)}"
        )
    packaged = resources.files("sessionlib").joinpath("profiles", f"{chosen}.yaml")
    label = f"profile {chosen}"
    layers = [(label, _read_yaml(packaged.read_text(encoding="utf-8"), label))]
    file_name = config_file or os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")
    if file_name:
        path = Path(file_name)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read config file {path} (SESSIONLIB_CONFIG_FILE): {exc.strerror}"
            ) from None
        layers.append((str(path), _read_yaml(text, str(path))))
    _check_environment(os.environ)
    try:
        layers.append(("environment", EnvSettingsSource(Settings)()))
    except SettingsError as exc:
        raise ConfigurationError(f"cannot read the SESSIONLIB_* variables: {exc}") from None
    return chosen, layers


def settings_from_layers(profile: Profile, layers: Sequence[Mapping[str, Any]]) -> Settings:
    """Merge `layers` (the last one winning) and validate them under `profile`."""
    data: dict[str, Any] = {}
    for layer in layers:
        data = _deep_merge(data, layer)
    if _url_outranks_mode(layers):
        data["redis"] = {**data["redis"], "mode": "standalone"}
    data["profile"] = profile
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc)) from None


def _describe(
    exc: ValidationError,
    heading: str = "invalid sessionlib settings",
    root: tuple[str, ...] = (),
) -> str:
    """One line per error, each naming the setting and the variable that sets it."""
    lines = []
    for error in exc.errors():
        loc = (*root, *(str(part) for part in error["loc"]))
        where = ".".join(loc) or "settings"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "not a sessionlib setting"
        names = [part for part in loc if not part.isdigit()]
        if names and ENV_PREFIX not in message:  # model-level messages name their own
            where += f" ({env_variable('.'.join(names))})"
        lines.append(f"{where}: {message}")
    return heading + ":\n  " + "\n  ".join(lines)
