"""The template catalog: Jinja2 mail templates, loaded and checked once per cold start.

Layout (see ``templates/README.md``)::

    <root>/<template_id>/<locale>/subject.tmpl
    <root>/<template_id>/<locale>/text.tmpl
    <root>/<template_id>/<locale>/html.tmpl   (optional)

:meth:`TemplateCatalog.load` parses every file eagerly and raises
:class:`CatalogError`, naming the file and line, when anything is wrong, so a
broken catalog fails the cold start instead of a delivery.

Templates are ours; variables are not. Rendering therefore runs in Jinja2's
immutable sandbox with ``StrictUndefined``; variable values are data and are
never evaluated as templates; the HTML body is autoescaped; and the subject is
forced onto one line without control characters, so no value can add a header.
A failed render raises :class:`RenderError`, whose message names templates,
locales and variables but never carries a variable value (values may be
secrets, like a login code).
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

import jinja2
import jinja2.meta
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mailcore.domain.model import Delivery, PayloadMode

TEMPLATE_ID_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
LOCALE_PATTERN: Final = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}")
DEFAULT_LOCALE: Final = "en"

SUBJECT_FILE: Final = "subject.tmpl"
TEXT_FILE: Final = "text.tmpl"
HTML_FILE: Final = "html.tmpl"
REQUIRED_FILES: Final = (SUBJECT_FILE, TEXT_FILE)
ALLOWED_FILES: Final = frozenset({SUBJECT_FILE, TEXT_FILE, HTML_FILE})

# RFC 5322 §2.1.1: no header line may be longer than 998 characters.
MAX_SUBJECT_CHARS: Final = 998

# Self-contained templates only: the required variables of a file are the
# names it references, which an include, import or parent template would hide.
_FORBIDDEN_TAGS: Final[tuple[tuple[type[nodes.Node], str], ...]] = (
    (nodes.Extends, "extends"),
    (nodes.Include, "include"),
    (nodes.Import, "import"),
    (nodes.FromImport, "from … import"),
)

RenderErrorCode = Literal["unknown_template", "missing_variables", "render_failed"]


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """What goes into the MIME message; ``resolved_locale`` is None in rendered mode."""

    subject: str
    text_body: str
    html_body: str | None
    resolved_locale: str | None
    locale_fallback_used: bool


class CatalogError(Exception):
    """The catalog on disk is broken; the message names the file (and line) at fault."""

    def __init__(self, problem: str, path: str | None = None, line: int | None = None) -> None:
        where = "" if path is None else path if line is None else f"{path}, line {line}"
        message = (
            f"template catalog: {where}: {problem}" if where else f"template catalog: {problem}"
        )
        super().__init__(message)
        self.path = path  # relative to the catalog root, with forward slashes
        self.line = line
        self.problem = problem


class RenderError(Exception):
    """A delivery cannot be rendered; ``code`` classifies why.

    The message never contains a variable value, only names.
    """

    def __init__(self, code: RenderErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: RenderErrorCode = code
        self.message = message


@dataclass(frozen=True, slots=True)
class _LocaleTemplates:
    subject: jinja2.Template
    text: jinja2.Template
    html: jinja2.Template | None
    required_variables: frozenset[str]
    subject_variables: frozenset[str]  # the ones the subject references


@dataclass(frozen=True, slots=True)
class _Template:
    locales: Mapping[str, _LocaleTemplates]  # folder name -> its parsed files
    by_lowercase: Mapping[str, str]  # lowercased locale -> folder name


def _autoescape(name: str | None) -> bool:
    """HTML bodies are autoescaped; subjects and text bodies are plain text."""
    return name is not None and name.endswith("/" + HTML_FILE)


def _environment(sources: Mapping[str, str]) -> ImmutableSandboxedEnvironment:
    def load(name: str) -> tuple[str, str, None] | None:
        # The name doubles as the filename, so render errors can name the line.
        source = sources.get(name)
        return None if source is None else (source, name, None)

    return ImmutableSandboxedEnvironment(
        loader=jinja2.FunctionLoader(load),
        undefined=jinja2.StrictUndefined,
        autoescape=_autoescape,
        keep_trailing_newline=True,
        auto_reload=False,
        cache_size=0,  # the catalog keeps every compiled template itself
    )


class TemplateCatalog:
    """Every template of one catalog folder, parsed and validated."""

    def __init__(self, templates: Mapping[str, _Template]) -> None:
        self._templates = dict(templates)

    @classmethod
    def load(cls, directory: Path) -> TemplateCatalog:
        """Read, parse and validate the whole catalog; raise :class:`CatalogError` if broken."""
        root = Path(directory)
        if not root.is_dir():
            raise CatalogError(f"folder {root} does not exist")
        layout = _read_layout(root)
        sources = {
            name: _read_source(root, name)
            for locales in layout.values()
            for names in locales.values()
            for name in names
        }
        environment = _environment(sources)
        templates: dict[str, _Template] = {}
        for template_id, locale_files in layout.items():
            locales = {
                locale: _compile_locale(environment, sources, f"{template_id}/{locale}")
                for locale in locale_files
            }
            templates[template_id] = _Template(
                locales=locales, by_lowercase={locale.lower(): locale for locale in locales}
            )
        return cls(templates)

    def template_ids(self) -> list[str]:
        return sorted(self._templates)

    def locales(self, template_id: str) -> list[str]:
        return sorted(self._template(template_id).locales)

    def resolve_locale(self, template_id: str, requested: str) -> tuple[str, bool]:
        """The locale to render and whether it differs from the one asked for.

        Exact match (case-insensitive), else the tag with its last subtags cut
        one by one (``de-AT`` -> ``de``), else ``en``.
        """
        by_lowercase = self._template(template_id).by_lowercase
        wanted = requested.lower()
        if wanted in by_lowercase:
            return by_lowercase[wanted], False
        subtags = wanted.split("-")
        for count in range(len(subtags) - 1, 0, -1):
            candidate = "-".join(subtags[:count])
            if candidate in by_lowercase:
                return by_lowercase[candidate], True
        return by_lowercase[DEFAULT_LOCALE], True

    def required_variables(self, template_id: str, locale: str) -> frozenset[str]:
        """Every variable the files of the resolved locale reference."""
        resolved, _ = self.resolve_locale(template_id, locale)
        return self._template(template_id).locales[resolved].required_variables

    def subject_variables(self, template_id: str, locale: str) -> frozenset[str]:
        """Every variable the subject of the resolved locale references."""
        resolved, _ = self.resolve_locale(template_id, locale)
        return self._template(template_id).locales[resolved].subject_variables

    def render(
        self, template_id: str, locale: str, variables: Mapping[str, Any]
    ) -> RenderedMessage:
        resolved, fallback_used = self.resolve_locale(template_id, locale)
        files = self._template(template_id).locales[resolved]
        missing = sorted(name for name in files.required_variables if name not in variables)
        if missing:
            raise RenderError(
                "missing_variables",
                f"template {template_id} (locale {resolved}) needs variables: "
                + ", ".join(missing),
            )
        context = dict(variables)
        subject = _render(files.subject, template_id, resolved, context)
        text_body = _render(files.text, template_id, resolved, context)
        html_body = (
            None if files.html is None else _render(files.html, template_id, resolved, context)
        )
        return RenderedMessage(
            subject=sanitize_subject(subject),
            text_body=text_body,
            html_body=html_body,
            resolved_locale=resolved,
            locale_fallback_used=fallback_used,
        )

    def _template(self, template_id: str) -> _Template:
        template = self._templates.get(template_id)
        if template is None:
            raise RenderError("unknown_template", f"unknown template {template_id[:100]!r}")
        return template


def _read_layout(root: Path) -> dict[str, dict[str, list[str]]]:
    """``{template_id: {locale: [file paths relative to the root]}}``, checked for shape."""
    layout: dict[str, dict[str, list[str]]] = {}
    for template_dir in sorted(root.iterdir()):
        if not template_dir.is_dir():
            continue  # README.md and the like
        template_id = template_dir.name
        if not TEMPLATE_ID_PATTERN.fullmatch(template_id):
            raise CatalogError(
                "folder name is not a template id (lowercase letters, digits, '.', '_', '-'; "
                "starting with a letter or digit)",
                template_id,
            )
        seen: dict[str, str] = {}  # lowercased locale -> folder name
        locales: dict[str, list[str]] = {}
        for locale_dir in sorted(template_dir.iterdir()):
            folder = f"{template_id}/{locale_dir.name}"
            if not locale_dir.is_dir():
                raise CatalogError(
                    "unexpected file; a template folder holds locale folders", folder
                )
            locale = locale_dir.name
            if not LOCALE_PATTERN.fullmatch(locale):
                raise CatalogError("folder name is not a BCP 47 locale like en or pt-BR", folder)
            if locale.lower() in seen:
                raise CatalogError(
                    f"locale folder differs from {seen[locale.lower()]} only in case", folder
                )
            seen[locale.lower()] = locale
            names = sorted(entry.name for entry in locale_dir.iterdir())
            for name in names:
                if name not in ALLOWED_FILES or not (locale_dir / name).is_file():
                    raise CatalogError(
                        "unexpected entry; a locale folder holds only "
                        + ", ".join(sorted(ALLOWED_FILES)),
                        f"{folder}/{name}",
                    )
            for name in REQUIRED_FILES:
                if name not in names:
                    raise CatalogError("missing", f"{folder}/{name}")
            locales[locale] = [f"{folder}/{name}" for name in names]
        if DEFAULT_LOCALE not in locales:
            raise CatalogError(f"no {DEFAULT_LOCALE} locale; every template needs one", template_id)
        layout[template_id] = locales
    if not layout:
        raise CatalogError(f"folder {root} holds no templates")
    return layout


def _read_source(root: Path, name: str) -> str:
    try:
        return (root / name).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise CatalogError("not valid UTF-8", name) from None
    except OSError as error:
        raise CatalogError(
            f"cannot be read ({error.strerror or type(error).__name__})", name
        ) from None


def _compile_locale(
    environment: ImmutableSandboxedEnvironment, sources: Mapping[str, str], folder: str
) -> _LocaleTemplates:
    required: set[str] = set()
    subject_variables: set[str] = set()
    compiled: dict[str, jinja2.Template] = {}
    for file_name in sorted(ALLOWED_FILES):
        name = f"{folder}/{file_name}"
        if name not in sources:
            continue
        source = sources[name]
        if file_name == SUBJECT_FILE:
            _check_single_line(name, source)
        try:
            tree = environment.parse(source, name=name, filename=name)
        except jinja2.TemplateSyntaxError as error:
            raise CatalogError(error.message or "syntax error", name, error.lineno) from None
        for node_type, tag in _FORBIDDEN_TAGS:
            node = tree.find(node_type)
            if node is not None:
                raise CatalogError(
                    f"{tag} is not supported; a template file must stand alone", name, node.lineno
                )
        try:
            compiled[file_name] = environment.get_template(name)
            referenced = jinja2.meta.find_undeclared_variables(tree) - set(environment.globals)
            required |= referenced
            if file_name == SUBJECT_FILE:
                subject_variables |= referenced
        except jinja2.TemplateSyntaxError as error:  # compile-time checks, like unknown filters
            raise CatalogError(error.message or "invalid template", name, error.lineno) from None
    return _LocaleTemplates(
        subject=compiled[SUBJECT_FILE],
        text=compiled[TEXT_FILE],
        html=compiled.get(HTML_FILE),
        required_variables=frozenset(required),
        subject_variables=frozenset(subject_variables),
    )


def _check_single_line(name: str, source: str) -> None:
    lines = source.replace("\r\n", "\n").replace("\r", "\n").removesuffix("\n")
    if "\n" in lines:
        raise CatalogError("a subject template must be a single line", name, 2)


def _render(
    template: jinja2.Template, template_id: str, locale: str, context: dict[str, Any]
) -> str:
    try:
        return template.render(context)
    except Exception as error:  # any failure of an expression on caller data
        # Exception texts can quote values (a key looked up, a string that
        # failed to convert); only the type and the template line are kept.
        file_name = (template.name or "").rpartition("/")[2]
        line = _template_line(error.__traceback__, template.filename)
        where = file_name if line is None else f"{file_name} line {line}"
        raise RenderError(
            "render_failed",
            f"template {template_id} (locale {locale}) failed at {where}: {type(error).__name__}",
        ) from None


def _template_line(trace: TracebackType | None, filename: str | None) -> int | None:
    """The template line of the innermost frame Jinja2 attributed to the template."""
    line = None
    while trace is not None:
        if filename is not None and trace.tb_frame.f_code.co_filename == filename:
            line = trace.tb_lineno
        trace = trace.tb_next
    return line


# Characters that break a line somewhere (CR, LF, VT, FF, the C0 separators,
# NEL, U+2028, U+2029) or are plain blanks collapse to one space; every other
# C0 or C1 control character, and DEL, is dropped.
_BREAKS_AND_BLANKS: Final = re.compile(r"[\t\n\x0b\x0c\r\x1c-\x1f \x85\u2028\u2029]+")
_CONTROLS: Final = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")


def sanitize_subject(subject: str) -> str:
    """One line, no control characters, at most 998 characters: a subject that adds no header."""
    one_line = _BREAKS_AND_BLANKS.sub(" ", _CONTROLS.sub("", subject)).strip()
    return one_line[:MAX_SUBJECT_CHARS].rstrip()


def default_catalog_dir() -> Path:
    """The catalog shipped inside the package (``mailcore/templates``)."""
    resource = importlib.resources.files("mailcore") / "templates"
    if not isinstance(resource, Path):
        raise CatalogError(f"the packaged catalog is not a folder on disk ({resource})")
    return resource


def render_delivery(catalog: TemplateCatalog, delivery: Delivery) -> RenderedMessage:
    """The message of one delivery, rendered from the catalog or as the caller gave it."""
    if delivery.payload_mode == PayloadMode.TEMPLATE:
        if delivery.template_id is None:
            raise RenderError("unknown_template", "the template delivery names no template")
        return catalog.render(
            delivery.template_id, delivery.locale or DEFAULT_LOCALE, delivery.variables
        )
    content = delivery.content
    if content is None:
        raise RenderError("render_failed", "the rendered delivery carries no content")
    return RenderedMessage(
        subject=sanitize_subject(content.subject),
        text_body=content.text_body,
        html_body=content.html_body,
        resolved_locale=None,
        locale_fallback_used=False,
    )
