"""Surviving outages: which failures are a message's fault (faults), and the breakers that stop
receiving while R4 or the backend is down (breaker)."""
