"""Settings: read once from the environment, bad values fail at start-up by name."""

from __future__ import annotations

import pytest

from quart_api.settings import RateSpec, Settings, SettingsError, parse_rate


def test_defaults_are_the_embedded_ones() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite+aiosqlite:///quart_api.db"
    assert settings.redis_url is None
    assert settings.memcached_servers is None
    assert settings.api_rate_limit == RateSpec(300, 60)
    assert settings.login_rate_limit == RateSpec(10, 60)
    assert settings.protect_limit == RateSpec(10, 3600)
    assert settings.database_timeout == 5.0
    assert settings.store_timeout == 0.05
    assert settings.trusted_proxy_count == 0


def test_development_without_secret_key_gets_a_random_one() -> None:
    first = Settings.from_env({})
    second = Settings.from_env({})
    assert first.secret_key_generated
    assert len(first.secret_key) >= 32
    assert first.secret_key != second.secret_key


def test_production_requires_secret_key_by_name() -> None:
    with pytest.raises(SettingsError, match="SECRET_KEY is required"):
        Settings.from_env({"APP_ENV": "production"})


def test_production_rejects_a_short_secret_key() -> None:
    with pytest.raises(SettingsError, match="too short"):
        Settings.from_env({"APP_ENV": "production", "SECRET_KEY": "short"})


def test_environment_values_are_parsed_and_typed() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql+asyncpg://u:p@db:5432/app",
            "REDIS_URL": "redis+cluster://10.0.0.1:7000,10.0.0.2:7000",
            "MEMCACHED_SERVERS": "127.0.0.1:11211, 127.0.0.1:11212",
            "TRUSTED_PROXY_COUNT": "2",
            "API_RATE_LIMIT": "5000/hour",
            "DATABASE_TIMEOUT": "1.5",
            "GUARDS_ENABLED": "false",
        }
    )
    assert settings.trusted_proxy_count == 2
    assert settings.api_rate_limit == RateSpec(5000, 3600)
    assert settings.database_timeout == 1.5
    assert settings.guards_enabled is False


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DATABASE_URL", "mysql://localhost/db", "DATABASE_URL='mysql://localhost/db'"),
        ("DATABASE_URL", "postgresql+asyncpg://db:notaport/x", "DATABASE_URL"),
        ("REDIS_URL", "http://localhost:6379", "REDIS_URL 'http://localhost:6379'"),
        ("REDIS_URL", "redis://localhost:6379/zero", "REDIS_URL 'redis://localhost:6379/zero'"),
        ("REDIS_URL", "redis://localhost:port", "REDIS_URL 'redis://localhost:port'"),
        ("MEMCACHED_SERVERS", "localhost", "MEMCACHED_SERVERS 'localhost'"),
        (
            "MEMCACHED_SERVERS",
            "memcached://127.0.0.1:11211",
            "MEMCACHED_SERVERS 'memcached://127.0.0.1:11211'",
        ),
        ("MEMCACHED_SERVERS", "127.0.0.1:11211/0", "MEMCACHED_SERVERS '127.0.0.1:11211/0'"),
        ("API_RATE_LIMIT", "lots", "API_RATE_LIMIT='lots'"),
        ("API_RATE_LIMIT", "0/minute", "API_RATE_LIMIT"),
        ("TRUSTED_PROXY_COUNT", "-1", "TRUSTED_PROXY_COUNT='-1'"),
        ("DATABASE_TIMEOUT", "soon", "DATABASE_TIMEOUT='soon'"),
        ("STORE_TIMEOUT", "nan", "STORE_TIMEOUT='nan'"),
        ("APP_ENV", "staging", "APP_ENV='staging'"),
        ("GUARDS_ENABLED", "maybe", "GUARDS_ENABLED='maybe'"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL='LOUD'"),
    ],
)
def test_bad_value_fails_naming_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env({name: value})
    assert message in str(excinfo.value)


def test_rate_accepts_plural_and_case() -> None:
    assert parse_rate("10/Seconds") == RateSpec(10, 1)


