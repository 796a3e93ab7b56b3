"""Officers fix what the matcher could not: assign, reassign (with maker-checker),
match again. Each is one audited step, scoped to the officer's portfolio."""

import re
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from lenders.extensions import db
from lenders.models import AuditEvent, Loan, Repayment
from payments import transactions
from payments.backoffice import set_maker_checker
from payments.models import C2BPayment, ReassignmentRequest
from tests.payments.conftest import c2b_body, loan_for, pay

pytestmark = pytest.mark.both_databases
D = Decimal


def stranger_payment(confirm, amount="1500.00"):
    return pay(
        confirm,
        BillRefNumber="no idea",
        MSISDN="2547 ***** 999",
        FirstName="STRANGER",
        TransAmount=amount,
    )


def post_action(client, payment, action, **data):
    return client.hx_post(
        f"/payments/{payment.id}/{action}", data=data, token_from=f"/payments/{payment.id}"
    )


def assert_panel_answer(response, message: str) -> None:
    """A successful action under HTMX: the payment's panel with the message, no page load,
    and the event the page's other regions refresh on."""
    body = response.get_data(as_text=True)
    assert response.status_code == 200, body[:500]
    assert response.headers["HX-Trigger"] == "payments-changed"
    assert "HX-Redirect" not in response.headers and "<html" not in body
    assert body.lstrip().startswith('<section id="payment-panel">')
    assert f'<p class="flash" role="status">{message}</p>' in body


def test_officer_assigns_an_unmatched_payment_to_a_loan_with_a_reason(
    client, auth, shortcode, confirm
):
    officer = auth.login("officer")
    loan = loan_for(officer, "LOAN-000777")
    payment = stranger_payment(confirm)
    assert payment.status == "unmatched"

    response = post_action(
        client,
        payment,
        "assign",
        loan_number="loan 777",
        reason="borrower called: paid from his wife's phone",
    )
    assert_panel_answer(response, f"Payment {payment.trans_id} posted to LOAN-000777.")
    assert "Reassign to another loan" in response.get_data(as_text=True)  # the panel moved on
    db.session.expire_all()
    payment = db.session.get(C2BPayment, payment.id)
    assert payment.status == "posted" and payment.rule == "manual"
    assert "wife's phone" in payment.reason
    assert db.session.get(Loan, loan.id).paid == D("1500.00")
    event = db.session.scalars(
        select(AuditEvent).where(
            AuditEvent.entity_type == "c2b_payment", AuditEvent.action == "payment.posted"
        )
    ).one()
    assert event.actor_id == officer.id


def test_without_javascript_an_assignment_goes_back_to_the_payment_page_with_the_message(
    client, auth, shortcode, confirm
):
    officer = auth.login("officer")
    loan_for(officer, "LOAN-000790")
    payment = stranger_payment(confirm)
    token = client.csrf_token(f"/payments/{payment.id}")

    response = client.post(
        f"/payments/{payment.id}/assign",
        data={"csrf_token": token, "loan_number": "LOAN-000790", "reason": "called the office"},
    )

    assert response.status_code == 303
    assert response.headers["Location"] == f"/payments/{payment.id}"
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert f"Payment {payment.trans_id} posted to LOAN-000790." in page
    assert "Reassign to another loan" in page


def test_the_payment_pages_regions_refresh_themselves_after_an_action(
    client, auth, shortcode, confirm
):
    """The summary and the record listen to payments-changed and ask for their block."""
    officer = auth.login("officer")
    loan_for(officer, "LOAN-000791")
    payment = stranger_payment(confirm)
    page = client.get(f"/payments/{payment.id}").get_data(as_text=True)
    for region in ("payment-summary", "payment-record"):
        assert re.search(
            rf'<div id="{region}" hx-get="/payments/{payment.id}" '
            r'hx-trigger="payments-changed from:body"',
            page,
        ), region
    post_action(client, payment, "assign", loan_number="LOAN-000791", reason="her brother paid")

    summary = client.hx_get(f"/payments/{payment.id}", headers={"HX-Target": "payment-summary"})
    record = client.hx_get(f"/payments/{payment.id}", headers={"HX-Target": "payment-record"})

    assert "HX-Request" in summary.headers["Vary"]
    summary, record = summary.get_data(as_text=True), record.get_data(as_text=True)
    assert summary.lstrip().startswith('<div id="payment-summary"') and "<html" not in summary
    assert '<span class="badge badge-posted">posted</span>' in summary
    assert record.lstrip().startswith('<div id="payment-record"') and "<html" not in record
    assert 'href="/lenders/loans/LOAN-000791"' in record and "her brother paid" in record


def test_matching_one_payment_again_answers_its_panel(client, auth, shortcode, confirm):
    auth.login("officer")
    payment = stranger_payment(confirm)
    token = client.csrf_token(f"/payments/{payment.id}")
    response = client.post(
        f"/payments/{payment.id}/rematch",
        data={"csrf_token": token},
        headers={"HX-Request": "true"},
    )
    assert_panel_answer(response, "Matched again: unmatched.")


