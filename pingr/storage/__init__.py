"""SQLite storage: the schema, the batched writer and its spool, retention, queries."""
