"""The daily close's identity, over random days: payments to two paybills (some callbacks
lost), reversals (on the statement, or asked for), reassignments and statements imported at
any moment. For every shortcode and Nairobi day, to the cent:

    received = posted + unmatched + credit + refunded + reversed + review

and once the last statement is in, the statement's total equals what the book received."""

from __future__ import annotations

import shutil
import tempfile
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lenders.book import create_loan, loan_is_balanced
from lenders.extensions import db
from lenders.models import Loan
from payments.backoffice import BackofficeError, move_payment
from payments.daily_close import close_day
from payments.models import C2BPayment
from payments.reversals import reverse_payment
from payments.statements import import_statement
from tests.conftest import build_app, new_borrower, new_staff
from tests.payments.conftest import c2b_body, drain, new_shortcode, record_unprocessed
from tests.payments.statement_files import payment as statement_payment
from tests.payments.statement_files import reversal as statement_reversal
from tests.payments.statement_files import write_csv

D = Decimal
DAYS = [date(2025, 1, 10), date(2025, 1, 11), date(2025, 1, 12)]
PAYBILLS = ("600984", "600985")

pay = st.fixed_dictionaries(
    {
        "event": st.just("pay"),
        "paybill": st.integers(0, 1),
        "day": st.integers(0, 2),
        "minute": st.integers(0, 24 * 60 - 1),
        "cents": st.one_of(st.integers(100, 100_000), st.integers(150_000, 900_000)),
        "to": st.sampled_from(["loan0", "loan1", "loan2", "loan3", "phone", "nobody"]),
        "delivered": st.booleans(),
    }
)
reverse = st.fixed_dictionaries(
    {
        "event": st.just("reverse"),
        "which": st.integers(0, 40),
        "how": st.sampled_from(["statement", "admin"]),
    }
)
reassign = st.fixed_dictionaries(
    {"event": st.just("reassign"), "which": st.integers(0, 40), "to": st.integers(0, 3)}
)
statement = st.fixed_dictionaries({"event": st.just("statement"), "paybill": st.integers(0, 1)})
days_of = st.lists(st.one_of(pay, pay, pay, reverse, reassign, statement), min_size=1, max_size=30)


