"""`masn serve`: a local web app to browse a feature store, ask trained models and compare runs.

``settings`` (torch-free) defines the command; ``server`` checks the serve extra, binds and runs
the app of ``app``, whose pages read the store through ``catalogue``, the runs' evaluations
through ``runs``, ask models through ``asking`` and read uploads through ``uploads``. The page
templates and static files are package data.
"""
