"""The back office's forms; Flask-WTF adds and checks each one's CSRF token."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import PasswordField, RadioField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Optional

#: The shortest password an administrator may have (create-admin, the password form).
MIN_PASSWORD = 10


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


class LogoutForm(FlaskForm):
    """Only a CSRF token: logging out is a POST, so another site cannot do it for you."""


class SessionsForm(FlaskForm):
    """Only a CSRF token: ending a session, or all of them, is a POST."""


class PasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired(), Length(max=256)])
    new = PasswordField("New password", validators=[
        DataRequired(), Length(min=MIN_PASSWORD, max=256,
                               message=f"at least {MIN_PASSWORD} characters")])
    again = PasswordField("New password again", validators=[
        DataRequired(), EqualTo("new", message="the two new passwords differ")])


class RetryForm(FlaskForm):
    """Only a CSRF token: queuing failed records again is a POST."""


class ReviewForm(FlaskForm):
    verdict = RadioField("The label is", choices=[("right", "right"), ("wrong", "wrong")],
                         validators=[DataRequired()])
    true_label = StringField("True label", validators=[Optional(), Length(max=255)])

    def validate(self, extra_validators=None) -> bool:
        if not super().validate(extra_validators):
            return False
        if self.verdict.data == "wrong" and not (self.true_label.data or "").strip():
            self.true_label.errors.append("say what the image really shows")
            return False
        return True


class DeleteForm(FlaskForm):
    """Only a CSRF token: deleting an upload or a batch is a POST."""
