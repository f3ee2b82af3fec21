"""Media processing pipeline for alert media, orchestrated by Prefect 3."""
