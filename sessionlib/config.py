"""Settings for the Redis topology and for sessions, with `dev` and `prod` profiles.

Values come from the profile's YAML, then an optional YAML file of the user's, then
environment variables (prefix `SESSIONLIB_`, nested with `__`), the last one winning.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

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
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from sessionlib.errors import ConfigurationError

Profile = Literal["dev", "prod"]
PROFILES: tuple[Profile, ...] = ("dev", "prod")
ENV_PREFIX = "SESSIONLIB_"


class _Strict(BaseModel):
    """Unknown keys are typos: refuse them instead of silently ignoring them."""

    model_config = ConfigDict(extra="forbid")


class TLSSettings(_Strict):
    """TLS towards Redis and Sentinel; off unless `enabled`."""

    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    verify_hostname: bool = True


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
            raise ValueError("mode 'sentinel' needs at least one address in redis.sentinels")
        if self.mode == "cluster" and not self.cluster_nodes:
            raise ValueError("mode 'cluster' needs at least one address in redis.cluster_nodes")
        return self

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(h, int(p)) for h, _, p in (a.rpartition(":") for a in self.sentinels)]


class DurabilitySettings(_Strict):
    """Optional `WAIT` after each write for this many replicas."""

    replicas: int = Field(default=0, ge=0)
    timeout_ms: int = Field(default=500, ge=1)
    on_shortfall: Literal["fail", "accept"] = "accept"


class SessionSettings(_Strict):
    """How sessions are identified, kept alive and bounded."""

    key_prefix: str = Field(default="sessionlib", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    cookie_name: str = Field(default="session", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    header_name: str = Field(default="X-Session-Id", pattern=r"^[A-Za-z0-9-]{1,64}$")
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
    durability: DurabilitySettings = Field(default_factory=DurabilitySettings)

    @model_validator(mode="after")
    def _coherent(self) -> SessionSettings:
        if self.cookie_same_site == "none" and not self.cookie_secure:
            raise ValueError(
                "session.cookie_same_site 'none' requires session.cookie_secure true "
                "(browsers drop SameSite=None cookies that are not Secure)"
            )
        if self.cookie_host_prefix and (
            not self.cookie_secure or self.cookie_domain or self.cookie_path != "/"
        ):
            raise ValueError(
                "session.cookie_host_prefix needs cookie_secure true, no cookie_domain "
                "and cookie_path '/'"
            )
        return self


class Settings(BaseSettings):
    """Everything sessionlib needs; build it with `load_settings()`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid"
    )

    profile: Profile = "dev"
    redis: RedisSettings = Field(default_factory=RedisSettings)
    session: SessionSettings = Field(default_factory=SessionSettings)

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
    if r.password is None or not r.password.get_secret_value():
        problems.append("redis.password must be set (SESSIONLIB_REDIS__PASSWORD)")
    if r.mode == "sentinel" and r.sentinel_password is None:
        problems.append(
            "redis.sentinel_password must be set in sentinel mode "
            "(SESSIONLIB_REDIS__SENTINEL_PASSWORD)"
        )
    if r.tls.enabled and not r.tls.verify_hostname:
        problems.append(
            "redis.tls.verify_hostname must be true (SESSIONLIB_REDIS__TLS__VERIFY_HOSTNAME)"
        )
    return problems


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
    config file from the argument, else `SESSIONLIB_CONFIG_FILE`.
    """
    chosen = profile or os.environ.get(f"{ENV_PREFIX}PROFILE") or "dev"
    if chosen not in PROFILES:
        raise ConfigurationError(f"unknown profile {chosen!r}; choose one of {', '.join(PROFILES)}")
    packaged = resources.files("sessionlib").joinpath("profiles", f"{chosen}.yaml")
    data = _read_yaml(packaged.read_text(encoding="utf-8"), f"profile {chosen}")
    file_name = config_file or os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")
    if file_name:
        path = Path(file_name)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from None
        data = _deep_merge(data, _read_yaml(text, str(path)))
    data = _deep_merge(data, EnvSettingsSource(Settings)())
    data = _deep_merge(data, overrides)
    data["profile"] = chosen
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        lines.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "invalid sessionlib settings:\n  " + "\n  ".join(lines)
