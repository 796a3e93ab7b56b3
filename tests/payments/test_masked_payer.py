"""Masked MSISDNs (``2547 ***** 678`` + FirstName) find their borrower through the name key
each phone carries: it must follow every way a name or a phone reaches the book (the app's
own writes, the importer), and a phone written without it must still be found."""

from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import select, text

from lenders.extensions import db
from lenders.importer import import_loans
from lenders.models import Borrower, BorrowerPhone
from lenders.phones import canonical_phone, masked_key, name_key, phone_sha256
from payments.matching import find_payer, find_reference
from tests.payments.conftest import pay

pytestmark = pytest.mark.both_databases
D = Decimal


def stored_keys(borrower_id: int) -> list[str | None]:
    db.session.expire_all()
    return list(
        db.session.scalars(
            select(BorrowerPhone.name_key)
            .where(BorrowerPhone.borrower_id == borrower_id)
            .order_by(BorrowerPhone.id)
        )
    )


@pytest.fixture
def jane_loan(make_loan, make_borrower):
    jane = make_borrower("Jane Wambui Wanjiku", national_id="23456789", phones=("0712345678",))
    return make_loan(borrower=jane, number="LOAN-000123", disbursed_on=date(2025, 1, 1))


def test_name_key_is_every_word_case_folded_between_spaces():
    assert name_key("Jane  WAMBUI\tWanjiku ") == " jane wambui wanjiku "
    assert name_key("") == "  "


@pytest.mark.parametrize("first_name", ["JANE", "wambui", "Wanjiku"])
def test_masked_payer_is_found_by_any_word_of_the_name(confirm, shortcode, jane_loan, first_name):
    payment = pay(confirm, BillRefNumber="xyz", MSISDN="2547 ***** 678", FirstName=first_name)
    assert payment.status == "posted" and payment.rule == "single_loan"
    assert payment.borrower_id == jane_loan.borrower_id


@pytest.mark.parametrize("first_name", ["Jan", "Jane Wambui", "J%", "_ane", "%"])
def test_masked_payer_needs_a_whole_word_of_the_name(confirm, shortcode, jane_loan, first_name):
    payment = pay(confirm, BillRefNumber="xyz", MSISDN="2547 ***** 678", FirstName=first_name)
    assert payment.status == "unmatched"
    assert "no borrower with those digits is called" in payment.reason


def test_renamed_borrower_is_found_by_the_new_name_only(confirm, shortcode, jane_loan):
    borrower = db.session.get(Borrower, jane_loan.borrower_id)
    borrower.name = "Janet Achieng"
    db.session.commit()
    assert stored_keys(borrower.id) == [" janet achieng "]

    old = pay(confirm, BillRefNumber="xyz", MSISDN="2547 ***** 678", FirstName="JANE")
    assert old.status == "unmatched"
    new = pay(confirm, BillRefNumber="xyz", MSISDN="2547 ***** 678", FirstName="ACHIENG")
    assert new.status == "posted" and new.borrower_id == borrower.id


def test_rename_and_new_phone_in_one_flush_both_carry_the_new_name(confirm, shortcode, jane_loan):
    borrower = db.session.get(Borrower, jane_loan.borrower_id)
    assert len(borrower.phones) == 1  # loaded: its key is refreshed in memory as well
    borrower.name = "Grace Njeri"
    number = canonical_phone("0798 111 222")
    borrower.phones.append(
        BorrowerPhone(number=number, sha256=phone_sha256(number), masked_key=masked_key(number))
    )
    db.session.commit()
    assert [p.name_key for p in borrower.phones] == [" grace njeri ", " grace njeri "]
    assert stored_keys(borrower.id) == [" grace njeri ", " grace njeri "]

    payment = pay(confirm, BillRefNumber="", MSISDN="2547 ***** 222", FirstName="NJERI")
    assert payment.status == "posted" and payment.borrower_id == borrower.id


def test_phone_added_by_borrower_id_alone_carries_the_name(confirm, shortcode, jane_loan):
    number = canonical_phone("0733 000 444")
    db.session.add(
        BorrowerPhone(
            borrower_id=jane_loan.borrower_id,
            number=number,
            sha256=phone_sha256(number),
            masked_key=masked_key(number),
        )
    )
    db.session.commit()
    assert stored_keys(jane_loan.borrower_id)[-1] == " jane wambui wanjiku "
    payment = pay(confirm, BillRefNumber="", MSISDN="25473****444", FirstName="Wambui")
    assert payment.status == "posted" and payment.borrower_id == jane_loan.borrower_id


