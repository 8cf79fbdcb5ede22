"""The admin UI's forms: what each page and action accepts.

Forms that change something carry a CSRF token; the GET forms (filters, explain, the
confirmation steps) do not, since they change nothing.
"""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    HiddenField,
    IntegerField,
    PasswordField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, Regexp
from wtforms.widgets import CheckboxInput, ListWidget

from app.runner.documents import STATUSES

STATUS_CHOICES = [
    SelectChoice("", "any status"),
    *(SelectChoice(s, s.replace("_", " ").lower()) for s in STATUSES),
]
_ID = [Optional(), Length(max=128)]


# Flask-WTF and WTForms ship no type hints, so mypy sees their classes as Any.


class _ReadForm(FlaskForm):  # type: ignore[misc]
    """A form read from the query string: no CSRF token, nothing changes."""

    class Meta:
        csrf = False


class LoginForm(FlaskForm):  # type: ignore[misc]
    name = StringField("User", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    next = HiddenField(validators=[Optional(), Length(max=2048)])


class LogoutForm(FlaskForm):  # type: ignore[misc]
    pass


class FilterForm(_ReadForm):
    status = SelectField("Status", choices=STATUS_CHOICES, validators=[Optional()], default="")
    account = StringField("Account", validators=_ID)
    job = StringField("Job id", validators=_ID)
    host = StringField("Failed host", validators=[Optional(), Length(max=255)])
    pending = BooleanField("Restart pending")
    q = StringField("Search", validators=_ID)
    cursor = HiddenField(validators=[Optional(), Length(max=512)])

    def cleaned(self, name: str) -> str | None:
        value = self[name].data
        return value.strip() or None if isinstance(value, str) else None


class _MultiCheckbox(SelectMultipleField):  # type: ignore[misc]
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


def _choices(values: list[str]) -> list[Any]:
    return [SelectChoice(v) for v in values]


class RestartForm(FlaskForm):  # type: ignore[misc]
    hosts = _MultiCheckbox("Hosts to restart", validate_choice=True)
    note = StringField("Note for the audit log", validators=[Optional(), Length(max=200)])

    def offer(self, hosts: list[str]) -> None:
        self.hosts.choices = _choices(hosts)


class RestartChoiceForm(_ReadForm, RestartForm):
    """The first step: which hosts, from the execution page (a GET)."""


class ConfirmForm(FlaskForm):  # type: ignore[misc]
    """A final POST that needs nothing but its CSRF token."""


class PauseForm(FlaskForm):  # type: ignore[misc]
    job = HiddenField(validators=_ID)
    reason = StringField("Reason", validators=[Optional(), Length(max=200)])
    next = HiddenField(validators=[Optional(), Length(max=2048)])


class MuteForm(FlaskForm):  # type: ignore[misc]
    """Mute a notification route for some hours (0: unmute)."""

    route = HiddenField(validators=[DataRequired(), Length(max=100)])
    hours = IntegerField(validators=[InputRequired(), NumberRange(min=0, max=168)])


class PauseChoiceForm(_ReadForm, PauseForm):
    """The first step: which job (none: every job), from a GET link."""


class ExplainForm(_ReadForm):
    execution_id = StringField(
        "Execution id",
        validators=[Optional(), Length(max=128), Regexp(r"^[\w.:-]+$", message="Not an id.")],
    )


def errors_text(form: Any) -> str:
    """Every field error of a form in one sentence, for a flash message."""
    parts = []
    for name, messages in form.errors.items():
        label = form[name].label.text if name in form else name
        parts.append(f"{label}: {' '.join(str(m) for m in messages)}")
    return "; ".join(parts)
