"""The template catalog: loading, locale fallback, strict and safe rendering."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from mailcore.domain.model import Content, Delivery, Envelope, PayloadMode, Source
from mailcore.domain.states import DeliveryStatus
from mailcore.rendering import (
    CatalogError,
    RenderedMessage,
    RenderError,
    TemplateCatalog,
    default_catalog_dir,
    render_delivery,
    sanitize_subject,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
LOGIN_CODE_LOCALES = {"en", "ru", "de", "fr", "es"}
SECRET = "s3cr3t-V4LUE-9931"

# A small catalog of our own: `greeting` in en, de and pt-BR, `notice` in en
# without an HTML body, and `echo`, which shows how values are treated.
CATALOG_FILES: dict[str, str] = {
    "README.md": "Not a template; ignored.\n",
    "greeting/en/subject.tmpl": "Hello {{ name }}\n",
    "greeting/en/text.tmpl": "Hello {{ name }}, you have {{ count }} messages.\n",
    "greeting/en/html.tmpl": "<p>Hello {{ name }}, you have {{ count }} messages.</p>\n",
    "greeting/de/subject.tmpl": "Hallo {{ name }}\n",
    "greeting/de/text.tmpl": "Hallo {{ name }}, Sie haben {{ count }} Nachrichten.\n",
    "greeting/pt-BR/subject.tmpl": "Olá {{ name }}\n",
    "greeting/pt-BR/text.tmpl": "Olá {{ name }}, você tem {{ count }} mensagens.\n",
    "notice/en/subject.tmpl": "A notice\n",
    "notice/en/text.tmpl": "Nothing to fill in.\n",
    "echo/en/subject.tmpl": "{{ value }}\n",
    "echo/en/text.tmpl": "{{ value }}\n",
    "echo/en/html.tmpl": "<p>{{ value }}</p>\n",
    "counter/en/subject.tmpl": "Counter\n",
    "counter/en/text.tmpl": "Line one\nLine two\nNext: {{ count + 1 }}\n",
}


def write_catalog(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def catalog(tmp_path: Path) -> TemplateCatalog:
    return TemplateCatalog.load(write_catalog(tmp_path / "catalog", CATALOG_FILES))


@pytest.fixture(scope="module")
def shipped() -> TemplateCatalog:
    return TemplateCatalog.load(default_catalog_dir())


def make_delivery(**overrides: Any) -> Delivery:
    fields: dict[str, Any] = {
        "delivery_id": "d-1",
        "source": Source.NOTIFICATION,
        "status": DeliveryStatus.RENDERED,
        "payload_mode": PayloadMode.TEMPLATE,
        "envelope": Envelope(to=("ada@example.com",)),
        "idempotency_key": "key-1",
        "created_at_ms": 1,
        "updated_at_ms": 1,
    }
    fields.update(overrides)
    return Delivery(**fields)


def assert_free_of(error: BaseException, *values: str) -> None:
    """Neither the error's text nor anything it chains to shows any of ``values``."""
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    shown = f"{error} {error!r} {error.args!r}"
    for value in values:
        assert value not in shown


# --- the shipped catalog --------------------------------------------------------


def test_the_packaged_catalog_is_the_repository_templates_folder() -> None:
    # Given the package's catalog folder (a link to templates/ in the source tree)
    # When it is located
    # Then it is the repository's templates/ folder
    assert default_catalog_dir().resolve() == (REPO_ROOT / "templates").resolve()


def test_login_code_ships_in_five_languages_each_with_html(shipped: TemplateCatalog) -> None:
    # Given the shipped catalog
    # When its auth.login_code template is inspected
    # Then it has en, ru, de, fr and es, and every locale renders an HTML body
    assert "auth.login_code" in shipped.template_ids()
    assert set(shipped.locales("auth.login_code")) == LOGIN_CODE_LOCALES
    for locale in LOGIN_CODE_LOCALES:
        assert shipped.required_variables("auth.login_code", locale) == {"code"}
        message = shipped.render("auth.login_code", locale, {"code": "000000"})
        assert message.html_body is not None
        assert f'lang="{locale}"' in message.html_body


