"""Tests without servers: the saver's operations answered by the scripted driver, and pure functions."""
