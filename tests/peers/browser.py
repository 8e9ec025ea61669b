"""A person at a browser, reduced to what a device-code sign-in needs: read a form, fill it, submit.

The OIDC provider's pages are real HTML forms with anti-CSRF fields and cookies; this walks them
the way a browser would (cookies kept, redirects followed, hidden fields sent back), so the device
code the test types in goes through the provider's genuine user-code, login and consent steps.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin

import aiohttp


@dataclass
class Form:
    """One <form>: where it posts, and the named fields it would submit as they stand."""

    action: str
    method: str
    form_id: str | None
    fields: dict[str, str] = field(default_factory=dict)


class _FormParser(HTMLParser):
    """Collects every form and its named <input> fields (buttons are left out: they are choices)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._current: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = Form(a.get("action", ""), a.get("method", "get").lower(), a.get("id"))
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and a.get("name"):
            self._current.fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def forms_of(html: str) -> list[Form]:
    """All forms on a page."""
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


class Browser:
    """Cookies, redirects and TLS trust of one person's browser session."""

    def __init__(self, ca_file: str) -> None:
        self._ssl = ssl.create_default_context(cafile=ca_file)
        # unsafe=True: cookies for an IP-address host (127.0.0.1) are kept, as browsers do.
        self._session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.url = ""
        self.html = ""

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def open(self, url: str) -> str:
        async with self._session.get(url, ssl=self._ssl) as response:
            return await self._page(response)

    async def submit(self, form: Form, **values: str) -> str:
        """Submits `form` with its own fields plus `values` (a person typing, or pressing a named button)."""
        data = {**form.fields, **values}
        target = urljoin(self.url, form.action or self.url)
        async with self._session.post(target, data=data, ssl=self._ssl) as response:
            return await self._page(response)

    def form(self, *, form_id: str | None = None, field_name: str | None = None) -> Form:
        """The form on the current page with that id, or holding that field."""
        for candidate in forms_of(self.html):
            if form_id is not None and candidate.form_id == form_id:
                return candidate
            if field_name is not None and field_name in candidate.fields:
                return candidate
        raise AssertionError(f"no such form on {self.url}: {self.html[:500]}")

    async def _page(self, response: aiohttp.ClientResponse) -> str:
        self.url = str(response.url)
        self.html = await response.text()
        if response.status >= 400:
            raise AssertionError(f"{response.status} from {self.url}: {self.html[:500]}")
        return self.html


async def approve_device_code(ca_file: str, verification_uri: str, user_code: str, login: str) -> str:
    """Signs `login` in on the provider's device page with `user_code` and consents; returns the last page.

    The steps are the provider's own: enter the code, confirm it is the code on the device, sign in
    (the development login page accepts any user name), and consent to the requested scopes.
    """
    async with Browser(ca_file) as browser:
        await browser.open(verification_uri)
        await browser.submit(browser.form(form_id="op.deviceInputForm"), user_code=user_code)
        await browser.submit(browser.form(form_id="op.deviceConfirmForm"))
        await browser.submit(browser.form(field_name="login"), login=login, password="any")
        await browser.submit(browser.form(field_name="prompt"))  # consent: prompt=consent
        if "Sign-in Success" not in browser.html:
            raise AssertionError(f"device sign-in did not succeed: {browser.html[:500]}")
        return browser.html