@pytest.mark.parametrize("locale", sorted(LOGIN_CODE_LOCALES))
def test_the_login_code_is_in_the_bodies_but_never_in_the_subject(
    shipped: TemplateCatalog, locale: str
) -> None:
    # Given a login code
    # When auth.login_code is rendered in each shipped language
    # Then the code is in the text and HTML bodies, and the subject
    # (shown on lock screens) does not carry it
    message = shipped.render("auth.login_code", locale, {"code": "482913"})
    assert message.resolved_locale == locale
    assert not message.locale_fallback_used
    assert "482913" in message.text_body
    assert message.html_body is not None
    assert "482913" in message.html_body
    assert "482913" not in message.subject
    assert message.subject
    assert "\n" not in message.subject


def test_the_shipped_html_is_standalone(shipped: TemplateCatalog) -> None:
    # Given every shipped template with an HTML body
    # When it is rendered
    # Then it is a whole document that loads nothing from elsewhere
    for template_id in shipped.template_ids():
        for locale in shipped.locales(template_id):
            variables = dict.fromkeys(shipped.required_variables(template_id, locale), "x")
            html = shipped.render(template_id, locale, variables).html_body
            if html is None:
                continue
            assert html.startswith("<!DOCTYPE html>")
            assert "<script" not in html
            assert "src=" not in html
            assert "<link" not in html


def test_shipped_locale_fallback(shipped: TemplateCatalog) -> None:
    # Given the shipped auth.login_code
    # When locales it does not have exactly are asked for
    # Then case-insensitive matches, base languages and en answer
    assert shipped.resolve_locale("auth.login_code", "DE") == ("de", False)
    assert shipped.resolve_locale("auth.login_code", "de-AT") == ("de", True)
    assert shipped.resolve_locale("auth.login_code", "pt-BR") == ("en", True)
    message = shipped.render("auth.login_code", "fr-CA", {"code": "123456"})
    assert (message.resolved_locale, message.locale_fallback_used) == ("fr", True)


def test_the_password_reset_link_carries_the_token_url_encoded(shipped: TemplateCatalog) -> None:
    # Given a reset token with characters that mean something in a URL or in HTML
    variables = {"name": "Ada", "reset_token": "a b&c=d/e+f", "expires_minutes": 30}
    for locale in ("en", "de"):
        # When account.password_reset is rendered
        message = shipped.render("account.password_reset", locale, variables)
        # Then the link holds the encoded token, and the expiry and name appear
        link = "https://example.com/reset?token=a%20b%26c%3Dd/e%2Bf"
        assert link in message.text_body
        assert message.html_body is not None
        assert f'href="{link}"' in message.html_body
        assert "30" in message.text_body
        assert "Ada" in message.text_body
        assert "a b&c" not in message.text_body


# --- locale fallback ------------------------------------------------------------


def test_an_exact_locale_is_used_as_is(catalog: TemplateCatalog) -> None:
    # Given a template with de
    # When de is asked for
    message = catalog.render("greeting", "de", {"name": "Ada", "count": 2})
    # Then de renders and no fallback is recorded
    assert message == RenderedMessage(
        subject="Hallo Ada",
        text_body="Hallo Ada, Sie haben 2 Nachrichten.\n",
        html_body=None,
        resolved_locale="de",
        locale_fallback_used=False,
    )


@pytest.mark.parametrize(
    ("requested", "resolved"), [("DE", "de"), ("pt-br", "pt-BR"), ("PT-BR", "pt-BR"), ("En", "en")]
)
def test_an_exact_match_ignores_case_and_is_no_fallback(
    catalog: TemplateCatalog, requested: str, resolved: str
) -> None:
    # Given locale folders de, en and pt-BR
    # When a locale differing only in case is asked for
    # Then that folder is used and no fallback is recorded
    assert catalog.resolve_locale("greeting", requested) == (resolved, False)


@pytest.mark.parametrize(
    ("requested", "resolved"), [("de-AT", "de"), ("DE-ch", "de"), ("pt-BR-x1", "pt-BR")]
)
def test_a_regional_locale_falls_back_to_its_base(
    catalog: TemplateCatalog, requested: str, resolved: str
) -> None:
    # Given locale folders de and pt-BR
    # When a more specific tag is asked for
    # Then the nearest shorter tag is used and the fallback recorded
    assert catalog.resolve_locale("greeting", requested) == (resolved, True)
    message = catalog.render("greeting", requested, {"name": "Ada", "count": 1})
    assert (message.resolved_locale, message.locale_fallback_used) == (resolved, True)


