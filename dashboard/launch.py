"""``python -m dashboard.launch run APP [streamlit options] -- --store URL``: streamlit's
own command line, run in this process after starting `dashboard.live.warm` on a thread.

So the store is read while the server starts and the browser opens the page, not when
the first page asks: that page finds the newest experiment's trials in the shared cache.
Everything else is `streamlit run`'s, unchanged (explorer.serve builds the arguments).
"""

from __future__ import annotations

import sys
import threading

from streamlit.web import cli

from dashboard.live import store_url, warm

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Warm the cache for the store named after ``--`` in `argv`, then run streamlit."""
    url = store_url(argv[argv.index("--") + 1:] if "--" in argv else [])
    if url:
        threading.Thread(target=warm, args=(url,), name="explorer-warm", daemon=True).start()
    try:
        cli.main(args=argv, prog_name="streamlit")  # click: exits through SystemExit
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 0 if done.code is None else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
