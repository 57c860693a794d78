"""Fault tests: private servers stopped, killed, paused, restarted or reconfigured under the saver."""
