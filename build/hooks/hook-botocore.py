"""botocore, slimmed to what the agent calls: SQS (its queue) and STS (credential checks).

Replaces pyinstaller-hooks-contrib's hook (which ships all of botocore/data, ~28 MB of JSON):
only the data files those two clients load, plus the partition/retry/default-config files
every client reads and an endpoints.json reduced to the two services. A cut too deep fails
the frozen smoke test (tests/freeze/), which makes a real SQS call and a real STS call.
"""

from __future__ import annotations

import json
from pathlib import Path

from PyInstaller.config import CONF
from PyInstaller.utils.hooks import get_module_file_attribute

SERVICES = ("sqs", "sts")
COMMON_FILES = ("_retry.json", "partitions.json", "sdk-default-configuration.json")

hiddenimports = ["html.parser"]

_data = Path(get_module_file_attribute("botocore")).parent / "data"
datas: list[tuple[str, str]] = [(str(_data / name), "botocore/data") for name in COMMON_FILES]
for _service in SERVICES:
    for _file in sorted((_data / _service).rglob("*")):
        if _file.is_file() and not _file.name.startswith("examples-"):
            _dest = Path("botocore/data") / _file.relative_to(_data).parent
            datas.append((str(_file), _dest.as_posix()))


def _reduced_endpoints(source: Path, keep: tuple[str, ...]) -> dict[str, object]:
    endpoints = json.loads(source.read_text(encoding="utf-8"))
    for partition in endpoints["partitions"]:
        partition["services"] = {
            name: spec for name, spec in partition["services"].items() if name in keep
        }
    return dict(endpoints)


_slim_dir = Path(CONF["workpath"]) / "botocore-slim"
_slim_dir.mkdir(parents=True, exist_ok=True)
_slim_endpoints = _slim_dir / "endpoints.json"
_text = json.dumps(_reduced_endpoints(_data / "endpoints.json", SERVICES), indent=1) + "\n"
if not _slim_endpoints.exists() or _slim_endpoints.read_text(encoding="utf-8") != _text:
    _slim_endpoints.write_text(_text, encoding="utf-8", newline="\n")
datas.append((str(_slim_endpoints), "botocore/data"))
