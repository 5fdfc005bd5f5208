"""Bundled resources: default model, demo scans, colour tables (``xrayscreen.resources``)."""
