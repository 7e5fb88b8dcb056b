"""A private Orthanc for one test session: Debian's ``orthanc`` with its ``orthanc-dicomweb`` plugin.

It runs as a child process on a free loopback port with its own configuration, storage and log in a
temporary folder, so it neither needs nor touches the system service that Debian's package may
have started (that one listens on 8042 and stores under /var/lib/orthanc).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

# where Debian installs them (``dpkg -L orthanc orthanc-dicomweb``)
ORTHANC_BINARIES = ("Orthanc", "/usr/sbin/Orthanc")
DICOMWEB_PLUGINS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so.1.7")
DICOMWEB_ROOT = "/dicom-web/"
START_TIMEOUT_S = 30.0


def find_orthanc() -> tuple[str | None, str | None, str]:
    """(binary, plugin, why not) — the reason names what is missing and how to install it."""
    binary = next((b for b in (shutil.which(n) or (n if os.access(n, os.X_OK) else None) for n in ORTHANC_BINARIES)
                   if b), None)
    plugin = next((p for p in DICOMWEB_PLUGINS if Path(p).is_file()), None)
    missing = [name for name, found in (("orthanc", binary), ("orthanc-dicomweb", plugin)) if not found]
    why = (f"Debian package(s) {' and '.join(missing)} not installed "
           f"(apt-get install --no-install-recommends {' '.join(missing)}; scripts/test.sh does it as root)")
    return binary, plugin, why if missing else ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(folder: Path, plugin: str, http_port: int) -> Path:
    storage = folder / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "medic-ad-test",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "HttpThreadsCount": 4,
        "ConcurrentJobs": 1,
        "SaveJobs": False,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": DICOMWEB_ROOT, "EnableWado": False, "Ssl": False,
                     "Host": f"127.0.0.1:{http_port}"},
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


class Orthanc:
    """A running Orthanc: ``url`` is its REST root, ``dicomweb_url`` its DICOMweb root."""

    def __init__(self, binary: str, plugin: str, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dicomweb_url = self.url + DICOMWEB_ROOT.rstrip("/")
        self.log = folder / "orthanc.log"
        config = write_config(folder, plugin, self.port)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([binary, str(config)], stdout=log, stderr=subprocess.STDOUT,
                                            cwd=folder, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/system", timeout=2) as response:
                    system = json.load(response)
                with urllib.request.urlopen(self.url + "/plugins", timeout=2) as response:
                    if "dicom-web" not in json.load(response):
                        raise RuntimeError(f"Orthanc started without its DICOMweb plugin: {self.tail()}")
                self.version = system.get("Version")
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        raise RuntimeError(f"Orthanc did not answer on {self.url} within {START_TIMEOUT_S:.0f} s: {self.tail()}")

    def tail(self, n: int = 15) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return " | ".join(lines[-n:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
