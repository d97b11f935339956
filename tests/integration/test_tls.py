"""TLS towards Redis, against real redis-server processes that speak only TLS: sessions
work with hostname verification and with client certificates, and every way TLS can be
misconfigured is a refusal, answered at once and never retried."""

from types import SimpleNamespace

import pytest

from deploy.local.certificates import Authority
from deploy.local.tls_standalone import TLSRedis
from sessionlib.config import load_settings
from sessionlib.errors import SessionStoreRefused
from sessionlib.store import SessionStore
from tests.support.observers import RecordingObserver

pytestmark = pytest.mark.integration

SOME_ID = "A" * 43


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = Authority.create(directory / "ca")
    return SimpleNamespace(
        ca=ca,
        other_ca=Authority.create(directory / "other-ca", name="another CA"),
        server=ca.issue(directory, "server"),
        client=ca.issue(directory, "client", client=True),
        expired=ca.issue(directory, "expired", valid_from_days_ago=10, valid_days=1),
        elsewhere=ca.issue(directory, "elsewhere", hostnames=("db.example.org",)),
    )


def server(tmp_path_factory, pki, cert, **options):
    return TLSRedis(tmp_path_factory.mktemp("tls-redis"), pki.ca, cert, **options)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, pki):
    with server(tmp_path_factory, pki, pki.server) as running:
        yield running


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory, pki):
    with server(tmp_path_factory, pki, pki.server, mutual=True, client_cert=pki.client) as running:
        yield running


def store_for(port, *, ca_file, client=None, tls=True, verify_hostname=True, observer=None):
    tls_settings = {
        "enabled": tls,
        "ca_file": str(ca_file),
        "verify_hostname": verify_hostname,
        **(
            {"cert_file": str(client.cert_file), "key_file": str(client.key_file)} if client else {}
        ),
    }
    settings = load_settings(
        "dev",
        redis={"mode": "standalone", "url": f"redis://127.0.0.1:{port}/0", "tls": tls_settings},
    )
    return SessionStore.from_settings(settings, observer=observer)


async def refusal(store: SessionStore, observer: RecordingObserver) -> str:
    try:
        with pytest.raises(SessionStoreRefused) as refused:
            await store.load(SOME_ID)
    finally:
        await store.close()
    assert sum(observer.retries.values()) == 0, "a refusal is never retried"
    return str(refused.value)


async def test_sessions_work_over_tls_with_hostname_verification(tls_server, pki):
    store = store_for(tls_server.port, ca_file=pki.ca.ca_file)
    try:
        sid = await store.create({"cart": ["a"]})
        loaded = await store.load(sid)
        await store.save(loaded, {"cart": ["a", "b"]})
        moved = await store.regenerate(await store.load(sid), {"cart": ["a", "b"]}, user="ann")
        assert (await store.load(moved.id)).attributes == {"cart": ["a", "b"]}
        await store.delete(moved.id, user="ann")
        assert await store.load(moved.id) is None
    finally:
        await store.close()


async def test_mutual_tls_with_a_client_certificate_works(mtls_server, pki):
    store = store_for(mtls_server.port, ca_file=pki.ca.ca_file, client=pki.client)
    try:
        sid = await store.create({"a": 1})
        assert (await store.load(sid)).attributes == {"a": 1}
    finally:
        await store.close()


async def test_mutual_tls_without_a_client_certificate_is_refused_at_once(mtls_server, pki):
    observer = RecordingObserver()
    store = store_for(mtls_server.port, ca_file=pki.ca.ca_file, observer=observer)
    message = await refusal(store, observer)
    assert f"127.0.0.1:{mtls_server.port}" in message and "SESSIONLIB_REDIS__TLS__" in message


async def test_a_server_certificate_from_another_ca_is_refused_at_once(tls_server, pki):
    observer = RecordingObserver()
    store = store_for(tls_server.port, ca_file=pki.other_ca.ca_file, observer=observer)
    assert "certificate" in await refusal(store, observer)


async def test_an_expired_server_certificate_is_refused_at_once(tmp_path_factory, pki):
    observer = RecordingObserver()
    with server(tmp_path_factory, pki, pki.expired) as running:
        store = store_for(running.port, ca_file=pki.ca.ca_file, observer=observer)
        assert "expired" in await refusal(store, observer)


async def test_a_hostname_mismatch_is_refused_at_once(tmp_path_factory, pki):
    observer = RecordingObserver()
    with server(tmp_path_factory, pki, pki.elsewhere) as running:
        store = store_for(running.port, ca_file=pki.ca.ca_file, observer=observer)
        assert "127.0.0.1" in await refusal(store, observer)
        unchecked = store_for(running.port, ca_file=pki.ca.ca_file, verify_hostname=False)
        try:
            assert await unchecked.load(SOME_ID) is None, "dev may switch the check off"
        finally:
            await unchecked.close()


async def test_a_plaintext_client_against_a_tls_port_is_told_to_turn_tls_on(tls_server, pki):
    observer = RecordingObserver()
    store = store_for(tls_server.port, ca_file=pki.ca.ca_file, tls=False, observer=observer)
    message = await refusal(store, observer)
    assert "speaks TLS" in message and "SESSIONLIB_REDIS__TLS__ENABLED" in message


async def test_a_tls_client_against_a_plaintext_port_is_refused_at_once(redis_server, pki):
    observer = RecordingObserver()
    store = store_for(redis_server.port, ca_file=pki.ca.ca_file, observer=observer)
    assert "SESSIONLIB_REDIS__TLS__" in await refusal(store, observer)
