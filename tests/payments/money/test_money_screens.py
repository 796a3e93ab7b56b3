"""The money screens through HTTP (the browser tests drive the same in Chromium): the loan
page's STK panel and its self-polling status, the payout request and approval screens, the
overview, and the STK commands."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select

from lenders.disbursements import Disbursement
from lenders.extensions import db
from payments.money_models import StkRequest
from tests.payments.money.conftest import active_loan, eventually

pytestmark = pytest.mark.usefixtures("live")


def test_the_stk_button_prompts_and_its_status_polls_until_settled(app, paybill, client, auth):
    officer = auth.login("officer")
    loan = active_loan(officer)
    page = client.get(f"/lenders/loans/{loan.number}").get_data(as_text=True)
    assert f'hx-get="/money/loans/{loan.number}/panel"' in page
    panel = client.hx_get(f"/money/loans/{loan.number}/panel").get_data(as_text=True)
    assert "Send M-Pesa prompt" in panel and 'value="10000"' in panel  # what is due now
    phone, paid_before = loan.borrower.phones[0].number, loan.paid

    answer = client.hx_post(
        f"/money/loans/{loan.number}/prompt", data={"amount": "2500", "phone": phone}
    )
    assert answer.status_code == 200
    [made] = db.session.scalars(select(StkRequest)).all()
    assert (made.amount, made.requested_by_id) == (2500, officer.id)

    def settled():
        answer = client.hx_get(f"/money/prompts/{made.id}")
        fragment = answer.get_data(as_text=True)
        if 'data-status="completed"' not in fragment:
            assert answer.headers.get("HX-Trigger") is None
            return None
        if "hx-trigger" in fragment:  # paid, and the payment not on the loan yet
            assert "Putting it on the loan" in fragment
            assert answer.headers.get("HX-Trigger") is None
            return None
        return answer

    answer = eventually(settled)
    fragment = answer.get_data(as_text=True)
    assert "Paid." in fragment and "Putting it on the loan" not in fragment  # polling stops
    assert answer.headers["HX-Trigger"] == "loan-changed"  # the loan page refreshes its figures
    assert db.session.get(type(loan), loan.id).paid == paid_before + 2500
    assert re.search(r'href="/payments/\d+">TK|href="/payments/\d+">[A-Z0-9]{10}<', fragment)


def test_a_refused_prompt_comes_back_with_the_reason(app, paybill, client, auth):
    officer = auth.login("officer")
    loan = active_loan(officer)
    answer = client.hx_post(
        f"/money/loans/{loan.number}/prompt",
        data={"amount": "99999", "phone": loan.borrower.phones[0].number},
    )
    assert answer.status_code == 422
    assert "more than loan" in answer.get_data(as_text=True)
    other = active_loan()  # another officer's portfolio: not found
    assert client.hx_get(f"/money/loans/{other.number}/panel").status_code == 404


def test_the_payout_screens_request_and_approve(app, paybill, client, auth, make_staff):
    officer = auth.login("officer")
    loan = active_loan(officer)
    loan.status = "pending"
    db.session.commit()
    panel = client.hx_get(f"/money/loans/{loan.number}/panel").get_data(as_text=True)
    assert "Request the payout by M-Pesa" in panel
    form = client.get(f"/money/loans/{loan.number}/disburse").get_data(as_text=True)
    assert "KES 10,000.00" in form
    answer = client.hx_post(
        f"/money/loans/{loan.number}/disburse", data={"phone": loan.borrower.phones[0].number}
    )
    assert answer.status_code == 204 and answer.headers["HX-Redirect"].startswith("/money/")
    payout = db.session.scalar(select(Disbursement))
    page = client.get(f"/money/disbursements/{payout.id}").get_data(as_text=True)
    assert "Approve and pay" not in page and "another admin approves" in page
    refused = client.hx_post(
        f"/money/disbursements/{payout.id}/approve", data={"shortcode_id": str(paybill.id)}
    )
    assert refused.status_code == 403  # officers never approve

    auth.logout()
    auth.login("admin")
    page = client.get(f"/money/disbursements/{payout.id}").get_data(as_text=True)
    assert "Approve and pay KES 10,000.00" in page
    assert f'hx-post="/money/shortcodes/{paybill.id}/balance"' in page  # asked on opening
    approved = client.hx_post(
        f"/money/disbursements/{payout.id}/approve", data={"shortcode_id": str(paybill.id)}
    )
    assert approved.status_code == 200  # the payout region, which polls while it is sent
    region = approved.get_data(as_text=True)
    assert "Approved: the payout is on its way." in region and "<h1>" not in region
    assert 'hx-trigger="every 2s"' in region

    def paid():
        status = client.hx_get(
            f"/money/disbursements/{payout.id}", headers={"HX-Target": "payout"}
        ).get_data(as_text=True)
        return 'data-status="completed"' in status and status

    status = eventually(paid)
    assert "M-Pesa receipt" in status and "hx-trigger" not in status
    overview = client.get("/money/").get_data(as_text=True)
    assert loan.number in overview and "completed" in overview


def test_stk_commands(app, paybill, runner, make_staff):
    officer = make_staff("officer")
    loan = active_loan(officer)
    args = ["payments", "stk-push", loan.number, "--amount", "300", "--by", officer.email]
    sent = runner.invoke(args=args)
    assert sent.exit_code == 0, sent.output
    shown = json.loads(sent.stdout)
    assert (shown["loan_number"], shown["amount"]) == (loan.number, "300.00")
    assert shown["status"] in ("pending", "completed") and shown["checkout_request_id"]
    assert "****" in shown["phone"]
    again = runner.invoke(args=args)
    assert again.exit_code == 1  # the phone has an open prompt, or 17 from M-Pesa
    eventually(lambda: db.session.get(StkRequest, shown["id"]).status == "completed")
    listed = json.loads(runner.invoke(args=["payments", "stk-requests", "--json"]).stdout)
    assert listed[-1]["id"] == shown["id"] and listed[-1]["status"] == "completed"
    assert set(listed[-1]) >= {
        "loan_number",
        "amount",
        "phone",
        "result_code",
        "result_desc",
        "receipt",
        "created_at",
    }
    closed = active_loan(officer)
    closed.status = "closed"
    db.session.commit()
    refused = runner.invoke(args=["payments", "stk-push", closed.number, "--by", officer.email])
    assert refused.exit_code == 1 and "nothing to collect" in refused.output


@pytest.mark.parametrize(
    "status", ["requested", "approved", "sent", "ambiguous", "failed", "completed", "cancelled"]
)
def test_a_payout_page_reads_right_in_every_state(app, paybill, client, auth, make_staff, status):
    from lenders.disbursements import request_disbursement

    auth.login("admin")
    officer = make_staff("officer")
    loan = active_loan(officer)
    loan.status = "pending"
    db.session.commit()
    payout = request_disbursement(db.session, loan, actor=officer)
    payout.status, payout.reason = status, "Safaricom took the request; asking again."
    payout.receipt = "TL3AB12CDE" if status == "completed" else None
    db.session.commit()
    page = client.get(f"/money/disbursements/{payout.id}").get_data(as_text=True)
    assert f'data-status="{status}"' in page
    assert f'<span class="badge badge-{status}">{status}</span>' in page
    assert ('hx-trigger="every 2s"' in page) == (status in ("approved", "sent", "ambiguous"))
    assert ("Approve and pay" in page) == (status == "requested")
    assert ("Retry the payout" in page) == (status == "failed")
    assert ("Ask Safaricom what became of it" in page) == (status in ("sent", "ambiguous"))
    assert ("Cancel the payout" in page) == (status in ("requested", "approved", "failed"))
    assert client.get("/money/").status_code == 200
