"""The Streamlit dashboard of nas: Pareto fronts, curves, seed variance and pruning.

`serve.serve(db_url, port)` starts it (``nas dashboard``); `app.py` routes to the pages
under views/, which read the store, read-only, through `queries`.
"""
