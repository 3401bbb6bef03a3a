"""`edgecxr serve`: the clinic station, a one-page web app over the edge runtime (extra `[station]`).

app.py (the routes), log.py (the SQLite log), auth.py (the access token off loopback), guards.py,
uploads.py and protocol.py (what a hostile network meets), command.py (the CLI command) and static/
(the page, shipped in the wheel). The model card it serves is edge_runtime/model_card.py's.
"""
