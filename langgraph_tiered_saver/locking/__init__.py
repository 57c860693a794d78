"""Per-thread run locks with fencing tokens, and the automatic lock around each run."""