def test_assigning_without_a_reason_is_refused_with_a_form_error(client, auth, shortcode, confirm):
    officer = auth.login("officer")
    loan_for(officer, "LOAN-000778")
    payment = stranger_payment(confirm)
    response = post_action(client, payment, "assign", loan_number="LOAN-000778", reason=" ")
    assert response.status_code == 422
    assert "Say why" in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(C2BPayment, payment.id).status == "unmatched"


def test_officer_cannot_assign_to_another_officers_loan(
    client, auth, make_staff, shortcode, confirm
):
    auth.login("officer")
    theirs = loan_for(make_staff("officer"), "LOAN-000779")
    payment = stranger_payment(confirm)
    response = post_action(client, payment, "assign", loan_number=theirs.number, reason="x")
    assert response.status_code == 422
    db.session.expire_all()
    assert db.session.get(Loan, theirs.id).paid == 0


def test_officer_cannot_open_a_payment_posted_to_another_portfolio(
    client, auth, make_staff, shortcode, confirm
):
    auth.login("officer")
    theirs = loan_for(make_staff("officer"), "LOAN-000780")
    payment = pay(confirm, BillRefNumber=theirs.number, TransID="TK6THEIRS1")
    assert payment.status == "posted"
    assert client.get(f"/payments/{payment.id}").status_code == 404
    assert post_action(client, payment, "reassign", loan_number="x", reason="x").status_code == 404
    listing = client.get("/payments/transactions/").get_data(as_text=True)
    assert "TK6THEIRS1" not in listing


def test_reassigning_moves_the_money_in_one_step_and_both_loans_show_it(
    client, auth, shortcode, confirm
):
    officer = auth.login("officer")
    wrong = loan_for(officer, "LOAN-000781", "Ann Wrong")
    right = loan_for(officer, "LOAN-000782", "Ann Right")
    payment = pay(confirm, BillRefNumber=wrong.number, TransID="TK6REASSN1", TransAmount="2000")

    response = post_action(
        client,
        payment,
        "reassign",
        loan_number=right.number,
        reason="typed her sister's loan number",
    )
    assert_panel_answer(response, f"Payment TK6REASSN1 moved to {right.number}.")
    db.session.expire_all()
    assert db.session.get(Loan, wrong.id).paid == 0
    assert db.session.get(Loan, right.id).paid == D("2000.00")
    payment = db.session.get(C2BPayment, payment.id)
    assert payment.status == "posted" and payment.rule == "manual"
    reversed_ = db.session.scalars(select(Repayment).where(Repayment.loan_id == wrong.id)).one()
    assert reversed_.reversed and "sister" in reversed_.reversal_reason
    for loan in (wrong, right):
        page = client.get(f"/lenders/loans/{loan.number}").get_data(as_text=True)
        assert "TK6REASSN1" in page


def test_a_reassigned_payment_shows_only_the_loan_it_is_on_now(client, auth, shortcode, confirm):
    officer = auth.login("officer")
    wrong = loan_for(officer, "LOAN-000911", "Ben Wrong", phones=())
    right = loan_for(officer, "LOAN-000912", "Ben Right", phones=())
    payment = pay(confirm, BillRefNumber=wrong.number, TransID="TK6MOVED01", TransAmount="900")
    response = post_action(
        client, payment, "reassign", loan_number=right.number, reason="typed her sister's loan"
    )
    assert response.status_code == 200 and response.headers["HX-Trigger"] == "payments-changed"
    db.session.expire_all()

    rows, cursor = transactions.find_payments(db.session, officer, transactions.TransactionFilter())
    assert [(row.trans_id, row.loans) for row in rows] == [("TK6MOVED01", (right.number,))]
    assert cursor is None
    page = client.get("/payments/transactions/").get_data(as_text=True)
    assert f"<td>{right.number}</td>" in page
    assert page.count(wrong.number) == 1  # the account the payer typed, not a loan posted to


def test_with_maker_checker_an_officers_reassignment_waits_for_an_admin(
    app, client, auth, make_staff, shortcode, confirm
):
    admin = make_staff("admin")
    set_maker_checker(db.session, True, actor=admin)
    db.session.commit()
    officer = auth.login("officer")
    wrong = loan_for(officer, "LOAN-000783", "Ben Wrong")
    right = loan_for(officer, "LOAN-000784", "Ben Right")
    payment = pay(confirm, BillRefNumber=wrong.number, TransID="TK6CHECKR1", TransAmount="900")

    assert_panel_answer(
        post_action(client, payment, "reassign", loan_number=right.number, reason="wrong loan"),
        f"Reassignment to {right.number} is waiting for an admin&#39;s approval.",
    )
    db.session.expire_all()
    assert db.session.get(Loan, wrong.id).paid == D("900.00")  # nothing moved yet
    request = db.session.scalars(select(ReassignmentRequest)).one()
    assert request.status == "pending"

    auth.logout()
    auth.login(user=admin)
    token = client.csrf_token("/payments/reassignments/")
    response = client.post(
        f"/payments/reassignments/{request.id}/approve", data={"csrf_token": token}
    )
    assert response.status_code == 303  # without JavaScript: back to the list
    db.session.expire_all()
    assert db.session.get(Loan, wrong.id).paid == 0
    assert db.session.get(Loan, right.id).paid == D("900.00")
    assert db.session.get(ReassignmentRequest, request.id).status == "approved"


