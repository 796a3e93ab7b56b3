"""The payments back-office's forms: the transactions filter, actions on a payment, a
shortcode's settings, money out and back (an STK prompt, a payout's request and approval,
a reversal), the SMS provider and templates, and reconciliation's (a statement's upload, a
day's sign-off, the registration for Pull Transactions)."""

from __future__ import annotations

from dataclasses import fields
from datetime import date, datetime
from enum import StrEnum

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import (
    DateField,
    DecimalField,
    HiddenField,
    IntegerField,
    PasswordField,
    SearchField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp

from lenders.money import InvalidAmount, parse_amount
from payments import shortcodes
from payments.models import MatchRule, PaymentStatus
from payments.transactions import TransactionFilter

# --- the transactions filter ------------------------------------------------------------
# Read from the URL (``formdata=request.args``, no CSRF token): every field has a
# meaning for any text, so a hand-edited or stale bookmark opens (an unreadable value is
# no filter) and the form never has errors to show.


def _trimmed(limit: int):
    return lambda value: (value or "").strip()[:limit]


def _one_of(enum: type[StrEnum]):
    """The member named by the URL's text, or "" (no filter) for any other text."""
    values = {member.value: member for member in enum}
    return lambda value: values.get(value, "")


FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(2999, 12, 31)


class AmountFilter(DecimalField):
    """An amount as ``parse_amount`` reads one (thousands commas allowed, "1,500"); anything
    else (negative, more than two decimals, too large, not a number) is no filter."""

    def process_formdata(self, valuelist):
        self.data = None
        if valuelist:
            try:
                self.data = parse_amount(valuelist[0])
            except InvalidAmount:
                return

    def _value(self):
        return "" if self.data is None else str(self.data)


class DayFilter(DateField):
    """A day as the date input sends it (YYYY-MM-DD) between FIRST_DAY and LAST_DAY;
    anything else is no filter."""

    def process_formdata(self, valuelist):
        self.data = None
        if valuelist:
            try:
                found = datetime.strptime(valuelist[0], "%Y-%m-%d").date()
            except ValueError:
                return
            self.data = found if FIRST_DAY <= found <= LAST_DAY else None

    def _value(self):
        return self.data.isoformat() if self.data else ""


class TransactionFilterForm(FlaskForm):
    """The transactions page's filters, as they sit in the URL."""

    q = SearchField("Name, account or receipt", filters=[_trimmed(60)])
    phone = SearchField("Phone", filters=[_trimmed(40)])
    loan = SearchField("Loan number", filters=[_trimmed(40)])
    amount_min = AmountFilter("Amount from")
    amount_max = AmountFilter("Amount to")
    date_from = DayFilter("From date")
    date_to = DayFilter("To date")
    status = SelectField(
        "Status",
        choices=[SelectChoice("", "Any status")]
        + [SelectChoice(s.value, s.value) for s in PaymentStatus],
        filters=[_one_of(PaymentStatus)],
    )
    rule = SelectField(
        "Rule",
        choices=[SelectChoice("", "Any rule")]
        + [SelectChoice(r.value, r.replace("_", " ")) for r in MatchRule],
        filters=[_one_of(MatchRule)],
    )
    # Any shortcode typed in the URL filters (one we do not have shows nothing); the
    # list offers the ones we have.
    shortcode = SelectField("Shortcode", validate_choice=False, filters=[_trimmed(12)])

    def __init__(self, *args, shortcodes: tuple[str, ...] | list[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.shortcode.choices = [SelectChoice("", "Any shortcode")] + [
            SelectChoice(number, number) for number in shortcodes
        ]

    def to_filter(self) -> TransactionFilter:
        return TransactionFilter(**{f.name: self[f.name].data for f in fields(TransactionFilter)})


# --- actions on a payment ---------------------------------------------------------------


class ReasonForm(FlaskForm):
    """An action on a payment: where to, and why (always required)."""

    loan_number = StringField("Loan number", validators=[Optional(), Length(max=40)])
    borrower_id = HiddenField()
    reason = TextAreaField(
        "Reason (required)", validators=[DataRequired("Say why."), Length(max=500)]
    )


# --- a shortcode ------------------------------------------------------------------------


class ShortcodeForm(FlaskForm):
    number = StringField("Shortcode number")
    name = StringField("Name")
    kind = SelectField(
        "Kind",
        choices=[SelectChoice("paybill", "Paybill"), SelectChoice("till", "Till (Buy Goods)")],
    )
    register_version = SelectField(
        "Payer numbers",
        choices=[SelectChoice("v2", "Masked (C2B v2)"), SelectChoice("v1", "Hashed (C2B v1)")],
    )
    amount_tolerance = StringField("Amount tolerance (KES)", default="10.00")
    validation_policy = SelectField(
        "Validation",
        choices=[
            SelectChoice("accept_all", "Accept every payment"),
            SelectChoice("reject_unknown", "Reject accounts that name no loan or borrower"),
        ],
    )
    allowed_ips = StringField("Allowed source addresses (optional, comma-separated)")
    initiator_name = StringField("Initiator name")
    # Write-only: rendered empty, stored encrypted, shown as "set".
    consumer_key = PasswordField("Consumer key", render_kw={"autocomplete": "off"})
    consumer_secret = PasswordField("Consumer secret", render_kw={"autocomplete": "off"})
    passkey = PasswordField("Lipa na M-Pesa passkey", render_kw={"autocomplete": "off"})
    initiator_password = PasswordField(
        "Initiator password", render_kw={"autocomplete": "new-password"}
    )

    def to_input(self) -> shortcodes.ShortcodeInput:
        return shortcodes.ShortcodeInput(
            **{
                name: (field.data or "")
                for name, field in self._fields.items()
                if name in shortcodes.ShortcodeInput.__dataclass_fields__
            }
        )


class TestPaymentForm(FlaskForm):
    __test__ = False  # not a pytest test class

    amount = IntegerField("Amount (KES)", default=100, validators=[NumberRange(1, 150000)])
    msisdn = StringField("Payer phone", default="254708374149")
    bill_ref = StringField("Account", default="LOAN-000123", validators=[Optional()])


# --- money out and back -------------------------------------------------------------------
# The phone and shortcode choices are filled per request by the view (the borrower's phones,
# the shortcodes that can pay out); a value not among them is refused. Their controls have
# ids of their own: they share a page with other forms (a payment's reason field).


class PromptForm(FlaskForm):
    """The STK button: how much, to which of the borrower's phones."""

    amount = IntegerField(
        "Amount (KES)", id="prompt-amount", validators=[Optional(), NumberRange(1, 250000)]
    )
    phone = SelectField("Phone", id="prompt-phone", choices=[], validate_choice=True)


class PayoutRequestForm(FlaskForm):
    phone = SelectField("Pay to", id="payout-phone", choices=[], validate_choice=True)


class PayoutApprovalForm(FlaskForm):
    shortcode_id = SelectField(
        "Pay from", id="payout-shortcode", choices=[], coerce=int, validate_choice=True
    )


class RefundForm(FlaskForm):
    """Refund a posted payment's borrower credit by M-Pesa (the amount is checked by the
    service: whole shillings, at most what is left)."""

    amount = StringField(
        "Amount (KES)", id="refund-amount", validators=[DataRequired("How much?"), Length(max=20)]
    )
    phone = SelectField("Pay to", id="refund-phone", choices=[], validate_choice=True)
    reason = TextAreaField(
        "Reason (required)",
        id="refund-reason",
        validators=[DataRequired("Say why."), Length(max=500)],
    )


class ReversalForm(FlaskForm):
    reason = TextAreaField(
        "Reason (required)",
        id="reversal-reason",
        validators=[DataRequired("Say why."), Length(max=500)],
    )


# --- SMS --------------------------------------------------------------------------------


class ProviderForm(FlaskForm):
    provider = SelectField(
        "Provider",
        choices=[
            SelectChoice("console", "Console (development: messages go to the log)"),
            SelectChoice("africastalking", "Africa's Talking"),
        ],
    )
    username = StringField(
        "Username ('sandbox' for Africa's Talking's sandbox)",
        validators=[Optional(), Length(max=80)],
    )
    api_key = PasswordField("API key", render_kw={"autocomplete": "off"})
    sender_id = StringField("Sender ID", validators=[Optional(), Length(max=11)])
    quiet_start = StringField("Quiet from (hour)", validators=[Regexp(r"^\d{1,2}$")])
    quiet_end = StringField("Quiet until (hour)", validators=[Regexp(r"^\d{1,2}$")])


class TemplateForm(FlaskForm):
    key = StringField(validators=[Regexp(r"^[a-z_]+$")])
    language = StringField(validators=[Regexp(r"^(en|sw)$")])
    body = TextAreaField(validators=[Length(min=1, max=600)])


# --- reconciliation -----------------------------------------------------------------------


class StatementUploadForm(FlaskForm):
    """An org-portal statement for a paybill; the view sets the paybills as the choices
    (an id that is not one of them is refused before any lookup)."""

    shortcode = SelectField("Paybill or till", coerce=int)
    file = FileField("M-Pesa statement (CSV or XLSX)")


class SignOffForm(FlaskForm):
    note = StringField("Note (optional)")  # the service keeps its first 500 characters


class PullRegistrationForm(FlaskForm):
    nominated = StringField("Nominated number (the phone in the shortcode's KYC)")
