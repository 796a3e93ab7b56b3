"""``flask emulator …``: the local Daraja and the demo traffic that pays the demo paybill.

Registered through the ``flask.commands`` entry point in pyproject.toml, so the app factory
never imports this package. Both commands refuse to run in production. The heavy imports
wait inside the commands: every ``flask`` command line loads this group."""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import with_appcontext

group = click.Group(
    "emulator", help="The local Daraja emulator and demo traffic (never in production)."
)


def refuse_in_production(what: str) -> None:
    if current_app.config["ENV_NAME"] == "production":
        raise click.ClickException(f"{what} never runs in production")


@group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5055, show_default=True, type=int)
@click.option(
    "--config",
    "config_file",
    type=click.File("r"),
    help="A JSON object of settings over the emulator's defaults (apps, delays, faults).",
)
@with_appcontext
def serve_command(host: str, port: int, config_file) -> None:
    """Run the local Daraja emulator until interrupted."""
    refuse_in_production("the Daraja emulator")
    config = None
    if config_file:
        try:
            config = json.load(config_file)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--config") from None
        if not isinstance(config, dict):
            raise click.BadParameter("must hold a JSON object", param_hint="--config")
    from payments.emulator.server import serve

    try:
        serve(host, port, config, echo=click.echo)
    except ValueError as exc:  # an unknown setting or a bad value in the file
        raise click.BadParameter(str(exc), param_hint="--config") from None


@group.command("demo-traffic")
@click.option("--every", default=5.0, show_default=True, help="Seconds between payments.")
@click.option("--count", type=int, default=None, help="Stop after this many (default: never).")
@click.option("--seed", type=int, default=None)
@click.option(
    "--emulator",
    "emulator_url",
    help="The Daraja emulator the payments go through (default: MAREJESHO_DARAJA_SANDBOX_URL,"
    " else http://127.0.0.1:5055).",
)
@click.option(
    "--give-up-after",
    type=float,
    default=None,
    help="Stop when the emulator has not answered for this many seconds (default: wait).",
)
@with_appcontext
def demo_traffic_command(
    every: float,
    count: int | None,
    seed: int | None,
    emulator_url: str | None,
    give_up_after: float | None,
) -> None:
    """Pay the demo paybill through the Daraja emulator, which confirms each payment to this
    app's callback URL with the paybill's running balance. While the emulator is down no
    payment is made: it says so and waits."""
    refuse_in_production("demo traffic")
    from sqlalchemy.orm import Session

    from lenders.extensions import db
    from payments.emulator.demo_traffic import DemoTrafficStopped, send_demo_traffic

    engine = db.engine
    emulator_url = (
        emulator_url or current_app.config.get("DARAJA_SANDBOX_URL") or "http://127.0.0.1:5055"
    )
    try:
        send_demo_traffic(
            lambda: Session(engine),
            current_app.config["PUBLIC_BASE_URL"],
            emulator_url.rstrip("/"),
            every=every,
            count=count,
            seed=seed,
            echo=click.echo,
            give_up_after=give_up_after,
        )
    except DemoTrafficStopped as exc:
        raise click.ClickException(str(exc)) from None
