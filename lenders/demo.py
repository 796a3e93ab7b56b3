"""The demo lender: about 200 borrowers and 300 loans in mixed states, two officers and an
admin. Loaded through the same import and posting services a real lender uses."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from lenders.book import post_repayment, write_off_loan
from lenders.importer import import_loans
from lenders.loanbook import REQUIRED_COLUMNS
from lenders.models import Loan, StaffUser
from lenders.web import nairobi_today

DEMO_ADMIN = "admin@demo.marejesho.test"
DEMO_OFFICERS = {
    "wanjiru@demo.marejesho.test": "Wanjiru Kamau",
    "otieno@demo.marejesho.test": "Otieno Odhiambo",
}
# Printed by `make run`; the demo is refused in production.
DEMO_PASSWORDS = {
    DEMO_ADMIN: "demo-admin-pass",
    "wanjiru@demo.marejesho.test": "demo-officer-pass",
    "otieno@demo.marejesho.test": "demo-officer-pass",
}
FIRST_NAMES = [
    "Jane",
    "John",
    "Mary",
    "Peter",
    "Grace",
    "James",
    "Faith",
    "David",
    "Mercy",
    "Joseph",
    "Esther",
    "Daniel",
    "Ann",
    "Samuel",
    "Lucy",
    "Brian",
    "Njeri",
    "Kevin",
    "Akinyi",
    "Kiprono",
    "Wairimu",
    "Mutua",
    "Achieng",
    "Kipchoge",
    "Nafula",
    "Omondi",
    "Chebet",
    "Mwangi",
    "Atieno",
    "Wekesa",
]
SURNAMES = [
    "Wanjiku",
    "Otieno",
    "Kamau",
    "Mwangi",
    "Ochieng",
    "Kiptoo",
    "Njoroge",
    "Wambui",
    "Mutiso",
    "Onyango",
    "Cherono",
    "Kariuki",
    "Nyambura",
    "Barasa",
    "Macharia",
    "Awuor",
    "Kimani",
    "Langat",
    "Muthoni",
    "Wafula",
]


def load_demo(session: Session, *, seed: int = 2026) -> bool:
    """Create the demo lender unless it is there already. Returns True when it loaded."""
    if session.scalar(select(StaffUser).where(StaffUser.email == DEMO_ADMIN)):
        return False
    rng = random.Random(seed)
    admin = StaffUser(email=DEMO_ADMIN, name="Amina Admin", role="admin")
    admin.set_password(DEMO_PASSWORDS[DEMO_ADMIN])
    session.add(admin)
    for email, name in DEMO_OFFICERS.items():
        officer = StaffUser(email=email, name=name, role="officer")
        officer.set_password(DEMO_PASSWORDS[email])
        session.add(officer)
    session.flush()

    today = nairobi_today()
    result = import_loans(
        session, _demo_csv(rng, today), actor=admin, today=today, source_name="demo"
    )
    if not result.ok:  # the generator is ours: a failure here is a bug
        raise RuntimeError("demo loan book rejected: " + "; ".join(result.errors[:5]))

    loans = list(session.scalars(select(Loan).where(Loan.status == "active").order_by(Loan.id)))
    for loan in loans[-10:]:
        write_off_loan(session, loan, actor=admin, reason="demo: borrower unreachable 180 days")
    for loan in loans[:60]:
        amount = (loan.total_due / loan.installment_count).quantize(Decimal("1"))
        if amount >= loan.outstanding:
            continue  # these M-Pesa payments leave every loan open
        post_repayment(
            session,
            loan,
            amount,
            source="mpesa",
            reference=f"TK{rng.randrange(10**8):08d}X",
            received_at=datetime.now(UTC) - timedelta(days=rng.randrange(1, 20)),
        )
    return True


def _demo_csv(rng: random.Random, today) -> list[str]:
    header = ",".join((*REQUIRED_COLUMNS, "amount_paid", "officer_email"))
    people = []
    for n in range(200):
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"
        phone = f"07{rng.randrange(10**8):08d}" if n % 9 else f"01{rng.randrange(10**8):08d}"
        people.append((name, str(20_000_000 + n * 7919 % 9_000_000), phone))
    # The borrower the README's walk-through searches for.
    people[0] = ("Jane Wanjiku", "23456789", "0712 345 678")
    officers = list(DEMO_OFFICERS)
    lines = [header]
    for n in range(1, 301):
        name, national_id, phone = people[(n - 1) % 200]
        principal = Decimal(rng.choice([5000, 10000, 15000, 20000, 30000, 50000]))
        interest = (principal * Decimal("0.12")).quantize(Decimal("1"))
        fees = Decimal(rng.choice([0, 200, 500]))
        frequency = rng.choice(["weekly", "monthly"])
        count = rng.choice([4, 8, 12]) if frequency == "weekly" else rng.choice([3, 6, 12])
        state = rng.random()
        if n == 1:  # Jane's LOAN-000123, the README's walk-through, is active and part paid
            state = 0.5
        if state < 0.07:  # pending: disbursement booked for the coming days
            disbursed, paid = today + timedelta(days=rng.randrange(1, 7)), Decimal(0)
        elif state < 0.2:  # closed: paid in full
            disbursed, paid = (
                today - timedelta(days=rng.randrange(200, 400)),
                principal + interest + fees,
            )
        else:  # active, some on time and some behind
            disbursed = today - timedelta(days=rng.randrange(10, 200))
            share = Decimal(rng.choice([0, 10, 25, 40, 60, 80])) / 100
            paid = ((principal + interest + fees) * share).quantize(Decimal("1"))
        lines.append(
            ",".join(
                [
                    f"LOAN-{123 if n == 1 else 1000 + n:06d}",
                    name,
                    national_id,
                    phone,
                    f"{principal}",
                    f"{interest}",
                    f"{fees}",
                    disbursed.isoformat(),
                    str(count),
                    frequency,
                    f"{paid}",
                    officers[n % 2],
                ]
            )
        )
    return lines
