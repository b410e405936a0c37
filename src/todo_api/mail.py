"""Outgoing email over SMTP: the password reset (after the response; failures are logged, never raised) and
reminders (from the scheduler, which retries what raises)."""

from __future__ import annotations

import logging
import smtplib
from email.message import EmailMessage

from todo_api.config import Settings

logger = logging.getLogger(__name__)


def send_password_reset(settings: Settings, *, to: str, token: str) -> None:
    link = settings.PASSWORD_RESET_URL.replace("{token}", token)
    minutes = settings.PASSWORD_RESET_EXPIRATION // 60
    if not settings.SMTP_HOST:
        if settings.is_development:
            logger.info("*** DEVELOPMENT: no SMTP_HOST, password reset link for %s: %s ***", to, link)
        else:
            logger.error("cannot send the password reset email: SMTP_HOST is not set")
        return
    message = EmailMessage()
    message["From"] = settings.MAIL_FROM
    message["To"] = to
    message["Subject"] = "Reset your password"
    message.set_content(
        f"Someone asked to reset the password of your account.\n\n"
        f"To choose a new password, open this link within {minutes} minutes:\n{link}\n\n"
        f"The link works once. If you did not ask for this, ignore this email: your password is unchanged.\n"
    )
    try:
        send(settings, message)
    except (OSError, smtplib.SMTPException) as exc:
        logger.error("password reset email not sent: %s", type(exc).__name__)


def send(settings: Settings, message: EmailMessage) -> None:
    """One message through SMTP_HOST; raises OSError or smtplib.SMTPException when it is not accepted."""
    with smtplib.SMTP(settings.SMTP_HOST, settings.SMTP_PORT, timeout=settings.SMTP_TIMEOUT) as smtp:
        if settings.SMTP_STARTTLS:
            smtp.starttls()
        if settings.SMTP_USER:
            smtp.login(settings.SMTP_USER, settings.SMTP_PASSWORD)
        smtp.send_message(message)


def reminder_message(settings: Settings, *, to: str, title: str, due: str | None, fire_at: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.MAIL_FROM
    message["To"] = to
    message["Subject"] = "Reminder: " + " ".join(title.split())  # a header is one line, whatever the title holds
    due_line = f"It is due {due} (UTC).\n" if due else ""
    message.set_content(f"This is the reminder you set for {fire_at} (UTC):\n\n    {title}\n\n{due_line}")
    return message
