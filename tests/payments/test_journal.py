"""Every confirmation is written to this host's journal, synced to disk, before it is
acknowledged, and shipped to the database from there (payments/journal.py): at once when
the database answers, once it answers again after an outage, with nobody importing
anything; by another process when the one that took it died."""

from __future__ import annotations

import json
import os
from decimal import Decimal as D

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError

from lenders.extensions import db
from lenders.models import Loan
from payments import intake, journal
from payments.models import C2BPayment, CallbackLog
from tests.payments.conftest import c2b_body, drain

ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}


def database_down(*args, **kwargs):
    """What the driver of the database in use raises when its server is gone."""
    driver_error = db.engine.dialect.dbapi.OperationalError("server closed the connection")
    raise OperationalError("INSERT INTO c2b_payment …", {}, driver_error)


def post(client, shortcode, body: dict):
    return client.post(
        f"/payments/c2b/{shortcode.callback_token}/confirmation",
        data=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )


def payments() -> list[C2BPayment]:
    db.session.expire_all()
    return list(db.session.scalars(select(C2BPayment).order_by(C2BPayment.id)))


@pytest.mark.both_databases
def test_a_confirmation_during_an_outage_is_acknowledged_and_posted_when_the_database_returns(
    app, client, shortcode, make_loan, monkeypatch
):
    loan = make_loan()
    bodies = [c2b_body(TransAmount="250.00", BillRefNumber=loan.number) for _ in range(3)]
    post(client, shortcode, c2b_body(TransAmount="1.00"))  # the token is known before
    db.session.expire_all()
    loan_id, opening = loan.id, loan.paid
    monkeypatch.setattr(intake, "store_confirmations", database_down)

    answers = [post(client, shortcode, body) for body in bodies]

    assert [(a.status_code, a.get_json()) for a in answers] == [(200, ACCEPTED)] * 3
    assert len(payments()) == 1 and journal.waiting(app) == 3
    monkeypatch.undo()  # the database is back

    assert journal.replay() == 3
    drain()
    assert journal.waiting(app) == 0
    stored = {p.trans_id: p for p in payments()}
    assert [stored[b["TransID"]].status for b in bodies] == ["posted"] * 3
    assert db.session.get(Loan, loan_id).paid == opening + D("750.00")
    logged = db.session.scalars(
        select(CallbackLog).where(CallbackLog.payment_id == stored[bodies[0]["TransID"]].id)
    ).one()
    assert logged.outcome == "stored"
    assert journal.replay() == 0  # nothing twice


def test_a_confirmation_that_reached_the_database_before_the_failure_is_stored_once(
    app, client, shortcode, make_loan, monkeypatch
):
    """The batch committed, but the process died (here: the connection broke) before the
    journal forgot it: the journal's copy is recognised as a duplicate when shipped again."""
    loan = make_loan()
    body = c2b_body(TransAmount="500.00", BillRefNumber=loan.number)
    real_store = journal._store

    def stored_then_lost(kept):
        real_store(kept)
        database_down()

    monkeypatch.setattr(journal, "_store", stored_then_lost)
    assert post(client, shortcode, body).get_json() == ACCEPTED
    monkeypatch.undo()

    assert journal.replay() == 1
    drain()
    [payment] = payments()
    assert payment.status == "posted" and len(payment.repayments) == 1
    outcomes = db.session.scalars(
        select(CallbackLog.outcome).where(CallbackLog.payment_id == payment.id)
    ).all()
    assert sorted(outcomes) == ["duplicate", "stored"]


def test_a_server_started_during_the_outage_still_knows_the_callback_token(
    app, app_factory, shortcode, make_loan, monkeypatch
):
    first = app_factory()
    first.test_client().post(
        f"/payments/c2b/{shortcode.callback_token}/validation", json=c2b_body()
    )  # this process read the shortcode and noted it in the journal
    restarted = app_factory(JOURNAL_DIR=first.config["JOURNAL_DIR"])
    monkeypatch.setattr(intake, "store_confirmations", database_down)
    monkeypatch.setattr(Engine, "connect", database_down)  # every engine: the server is gone

    answer = post(restarted.test_client(), shortcode, c2b_body(TransAmount="99.00"))
    monkeypatch.undo()

    assert (answer.status_code, answer.get_json()) == (200, ACCEPTED)
    assert journal.waiting(restarted) == 1


def test_an_unknown_token_during_an_outage_is_503_and_journals_nothing(
    app, client, shortcode, monkeypatch
):
    monkeypatch.setattr(Engine, "connect", database_down)
    answer = client.post("/payments/c2b/" + "ab" * 20 + "/confirmation", json=c2b_body())
    monkeypatch.undo()
    assert answer.status_code == 503 and answer.get_json()["errorCode"] == "503.001"
    assert journal.waiting(app) == 0