def test_replace_validates_and_rejects_unknown_names() -> None:
    settings = Settings.from_env({})
    with pytest.raises(TypeError, match="Unknown settings: nope"):
        settings.replace(nope=1)
    with pytest.raises(SettingsError, match="REDIS_URL"):
        settings.replace(redis_url="ftp://x")


def test_a_rate_finer_than_a_microsecond_is_refused_at_start_up() -> None:
    with pytest.raises(SettingsError, match="API_RATE_LIMIT"):
        Settings.from_env({"API_RATE_LIMIT": "100000000/minute"})


def test_hashing_signup_and_public_url_settings_are_read_and_checked_by_name() -> None:
    settings = Settings.from_env(
        {
            "PASSWORD_HASH_SLOTS": "3",
            "PASSWORD_HASH_QUEUE_TIMEOUT": "0.5",
            "SIGNUP_RATE_LIMIT": "5/minute",
            "PUBLIC_URL": "https://api.example.com",
        }
    )
    assert (settings.password_hash_slots, settings.password_hash_queue_timeout) == (3, 0.5)
    assert settings.signup_rate_limit == RateSpec(5, 60)
    assert settings.public_url == "https://api.example.com"
    defaults = Settings.from_env({})
    assert defaults.password_hash_slots is None  # the cores the process may use
    assert defaults.signup_rate_limit == RateSpec(10, 3600)
    assert defaults.public_url is None
    for name, bad in (
        ("PASSWORD_HASH_SLOTS", "0"),
        ("PASSWORD_HASH_QUEUE_TIMEOUT", "soon"),
        ("SIGNUP_RATE_LIMIT", "lots"),
        ("PUBLIC_URL", "https://api.example.com/v1"),
    ):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: bad})


def test_a_memcached_url_is_refused_at_start_up_not_at_the_first_request() -> None:
    with pytest.raises(SettingsError, match="without a scheme"):
        Settings.from_env({"MEMCACHED_SERVERS": "memcached://127.0.0.1:11211"})


def test_settings_and_guards_refuse_a_rate_in_the_same_words() -> None:
    """One rate parser: the settings call the guards' own, so the rules cannot drift."""
    from quart_api.guards.errors import ConfigurationError
    from quart_api.guards.rates import rate_from_config

    for bad in ("lots", "0/minute", "100000000/minute", "5/fortnight"):
        with pytest.raises(SettingsError) as from_settings:
            Settings.from_env({"API_RATE_LIMIT": bad})
        with pytest.raises(ConfigurationError) as from_guards:
            rate_from_config("API_RATE_LIMIT", bad)
        reason = str(from_guards.value).split(": ", 1)[1]
        assert reason.rstrip(".") in str(from_settings.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysql://app:s3cret-pw@db.internal/app"),
        ("DATABASE_URL", "postgresql+asyncpg://app:s3cret-pw@db.internal:port/app"),
        ("REDIS_URL", "http://app:s3cret-pw@redis.internal:6379"),
        ("REDIS_URL", "redis://app:s3cret-pw@redis.internal:6379/zero"),
    ],
)
def test_a_bad_url_is_named_without_its_password(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env({name: value})
    assert name in str(excinfo.value)
    assert "s3cret-pw" not in str(excinfo.value)
    assert "***@" in str(excinfo.value)


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "POSTGRES"])
def test_libpq_database_schemes_mean_asyncpg(scheme: str) -> None:
    settings = Settings.from_env({"DATABASE_URL": f"{scheme}://app:pw@db:5432/app"})
    assert settings.database_url == "postgresql+asyncpg://app:pw@db:5432/app"


@pytest.mark.parametrize(
    "url",
    [
        "valkey://127.0.0.1:6379/0",
        "valkeys://127.0.0.1:6380",
        "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/0",
        "redis+sentinel://:pw@10.0.0.1:26379/mymaster",
    ],
)
def test_redis_url_takes_the_guards_new_schemes(url: str) -> None:
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url


def test_a_sentinel_url_without_a_master_name_is_refused_naming_it() -> None:
    with pytest.raises(SettingsError, match="REDIS_URL"):
        Settings.from_env({"REDIS_URL": "redis+sentinel://10.0.0.1:26379"})
