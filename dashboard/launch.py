"""``python -m dashboard.launch run APP [streamlit options] -- --store URL``: reads the
store for the first page (`dashboard.live.warm`), then runs streamlit's own command line
in this process, so that the cache it filled is the one the app's scripts use.

The server answers once the first page's data is read: a browser opened on the address
it prints gets its charts without waiting for a read of the store (the server started
in 2.7 to 4.8 s at 100,000 trials against 1.5 to 2.1 s before, and in 12.6 s at
1,000,000; benchmarks/dashboard_scale.py prints it). Everything else is `streamlit run`'s, unchanged
(explorer.serve builds the arguments).
"""

from __future__ import annotations

import gc
import sys
import time

from streamlit.web import cli

from dashboard.live import store_url, warm
from explorer.errors import ExitCode

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Warm the cache for the store named after ``--`` in `argv`, then run streamlit."""
    url = store_url(argv[argv.index("--") + 1:] if "--" in argv else [])
    if url:
        print("explorer dashboard: reading the store for the first page...", file=sys.stderr,
              flush=True)
        started = time.perf_counter()
        try:
            read = warm(url)
        except KeyboardInterrupt:  # Ctrl-C while it reads (seconds at 1M trials)
            print("explorer dashboard: interrupted", file=sys.stderr, flush=True)
            return ExitCode.INTERRUPTED
        if read is not None:
            print(f"explorer dashboard: read {read} in {time.perf_counter() - started:.1f} s",
                  file=sys.stderr, flush=True)
    # Streamlit collects garbage (gc.collect(2)) after every script run, the live poll's
    # every 3 s included: a walk over every tracked object, 150,000 here once the modules
    # and the first page's trials are loaded, 65 to 75 ms each time. Those live as long
    # as the server, so they are moved out of the collector's sight; what later runs
    # make is still collected.
    gc.freeze()
    try:
        cli.main(args=argv, prog_name="streamlit")  # click: exits through SystemExit
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 0 if done.code is None else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
