"""Secrets at rest: MultiFernet over MAREJESHO_ENCRYPTION_KEYS (the first key encrypts,
every key decrypts). A wrong or missing key fails closed: InvalidToken, never plaintext.

Development without keys gets one generated into instance/ (never in production, where
the config refuses to start without them)."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import Flask, current_app
from sqlalchemy.types import Text, TypeDecorator

from lenders.config import instance_secret

__all__ = ["EncryptedText", "InvalidToken", "init_app", "vault"]


def _development_key() -> str:
    return instance_secret("dev_encryption_key", lambda: Fernet.generate_key().decode())


def build_vault(keys: str) -> MultiFernet:
    parts = [k.strip() for k in keys.split(",") if k.strip()]
    if not parts:
        raise ValueError("no encryption key")
    return MultiFernet([Fernet(k.encode()) for k in parts])


def init_app(app: Flask) -> None:
    keys = app.config.get("MAREJESHO_ENCRYPTION_KEYS") or ""
    if not keys and app.config["ENV_NAME"] != "production":
        keys = _development_key()
    app.extensions["marejesho_vault"] = build_vault(keys)


def vault() -> MultiFernet:
    return current_app.extensions["marejesho_vault"]


class EncryptedText(TypeDecorator):
    """A column whose value is stored Fernet-encrypted and read back decrypted."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None or value == "":
            return None
        return vault().encrypt(value.encode()).decode()

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return vault().decrypt(value.encode()).decode()
