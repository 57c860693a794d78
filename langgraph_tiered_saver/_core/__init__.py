"""The cross-tier operations of the saver (sans-I/O) and the runtime that runs them."""
