"""The telemetry dashboard: CPO per arm and day, the funnel, the five factors, latency, losses and the
experiment's verdict, as one HTML page of server-side SVG charts (no JavaScript, nothing fetched).

``app`` is the ``opportune dashboard`` command (serve, or ``--export`` one file); ``web`` the read-only
HTTP server on 127.0.0.1; ``data`` computes the view from events; ``page`` renders it; ``svg`` draws.
"""