def test_a_full_journal_sends_the_confirmation_to_the_database_itself(
    app, client, shortcode, monkeypatch
):
    app.config["JOURNAL_MAX"] = 1
    post(client, shortcode, c2b_body(TransAmount="1.00"))
    monkeypatch.setattr(intake, "store_confirmations", database_down)
    waiting = post(client, shortcode, c2b_body(TransAmount="2.00"))
    assert waiting.get_json() == ACCEPTED and journal.waiting(app) == 1
    monkeypatch.undo()  # the database is back, and the journal still full

    body = c2b_body(TransAmount="3.00")
    answer = post(client, shortcode, body)

    assert answer.get_json() == ACCEPTED
    assert body["TransID"] in {p.trans_id for p in payments()}


def test_a_full_journal_and_no_database_answer_503_so_nothing_is_acknowledged_unkept(
    app, client, shortcode, monkeypatch
):
    app.config["JOURNAL_MAX"] = 1
    post(client, shortcode, c2b_body(TransAmount="1.00"))
    monkeypatch.setattr(intake, "store_confirmations", database_down)
    first = post(client, shortcode, c2b_body())
    second = post(client, shortcode, c2b_body())
    assert first.get_json() == ACCEPTED
    assert second.status_code == 503 and second.get_json()["errorCode"] == "503.001"
    assert journal.waiting(app) == 1


def test_a_confirmation_a_bug_cannot_store_is_quarantined_and_the_rest_are_stored(
    app, client, shortcode, monkeypatch
):
    """Any error but an unreachable database: the batch is stored again one by one, and
    the one confirmation that fails is kept as a quarantined body with the error, for an
    admin; nothing waits in the journal for ever, nothing is lost."""
    poisoned = c2b_body(TransAmount="13.00")
    fine = c2b_body(TransAmount="14.00")
    real = intake.store_confirmations

    def bug_on_one(session, kept):
        if any(poisoned["TransID"].encode() in item.body for item in kept):
            raise KeyError("a bug")
        return real(session, kept)

    monkeypatch.setattr(intake, "store_confirmations", database_down)
    assert post(client, shortcode, poisoned).get_json() == ACCEPTED
    assert post(client, shortcode, fine).get_json() == ACCEPTED
    monkeypatch.setattr(intake, "store_confirmations", bug_on_one)

    assert journal.replay() == 2

    assert journal.waiting(app) == 0
    assert [p.trans_id for p in payments()] == [fine["TransID"]]
    [kept] = db.session.scalars(
        select(CallbackLog).where(CallbackLog.body.contains(poisoned["TransID"]))
    ).all()
    assert kept.outcome == "quarantined" and "KeyError" in kept.error


def write_journal(path, shortcode, bodies: list[dict]) -> None:
    """A journal file as a server process leaves it."""
    connection = journal._open(path)
    for body in bodies:
        connection.execute(
            "INSERT INTO confirmation (token, received_at, source_ip, headers, body)"
            " VALUES (?, '2026-12-03T09:00:00+00:00', '196.201.214.200', '{}', ?)",
            (shortcode.callback_token, json.dumps(body).encode()),
        )
    connection.close()


def test_the_journal_of_a_process_that_died_is_shipped_by_another(app, shortcode):
    dead = journal.journal_dir(app) / "confirmations-4194000.db"
    bodies = [c2b_body(TransAmount="60.00"), c2b_body(TransAmount="70.00")]
    write_journal(dead, shortcode, bodies)
    assert journal.waiting(app) == 2

    assert journal.replay() == 2  # what every server process does every few seconds

    stored = {p.trans_id: p for p in payments()}
    assert sorted(stored) == sorted(b["TransID"] for b in bodies)
    assert stored[bodies[0]["TransID"]].received_at.isoformat().startswith("2026-12-03T09:00")
    assert not dead.exists() and journal.waiting(app) == 0
    logged = db.session.scalars(select(CallbackLog.headers)).all()
    assert all(headers["Journal"] == "replayed" for headers in logged)


def test_the_journal_of_a_living_process_is_left_to_it(app, shortcode):
    living = journal.journal_dir(app) / "confirmations-4194001.db"
    write_journal(living, shortcode, [c2b_body()])
    lock = journal._try_lock(living)  # held, as its owner holds it while it lives
    try:
        assert journal.replay() == 0
        assert journal.waiting(app) == 1 and payments() == []
    finally:
        os.close(lock)
    assert journal.replay() == 1  # it died: now it is anyone's


@pytest.mark.both_databases
def test_the_journal_is_synced_as_the_database_syncs_its_own_commits(app, client, shortcode):
    post(client, shortcode, c2b_body())
    own = journal._own(app)
    level = journal._connect(own.path).execute("PRAGMA synchronous").fetchone()[0]
    full, normal = 2, 1
    assert level == (normal if db.engine.dialect.name == "sqlite" else full)


