"""Profiles resolve from YAML, then a config file, then the environment; prod refuses
insecure settings and names each one."""

import pytest

from sessionlib.config import load_settings
from sessionlib.errors import ConfigurationError

PROD_SECRETS = {
    "SESSIONLIB_REDIS__PASSWORD": "s3cret",
    "SESSIONLIB_REDIS__SENTINEL_PASSWORD": "s3cret-too",
    "SESSIONLIB_REDIS__SENTINELS": '["10.0.0.1:26379"]',
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("SESSIONLIB_"):
            monkeypatch.delenv(name)


def test_dev_profile_points_at_the_local_sentinel_topology():
    settings = load_settings("dev")
    assert settings.redis.mode == "sentinel"
    assert settings.redis.sentinels == ["127.0.0.1:26380", "127.0.0.1:26381", "127.0.0.1:26382"]
    assert settings.session.cookie_secure is False


def test_environment_overrides_the_profile(monkeypatch):
    monkeypatch.setenv("SESSIONLIB_SESSION__IDLE_TIMEOUT_SECONDS", "60")
    monkeypatch.setenv("SESSIONLIB_REDIS__MODE", "standalone")
    monkeypatch.setenv("SESSIONLIB_REDIS__URL", "redis://127.0.0.1:7000/1")
    settings = load_settings("dev")
    assert settings.session.idle_timeout_seconds == 60
    assert settings.redis.url == "redis://127.0.0.1:7000/1"


def test_profile_comes_from_the_environment(monkeypatch):
    for name, value in PROD_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SESSIONLIB_PROFILE", "prod")
    settings = load_settings()
    assert settings.profile == "prod"
    assert settings.session.cookie_secure and settings.session.cookie_host_prefix


def test_config_file_sits_between_profile_and_environment(tmp_path, monkeypatch):
    config = tmp_path / "sessions.yaml"
    config.write_text("session:\n  cookie_name: shop\n  idle_timeout_seconds: 90\n")
    monkeypatch.setenv("SESSIONLIB_SESSION__IDLE_TIMEOUT_SECONDS", "120")
    settings = load_settings("dev", config_file=config)
    assert settings.session.cookie_name == "shop"
    assert settings.session.idle_timeout_seconds == 120


def test_prod_refuses_missing_redis_password_and_names_the_setting(monkeypatch):
    monkeypatch.setenv("SESSIONLIB_REDIS__SENTINELS", '["10.0.0.1:26379"]')
    with pytest.raises(ConfigurationError) as err:
        load_settings("prod")
    assert "redis.password" in str(err.value)
    assert "SESSIONLIB_REDIS__PASSWORD" in str(err.value)


def test_prod_refuses_a_cookie_without_secure(monkeypatch):
    for name, value in PROD_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SESSIONLIB_SESSION__COOKIE_HOST_PREFIX", "false")
    monkeypatch.setenv("SESSIONLIB_SESSION__COOKIE_SECURE", "false")
    with pytest.raises(ConfigurationError, match=r"session\.cookie_secure"):
        load_settings("prod")


def test_prod_refuses_cookies_readable_by_scripts(monkeypatch):
    for name, value in PROD_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SESSIONLIB_SESSION__COOKIE_HTTP_ONLY", "false")
    with pytest.raises(ConfigurationError, match=r"session\.cookie_http_only"):
        load_settings("prod")


def test_same_site_none_without_secure_is_refused_in_every_profile():
    with pytest.raises(ConfigurationError, match="cookie_same_site"):
        load_settings("dev", session={"cookie_same_site": "none", "cookie_secure": False})


def test_host_prefix_needs_secure_and_root_path():
    with pytest.raises(ConfigurationError, match="cookie_host_prefix"):
        load_settings("dev", session={"cookie_host_prefix": True, "cookie_secure": False})


def test_unknown_profile_bad_yaml_and_bad_values_get_clear_errors(tmp_path):
    with pytest.raises(ConfigurationError, match="unknown profile 'staging'"):
        load_settings("staging")
    broken = tmp_path / "broken.yaml"
    broken.write_text("session: [unclosed\n")
    with pytest.raises(ConfigurationError, match="not valid YAML"):
        load_settings("dev", config_file=broken)
    with pytest.raises(ConfigurationError, match="cannot read config file"):
        load_settings("dev", config_file=tmp_path / "missing.yaml")
    with pytest.raises(ConfigurationError, match=r"redis\.sentinels"):
        load_settings("dev", redis={"sentinels": ["no-port-here"]})
    with pytest.raises(ConfigurationError, match=r"session\.idle_timeout_seconds"):
        load_settings("dev", session={"idle_timeout_seconds": 0})
    with pytest.raises(ConfigurationError, match=r"session\.bogus"):
        load_settings("dev", session={"bogus": 1})


def test_cluster_mode_is_reported_as_not_yet_supported():
    from sessionlib.connection import create_redis

    settings = load_settings("dev", redis={"mode": "cluster", "cluster_nodes": ["127.0.0.1:7000"]})
    with pytest.raises(ConfigurationError, match="not yet supported"):
        create_redis(settings.redis)
