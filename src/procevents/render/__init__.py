"""Renderers: turn events (and their enrichment) into text lines or JSON."""
