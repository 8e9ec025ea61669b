"""What every screen and widget of the control room asks of the app: the app typed, whether this
session may act now, and a redraw that follows the journal and the clock."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, cast

from screens.widgets.live import WhenShown

if TYPE_CHECKING:
    from screens.app import CrmctlApp


class InTheRoom:
    """Mixin for the control room's screens (and widgets): `crmctl`, `live`, `follow`."""

    @property
    def crmctl(self) -> CrmctlApp:
        """The app, typed."""
        return cast("CrmctlApp", self.app)  # type: ignore[attr-defined]

    @property
    def live(self) -> bool:
        """True when this session may act: not read-only, and not showing the past (time travel)."""
        app = self.crmctl
        return not app.room.read_only and getattr(app, "as_of", None) is None

    def follow(self, redraw: Callable[[], object], *, only_when_shown: bool = True) -> None:
        """Calls `redraw` whenever the journal snapshot or the clock moves.

        With `only_when_shown` (the default) a screen hidden by another mode or a covering dialog
        is not redrawn, and catches up the moment it is shown again (`WhenShown`).
        """
        news: Callable[[], object] = WhenShown(self, redraw) if only_when_shown else redraw  # type: ignore[arg-type]
        self.watch(self.crmctl, "snapshot", news, init=False)  # type: ignore[attr-defined]
        self.watch(self.crmctl, "now", news, init=False)  # type: ignore[attr-defined]


__all__ = ["InTheRoom"]
