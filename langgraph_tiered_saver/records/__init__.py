"""What both tiers store: byte layouts, the readable JSON copy, ids and what an id may be, metadata filters."""
