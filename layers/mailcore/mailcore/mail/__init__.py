"""Message building: MIME structure, headers and the SMTP envelope of a delivery."""

from mailcore.mail.mime import Sender, build_message, envelope_recipients, message_id_for

__all__ = ["Sender", "build_message", "envelope_recipients", "message_id_for"]
