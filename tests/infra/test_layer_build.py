"""The built layer is what Lambda should load: arm64 wheels, precompiled.

Lambda's /opt is read-only, so a module shipped without its .pyc is compiled
again on every cold start. The layer's build recipe (layers/mailcore/Makefile)
precompiles everything with unchecked-hash .pyc files, which stay valid
whatever modification times the zip gives the sources.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.infra.test_catalog_in_build import BUILD_DIR, built_catalog

LAYER = BUILD_DIR / "MailCoreLayer" / "python"
UNCHECKED_HASH = 0b01  # PEP 552: hash-based, source never checked


def pyc_flags(source: Path) -> int | None:
    cached = Path(importlib.util.cache_from_source(str(source)))
    if not cached.is_file():
        return None
    return int.from_bytes(cached.read_bytes()[4:8], "little")


def test_every_module_of_the_layer_ships_precompiled() -> None:
    # Given the output of sam build
    built_catalog()
    sources = sorted(LAYER.rglob("*.py"))
    assert len(sources) > 100
    # When each source's cached bytecode is looked up
    flags = {source: pyc_flags(source) for source in sources}
    # Then every module has an unchecked-hash .pyc for this Python
    missing = [str(s.relative_to(LAYER)) for s, f in flags.items() if f is None]
    stale_prone = [
        str(s.relative_to(LAYER)) for s, f in flags.items() if f not in (None, UNCHECKED_HASH)
    ]
    assert not missing, missing[:10]
    assert not stale_prone, stale_prone[:10]
    assert all(f == UNCHECKED_HASH for f in flags.values())


def test_the_layer_carries_arm64_binaries_only() -> None:
    # Given the output of sam build
    built_catalog()
    # When its compiled extensions are listed
    extensions = sorted(LAYER.rglob("*.so"))
    # Then there are some (pydantic-core, hiredis), all built for aarch64 Linux
    assert extensions
    assert all("aarch64" in extension.name for extension in extensions), extensions
    assert not (LAYER / "bin").exists()
