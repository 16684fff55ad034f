"""SQS commands: the typed envelope, one module per handler, and the table that joins them."""
