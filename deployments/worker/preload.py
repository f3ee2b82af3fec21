"""What the warm worker's interpreter does once, before it forks flow runs: import every
job's core (the job table names them lazily, so the flow alone does not) and set the
imaging libraries up. Only the warm worker imports this module: its side effects are the
worker's start-up, never an importer's."""

from __future__ import annotations

import importlib

from media_pipeline.imaging import prepare_imaging
from media_pipeline.settings import get_settings
from tasks.table import JOB_TABLE

for _job in JOB_TABLE:
    importlib.import_module(_job.core.split(":")[0])
prepare_imaging(get_settings().images.max_pixels)
