"""`edgecxr serve`: the clinic station, a one-page web app over the edge runtime (extra `[station]`).

app.py (the routes), log.py (the SQLite log), auth.py (the access token off loopback), card.py (the
model card), command.py (the CLI command) and static/ (the page, shipped in the wheel).
"""
