# Rewritten by build/ for each release; the frozen exe reports this version.
__version__ = "1.0.0"