@pytest.mark.parametrize("requested", ["ja", "pt", "zh-Hant-TW", "", "not a locale"])
def test_an_unknown_locale_falls_back_to_en(catalog: TemplateCatalog, requested: str) -> None:
    # Given a template without the locale (nor its base language)
    # When it is asked for
    # Then en renders and the fallback is recorded
    assert catalog.resolve_locale("greeting", requested) == ("en", True)
    message = catalog.render("greeting", requested, {"name": "Ada", "count": 1})
    assert message.resolved_locale == "en"
    assert message.locale_fallback_used
    assert message.subject == "Hello Ada"


def test_an_optional_html_body_is_absent_when_the_locale_has_none(
    catalog: TemplateCatalog,
) -> None:
    # Given en with html.tmpl, and notice/en without it
    # When each is rendered
    # Then only the first has an HTML body
    assert catalog.render("greeting", "en", {"name": "A", "count": 1}).html_body is not None
    assert catalog.render("notice", "en", {}).html_body is None


def test_the_catalog_lists_templates_and_locales(catalog: TemplateCatalog) -> None:
    # Given the test catalog (with a README.md at its root)
    # When it is listed
    # Then every template folder is a template, and the README is not
    assert catalog.template_ids() == ["counter", "echo", "greeting", "notice"]
    assert catalog.locales("greeting") == ["de", "en", "pt-BR"]
    assert catalog.required_variables("greeting", "de-AT") == {"name", "count"}
    assert catalog.required_variables("notice", "en") == frozenset()


def test_the_catalog_knows_which_variables_a_subject_shows(catalog: TemplateCatalog) -> None:
    # Given greeting, whose subject shows the name and whose body also the count
    # When the subject's variables are asked for, for a locale that falls back to de
    # Then only the name is one
    assert catalog.subject_variables("greeting", "de-AT") == {"name"}
    assert catalog.subject_variables("notice", "en") == frozenset()


# --- failures -------------------------------------------------------------------


def test_a_missing_variable_is_named_without_any_value(catalog: TemplateCatalog) -> None:
    # Given a template needing name and count, and variables without count
    # When it is rendered
    with pytest.raises(RenderError) as caught:
        catalog.render("greeting", "de", {"name": SECRET, "unused": SECRET})
    # Then it fails as missing_variables, naming count, the template and the
    # resolved locale, and shows no value given
    error = caught.value
    assert error.code == "missing_variables"
    assert str(error) == "template greeting (locale de) needs variables: count"
    assert_free_of(error, SECRET)


def test_every_missing_variable_is_named(catalog: TemplateCatalog) -> None:
    with pytest.raises(RenderError, match=r"needs variables: count, name$") as caught:
        catalog.render("greeting", "en", {})
    assert caught.value.code == "missing_variables"


@pytest.mark.parametrize("template_id", ["nope", "auth.login_code", "GREETING", ""])
def test_an_unknown_template_is_classified(catalog: TemplateCatalog, template_id: str) -> None:
    # Given a template id the catalog does not have
    # When it is rendered, resolved or listed
    # Then each fails as unknown_template
    for call in (
        lambda: catalog.render(template_id, "en", {}),
        lambda: catalog.resolve_locale(template_id, "en"),
        lambda: catalog.locales(template_id),
        lambda: catalog.required_variables(template_id, "en"),
    ):
        with pytest.raises(RenderError) as caught:
            call()
        assert caught.value.code == "unknown_template"
        assert "unknown template" in str(caught.value)


def test_an_expression_failing_on_the_data_is_render_failed_without_the_value(
    catalog: TemplateCatalog,
) -> None:
    # Given a template computing {{ count + 1 }} on line 3 of text.tmpl
    # When count is a string
    with pytest.raises(RenderError) as caught:
        catalog.render("counter", "en", {"count": SECRET})
    # Then it fails as render_failed, naming the file, line and error type, not the value
    error = caught.value
    assert error.code == "render_failed"
    assert str(error) == "template counter (locale en) failed at text.tmpl line 3: TypeError"
    assert_free_of(error, SECRET)


