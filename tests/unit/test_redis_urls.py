"""shared/runtime/queue.py's reading of CREWQ_REDIS_URL: the password, and TLS for `rediss://` with
the options in its query string (which arq alone would drop) and the server's name checked."""

from shared.runtime import queue


def test_a_password_and_database_come_from_the_url() -> None:
    settings = queue.redis_settings("redis://:s3cret@redis.internal:6380/2")
    assert (settings.host, settings.port, settings.database) == ("redis.internal", 6380, 2)
    assert settings.password == "s3cret" and settings.ssl is False


def test_rediss_is_tls_checking_the_servers_name_by_default() -> None:
    settings = queue.redis_settings("rediss://:s3cret@redis.internal:6380/0")
    assert settings.ssl is True and settings.ssl_check_hostname is True
    assert settings.ssl_cert_reqs == "required" and settings.password == "s3cret"


def test_rediss_takes_its_tls_options_from_the_query_string() -> None:
    settings = queue.redis_settings(
        "rediss://default:s3cret@redis.internal:6380/0?ssl_ca_certs=/etc/ssl/redis-ca.pem"
        "&ssl_certfile=/etc/ssl/crewq.pem&ssl_keyfile=/etc/ssl/crewq.key"
        "&ssl_check_hostname=false"
    )
    assert settings.ssl_ca_certs == "/etc/ssl/redis-ca.pem"
    assert (settings.ssl_certfile, settings.ssl_keyfile) == (
        "/etc/ssl/crewq.pem",
        "/etc/ssl/crewq.key",
    )
    assert settings.ssl_check_hostname is False
    assert settings.username == "default"


def test_the_probe_client_gets_the_same_tls_options() -> None:
    client = queue.client("rediss://:s3cret@redis.internal:6380/0?ssl_ca_certs=/etc/ca.pem")
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["ssl_check_hostname"] is True and kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert kwargs["password"] == "s3cret"
    plain = queue.client("redis://:s3cret@redis.internal:6379/0").connection_pool
    assert "ssl_check_hostname" not in plain.connection_kwargs
