"""Wine harness (Windows Python in the build prefix): owner and DACL protection of folders.

    python read_owners.py PATH...   -> one JSON line: [{"path", "owner", "protected",
                                       "owner_trusted"}, ...]

`owner_trusted`: the owner is one the host's launch check accepts (installer/tree_security.py:
SYSTEM, Administrators, or the account running the check).
"""

import json
import sys

import win32api
import win32security

SE_DACL_PROTECTED = 0x1000
token = win32security.OpenProcessToken(win32api.GetCurrentProcess(), win32security.TOKEN_QUERY)
me = win32security.ConvertSidToStringSid(
    win32security.GetTokenInformation(token, win32security.TokenUser)[0]
)
found = []
for path in sys.argv[1:]:
    descriptor = win32security.GetNamedSecurityInfo(
        path,
        win32security.SE_FILE_OBJECT,
        win32security.OWNER_SECURITY_INFORMATION | win32security.DACL_SECURITY_INFORMATION,
    )
    owner = win32security.ConvertSidToStringSid(descriptor.GetSecurityDescriptorOwner())
    control, _revision = descriptor.GetSecurityDescriptorControl()
    found.append({
        "path": path,
        "owner": owner,
        "protected": bool(control & SE_DACL_PROTECTED),
        "owner_trusted": owner in {"S-1-5-18", "S-1-5-32-544", me},
    })
print(json.dumps(found))