def test_an_admin_decides_in_place_and_a_request_decided_already_is_refused(
    client, auth, make_staff, shortcode, confirm
):
    from payments.backoffice import reassign_payment

    admin, officer = make_staff("admin"), make_staff("officer")
    set_maker_checker(db.session, True, actor=admin)
    wrong = loan_for(officer, "LOAN-000792", "Eve Wrong")
    right = loan_for(officer, "LOAN-000793", "Eve Right")
    payment = pay(confirm, BillRefNumber=wrong.number, TransID="TK6DECIDE1", TransAmount="700")
    request = reassign_payment(
        db.session, payment.id, right, actor=officer, reason="her other loan"
    )
    db.session.commit()
    auth.login(user=admin)
    url = f"/payments/reassignments/{request.id}/reject"

    response = client.hx_post(url, token_from="/payments/reassignments/")

    body = response.get_data(as_text=True)
    assert response.status_code == 200 and response.headers["HX-Trigger"] == "payments-changed"
    assert body.lstrip().startswith('<section id="approvals-panel">') and "<html" not in body
    assert "Reassignment rejected." in body and "Nothing is waiting." in body
    again = client.hx_post(url, token_from="/payments/reassignments/")
    assert again.status_code == 422 and "HX-Trigger" not in again.headers
    assert '<p class="error" role="alert">this request is no longer waiting</p>' in again.get_data(
        as_text=True
    )
    db.session.expire_all()
    assert db.session.get(Loan, wrong.id).paid == D("700.00")  # nothing moved


def test_matching_again_after_a_phone_is_added_posts_the_payment(client, auth, shortcode, confirm):
    officer = auth.login("officer")
    loan_for(officer, "LOAN-000785", "Stranger Otieno")
    payment = stranger_payment(confirm)
    assert payment.status == "unmatched"
    # the officer learns the payer's number and adds it to the borrower
    from lenders.models import Borrower, BorrowerPhone
    from lenders.phones import masked_key, phone_sha256

    borrower = db.session.scalars(select(Borrower).where(Borrower.name == "Stranger Otieno")).one()
    number = "254700111999"
    borrower.phones.append(
        BorrowerPhone(number=number, sha256=phone_sha256(number), masked_key=masked_key(number))
    )
    db.session.commit()
    page = client.get("/payments/unmatched/").get_data(as_text=True)
    assert payment.trans_id in page
    assert '<div id="unmatched-queue" hx-get="/payments/unmatched/" ' in page
    token = client.csrf_token("/payments/unmatched/")
    response = client.post(
        "/payments/reprocess",
        data={"csrf_token": token, "payment_id": [str(payment.id)]},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200 and "posted" in response.get_data(as_text=True)
    assert response.headers["HX-Trigger"] == "payments-changed"
    db.session.expire_all()
    assert db.session.get(C2BPayment, payment.id).status == "posted"
    # the queue, refreshing itself on payments-changed, no longer holds it
    queue = client.hx_get("/payments/unmatched/", headers={"HX-Target": "unmatched-queue"})
    queue = queue.get_data(as_text=True)
    assert queue.lstrip().startswith('<div id="unmatched-queue"') and "<html" not in queue
    assert payment.trans_id not in queue and "Nothing waits" in queue


def test_transactions_filter_by_phone_in_any_form_and_export_the_same_set(
    client, auth, shortcode, confirm
):
    auth.login("admin")
    confirm(c2b_body(TransID="TK6PHONE01", MSISDN="254712345678"))
    confirm(c2b_body(TransID="TK6PHONE02", MSISDN="254799999999"))
    page = client.get("/payments/transactions/?phone=0712+345+678").get_data(as_text=True)
    assert "TK6PHONE01" in page and "TK6PHONE02" not in page
    csv_text = client.get("/payments/transactions/export.csv?phone=0712345678").get_data(True)
    assert "TK6PHONE01" in csv_text and "TK6PHONE02" not in csv_text
    assert csv_text.splitlines()[0].startswith("trans_id,shortcode,trans_time")


def test_dashboard_counts_what_waits(client, auth, shortcode, confirm):
    auth.login("admin")
    stranger_payment(confirm)
    page = client.get("/payments/dashboard/").get_data(as_text=True)
    assert "1</a> unmatched" in page
    fragment = client.get(
        "/payments/dashboard/", headers={"HX-Request": "true", "HX-Target": "figures"}
    )
    assert "<html" not in fragment.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(C2BPayment)) == 1
