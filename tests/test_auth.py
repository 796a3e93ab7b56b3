"""Logging in and out, and how sessions end."""

import logging
import re

import pytest
from freezegun import freeze_time

from lenders.auth import BAD_LOGIN
from lenders.extensions import db
from lenders.web import BACKGROUND_POLL
from tests.conftest import PASSWORD, AuthActions, htmx_client


def post_login(client, email, password, next_=None, env=None):
    """The login form as a browser posts it; with ``env`` (another address), the status."""
    where = {"environ_base": env} if env else {}
    page = client.get("/login", **where).get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    path = "/login" + (f"?next={next_}" if next_ else "")
    data = {"email": email, "password": password, "csrf_token": token}
    response = client.post(path, data=data, **where)
    return response.status_code if env else response


def sent_to_login(response) -> bool:
    return response.status_code == 303 and response.headers["Location"].startswith("/login")


def test_login_sends_staff_to_where_they_were_going(client, make_staff):
    user = make_staff("officer")
    response = post_login(client, user.email.upper(), PASSWORD, next_="/lenders/borrowers/?q=ja")
    assert response.status_code == 303
    assert response.headers["Location"] == "/lenders/borrowers/?q=ja"


@pytest.mark.parametrize(
    "next_", ["https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:x"]
)
def test_login_ignores_a_next_that_leaves_the_site(client, make_staff, next_):
    user = make_staff("officer")
    response = post_login(client, user.email, PASSWORD, next_=next_)
    assert response.headers["Location"] == "/"


def test_wrong_password_and_unknown_email_get_the_same_answer(client, make_staff, caplog):
    user = make_staff("officer")
    wrong_password = post_login(client, user.email, "not the password")
    unknown_email = post_login(client, "nobody@example.test", PASSWORD)
    for response in (wrong_password, unknown_email):
        assert response.status_code == 422
        assert BAD_LOGIN in response.get_data(as_text=True)
    assert client.get("/lenders/borrowers/").status_code == 303  # still anonymous


def test_inactive_staff_cannot_log_in(client, make_staff):
    user = make_staff("officer", active=False)
    response = post_login(client, user.email, PASSWORD)
    assert response.status_code == 422
    assert BAD_LOGIN in response.get_data(as_text=True)  # no hint that the account exists
    assert sent_to_login(client.get("/lenders/borrowers/"))


def test_login_attempts_are_rate_limited(client, make_staff):
    user = make_staff("officer")
    statuses = [post_login(client, user.email, "wrong password").status_code for _ in range(11)]
    assert statuses[:10] == [422] * 10
    assert statuses[10] == 429
    # even the right password waits now
    assert post_login(client, user.email, PASSWORD).status_code == 429


def test_wrong_guesses_at_one_account_do_not_lock_out_a_colleague_on_the_same_address(
    app, client, make_staff
):
    target, colleague = make_staff("officer"), make_staff("officer")
    for _ in range(10):
        assert post_login(client, target.email, "wrong password").status_code == 422
    assert post_login(client, target.email.upper(), PASSWORD).status_code == 429
    same_office = app.test_client()  # another browser behind the same address
    assert post_login(same_office, colleague.email, PASSWORD).status_code == 303


def test_the_account_limit_holds_from_every_address(app, make_staff):
    target = make_staff("officer")
    for n in range(10):
        elsewhere = {"REMOTE_ADDR": f"10.0.0.{n + 1}"}
        assert post_login(app.test_client(), target.email, "x" * 12, env=elsewhere) == 422
    last = post_login(app.test_client(), target.email, PASSWORD, env={"REMOTE_ADDR": "10.0.1.1"})
    assert last == 429


def test_one_address_guessing_at_many_accounts_is_stopped(app, client, make_staff):
    statuses = [
        post_login(client, f"nobody{n}@example.test", "wrong password").status_code
        for n in range(31)
    ]
    assert statuses[:30] == [422] * 30 and statuses[30] == 429
    elsewhere = app.test_client()
    user = make_staff("officer")
    assert post_login(elsewhere, user.email, PASSWORD, env={"REMOTE_ADDR": "10.9.9.9"}) == 303


def test_successful_logins_do_not_count_against_the_limit(client, auth, make_staff):
    user = make_staff("officer")
    for _ in range(12):
        auth.login(user=user)  # each answers 303 to the borrowers list, not 429
        assert sent_to_login(auth.logout())
    assert post_login(client, user.email, "one typo").status_code == 422  # not yet limited


def test_session_cookie_is_httponly_lax_and_changes_at_login(client, make_staff):
    user = make_staff("officer")
    client.get("/login")
    before = client.get_cookie("session").value
    response = post_login(client, user.email, PASSWORD)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get_cookie("session").value != before


def test_session_cookie_is_secure_when_served_over_https(app_factory):
    app = app_factory(PUBLIC_BASE_URL="https://lender.example")
    assert app.config["SESSION_COOKIE_SECURE"] is True


