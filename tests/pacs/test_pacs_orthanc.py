"""The Orthanc fixture's own promises: it says what is missing, and it runs apart from any system Orthanc."""

from __future__ import annotations

import json
import urllib.request

import orthanc as orthanc_module


def test_missing_packages_are_named(monkeypatch):
    monkeypatch.setattr(orthanc_module, "ORTHANC_BINARIES", ("/nonexistent/Orthanc",))
    monkeypatch.setattr(orthanc_module, "DICOMWEB_PLUGINS", ("/nonexistent/libOrthancDicomWeb.so",))
    binary, plugin, why = orthanc_module.find_orthanc()
    assert (binary, plugin) == (None, None)
    assert "orthanc and orthanc-dicomweb not installed" in why and "apt-get install" in why


def test_private_instance_on_loopback(orthanc, tmp_path):
    assert orthanc.url.startswith("http://127.0.0.1:") and orthanc.port != 8042  # not the system service's port
    config = json.loads((orthanc.log.parent / "orthanc.json").read_text())
    assert config["RemoteAccessAllowed"] is False and config["AuthenticationEnabled"] is False
    assert config["StorageDirectory"].startswith(str(orthanc.log.parent))
    with urllib.request.urlopen(orthanc.url + "/plugins", timeout=5) as response:
        assert "dicom-web" in json.load(response)
