"""The one command line, ``media-pipeline`` (``app.py``): the commands for one machine
(``local.py``) and those of the production profile (``operations.py``, ``erasure.py``,
``backfill.py``), with what they share (``common.py``).

The top of the house: it may import every other room, and nothing imports it."""
