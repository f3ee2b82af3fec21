"""Everything that administers Prefect or faces people, in rooms: ``cli`` (the one command
line, the top), ``api`` (the HTTP API), ``local`` (the embedded default's own server and
service), ``worker`` (the warm process worker) and ``operations`` (what the app and
operators call, under them all); ``prefect_private`` is the one module with Prefect's
private names. ``pyproject.toml``'s import-linter contracts say who may import whom."""
