"""R4 database layer: SQL text, SELECT-only guard, reader over the real ODBC stack."""