class Day:
    """One random history, played on a fresh database."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.paybills = [new_shortcode(n) for n in PAYBILLS]
        self.admin = new_staff("admin")
        jane = new_borrower("Jane Wanjiku", phones=("0712345678",))
        peter = new_borrower("Peter Otieno", phones=("0722000111",))
        amina = new_borrower("Amina Hassan", phones=("0733000222",))
        self.loans = [
            create_loan(db.session, who, number=f"LOAN-00000{n}", principal=D("2000.00"),
                        disbursed_on=date(2024, 12, 1), installments=3, frequency="monthly")
            for n, who in enumerate((jane, jane, peter, amina))
        ]  # fmt: skip
        db.session.commit()
        self.paid: list[dict] = []  # what M-Pesa received, in order
        self.files = 0

    def pay(self, e: dict) -> None:
        when = datetime.combine(DAYS[e["day"]], datetime.min.time()) + timedelta(
            minutes=e["minute"]
        )
        amount = D(e["cents"]) / 100
        receipt = f"TKP{len(self.paid):07d}"
        if e["to"].startswith("loan"):
            ref = self.loans[int(e["to"][-1])].number
        else:
            ref = "" if e["to"] == "phone" else "NOBODY"
        msisdn = "254722000111" if e["to"] == "phone" else "254799000000"
        record = {"receipt": receipt, "paybill": e["paybill"], "at": when, "amount": amount,
                  "ref": ref, "msisdn": msisdn, "reversed": None}  # fmt: skip
        self.paid.append(record)
        if e["delivered"]:
            body = c2b_body(TransID=receipt, TransAmount=f"{amount:.2f}", BillRefNumber=ref,
                            MSISDN=msisdn, TransTime=when.strftime("%Y%m%d%H%M%S"),
                            BusinessShortCode=PAYBILLS[e["paybill"]])  # fmt: skip
            record_unprocessed(self.paybills[e["paybill"]], body)
            db.session.commit()
            drain()

    def _payment(self, which: int) -> tuple[dict, C2BPayment | None] | None:
        if not self.paid:
            return None
        record = self.paid[which % len(self.paid)]
        found = db.session.query(C2BPayment).filter_by(trans_id=record["receipt"]).one_or_none()
        return record, found

    def reverse(self, e: dict) -> None:
        picked = self._payment(e["which"])
        if picked is None or picked[0]["reversed"]:
            return
        record, found = picked
        if e["how"] == "admin":
            if found is None:
                return
            reverse_payment(db.session, found, source="admin", reason="asked for", actor=self.admin)
            db.session.commit()
        record["reversed"] = (
            f"TKR{len(self.paid):03d}{e['which']:04d}",
            record["at"] + timedelta(minutes=1),
        )

    def reassign(self, e: dict) -> None:
        picked = self._payment(e["which"])
        if picked is None or picked[1] is None or picked[1].status != "posted":
            return
        loan = db.session.get(Loan, self.loans[e["to"]].id)
        try:
            move_payment(db.session, picked[1], loan, actor=self.admin, why="wrong loan")
            db.session.commit()
        except (BackofficeError, ValueError):
            db.session.rollback()

    def statement(self, paybill: int) -> None:
        lines = []
        for record in self.paid:
            if record["paybill"] != paybill:
                continue
            party = f"{record['msisdn']} - PAYER"
            at, amount = record["at"], record["amount"]
            lines.append(
                statement_payment(record["receipt"], at, amount, record["ref"], party=party)
            )
            if record["reversed"]:
                receipt, at = record["reversed"]
                lines.append(statement_reversal(receipt, at, record["receipt"], record["amount"]))
        if not lines:
            return
        self.files += 1
        path = write_csv(self.directory / f"s{self.files}.csv", lines)
        import_statement(db.session, path, self.paybills[paybill], checkpoint=db.session.commit)
        db.session.commit()
        drain()

    def play(self, events: list[dict]) -> None:
        for e in events:
            if e["event"] == "statement":
                self.statement(e["paybill"])
            else:
                getattr(self, e["event"])(e)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=days_of)
def test_every_shilling_is_accounted_for_per_shortcode_per_day(sqlite_template, events):
    directory = Path(tempfile.mkdtemp(prefix="marejesho-close-"))
    shutil.copy(sqlite_template, directory / "marejesho.db")
    app = build_app(f"sqlite:///{directory / 'marejesho.db'}")
    try:
        with app.app_context():
            day = Day(directory)
            day.play(events)
            for closes in (_closes(day), None):
                if closes is None:  # the last statements: everything M-Pesa saw is in
                    for paybill in (0, 1):
                        day.statement(paybill)
                    closes = _closes(day)
                for close in closes:
                    assert close.balanced, (close.day, close.as_json())
                    assert close.received == sum((D(p.amount) for p in _payments(close)), D(0))
            for close in closes:
                mine = PAYBILLS.index(close.shortcode.number)
                expected = sum(
                    (r["amount"] for r in day.paid
                     if r["paybill"] == mine and r["at"].date() == close.day),
                    D(0),
                )  # fmt: skip
                assert close.received == expected
                if expected:
                    assert close.statement_total == expected and close.variance == 0
                    assert not [d for d in close.differences if "not in the book" in d.what]
            for record in day.paid:  # every reversal M-Pesa made is in the book, or with a person
                found = db.session.query(C2BPayment).filter_by(trans_id=record["receipt"]).one()
                wanted = ("reversed", "review") if record["reversed"] else ("posted", "unmatched")
                assert found.status in wanted, (record, found.status)
            for loan in day.loans:
                assert loan_is_balanced(db.session.get(Loan, loan.id))
            db.session.remove()
    finally:
        with app.app_context():
            db.engine.dispose()
        shutil.rmtree(directory, ignore_errors=True)


def _closes(day: Day):
    db.session.expire_all()
    return [close_day(db.session, paybill, on) for paybill in day.paybills for on in DAYS]


def _payments(close):
    from lenders.days import nairobi_midnight

    start, end = nairobi_midnight(close.day), nairobi_midnight(close.day + timedelta(days=1))
    return db.session.query(C2BPayment).filter(
        C2BPayment.shortcode_id == close.shortcode.id,
        C2BPayment.trans_time >= start,
        C2BPayment.trans_time < end,
    )
