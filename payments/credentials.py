"""Daraja credentials of a shortcode: stored encrypted, shown only as "set"."""

from __future__ import annotations

from sqlalchemy import column, select, table, update
from sqlalchemy.orm import Session
from sqlalchemy.types import Integer, Text

from lenders.vault import vault
from payments.models import Shortcode

_RAW = table(
    "shortcode", column("id", Integer), *(column(name, Text) for name in Shortcode.SECRET_FIELDS)
)


def rotate_credentials(session: Session) -> int:
    """Re-encrypt every secret under the first key (MultiFernet.rotate keeps the token's
    timestamp). Raises InvalidToken, changing nothing, if any secret cannot be decrypted."""
    fernet = vault()
    count = 0
    rows = session.execute(select(_RAW)).mappings().all()
    updates = []
    for row in rows:
        values = {}
        for name in Shortcode.SECRET_FIELDS:
            if row[name]:
                values[name] = fernet.rotate(row[name].encode()).decode()
                count += 1
        if values:
            updates.append((row["id"], values))
    for shortcode_id, values in updates:
        session.execute(update(_RAW).where(_RAW.c.id == shortcode_id).values(**values))
    return count


def credentials_status(shortcode: Shortcode) -> dict[str, bool]:
    """Which secrets are set; the values themselves never leave the server."""
    return {name: bool(getattr(shortcode, name)) for name in Shortcode.SECRET_FIELDS}
