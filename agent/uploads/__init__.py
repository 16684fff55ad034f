"""Bulk uploads to the Flynotes backend: passes over R4 tables (`passes`), chunks of at most
`rows_per_request` rows per POST (`chunks`), and the change ledger that lets an hourly pass
send only what changed (`ledger`). See docs/backend-contract.md, "Uploads"."""
