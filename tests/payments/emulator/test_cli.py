"""``flask emulator serve`` and ``flask emulator demo-traffic``: both refuse production, a bad
``--config`` is a clear error, and the demo traffic lands in Marejesho over real HTTP,
through the emulator, as payments of the demo paybill (the demo paybill itself is
``flask payments load-demo``)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from lenders.extensions import db
from payments.demo import DEMO_SHORTCODE, load_demo_shortcode
from payments.emulator.cli import group
from payments.emulator.server import background_server
from payments.models import C2BPayment, Shortcode


@pytest.mark.parametrize(
    "args",
    [["serve", "--port", "0"], ["demo-traffic", "--count", "1", "--every", "0"]],
)
def test_refused_in_production(app, runner, args):
    app.config["ENV_NAME"] = "production"
    result = runner.invoke(group, args)
    assert result.exit_code == 1
    assert "never runs in production" in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"colour": "red"}', "unknown emulator setting 'colour'"),
        ('{"environment": "staging"}', "environment must be sandbox or production"),
        ('{"faults": {"withhold_answer": -1}}', "withhold_answer must be a count"),
    ],
)
def test_a_bad_config_file_is_a_clear_error(runner, tmp_path, content, message):
    path = tmp_path / "emulator.json"
    path.write_text(content)
    result = runner.invoke(group, ["serve", "--port", "0", "--config", str(path)])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_demo_traffic_pays_the_demo_paybill(app, app_factory, runner, make_loan, start_emulator):
    make_loan(number="LOAN-000123")
    load_demo_shortcode(db.session)
    db.session.commit()
    emulator = start_emulator()
    with background_server(app_factory()) as marejesho:
        app.config["PUBLIC_BASE_URL"] = marejesho
        result = runner.invoke(
            group,
            ["demo-traffic", "--count", "3", "--every", "0", "--seed", "7"]
            + ["--emulator", emulator.url],
        )
        assert result.exit_code == 0, result.output
        made = [ln.split()[2] for ln in result.output.splitlines() if ln.startswith("demo payment")]
        assert len(made) == 3 and result.output.count(": paybill balance ") == 3
        for receipt in made:
            emulator.wait_for_delivery(receipt, "confirmation")
    with Session(db.engine) as session:
        demo = session.scalar(select(Shortcode).where(Shortcode.number == DEMO_SHORTCODE))
        payments = session.scalars(
            select(C2BPayment).where(C2BPayment.shortcode_id == demo.id)
        ).all()
    assert {p.trans_id for p in payments} == set(made)


def test_demo_traffic_goes_on_paying_while_the_database_is_down(
    app, app_factory, make_loan, start_emulator
):
    """Payers do not stop when our database does: the demo repeats recent payers."""
    from sqlalchemy.exc import OperationalError

    from payments.emulator.demo_traffic import send_demo_traffic

    make_loan(number="LOAN-000123")
    load_demo_shortcode(db.session)
    db.session.commit()
    emulator = start_emulator()
    opened = []

    def sessions():
        opened.append(1)
        if len(opened) > 1:  # the database went away after the first payment
            raise OperationalError("SELECT …", {}, ConnectionRefusedError("refused"))
        return Session(db.engine)

    said: list[str] = []
    with background_server(app_factory()) as marejesho:
        made = send_demo_traffic(
            sessions, marejesho, emulator.url, every=0, count=3, seed=7, echo=said.append
        )
    assert made == 3 and len(opened) == 3
    assert any("database does not answer" in line for line in said)
    assert sum(line.startswith("demo payment") for line in said) == 3
