"""Mail providers: SMTP for real sending, the stub for tests and local runs."""

from mailcore.providers.redaction import redact_summary
from mailcore.providers.smtp import SmtpProvider
from mailcore.providers.stub import StubProvider

__all__ = ["SmtpProvider", "StubProvider", "redact_summary"]
