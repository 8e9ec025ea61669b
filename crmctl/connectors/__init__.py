"""Connectors: the only code in crmctl that talks to Dynamics (GET only) and to the source (read-only).

Modules: `limits` (one shared budget per target), `querylog` (what every check asked),
`errors` (one-sentence, secret-free failures), `auth` (tokens), `dataverse` (Web API client),
`sql` (source databases). Import from the modules; this package stays cheap to import.
"""
