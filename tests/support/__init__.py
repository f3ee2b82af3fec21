"""Test support: services started on free ports, media factories."""
