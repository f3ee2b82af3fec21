"""The ``media-warm-process`` worker: flow runs forked from a warm, pre-imported
interpreter (``warm.py``, ``starter.py``, ``interpreter.py``, ``child.py``, ``preload.py``),
its slots (``slots.py``) and its graceful stop.

Prefect finds it through the ``prefect.collections`` entry point. It imports the
operations it runs between flow runs (the reconciler, the queue board) and Prefect's
private surface (``deployments/prefect_private.py``); never the API, the CLI or the local
instances."""
