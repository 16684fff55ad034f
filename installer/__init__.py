"""The Windows service shell (service.py) and the MSI source (r4agent.wxs)."""
