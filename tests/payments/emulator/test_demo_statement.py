"""Demo traffic goes through the emulator (issue: random OrgAccountBalance broke the daily
close's balance continuity), and the emulator's org-portal statement reconciles a run:
over real HTTP, each demo payment's OrgAccountBalance is the last one moved by its amount,
Pull Transactions lists the demo payments, a demo payment whose callback was dropped, a B2C
payout and a reversal made on M-Pesa all reach the book through the statement, and the
day then closes with its balance unbroken. No emulator: no payment, a clear line, and no
balance made up."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import requests
from sqlalchemy import select

from lenders.extensions import db
from payments.daily_close import close_day
from payments.daraja import security_credential
from payments.demo import DEMO_SHORTCODE, load_demo_shortcode
from payments.emulator.cli import group
from payments.emulator.server import background_server
from payments.emulator.statement import HEADER
from payments.models import C2BPayment, PaymentStatus
from tests.payments.conftest import payment_by_receipt

D = Decimal
OPENING = D("228037.00")  # a fresh emulator's utility account (state.Emulator.account)


@pytest.fixture
def emu(start_emulator):
    return start_emulator()  # a fresh one: its money is this test's alone


@pytest.fixture
def demo_book(app, make_loan):
    for n in (123, 124, 125):
        make_loan(number=f"LOAN-{n:06d}")
    shortcode = load_demo_shortcode(db.session)
    db.session.commit()
    return shortcode


@pytest.fixture
def marejesho(app, app_factory, demo_book):
    """Marejesho over real HTTP, where the demo traffic sends its confirmations."""
    with background_server(app_factory()) as url:
        app.config["PUBLIC_BASE_URL"] = url
        yield url


def demo(runner, emu, count: int = 1, seed: int = 7) -> list[tuple[str, D, D]]:
    """Run ``flask emulator demo-traffic`` through ``emu``: (receipt, amount, balance) of
    each payment made, from what it printed."""
    result = runner.invoke(
        group,
        ["demo-traffic", "--count", str(count), "--every", "0", "--seed", str(seed)]
        + ["--emulator", emu.url],
    )
    assert result.exit_code == 0, result.output
    made = []
    for line in result.output.splitlines():
        if line.startswith("demo payment "):
            words = line.split()
            made.append((words[2], D(words[4]), D(words[-1].replace(",", ""))))
    assert len(made) == count, result.output
    return made


def a_second_later() -> None:
    """The statement and TransTime count whole seconds, and the daily close orders a
    day's payments by them: each step of a run starts in a second of its own."""
    second = int(time.time())
    while int(time.time()) == second:
        time.sleep(0.01)


def test_each_demo_payment_moves_the_balance_by_its_amount(runner, emu, marejesho, make_client):
    made = demo(runner, emu, count=5)
    for receipt, _, _ in made:
        assert emu.wait_for_delivery(receipt, "confirmation")[0]["outcome"] == "delivered"
    balance = OPENING
    for receipt, amount, printed in made:
        stored = payment_by_receipt(receipt)
        balance += amount
        assert (stored.amount, stored.org_account_balance, printed) == (amount, balance, balance)
    daraja = make_client(on=emu)
    daraja.register_pull(DEMO_SHORTCODE, "0722000000", "http://127.0.0.1:9/pull")
    now = datetime.now(UTC)
    pulled = daraja.query_pull(DEMO_SHORTCODE, now - timedelta(hours=1), now + timedelta(hours=1))
    assert sorted(row["transactionId"] for row in pulled) == sorted(r for r, _, _ in made)
    today = (now + timedelta(hours=3)).date().isoformat()  # Nairobi's day
    answer = requests.get(
        f"{emu.url}/_emulator/statement.csv",
        params={"shortcode": DEMO_SHORTCODE, "from": today, "to": today},
        timeout=5,
    )
    rows = list(csv.reader(io.StringIO(answer.content.decode("utf-8-sig"))))
    lines = rows[rows.index(list(HEADER)) + 1 :]
    assert [line[0] for line in lines] == [r for r, _, _ in reversed(made)]


