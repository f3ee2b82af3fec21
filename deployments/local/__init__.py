"""The embedded default's own instances: the local Prefect server of a data dir, the local
service (``media-pipeline api`` in the background) of each settings, and processing a
file in-process (``process``, ``demo``).

Only the CLI and the API's embedded mode import this room; it imports the operations and
neither the API, the CLI nor the worker."""
