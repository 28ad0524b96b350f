"""What a user without a loadable pyrealsense2 is told: the extra to install when it is missing, the
system library when it is installed but does not load (pyrealsense2 2.59 links libusb-1.0)."""

import sys

import pytest

from tether.perception.cameras import CameraError
from tether.perception.cameras.realsense import _rs


class _Refuse:
    """A meta path finder that fails pyrealsense2's import as ``error`` does."""

    def __init__(self, error):
        self.error = error

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pyrealsense2":
            raise self.error
        return None


@pytest.mark.parametrize("error, message", [
    (ModuleNotFoundError("No module named 'pyrealsense2'"), r"need pyrealsense2: pip install 'tether\[realsense\]'"),
    (ImportError("libusb-1.0.so.0: cannot open shared object file"),
     r"installed but does not load: libusb-1.0.so.0.* apt-get install libusb-1.0-0"),
])
def test_a_pyrealsense2_that_cannot_be_imported_is_named_with_its_fix(monkeypatch, error, message):
    for name in [m for m in sys.modules if m.split(".")[0] == "pyrealsense2"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_Refuse(error), *sys.meta_path])
    with pytest.raises(CameraError, match=message):
        _rs()
