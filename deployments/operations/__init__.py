"""What the app and operators call, and the maintenance the workers run: the client API,
set-up, failures, the queue board, metrics, the reconciler (and how a run is doing),
retention, erasure, backfills, registration.

Plain functions over Prefect's client and the app database. They import no other room of
``deployments``: the API, the CLI, the worker and the local instances all build on them."""