def test_replay_journal_command_replays_a_copied_journal(
    app, client, runner, shortcode, monkeypatch
):
    copied = journal.journal_dir(app) / "from-the-old-host.sqlite"
    body = c2b_body(TransAmount="42.00")
    write_journal(copied, shortcode, [body])

    result = runner.invoke(args=["payments", "replay-journal", str(copied)])

    assert result.exit_code == 0, result.output
    assert "replayed 1 confirmation(s)" in result.output
    assert body["TransID"] in {p.trans_id for p in payments()}


@pytest.mark.both_databases
def test_a_server_ships_what_waited_through_an_outage_with_nobody_acting(
    app, app_factory, shortcode, monkeypatch
):
    """A server process (its shipper thread, no inline jobs): acknowledged during the
    outage, in the database once it answers, without anyone calling anything."""
    served = app_factory(JOBS_IN_BACKGROUND=True, JOURNAL_DIR=app.config["JOURNAL_DIR"])
    client = served.test_client()
    bodies = [c2b_body(TransAmount="25.00"), c2b_body(TransAmount="35.00")]
    monkeypatch.setattr(intake, "store_confirmations", database_down)

    answers = [post(client, shortcode, body).get_json() for body in bodies]

    assert answers == [ACCEPTED] * 2
    assert not journal.shipped(served, timeout=1.0)  # it tried; the database is down
    assert payments() == [] and journal.waiting(served) == 2
    monkeypatch.undo()  # the database is back

    assert journal.shipped(served, timeout=10.0)
    assert sorted(p.trans_id for p in payments()) == sorted(b["TransID"] for b in bodies)


def test_a_lender_may_have_safaricom_answered_only_once_the_database_has_it(
    app, app_factory, shortcode
):
    """MAREJESHO_ACKNOWLEDGE=database: a server process (jobs in the background) still
    answers only after the confirmation is committed in the database."""
    served = app_factory(
        JOBS_IN_BACKGROUND=True, ACKNOWLEDGE="database", JOURNAL_DIR=app.config["JOURNAL_DIR"]
    )
    body = c2b_body(TransAmount="45.00")

    answer = post(served.test_client(), shortcode, body)

    assert answer.get_json() == ACCEPTED
    assert [p.trans_id for p in payments()] == [body["TransID"]]  # no waiting for a shipper
    assert journal.waiting(served) == 0


@pytest.mark.parametrize("value", ["later", "db", "journal,database"])
def test_acknowledge_is_journal_or_database(value):
    from lenders.config import ConfigError, config_from_env

    with pytest.raises(ConfigError, match="MAREJESHO_ACKNOWLEDGE"):
        config_from_env({"MAREJESHO_ACKNOWLEDGE": value})
    assert config_from_env({})["ACKNOWLEDGE"] == "journal"
    assert config_from_env({"MAREJESHO_ACKNOWLEDGE": ""})["ACKNOWLEDGE"] == "journal"
    assert config_from_env({"MAREJESHO_ACKNOWLEDGE": "Database"})["ACKNOWLEDGE"] == "database"


def test_a_bug_that_breaks_every_confirmation_leaves_them_all_in_the_journal(
    app, client, shortcode, monkeypatch
):
    """Not one body's fault: nothing is quarantined, nothing is lost; once the code is
    fixed, they are stored."""
    bodies = [c2b_body(TransAmount="11.00"), c2b_body(TransAmount="12.00")]

    def bug(session, kept):
        raise TypeError("a bad deploy")

    monkeypatch.setattr(intake, "store_confirmations", database_down)
    for body in bodies:
        assert post(client, shortcode, body).get_json() == ACCEPTED
    monkeypatch.setattr(intake, "store_confirmations", bug)

    assert journal.replay() == 0

    assert journal.waiting(app) == 2 and payments() == []
    assert db.session.scalars(select(CallbackLog)).all() == []
    monkeypatch.undo()  # fixed
    assert journal.replay() == 2
    assert sorted(p.trans_id for p in payments()) == sorted(b["TransID"] for b in bodies)


def test_a_journal_never_gives_an_id_twice(app, client, shortcode):
    """Forgetting a shipped batch by its ids cannot forget one journalled since."""
    post(client, shortcode, c2b_body())
    own = journal._own(app)
    connection = journal._connect(own.path)
    first = connection.execute("SELECT seq FROM sqlite_sequence").fetchone()[0]
    assert journal.waiting(app) == 0  # shipped and forgotten: the table is empty
    post(client, shortcode, c2b_body())
    assert connection.execute("SELECT seq FROM sqlite_sequence").fetchone()[0] == first + 1


def test_an_unreadable_trans_time_is_when_the_journal_took_it(app, shortcode):
    dead = journal.journal_dir(app) / "confirmations-4194002.db"
    write_journal(dead, shortcode, [c2b_body(TransTime="yesterday")])
    assert journal.replay() == 1
    [payment] = payments()
    assert payment.trans_time.isoformat().startswith("2026-12-03T09:00")  # not "now"
