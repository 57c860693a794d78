"""Sans-I/O plumbing: the requests ops yield, the drivers that run them, the scripted driver, Postgres fault classification, and the scheduler that runs background jobs."""