def test_a_lookup_on_a_value_does_not_leak_the_key(tmp_path: Path) -> None:
    # Given a template indexing one variable by another (an UndefinedError
    # would quote the key in its own message)
    root = write_catalog(
        tmp_path,
        {"lookup/en/subject.tmpl": "S\n", "lookup/en/text.tmpl": "{{ table[key] }}\n"},
    )
    catalog = TemplateCatalog.load(root)
    # When the key is missing from the table
    with pytest.raises(RenderError) as caught:
        catalog.render("lookup", "en", {"table": {}, "key": SECRET})
    # Then the render fails as render_failed without the key
    assert caught.value.code == "render_failed"
    assert "UndefinedError" in str(caught.value)
    assert_free_of(caught.value, SECRET)


def test_the_sandbox_refuses_unsafe_access_as_render_failed(tmp_path: Path) -> None:
    # Given a template reaching for Python internals through a value
    root = write_catalog(
        tmp_path,
        {
            "probe/en/subject.tmpl": "S\n",
            "probe/en/text.tmpl": "{{ value.__class__.__mro__ }}{{ items.append(1) }}\n",
        },
    )
    catalog = TemplateCatalog.load(root)
    # When it is rendered
    with pytest.raises(RenderError) as caught:
        catalog.render("probe", "en", {"value": "x", "items": []})
    # Then the sandbox stops it and the failure is classified
    assert caught.value.code == "render_failed"


def test_secret_variables_never_reach_render_errors(catalog: TemplateCatalog) -> None:
    # Given template deliveries with secret variables, failing in each way there is
    failing = {
        "missing_variables": ("greeting", {"name": SECRET}),
        "render_failed": ("counter", {"count": SECRET}),
        "unknown_template": ("auth.login_code", {"code": SECRET}),
    }
    for code, (template_id, variables) in failing.items():
        delivery = make_delivery(
            template_id=template_id,
            locale="en",
            variables=variables,
            secret_variables=frozenset(variables),
        )
        # When each is rendered
        with pytest.raises(RenderError) as caught:
            render_delivery(catalog, delivery)
        # Then it fails as expected and its error shows no secret value
        assert caught.value.code == code
        assert_free_of(caught.value, SECRET)


# --- escaping and injection -----------------------------------------------------


def test_html_is_escaped_in_the_html_body_only(catalog: TemplateCatalog) -> None:
    # Given a value with markup, a quote and an ampersand
    value = '<script>alert(1)</script> "quoted" & more'
    # When it is rendered
    message = catalog.render("echo", "en", {"value": value})
    # Then the HTML body escapes it and the text body keeps it as written
    assert message.html_body == (
        "<p>&lt;script&gt;alert(1)&lt;/script&gt; &#34;quoted&#34; &amp; more</p>\n"
    )
    assert message.text_body == value + "\n"
    assert message.subject == value


def test_values_are_data_never_templates(catalog: TemplateCatalog) -> None:
    # Given a value that looks like a template expression
    value = "{{ 7*7 }} {% if true %}yes{% endif %}"
    # When it is rendered
    message = catalog.render("echo", "en", {"value": value})
    # Then it appears literally everywhere, never evaluated
    assert message.subject == value
    assert message.text_body == value + "\n"
    assert message.html_body == f"<p>{value}</p>\n"
    assert "49" not in message.text_body


def test_a_value_cannot_inject_a_header_through_the_subject(catalog: TemplateCatalog) -> None:
    # Given a value carrying CRLF and a header, used in the subject
    value = "Hello\r\nBcc: evil@example.org\r\n\r\nbody"
    # When it is rendered
    message = catalog.render("echo", "en", {"value": value})
    # Then the subject is a single line without any control character
    assert message.subject == "Hello Bcc: evil@example.org body"
    assert not any(ord(c) < 32 or ord(c) == 127 for c in message.subject)
    assert message.subject.splitlines() == [message.subject]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  plain  ", "plain"),
        ("a\r\nb", "a b"),
        ("a\n\n\tb", "a b"),
        ("a\rb\x0bc\x0cd", "a b c d"),
        ("a\x00b\x07c\x1bd\x7fe", "abcde"),
        ("a \x00 b", "a b"),
        ("a\u2028b\u2029c\x85d", "a b c d"),
        ("a\x9bb", "ab"),
        ("Grüße\u00a0aus Köln", "Grüße\u00a0aus Köln"),
        ("\r\n", ""),
    ],
)
def test_sanitize_subject(raw: str, clean: str) -> None:
    assert sanitize_subject(raw) == clean


