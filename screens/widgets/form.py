"""The one dialog every screen asks its questions through: a few fields, journalled on submit.

Step actions, new runs and overrides (Runbook), decisions (Rollback), incident titles, notes and
resolutions (Incidents, and `i` on Checks), baselines (Hypercare), sign-offs and lessons
(Evidence) all ask the same way: a titled box, a line on what happens, the fields, and a line
for why it was not journalled. The dialog never writes anything itself: `submit` goes through
the ControlRoom, in a worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, ClassVar, Sequence, cast

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Select, Static

from screens.widgets.footer import ControlFooter


@dataclass(frozen=True)
class FormField:
    """One field of a `FormDialog`."""

    name: str
    label: str
    options: Sequence[tuple[str, str]] = ()
    """(label, value) choices: a Select; empty: a text Input."""
    required: str = ""
    """The message shown when the field is left empty ("" means optional)."""
    placeholder: str = ""
    value: str = ""
    blank: bool = True
    """For a Select: whether "no choice" is possible (False: one of the options is always chosen)."""


Submit = Callable[[dict[str, str]], Awaitable[str]]
"""Journals the form; returns the acknowledgement, raises a refusal (see `refusals`) to refuse."""


def refusals() -> tuple[type[BaseException], ...]:
    """What the rules raise to say no: shown as "Refused: …" with every value kept.

    Imported late: these live in the core modules each screen already uses.
    """
    from crmctl.control import ReadOnlyError
    from crmctl.hypercare import BaselineRefused
    from crmctl.incidents import IncidentRefused
    from crmctl.runbook import Refused

    return (Refused, IncidentRefused, BaselineRefused, ReadOnlyError)


class FormDialog(ModalScreen[str | None]):
    """Asks for a few values, then submits them through the control room (in a worker).

    A refusal is shown inside the dialog with every typed value kept, so nothing is lost and the
    operator fixes what the message names; the dialog closes only once the journal has
    committed, dismissing with the acknowledgement (None when cancelled).
    """

    CSS_PATH = "form.tcss"
    """App-level CSS (not DEFAULT_CSS), so that it outranks the app's `Screen` background and the
    screen under the dialog shows through, dimmed."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel", id="form.cancel"),
        Binding("ctrl+s", "submit", "Submit", id="form.submit", tooltip="Journal it (enter in a text field too)"),
    ]

    def __init__(self, title: str, about: str, fields: Sequence[FormField], submit: Submit, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.form_title = title
        self.about = about
        self.fields = tuple(fields)
        self.submit = submit
        self.busy = False

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="form-box"):
            if self.about:
                yield Static(Content(self.about), id="form-about")
            for f in self.fields:
                yield Static(Content.from_markup("[b]$label[/]", label=f.label), classes="form-label")
                if f.options:
                    yield Select(list(f.options), prompt=f.placeholder or "choose…", id=f"field-{f.name}",
                                 value=f.value if f.value else Select.NULL, allow_blank=f.blank)
                else:
                    yield Input(value=f.value, placeholder=f.placeholder, id=f"field-{f.name}")
            yield Static("", id="form-error")
        yield ControlFooter()

    def on_mount(self) -> None:
        box = self.query_one("#form-box")
        box.border_title = self.form_title
        box.border_subtitle = "enter or ctrl+s journals · esc cancels"
        if self.app.is_headless:
            for widget in self.query(Input):
                widget.cursor_blink = False
        first = next((f for f in self.fields if not f.value), self.fields[0] if self.fields else None)
        if first is not None:
            self.query_one(f"#field-{first.name}").focus()

    def values(self) -> dict[str, str]:
        """The current value of every field ("" when empty)."""
        out: dict[str, str] = {}
        for f in self.fields:
            widget = self.query_one(f"#field-{f.name}")
            if isinstance(widget, Select):
                value = widget.value
                out[f.name] = "" if value is Select.NULL or value is None else str(value)
            else:
                out[f.name] = cast(Input, widget).value.strip()
        return out

    @on(Input.Submitted)
    def _entered(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_submit()

    def action_submit(self) -> None:
        """Checks the required fields, then journals through the room in a worker."""
        if self.busy:
            return
        values = self.values()
        for f in self.fields:
            if f.required and not values[f.name]:
                self.show_error(f.required)
                self.query_one(f"#field-{f.name}").focus()
                return
        self.busy = True
        self.run_worker(self._submit(values), group="form-submit", exclusive=True, exit_on_error=False)

    async def _submit(self, values: dict[str, str]) -> None:
        try:
            ack = await self.submit(values)
        except refusals() as exc:
            self.show_error(f"Refused: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - a store failure: say so, keep the values
            self.show_error(f"Not journalled ({type(exc).__name__}): {exc}")
            return
        finally:
            self.busy = False
        self.dismiss(ack)

    def show_error(self, text: str) -> None:
        """Shows why the form was not journalled (the values stay as typed)."""
        self.query_one("#form-error", Static).update(Content.from_markup("[b $text-error]$t[/]", t=text))


def text_dialog(
    title: str,
    label: str,
    submit: Callable[[str, str | None], Awaitable[str]],
    *,
    required: str = "",
    severity: Sequence[tuple[str, str]] = (),
    about: str = "",
) -> FormDialog:
    """A dialog asking one line of text (and, given `severity` options, a severity).

    `submit(text, severity)` is called with the severity's value, or None when not asked.
    """
    fields = [FormField("text", label, required=required)]
    if severity:
        fields.append(FormField("severity", "Severity (when unsure, UNKNOWN: it escalates like SEV1)",
                                options=severity, value=severity[0][1], blank=False))

    async def journal(values: dict[str, str]) -> str:
        return await submit(values["text"], values.get("severity") or None)

    return FormDialog(title, about, fields, journal)


__all__ = ["FormDialog", "FormField", "Submit", "refusals", "text_dialog"]
