"""How Alembic runs explorer's revisions: on the connection the store passes in.

There is no alembic.ini: `explorer.store.migrate` builds the configuration and
puts its open connection in ``config.attributes["connection"]``. The writer
calls it inside its own transaction, so an upgrade, stamping included, is all
or nothing, and Alembic joins that transaction rather than starting one.
"""

from __future__ import annotations

from alembic import context

from explorer.store.migrate import record_step
from explorer.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("explorer's migrations run through explorer.store (Writer.open, or "
                       "`python -m explorer.store`), which hands them a connection")
context.configure(connection=connection, target_metadata=metadata,
                  on_version_apply=record_step)
with context.begin_transaction():
    context.run_migrations()
