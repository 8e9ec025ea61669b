"""The Textual control room: the App (`screens.app.CrmctlApp`), one module per screen, widgets."""
