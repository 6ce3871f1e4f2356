"""Rendering deliveries into messages: the template catalog and its errors."""

from mailcore.rendering.catalog import (
    CatalogError,
    RenderedMessage,
    RenderError,
    RenderErrorCode,
    TemplateCatalog,
    default_catalog_dir,
    render_delivery,
    sanitize_subject,
)

__all__ = [
    "CatalogError",
    "RenderError",
    "RenderErrorCode",
    "RenderedMessage",
    "TemplateCatalog",
    "default_catalog_dir",
    "render_delivery",
    "sanitize_subject",
]
