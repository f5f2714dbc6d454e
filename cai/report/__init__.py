"""`cai report RUN`: one self-contained HTML page of what a run produced.

- `build`       gathers the run's files, draws the plots, renders the page
- `templates/`  the Jinja2 HTML templates (shared look for the report and the audit page)
"""
