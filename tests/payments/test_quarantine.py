"""The admins' screen of quarantined and conflicting callbacks: newest first, in pages, each
body escaped and cut, each linked to its payment; nobody else sees it."""

from __future__ import annotations

import re

import pytest

from lenders.extensions import db
from payments.models import CallbackLog
from payments.quarantine import BODY_SHOWN, PAGE
from tests.payments.conftest import c2b_body

pytestmark = pytest.mark.both_databases


def test_admins_see_what_was_quarantined_newest_first(client, auth, confirm):
    first = c2b_body(TransAmount="1000.00")
    confirm(first)  # stored: not shown
    confirm(first)  # duplicate: not shown
    confirm("this is not JSON")  # quarantined
    confirm(first | {"TransAmount": "2000.00"})  # conflict, newer
    auth.login("admin")
    page = client.get("/payments/callbacks/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    rows = re.findall(r'<tr id="callback-(\d+)">', html)
    assert len(rows) == 2 and int(rows[0]) > int(rows[1])
    conflict = html.index(f'id="callback-{rows[0]}"')
    assert html.index(">conflict<", conflict) < html.index(f'id="callback-{rows[1]}"')
    assert "this is not JSON" in html
    assert "the body is not JSON" in html  # why it was quarantined
    payment_link = re.search(r'href="/payments/(\d+)">' + first["TransID"], html)
    assert payment_link, "the conflict links to its payment"


def test_bodies_are_shown_escaped_and_cut(client, auth, confirm):
    hostile = '<script>alert("x")</script>' + "A" * (BODY_SHOWN * 3)
    confirm(hostile)
    auth.login("admin")
    html = client.get("/payments/callbacks/").get_data(as_text=True)
    assert '<script>alert("x")' not in html
    assert "&lt;script&gt;" in html
    assert "A" * (BODY_SHOWN * 2) not in html
    assert f"{len(hostile) - BODY_SHOWN:,} more characters not shown" in html


def test_older_callbacks_come_a_page_at_a_time(client, auth, shortcode):
    for n in range(PAGE + 5):
        db.session.add(
            CallbackLog(
                shortcode_id=shortcode.id,
                kind="confirmation",
                body=f"junk body {n}",
                outcome="quarantined",
                error="the body is not JSON",
            )
        )
    db.session.commit()
    auth.login("admin")
    html = client.get("/payments/callbacks/").get_data(as_text=True)
    assert len(re.findall(r'<tr id="callback-', html)) == PAGE
    assert f"junk body {PAGE + 4}" in html and "junk body 4<" not in html
    older = re.search(r'hx-get="([^"]+)"[^>]*hx-target="#more-callbacks"', html).group(1)
    more = client.hx_get(older.replace("&amp;", "&"), headers={"HX-Target": "more-callbacks"})
    fragment = more.get_data(as_text=True)
    assert "<h1>" not in fragment  # only the rows
    assert len(re.findall(r'<tr id="callback-', fragment)) == 5
    assert "junk body 0<" in fragment and "more-callbacks" not in fragment


def test_the_outcome_filter_and_bad_parameters(client, auth, confirm):
    first = c2b_body()
    confirm(first)
    confirm(first | {"TransAmount": "5.00"})
    confirm("junk")
    auth.login("admin")
    only = client.get("/payments/callbacks/?outcome=conflict").get_data(as_text=True)
    assert len(re.findall(r'<tr id="callback-', only)) == 1 and ">conflict<" in only
    for query in ("?outcome=stored", "?before=abc", "?before=-1", "?before=999999999999"):
        response = client.get("/payments/callbacks/" + query)
        assert response.status_code == 200, query
    assert client.get("/payments/callbacks/?outcome=%00").status_code == 400  # NUL: refused


def test_officers_cannot_read_callback_bodies(client, auth, confirm):
    confirm("secret junk")
    auth.login("officer")
    response = client.get("/payments/callbacks/")
    assert response.status_code == 403
    assert "secret junk" not in response.get_data(as_text=True)