def test_a_subject_is_cut_at_998_characters(catalog: TemplateCatalog) -> None:
    message = catalog.render("echo", "en", {"value": "x" * 5000})
    assert len(message.subject) == 998
    assert message.text_body == "x" * 5000 + "\n"


# --- render_delivery ------------------------------------------------------------


def test_a_template_delivery_is_rendered_from_the_catalog(shipped: TemplateCatalog) -> None:
    # Given a template-mode login code delivery in Austrian German
    delivery = make_delivery(
        source=Source.AUTHSESSION,
        template_id="auth.login_code",
        locale="de-AT",
        variables={"code": "271828"},
        secret_variables=frozenset({"code"}),
    )
    # When it is rendered
    message = render_delivery(shipped, delivery)
    # Then German renders, with the fallback recorded
    assert message.resolved_locale == "de"
    assert message.locale_fallback_used
    assert "271828" in message.text_body


def test_a_template_delivery_without_locale_renders_en(catalog: TemplateCatalog) -> None:
    delivery = make_delivery(template_id="greeting", variables={"name": "A", "count": 1})
    message = render_delivery(catalog, delivery)
    assert (message.resolved_locale, message.locale_fallback_used) == ("en", False)


def test_a_template_delivery_without_template_is_unknown_template(
    catalog: TemplateCatalog,
) -> None:
    with pytest.raises(RenderError) as caught:
        render_delivery(catalog, make_delivery(template_id=None))
    assert caught.value.code == "unknown_template"


def test_a_rendered_delivery_is_taken_as_given_with_a_safe_subject(
    catalog: TemplateCatalog,
) -> None:
    # Given a rendered-mode delivery whose subject carries a line break
    delivery = make_delivery(
        payload_mode=PayloadMode.RENDERED,
        content=Content(
            subject="Invoice\r\nBcc: evil@example.org",
            text_body="Body {{ 7*7 }}\n",
            html_body="<p>Body</p>",
        ),
    )
    # When it is rendered
    message = render_delivery(catalog, delivery)
    # Then the bodies are untouched, the subject is one line, and no locale applies
    assert message == RenderedMessage(
        subject="Invoice Bcc: evil@example.org",
        text_body="Body {{ 7*7 }}\n",
        html_body="<p>Body</p>",
        resolved_locale=None,
        locale_fallback_used=False,
    )


def test_a_rendered_delivery_without_content_fails_classified(catalog: TemplateCatalog) -> None:
    with pytest.raises(RenderError) as caught:
        render_delivery(catalog, make_delivery(payload_mode=PayloadMode.RENDERED))
    assert caught.value.code == "render_failed"


# --- broken catalogs ------------------------------------------------------------

VALID_EN = {"t/en/subject.tmpl": "Subject\n", "t/en/text.tmpl": "Text\n"}


