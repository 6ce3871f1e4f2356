"""The stacks the e2e tests share: one per SMTP mode, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.stack import LocalStack, start_stack


@pytest.fixture(scope="session")
def smtp_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """``make local`` as it comes: smtp mode, mail to its own capture server."""
    workdir = tmp_path_factory.mktemp("smtp-stack")
    stack = start_stack(workdir / "data", workdir / "stack.log")
    yield stack
    code = stack.stop()
    assert code == 0, stack.log()[-5000:]


@pytest.fixture(scope="session")
def stub_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """``MAIL_SMTP_MODE=stub make local``: nothing is ever sent."""
    workdir = tmp_path_factory.mktemp("stub-stack")
    stack = start_stack(workdir / "data", workdir / "stack.log", {"MAIL_SMTP_MODE": "stub"})
    yield stack
    code = stack.stop()
    assert code == 0, stack.log()[-5000:]
