"""Jinja2 templates of the watchdog report, and their rendering."""
