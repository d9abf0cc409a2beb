"""The web console: read-mostly pages over one instance (``kapell up``) or one cluster (the
operator), rendered on the server with Jinja2 and refreshed with htmx; plots are drawn by uPlot.

Both modes serve the same app (``console.app.console_app``); only the ``ConsoleSource`` they
hand it differs, so a page means the same thing on a laptop and on a cluster.
"""
