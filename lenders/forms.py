"""The lending book's forms, and the empty form of every button-only action."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField, FileRequired
from wtforms import BooleanField, EmailField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Regexp

from lenders.loanbook import EMAIL


class ActionForm(FlaskForm):
    """Empty: a button-only action (log out, match again, approve) carries its CSRF token."""


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])


class ImportForm(FlaskForm):
    file = FileField(
        "Loan book (CSV)", validators=[FileRequired(), FileAllowed(["csv"], "A .csv file, please")]
    )


class StaffForm(FlaskForm):
    email = StringField(
        "Email",
        validators=[
            DataRequired(),
            Regexp(EMAIL.pattern, message="Not an e-mail address."),
            Length(max=254),
        ],
    )
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    role = SelectField(
        "Role", choices=[SelectChoice("officer", "Loan officer"), SelectChoice("admin", "Admin")]
    )
    password = PasswordField(
        "Password (at least 10 characters)", validators=[DataRequired(), Length(min=10, max=200)]
    )


class BorrowerSmsForm(FlaskForm):
    """A borrower's SMS language and opt-out. A language we do not send in falls back
    to English rather than failing: the receipt still goes out."""

    sms_language = SelectField(
        "Language",
        choices=[SelectChoice("en", "English"), SelectChoice("sw", "Kiswahili")],
        filters=[lambda value: value if value in ("en", "sw") else "en"],
    )
    sms_opt_out = BooleanField("No SMS for this borrower")
