"""`cai report RUN`: one self-contained HTML page of what a run produced.

- `build`       gathers the run's files, draws the plots, renders the page

The templates and plot helpers it shares with the audit and monitor pages live in `cai.pages`.
"""