def test_phone_moved_to_another_borrower_takes_their_name(confirm, shortcode, jane_loan, make_loan):
    other = make_loan(number="LOAN-000777").borrower  # "Jane Wanjiku", phone 0712345678 too
    phone = db.session.scalars(
        select(BorrowerPhone).where(BorrowerPhone.borrower_id == jane_loan.borrower_id)
    ).one()
    db.session.delete(db.session.get(BorrowerPhone, other.phones[0].id))
    db.session.flush()
    phone.borrower_id = other.id
    db.session.commit()
    other.name = "Peter Otieno"
    db.session.commit()
    assert stored_keys(other.id) == [" peter otieno "]
    payment = pay(confirm, BillRefNumber="", MSISDN="2547 ***** 678", FirstName="PETER")
    assert payment.status == "posted" and payment.borrower_id == other.id


def test_phone_written_without_a_name_key_is_still_found(app, jane_loan):
    db.session.execute(text("UPDATE borrower_phone SET name_key = NULL"))
    db.session.commit()
    assert find_payer(db.session, "2547 ***** 678", "masked", "Wanjiku") == (
        jane_loan.borrower_id,
        "",
    )
    assert find_payer(db.session, "2547 ***** 678", "masked", "Peter")[0] is None


def test_import_gives_new_phones_the_name_as_the_book_spells_it(app, jane_loan):
    header = (
        "loan_number,borrower_name,national_id,phone,principal,interest,fees,disbursed_on,"
        "installments,frequency"
    )
    lines = [
        header,
        # Jane again, spelt in capitals, with a second phone; and a new borrower.
        "LOAN-000900,JANE WAMBUI  WANJIKU,23456789,0712345678;0722 555 666,1000,0,0,"
        "2025-01-01,4,monthly",
        "LOAN-000901,Ruth Chebet,34567890,0711 222 333,1000,0,0,2025-01-01,4,monthly",
    ]
    result = import_loans(db.session, lines, today=date(2025, 2, 1))
    assert result.ok, result.errors
    db.session.commit()
    rows = db.session.execute(
        select(BorrowerPhone.number, BorrowerPhone.name_key).order_by(BorrowerPhone.number)
    ).all()
    assert rows == [
        ("254711222333", " ruth chebet "),
        ("254712345678", " jane wambui wanjiku "),
        ("254722555666", " jane wambui wanjiku "),
    ]
    ruth = db.session.scalar(select(Borrower.id).where(Borrower.national_id == "34567890"))
    assert find_payer(db.session, "2547 ***** 333", "masked", "CHEBET") == (ruth, "")
    assert find_payer(db.session, "2547 ***** 666", "masked", "jane") == (
        jane_loan.borrower_id,
        "",
    )


# --- what a bill reference names, in one query -------------------------------------------


def test_reference_names_a_loan_before_a_national_id_or_a_phone(app, make_loan, make_borrower):
    # "23456789" is Jane's national ID and also, by its digits, loan LOAN-23456789's number.
    jane = make_borrower("Jane Wanjiku", national_id="23456789", phones=("0799000111",))
    other = make_loan(number="LOAN-23456789")
    loan, borrower_id, names = find_reference(db.session, "23456789")
    assert (loan.number, borrower_id) == ("LOAN-23456789", other.borrower_id)
    assert names == "loan LOAN-23456789"
    assert find_reference(db.session, " 2345 6789 ")[1] == other.borrower_id
    assert find_reference(db.session, "0799 000 111") == (None, jane.id, "phone 2547****0111")


def test_reference_with_two_loans_prefers_the_only_active_one(app, make_loan):
    active = make_loan(number="LOAN-000123")
    closed = make_loan(number="LOAN-0123")  # the same reference key, 123
    closed.status = "closed"
    db.session.commit()
    loan, borrower_id, _ = find_reference(db.session, "123")
    assert (loan.id, borrower_id) == (active.id, active.borrower_id)
    active.status = "closed"
    db.session.commit()
    assert find_reference(db.session, "123") == (None, None, "")


def test_reference_as_national_id_in_any_case(app, make_borrower):
    ruth = make_borrower("Ruth Chebet", national_id="A1234567", phones=("0711222333",))
    assert find_reference(db.session, " a1234567 ") == (None, ruth.id, "national ID a1234567")


def test_reference_as_a_phone_shared_by_two_borrowers_names_nobody(app, make_borrower):
    make_borrower("Jane Wanjiku", phones=("0712345678",))
    make_borrower("John Kamau", phones=("0712345678",))
    assert find_reference(db.session, "0712345678") == (None, None, "")
    assert find_reference(db.session, "school fees") == (None, None, "")
