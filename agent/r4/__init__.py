"""R4 (Carestream, SQL Server 2008) access: SQL text, SELECT-only connection, record reader."""
