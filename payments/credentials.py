"""Daraja credentials of a shortcode: stored encrypted, shown only as "set"."""

from __future__ import annotations

from payments.models import Shortcode


def credentials_status(shortcode: Shortcode) -> dict[str, bool]:
    """Which secrets are set; the values themselves never leave the server."""
    return {name: bool(getattr(shortcode, name)) for name in Shortcode.SECRET_FIELDS}
