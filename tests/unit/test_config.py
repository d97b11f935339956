"""Profiles resolve from YAML, then a config file, then the environment; prod refuses
insecure settings and names each one."""

import re
from pathlib import Path

import pytest
from redis.asyncio import Redis

from sessionlib import SessionMiddleware, SessionStore
from sessionlib.config import (
    SessionSettings,
    environment_variables,
    load_settings,
    with_session_overrides,
)
from sessionlib.errors import ConfigurationError

PROD_SECRETS = {
    "SESSIONLIB_REDIS__PASSWORD": "s3cret",
    "SESSIONLIB_REDIS__SENTINEL_PASSWORD": "s3cret-too",
    "SESSIONLIB_REDIS__SENTINELS": '["10.0.0.1:26379"]',
    "SESSIONLIB_REDIS__TLS__ENABLED": "true",
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


CLUSTER = {"mode": "cluster", "cluster_nodes": ["127.0.0.1:7000", "127.0.0.1:7001"]}


def test_cluster_mode_builds_a_cluster_client_whose_own_retries_are_off():
    from redis.asyncio.cluster import RedisCluster

    from sessionlib.connection import create_redis

    settings = load_settings("dev", redis={**CLUSTER, "username": "app", "password": "pw"})

    client = create_redis(settings.redis)

    assert isinstance(client, RedisCluster)
    assert list(client.nodes_manager.startup_nodes) == settings.redis.cluster_nodes
    assert client.connection_kwargs["username"] == "app"
    # redis-py 6+ counts the cluster's retries in its `retry` object, 5.2 in an attribute.
    own_retries = getattr(client, "cluster_error_retry_attempts", None)
    if own_retries is None:
        own_retries = client.retry.get_retries()
    assert own_retries == 0


def test_cluster_mode_takes_durability_and_stale_reads_as_sentinel_mode_does():
    session = {"durability": {"replicas": 1}, "stale_reads_during_failover": True}

    settings = load_settings("dev", redis=CLUSTER, session=session)

    assert settings.session.durability.replicas == 1
    assert settings.session.stale_reads_during_failover


def test_prod_in_cluster_mode_waits_for_a_replica_after_each_write():
    secure = {**CLUSTER, "password": "s3cret", "tls": {"allow_plaintext": True}}

    settings = load_settings("prod", redis=secure)

    assert settings.redis.mode == "cluster"
    assert settings.session.durability.replicas == 1


# Settings are validated the same way on every path (issue 12, point 11).

PROD_STANDALONE = {
    "mode": "standalone",
    "url": "redis://cache:6379/0",
    "password": "s3cret",
    "tls": {"enabled": True},
}


async def an_app(scope, receive, send):
    raise AssertionError("no request is made in these tests")


def test_starlette_keywords_go_through_the_prod_checks():
    settings = load_settings("prod", redis=PROD_STANDALONE, session={"cookie_host_prefix": False})
    with pytest.raises(ConfigurationError) as err:
        SessionMiddleware(an_app, settings=settings, https_only=False)
    assert "session.cookie_secure" in str(err.value)
    assert "SESSIONLIB_SESSION__COOKIE_SECURE" in str(err.value)


def test_session_overrides_revalidate_the_whole_settings_with_its_profile():
    settings = load_settings("prod", redis=PROD_STANDALONE, session={"cookie_host_prefix": False})
    with pytest.raises(ConfigurationError, match="SESSIONLIB_SESSION__COOKIE_SECURE"):
        with_session_overrides(settings, {"cookie_secure": False})


def test_keywords_on_a_given_store_cannot_switch_off_its_secure_cookie():
    store = SessionStore(Redis(), SessionSettings(cookie_secure=True))
    with pytest.raises(ConfigurationError, match="SESSIONLIB_SESSION__COOKIE_SECURE"):
        SessionMiddleware(an_app, store=store, https_only=False)


def test_with_a_store_the_profile_of_the_given_settings_still_applies():
    settings = load_settings("prod", redis=PROD_STANDALONE, session={"cookie_host_prefix": False})
    store = SessionStore(Redis(), SessionSettings(cookie_secure=False))
    with pytest.raises(ConfigurationError, match="refusing insecure settings in profile 'prod'"):
        SessionMiddleware(an_app, store=store, settings=settings, https_only=False)


def test_invalid_middleware_keywords_fail_at_construction_as_configuration_errors():
    store = SessionStore(Redis(), SessionSettings())
    with pytest.raises(ConfigurationError, match=r"session\.cookie_name"):
        SessionMiddleware(an_app, store=store, session_cookie="no spaces allowed")


@pytest.mark.parametrize(
    ("given", "variable"),
    [
        ({"redis": {"tls": {"enabled": "maybe"}}}, "SESSIONLIB_REDIS__TLS__ENABLED"),
        ({"redis": {"sentinels": ["no-port-here"]}}, "SESSIONLIB_REDIS__SENTINELS"),
        ({"redis": {"mode": "sentinel", "sentinels": []}}, "SESSIONLIB_REDIS__SENTINELS"),
        ({"session": {"idle_timeout_seconds": 0}}, "SESSIONLIB_SESSION__IDLE_TIMEOUT_SECONDS"),
        ({"session": {"cookie_same_site": "none"}}, "SESSIONLIB_SESSION__COOKIE_SECURE"),
        ({"session": {"cookie_host_prefix": True}}, "SESSIONLIB_SESSION__COOKIE_SECURE"),
    ],
)
def test_every_refusal_names_the_variable_that_fixes_it(given, variable):
    with pytest.raises(ConfigurationError) as err:
        load_settings("dev", **given)
    assert variable in str(err.value)


def test_a_comma_separated_list_in_the_environment_gets_the_json_form(monkeypatch):
    monkeypatch.setenv("SESSIONLIB_REDIS__SENTINELS", "127.0.0.1:26379,127.0.0.1:26380")
    with pytest.raises(ConfigurationError) as err:
        load_settings("dev")
    assert "SESSIONLIB_REDIS__SENTINELS" in str(err.value)
    assert """'["127.0.0.1:26379","127.0.0.1:26380"]'""" in str(err.value)


def test_a_non_json_secret_list_is_refused_without_echoing_the_secret(monkeypatch):
    monkeypatch.setenv("SESSIONLIB_SESSION__SIGNING_KEYS", "hunter2,hunter3")
    with pytest.raises(ConfigurationError, match="SESSIONLIB_SESSION__SIGNING_KEYS") as err:
        load_settings("dev")
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize(
    "url", ["redis://:secret@cache:6379/0", "rediss://app:secret@cache:6380/0"]
)
def test_a_password_inside_the_redis_url_satisfies_prod(url):
    settings = load_settings(
        "prod", redis={"mode": "standalone", "url": url, "tls": {"allow_plaintext": True}}
    )
    assert settings.redis.password is None and settings.redis.url == url


def test_a_password_in_the_url_does_not_count_in_sentinel_mode_where_the_url_is_unused():
    with pytest.raises(ConfigurationError, match="SESSIONLIB_REDIS__PASSWORD"):
        load_settings(
            "prod",
            redis={
                "mode": "sentinel",
                "url": "redis://:secret@cache:6379/0",
                "sentinels": ["10.0.0.1:26379"],
                "sentinel_password": "s3cret-too",
            },
        )


def test_a_redis_url_alone_selects_standalone_mode(monkeypatch):
    monkeypatch.setenv("SESSIONLIB_REDIS__URL", "redis://cache:6379/2")
    settings = load_settings("dev")
    assert settings.redis.mode == "standalone"
    assert settings.redis.url == "redis://cache:6379/2"


def test_a_mode_set_above_the_url_is_kept(tmp_path, monkeypatch):
    config = tmp_path / "sessions.yaml"
    config.write_text("redis:\n  url: redis://cache:6379/2\n")
    monkeypatch.setenv("SESSIONLIB_REDIS__MODE", "sentinel")
    settings = load_settings("dev", config_file=config)
    assert settings.redis.mode == "sentinel"


def test_an_unknown_sessionlib_variable_is_refused_with_the_closest_name(monkeypatch):
    monkeypatch.setenv("SESSIONLIB_REDIS_URL", "redis://cache:6379/0")
    with pytest.raises(ConfigurationError) as err:
        load_settings("dev")
    assert "SESSIONLIB_REDIS_URL" in str(err.value)
    assert "SESSIONLIB_REDIS__URL" in str(err.value)


@pytest.mark.parametrize(
    "variable",
    [
        "SESSIONLIB_PROFILE",
        "SESSIONLIB_CONFIG_FILE",
        "SESSIONLIB_COMPOSE_ENGINE",
        "SESSIONLIB_DASHBOARD_PNG",
        "SESSIONLIB_DOCKER_STATE_DIR",
        "SESSIONLIB_LOCAL_RUN_DIR",
        "SESSIONLIB_LOCAL_REDIS_PORTS",
        "SESSIONLIB_IMAGE_TAG",
        "SESSIONLIB_RENDER_ONLY",
    ],
)
def test_variables_the_project_sets_for_its_tools_are_not_refused(variable, monkeypatch, tmp_path):
    config = tmp_path / "empty.yaml"
    config.write_text("{}\n")
    values = {"SESSIONLIB_PROFILE": "dev", "SESSIONLIB_CONFIG_FILE": str(config)}
    monkeypatch.setenv(variable, values.get(variable, "1"))
    assert load_settings().profile == "dev"


def test_an_idle_timeout_beyond_the_absolute_timeout_is_refused_naming_both():
    with pytest.raises(ConfigurationError) as err:
        load_settings(
            "dev", session={"idle_timeout_seconds": 7200, "absolute_timeout_seconds": 3600}
        )
    assert "SESSIONLIB_SESSION__IDLE_TIMEOUT_SECONDS" in str(err.value)
    assert "SESSIONLIB_SESSION__ABSOLUTE_TIMEOUT_SECONDS" in str(err.value)


def test_a_starlette_max_age_beyond_the_absolute_timeout_raises_the_absolute_timeout():
    fourteen_days = 14 * 24 * 3600
    store = SessionStore(Redis(), SessionSettings(absolute_timeout_seconds=12 * 3600))
    middleware = SessionMiddleware(an_app, store=store, max_age=fourteen_days)
    assert middleware.store.settings.idle_timeout_seconds == fourteen_days
    assert middleware.store.settings.absolute_timeout_seconds == fourteen_days


def test_every_setting_variable_the_readme_configuration_section_names_exists():
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Configuration", 1)[1].split("\n### ", 1)[0]
    named = {name.rstrip("_") for name in re.findall(r"SESSIONLIB_(?:REDIS|SESSION)\w*", section)}
    assert named - set(environment_variables()) == {"SESSIONLIB_REDIS_URL"}, "the typo example"


@pytest.mark.parametrize("profile", ["dev", "prod"])
def test_both_profiles_send_a_new_id_in_the_header_only_to_clients_that_sent_it(profile):
    settings = load_settings(profile, redis=PROD_STANDALONE)
    assert settings.session.expose_id_header == "when_requested"


def test_prod_refuses_plaintext_redis_unless_allowed_on_purpose():
    with pytest.raises(ConfigurationError, match="SESSIONLIB_REDIS__TLS__ENABLED"):
        load_settings("prod", redis={**PROD_STANDALONE, "tls": {"enabled": False}})
    allowed = load_settings("prod", redis={**PROD_STANDALONE, "tls": {"allow_plaintext": True}})
    assert not allowed.redis.tls.enabled
    over_tls_url = {**PROD_STANDALONE, "url": "rediss://cache:6380/0", "tls": {}}
    assert load_settings("prod", redis=over_tls_url).redis.uses_tls
