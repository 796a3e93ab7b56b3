"""Secrets at rest: MultiFernet over MAREJESHO_ENCRYPTION_KEYS (the first key encrypts,
every key decrypts). A wrong or missing key fails closed: InvalidToken, never plaintext.

Development without keys gets one generated into instance/ (never in production, where
the config refuses to start without them)."""

from __future__ import annotations

import logging

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import Flask, current_app, render_template
from sqlalchemy import MetaData, Table, column, select, table, update
from sqlalchemy.orm import Session
from sqlalchemy.types import Text, TypeDecorator

from lenders.config import instance_secret

__all__ = [
    "EncryptedText",
    "InvalidToken",
    "encrypted_columns",
    "init_app",
    "rotate_keys",
    "vault",
]
log = logging.getLogger("marejesho.security")


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
    app.register_error_handler(InvalidToken, _undecryptable)


def _undecryptable(error):
    """A secret stored under a key no longer configured: say so, never show the secret."""
    log.error("a stored secret cannot be decrypted with MAREJESHO_ENCRYPTION_KEYS")
    message = (
        "A stored secret cannot be read with the configured encryption keys. Put the old key "
        "back at the end of MAREJESHO_ENCRYPTION_KEYS and run `flask payments rotate-keys`."
    )
    return render_template("error.html", code=500, title="Secret unreadable", message=message), 500


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


def encrypted_columns(metadata: MetaData) -> dict[Table, tuple[str, ...]]:
    """The registry of secrets at rest: every column of every model whose type is
    ``EncryptedText``, read from the models themselves, so a secret column added to a
    model is found (and rotated) with the rest. tests/payments/test_credentials_at_rest.py
    fails for a column that encrypts with the vault by any other type."""
    found = {}
    for model_table in metadata.sorted_tables:
        names = tuple(c.name for c in model_table.columns if isinstance(c.type, EncryptedText))
        if names:
            found[model_table] = names
    return found


def rotate_keys(session: Session, metadata: MetaData) -> int:
    """Re-encrypt every secret of ``encrypted_columns`` under the first key
    (MultiFernet.rotate keeps each token's timestamp). Returns how many values changed.
    Raises InvalidToken, changing nothing, if any secret cannot be decrypted. Does not
    commit."""
    fernet = vault()
    updates = []
    for model_table, names in encrypted_columns(metadata).items():
        keys = [c.name for c in model_table.primary_key.columns]
        # The stored text itself, not the decrypted value the model's type hands back.
        raw = table(
            model_table.name,
            *(column(name, model_table.c[name].type) for name in keys),
            *(column(name, Text) for name in names),
        )
        for row in session.execute(select(raw)).mappings():
            values = {n: fernet.rotate(row[n].encode()).decode() for n in names if row[n]}
            if values:
                updates.append((raw, [raw.c[k] == row[k] for k in keys], values))
    for raw, where, values in updates:
        session.execute(update(raw).where(*where).values(**values))
    return sum(len(values) for _, _, values in updates)
