"""PyInstaller runtime hook for exes built by the Wine harness ONLY (never in a release build).

Wine 8's kernel32 lacks CopyFile2, which Python 3.13's shutil.copy2 calls through
_winapi.CopyFile2 (the process aborts on the unimplemented import). Without the attribute,
shutil falls back to its portable copy. build/r4agent.spec adds this hook only when
R4AGENT_BUILD_WINE_WORKAROUNDS=1 (set by build/wine/winehost.py).
"""

import sys

if sys.platform == "win32":
    import _winapi

    if hasattr(_winapi, "CopyFile2"):
        del _winapi.CopyFile2
