"""Renderers the stages' metadata share: Markdown tables and plots."""
