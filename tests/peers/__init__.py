"""Real third-party peers the test suite starts locally: an OIDC provider and an OData v4 server."""
