"""mailctl: the operator command line of the mail service.

It reads deliveries, their attempts, malformed stream commands and dead
letters through the operator API, resends a settled delivery, and sends a
test login code through the intake. In AWS the API takes SigV4-signed
requests only (``AWS_IAM``); locally (``make local``) it takes them unsigned.
"""

from __future__ import annotations

__version__ = "0.1.0"
