"""Alembic's environment and the schema's revisions (a package so that they install with it)."""
