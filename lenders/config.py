"""Configuration read from the environment (CONTRACT §2), once per ``create_app``."""

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

INSTANCE_DIR = Path(__file__).resolve().parent.parent / "instance"
# werkzeug's scrypt (N=2**15, r=8, p=1): slow on purpose, so that a stolen table is slow to
# crack. Only the tests' own configuration names a cheaper method; nothing reads it from the
# environment.
PASSWORD_HASH_METHOD = "scrypt"


class ConfigError(RuntimeError):
    """The environment lacks something the app cannot run without."""


def database_url(environ: Mapping[str, str]) -> str:
    """DATABASE_URL, or the embedded SQLite file; PostgreSQL URLs are pointed at psycopg 3."""
    url = environ.get("DATABASE_URL")
    if not url:
        return f"sqlite:///{INSTANCE_DIR / 'marejesho.db'}"
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def instance_secret(name: str, make) -> str:
    """A development secret kept in instance/ (made once by ``make()``), so that sessions
    and encrypted columns survive restarts and several workers. Never used in production."""
    path = INSTANCE_DIR / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
        value = make()
        path.write_text(value)
        path.chmod(0o600)
        return value


def _development_secret_key() -> str:
    return instance_secret("dev_secret_key", lambda: secrets.token_hex(32))


def config_from_env(environ: Mapping[str, str] | None = None) -> dict:
    """The app's configuration. Production (MAREJESHO_ENV=production) refuses to start
    without SECRET_KEY and MAREJESHO_ENCRYPTION_KEYS; development generates what it lacks."""
    env = os.environ if environ is None else environ
    production = env.get("MAREJESHO_ENV", "development") == "production"
    if production:
        missing = [n for n in ("SECRET_KEY", "MAREJESHO_ENCRYPTION_KEYS") if not env.get(n)]
        if missing:
            raise ConfigError("production needs " + " and ".join(missing) + " in the environment")
    public_base_url = env.get("PUBLIC_BASE_URL", "http://127.0.0.1:5000").rstrip("/")
    if production and not public_base_url.startswith("https://"):
        raise ConfigError("production needs an https PUBLIC_BASE_URL (Safaricom calls it)")
    database = database_url(env)
    acknowledge = (env.get("MAREJESHO_ACKNOWLEDGE") or "journal").strip().lower()
    if acknowledge not in ("journal", "database"):
        raise ConfigError(f"MAREJESHO_ACKNOWLEDGE is journal or database, not {acknowledge!r}")
    return {
        "ENV_NAME": "production" if production else "development",
        "SECRET_KEY": env.get("SECRET_KEY") or _development_secret_key(),
        "SQLALCHEMY_DATABASE_URI": database,
        # Errors never print bound values: tokens, phones and names stay out of the logs.
        # A pooled PostgreSQL connection may have been dropped (a restart, a proxy's idle
        # timeout): test it on checkout. A SQLite file cannot be, so it is not pinged.
        "SQLALCHEMY_ENGINE_OPTIONS": {
            "hide_parameters": True,
            "pool_pre_ping": not database.startswith("sqlite"),
            # A database that does not answer is an outage to survive (the journal), not
            # a reason to hold Safaricom's request for the operating system's TCP timeout.
            **({"connect_args": {"connect_timeout": 3}} if database.startswith("postgres") else {}),
        },
        "REDIS_URL": env.get("REDIS_URL") or None,
        # Without REDIS_URL, a request's jobs run on its server process's job thread once
        # it is answered (False: inside the request, as the tests do).
        "JOBS_IN_BACKGROUND": True,
        "PUBLIC_BASE_URL": public_base_url,
        # Where each server process journals the confirmations it takes, synced to disk,
        # on their way to the database (payments/journal.py).
        "JOURNAL_DIR": env.get("MAREJESHO_JOURNAL_DIR") or str(INSTANCE_DIR / "journal"),
        # When Safaricom hears "Accepted": once the journal has it ("journal"), or once the
        # database has it too ("database": slower; the journal still keeps it in an outage).
        "ACKNOWLEDGE": acknowledge,
        "MAREJESHO_ENCRYPTION_KEYS": env.get("MAREJESHO_ENCRYPTION_KEYS", ""),
        # Proxies in front of the app that append X-Forwarded-For; 0 trusts none.
        "PROXY_HOPS": int(env.get("MAREJESHO_PROXY_HOPS", "0")),
        "LENDER_NAME": env.get("MAREJESHO_LENDER_NAME", "Marejesho Demo Lender"),
        # Where sandbox shortcodes reach Daraja: the local emulator in development.
        "DARAJA_SANDBOX_URL": env.get("MAREJESHO_DARAJA_SANDBOX_URL") or None,
        "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,  # loan-book uploads
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_IDLE_MINUTES": 30,
        "SESSION_ABSOLUTE_HOURS": 12,
        # The token lives as long as the session, which has its own timeouts.
        "WTF_CSRF_TIME_LIMIT": None,
        # Failed logins: per account (from any address), and per address (over every
        # account it tries), so guesses at one account do not lock out a colleague's.
        "LOGIN_RATE_LIMIT": "10 per 5 minutes",
        "LOGIN_ADDRESS_RATE_LIMIT": "30 per 5 minutes",
        "PASSWORD_HASH_METHOD": PASSWORD_HASH_METHOD,
        "RATELIMIT_STORAGE_URI": env.get("REDIS_URL") or "memory://",
        "RATELIMIT_HEADERS_ENABLED": True,
        "DEBUG": False,
        # Structured logs (lenders/logs.py) at this level and above.
        "LOG_LEVEL": env.get("MAREJESHO_LOG_LEVEL", "INFO").upper(),
        # The bearer token Prometheus sends to /metrics; without one, /metrics is not served.
        "METRICS_TOKEN": env.get("MAREJESHO_METRICS_TOKEN") or None,
    }