@pytest.mark.parametrize(
    ("files", "path", "line", "problem"),
    [
        pytest.param(
            {**VALID_EN, "t/en/text.tmpl": "one\ntwo\n{{ oops }\nfour\n"},
            "t/en/text.tmpl",
            3,
            "unexpected '}'",
            id="syntax-error",
        ),
        pytest.param(
            {"t/de/subject.tmpl": "S\n", "t/de/text.tmpl": "T\n"},
            "t",
            None,
            "no en locale",
            id="missing-en",
        ),
        pytest.param(
            {"t/en/text.tmpl": "T\n"},
            "t/en/subject.tmpl",
            None,
            "missing",
            id="missing-subject",
        ),
        pytest.param(
            {"t/en/subject.tmpl": "S\n"},
            "t/en/text.tmpl",
            None,
            "missing",
            id="missing-text",
        ),
        pytest.param(
            {**VALID_EN, "t/en/subject.tmpl": "Hello\nBcc: someone\n"},
            "t/en/subject.tmpl",
            2,
            "single line",
            id="multi-line-subject",
        ),
        pytest.param(
            {**VALID_EN, "t/en_US/subject.tmpl": "S\n", "t/en_US/text.tmpl": "T\n"},
            "t/en_US",
            None,
            "not a BCP 47 locale",
            id="bad-locale-folder",
        ),
        pytest.param(
            {**VALID_EN, "t/en/notes.txt": "x\n"},
            "t/en/notes.txt",
            None,
            "unexpected entry",
            id="stray-file",
        ),
        pytest.param(
            {**VALID_EN, "t/en/partials/x.tmpl": "x\n"},
            "t/en/partials",
            None,
            "unexpected entry",
            id="stray-folder",
        ),
        pytest.param(
            {**VALID_EN, "t/notes.txt": "x\n"},
            "t/notes.txt",
            None,
            "unexpected file",
            id="stray-file-in-template-folder",
        ),
        pytest.param(
            {"Bad_Name/en/subject.tmpl": "S\n", "Bad_Name/en/text.tmpl": "T\n"},
            "Bad_Name",
            None,
            "not a template id",
            id="bad-template-folder",
        ),
        pytest.param(
            {**VALID_EN, "t/EN/subject.tmpl": "S\n", "t/EN/text.tmpl": "T\n"},
            "t/en",
            None,
            "only in case",
            id="locale-twice-in-other-case",
        ),
        pytest.param(
            {**VALID_EN, "t/en/html.tmpl": "<p>\n{% include 'other' %}\n"},
            "t/en/html.tmpl",
            2,
            "include is not supported",
            id="include",
        ),
        pytest.param(
            {**VALID_EN, "t/en/html.tmpl": "<p>\n\n{{ x | no_such_filter }}\n"},
            "t/en/html.tmpl",
            3,
            "no_such_filter",
            id="unknown-filter",
        ),
        pytest.param(
            {"README.md": "only a readme\n"},
            None,
            None,
            "holds no templates",
            id="empty",
        ),
    ],
)
def test_a_broken_catalog_fails_the_load_naming_file_and_line(
    tmp_path: Path,
    files: dict[str, str],
    path: str | None,
    line: int | None,
    problem: str,
) -> None:
    # Given a catalog with one thing wrong
    root = write_catalog(tmp_path / "catalog", files)
    # When it is loaded
    with pytest.raises(CatalogError) as caught:
        TemplateCatalog.load(root)
    # Then the error names the file (relative to the catalog), the line and the problem
    error = caught.value
    assert (error.path, error.line) == (path, line)
    assert problem in str(error)
    if path is not None:
        where = path if line is None else f"{path}, line {line}"
        assert f"template catalog: {where}: " in str(error)
        assert str(tmp_path) not in str(error)


def test_a_missing_catalog_folder_fails_the_load(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="does not exist"):
        TemplateCatalog.load(tmp_path / "absent")


def test_a_catalog_file_that_is_not_utf8_fails_the_load(tmp_path: Path) -> None:
    root = write_catalog(tmp_path, VALID_EN)
    (root / "t/en/text.tmpl").write_bytes(b"caf\xe9\n")
    with pytest.raises(CatalogError, match="UTF-8") as caught:
        TemplateCatalog.load(root)
    assert caught.value.path == "t/en/text.tmpl"


def test_a_subject_may_end_with_a_newline_in_either_convention(tmp_path: Path) -> None:
    # Given subjects ending with LF, CRLF, or nothing
    root = write_catalog(
        tmp_path,
        {
            **VALID_EN,
            "t/en/subject.tmpl": "Subject\r\n",
            "t/de/subject.tmpl": "Betreff",
            "t/de/text.tmpl": "Text\n",
        },
    )
    # When the catalog is loaded and rendered
    catalog = TemplateCatalog.load(root)
    # Then each subject is its one line
    assert catalog.render("t", "en", {}).subject == "Subject"
    assert catalog.render("t", "de", {}).subject == "Betreff"