def test_logout_ends_the_session_even_for_a_replayed_cookie(client, auth):
    auth.login("officer")
    stolen = client.get_cookie("session").value
    assert auth.logout().status_code == 303
    client.set_cookie("session", stolen)
    response = client.get("/lenders/borrowers/")
    assert response.status_code == 303 and response.headers["Location"].startswith("/login")


def test_deactivating_a_user_ends_their_sessions(client, auth):
    user = auth.login("officer")
    user.active = False
    db.session.commit()
    assert sent_to_login(client.get("/lenders/borrowers/"))


def test_idle_session_expires_after_thirty_minutes(client, auth):
    with freeze_time("2026-01-05 08:00:00") as clock:
        auth.login("officer")
        clock.tick(29 * 60)
        assert "<h1>Borrowers</h1>" in client.get("/lenders/borrowers/").get_data(as_text=True)
        clock.tick(29 * 60)  # activity above kept it alive
        assert "<h1>Borrowers</h1>" in client.get("/lenders/borrowers/").get_data(as_text=True)
        clock.tick(31 * 60)
        assert sent_to_login(client.get("/lenders/borrowers/"))


def test_the_dashboards_own_polling_does_not_keep_an_idle_session_alive(client, auth):
    page = None
    with freeze_time("2026-01-05 08:00:00") as clock:
        auth.login("officer")
        page = client.get("/payments/dashboard/").get_data(as_text=True)
        poll = {"HX-Request": "true", "HX-Target": "figures", BACKGROUND_POLL: "true"}
        for _ in range(29 * 2):  # every 30 seconds, nobody at the desk
            clock.tick(30)
            assert client.get("/payments/dashboard/", headers=poll).status_code == 200
        clock.tick(2 * 60)
        ended = client.get("/payments/dashboard/", headers=poll)
        assert ended.status_code == 204 and ended.headers["HX-Redirect"].startswith("/login")
        assert client.get("/lenders/borrowers/").status_code == 303
    polled = re.search(r'<div id="figures"[^>]*>', page).group(0)
    assert "every 30s" in polled and BACKGROUND_POLL in polled


def test_session_ends_after_twelve_hours_however_busy(client, auth):
    with freeze_time("2026-01-05 08:00:00") as clock:
        auth.login("officer")
        for _ in range(12 * 3 + 1):
            clock.tick(20 * 60)
            client.get("/lenders/borrowers/")
        assert sent_to_login(client.get("/lenders/borrowers/"))


def test_expired_session_in_an_htmx_request_redirects_the_whole_page(client):
    response = client.get(
        "/lenders/borrowers/?q=jane",
        headers={"HX-Request": "true", "HX-Current-URL": "http://localhost/lenders/borrowers/"},
    )
    assert response.status_code == 204
    assert response.headers["HX-Redirect"] == "/login?next=/lenders/borrowers/"


def test_failed_logins_are_logged_without_the_password(client, make_staff, caplog):
    user = make_staff("officer")
    with caplog.at_level(logging.INFO, logger="marejesho.security"):
        post_login(client, user.email, "hunter2-secret-guess")
    assert any("login failed" in r.getMessage() for r in caplog.records)
    assert "hunter2-secret-guess" not in caplog.text


def test_admin_deactivating_someone_ends_their_session_at_once(app, make_staff):
    officer_client, admin_client = htmx_client(app), htmx_client(app)
    officer = AuthActions(officer_client, make_staff).login("officer")
    AuthActions(admin_client, make_staff).login("admin")
    assert "<h1>Borrowers</h1>" in officer_client.get("/lenders/borrowers/").get_data(True)
    token = admin_client.csrf_token("/lenders/staff/")
    response = admin_client.post(
        f"/lenders/staff/{officer.id}/deactivate", data={"csrf_token": token}
    )
    assert response.status_code == 303
    assert sent_to_login(officer_client.get("/lenders/borrowers/"))


def test_admin_adds_an_officer_who_can_then_log_in(app, client, auth):
    auth.login("admin")
    token = client.csrf_token("/lenders/staff/")
    response = client.post(
        "/lenders/staff/",
        data={
            "csrf_token": token,
            "email": "New.Officer@Lender.test",
            "name": "New Officer",
            "role": "officer",
            "password": "a long password",
        },
    )
    assert response.status_code == 303
    short = client.post(
        "/lenders/staff/",
        data={
            "csrf_token": token,
            "email": "x@lender.test",
            "name": "X",
            "role": "officer",
            "password": "short",
        },
    )
    assert short.status_code == 422 and "at least 10" in short.get_data(as_text=True)
    other = app.test_client()
    page = other.get("/login").get_data(True)
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    assert (
        other.post(
            "/login",
            data={
                "email": "new.officer@lender.test",
                "password": "a long password",
                "csrf_token": token,
            },
        ).status_code
        == 303
    )
