"""The built layer carries the template catalog, whole and loadable.

``layers/mailcore/mailcore/templates`` is a link to the top-level
``templates/`` folder; ``sam build`` must copy it into the layer as a real
folder, or every function would fail its cold start. ``make test`` builds
before it runs pytest, so the build output is here; run ``make sam-build``
first when running pytest alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailcore.rendering import TemplateCatalog, default_catalog_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = REPO_ROOT / ".aws-sam" / "build"
BUILT_CATALOG = BUILD_DIR / "MailCoreLayer" / "python" / "mailcore" / "templates"


def built_catalog() -> Path:
    """The catalog in the build output; skip (fail under CI) when nothing was built."""
    if not BUILD_DIR.is_dir():
        message = f"{BUILD_DIR.relative_to(REPO_ROOT)} is absent: run `make sam-build` first"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return BUILT_CATALOG


def test_the_built_layer_ships_the_login_code_template() -> None:
    # Given the output of sam build
    catalog = built_catalog()
    # When the layer's package is looked into
    # Then the catalog is a real folder holding auth.login_code in English
    assert (catalog / "auth.login_code" / "en" / "subject.tmpl").is_file()
    assert not catalog.is_symlink()


def test_the_built_catalog_loads_with_the_same_templates_and_locales() -> None:
    # Given the catalog in the build output and the one in the source tree
    built = TemplateCatalog.load(built_catalog())
    source = TemplateCatalog.load(default_catalog_dir())
    # When both are loaded
    # Then they hold the same templates in the same locales, file for file
    assert built.template_ids() == source.template_ids()
    for template_id in source.template_ids():
        assert built.locales(template_id) == source.locales(template_id)
    assert catalog_files(built_catalog()) == catalog_files(default_catalog_dir())


def catalog_files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*.tmpl")
        if path.is_file()
    }