@pytest.mark.both_databases
def test_a_statement_of_the_run_fills_the_gap_reverses_and_the_day_closes(
    runner, tmp_path, emu, marejesho, receiver, make_client, demo_book
):
    daraja = make_client(on=emu)
    credential = security_credential(emu.initiator_password, emu.certificate())
    [(first, first_amount, _)] = demo(runner, emu, seed=1)
    emu.wait_for_delivery(first, "confirmation")
    a_second_later()
    emu.faults(drop_callback=True)
    [(lost, lost_amount, lost_balance)] = demo(runner, emu, seed=2)
    assert emu.wait_for_delivery(lost, "confirmation")[0]["outcome"] == "dropped"
    emu.reset_faults()
    a_second_later()
    hooks = {"queue_timeout_url": receiver.hook_url("timeout")}
    daraja.b2c_payment(
        originator_conversation_id="MJ-demo-payout",
        initiator_name=emu.initiator,
        security_credential=credential,
        amount=700,
        party_a=DEMO_SHORTCODE,
        party_b="254705912645",
        result_url=receiver.hook_url("b2c/result"),
        **hooks,
    )
    daraja.reverse_transaction(
        initiator_name=emu.initiator,
        security_credential=credential,
        transaction_id=first,
        amount=first_amount,
        receiver_party=DEMO_SHORTCODE,
        result_url=receiver.hook_url("reversal/result"),
        **hooks,
    )
    [paid_out] = receiver.wait_for("b2c/result")
    [reversed_] = receiver.wait_for("reversal/result")
    assert paid_out["Result"]["ResultCode"] == reversed_["Result"]["ResultCode"] == 0
    a_second_later()
    [(last, last_amount, last_balance)] = demo(runner, emu, seed=3)
    emu.wait_for_delivery(last, "confirmation")
    assert last_balance == OPENING + first_amount + lost_amount - 700 - first_amount + last_amount

    answer = requests.get(
        f"{emu.url}/_emulator/statement.csv", params={"shortcode": DEMO_SHORTCODE}, timeout=5
    )
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(answer.content.decode("utf-8-sig"))))
    at = rows.index(list(HEADER))
    assert rows[0] == ["Organization Name", "Marejesho Emulated Paybill"]
    assert rows[1] == ["Paybill", DEMO_SHORTCODE] and 3 <= at < 30
    lines = rows[at + 1 :]
    reversal_receipt = reversed_["Result"]["TransactionID"]
    payout_receipt = next(
        p["Value"]
        for p in paid_out["Result"]["ResultParameters"]["ResultParameter"]
        if p["Key"] == "TransactionReceipt"
    )
    assert [ln[0] for ln in lines] == [last, reversal_receipt, payout_receipt, lost, first]
    by_receipt = {ln[0]: dict(zip(HEADER, ln, strict=True)) for ln in lines}
    reversal = by_receipt[reversal_receipt]
    assert (reversal["Reason Type"], reversal["Linked Transaction ID"]) == ("Reversal", first)
    assert reversal["Withdrawn"] == f"{-first_amount:,.2f}" and reversal["Paid In"] == ""
    assert by_receipt[payout_receipt]["Withdrawn"] == "-700.00"
    assert by_receipt[lost]["Balance"] == f"{lost_balance:,.2f}"
    assert by_receipt[last]["Balance"] == f"{last_balance:,.2f}"
    datetime.strptime(by_receipt[last]["Completion Time"], "%d-%m-%Y %H:%M:%S")  # day first
    for newer, older in zip(lines, lines[1:], strict=False):  # a running balance
        moved = D((newer[5] or newer[6]).replace(",", ""))
        assert D(newer[7].replace(",", "")) == D(older[7].replace(",", "")) + moved

    day = (datetime.now(UTC) + timedelta(hours=3)).date()  # Nairobi's day
    [gap] = close_day(db.session, demo_book, day).continuity  # the dropped callback shows
    assert gap.receipt == f"{first}→{last}" and gap.amount == lost_amount - 700 - first_amount
    path = tmp_path / "statement.csv"
    path.write_bytes(answer.content)
    result = runner.invoke(
        args=["payments", "import-statement", str(path), "--shortcode", DEMO_SHORTCODE]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(next(ln for ln in result.output.splitlines() if ln.startswith("{")))
    assert (summary["rows"], summary["gaps_filled"], summary["reversals"]) == (5, 1, 1)
    assert summary["not_repayments"]["b2c"] == 1 and summary["errors"] == []

    assert payment_by_receipt(first).status == PaymentStatus.REVERSED
    filled = payment_by_receipt(lost)
    assert (filled.amount, filled.org_account_balance) == (lost_amount, lost_balance)
    assert filled.status in (PaymentStatus.POSTED, PaymentStatus.UNMATCHED)
    assert day == (filled.trans_time + timedelta(hours=3)).date()
    close = close_day(db.session, demo_book, day)
    assert close.continuity == []
    assert close.balanced and close.differences == []
    assert close.received == first_amount + lost_amount + last_amount
    assert (close.reversed, close.statement_reversed) == (first_amount, first_amount)
    count = db.session.scalar(select(db.func.count()).select_from(C2BPayment))
    assert count == 3


def test_no_emulator_no_payment_and_a_clear_line(runner, marejesho):
    result = runner.invoke(
        group,
        ["demo-traffic", "--count", "1", "--every", "0", "--emulator", "http://127.0.0.1:9"]
        + ["--give-up-after", "0.3"],
    )
    assert result.exit_code == 1
    assert "the Daraja emulator at http://127.0.0.1:9 does not answer" in result.output
    assert "has not answered for" in result.output
    assert result.output.count("does not answer") == 1  # said once, not at every try
    assert db.session.scalar(select(db.func.count()).select_from(C2BPayment)) == 0


@pytest.mark.parametrize(
    ("order", "error"),
    [
        ({"msisdn": "254712345678", "notice": {}}, "confirmation_url"),
        ({"confirmation_url": "http://127.0.0.1:9/c", "notice": {}}, "msisdn"),
        ({"confirmation_url": "http://127.0.0.1:9/c", "msisdn": "254712345678"}, "notice"),
        (
            {
                "confirmation_url": "http://127.0.0.1:9/c",
                "msisdn": "254712345678",
                "notice": {"BusinessShortCode": "600984", "TransAmount": "ten"},
            },
            "TransAmount",
        ),
    ],
)
def test_a_demo_payment_it_cannot_use_is_refused_and_moves_nothing(emu, order, error):
    answer = requests.post(f"{emu.url}/_emulator/demo-payments", json=order, timeout=5)
    assert answer.status_code == 400 and error in answer.json()["error"]
    statement = requests.get(
        f"{emu.url}/_emulator/statement.csv", params={"shortcode": "600984"}, timeout=5
    )
    assert statement.text.splitlines()[-1] == ",".join(HEADER)


def test_the_statement_wants_a_shortcode_and_readable_bounds(emu):
    base = f"{emu.url}/_emulator/statement.csv"
    assert requests.get(base, timeout=5).status_code == 400
    bad = requests.get(base, params={"shortcode": "600984", "from": "yesterday"}, timeout=5)
    assert bad.status_code == 400 and "from and to" in bad.json()["error"]
    empty = requests.get(base, params={"shortcode": "600984", "to": "2020-01-01"}, timeout=5)
    assert empty.status_code == 200
    assert empty.content.decode("utf-8-sig").splitlines()[-1] == ",".join(HEADER)
    index = requests.get(f"{emu.url}/_emulator/", timeout=5).text
    assert "/_emulator/statement.csv?shortcode=600984" in index
