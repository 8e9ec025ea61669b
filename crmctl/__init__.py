"""crmctl: a terminal control room for the cutover of an enterprise CRM to Dynamics 365."""

__version__ = "0.1.0"
