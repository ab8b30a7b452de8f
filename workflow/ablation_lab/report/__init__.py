"""The study's HTML report (engine and Jinja2 templates) and its figures."""
