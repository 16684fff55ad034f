"""Stand-ins for the practice's real parts (R4 database, Flynotes backend, SQS) and the demo."""
