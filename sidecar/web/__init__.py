"""The HTTP layer: the route table, views, OpenAPI document, problems, auth, app factory."""
