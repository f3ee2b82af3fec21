"""The HTTP API (FastAPI): the seed's upload workflow, media, jobs, queues, alerts, erasure
and backfills, one module per resource, with its errors, security and server.

It calls the operations (``deployments.operations``) and, on the embedded default only
(``server.py``), the local instances (``deployments.local``); it never imports the CLI or
the worker (import-linter says so)."""
