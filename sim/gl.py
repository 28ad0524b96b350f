"""The MUJOCO_GL rendering backend: a preflight check with a one-line fix when it is missing."""

from __future__ import annotations

import os


class RenderBackendError(RuntimeError):
    """MuJoCo could not open an offscreen rendering context for the selected MUJOCO_GL backend."""


def backend_hint() -> str:
    """One line that says how to get a working MUJOCO_GL backend."""
    gl = os.environ.get("MUJOCO_GL", "")
    return (
        f"MuJoCo could not render headless with MUJOCO_GL={gl!r}: install EGL "
        "(Debian/Ubuntu: apt-get install libegl1 libgl1) and set MUJOCO_GL=egl, "
        "or install OSMesa (libosmesa6) and set MUJOCO_GL=osmesa"
    )


def check_render_backend() -> None:
    """Render one frame of a tiny scene with the MUJOCO_GL backend.

    Raises:
        RenderBackendError: the backend is unknown or its library is missing; the message says
            what to install or set.
    """
    try:
        import mujoco  # reads MUJOCO_GL: an unknown value fails here

        from tether.sim.render import OffscreenCamera

        model = mujoco.MjModel.from_xml_string(
            "<mujoco><worldbody><camera name='c' pos='0 -1 0' xyaxes='1 0 0 0 0 1'/>"
            "<geom type='sphere' size='0.1'/></worldbody></mujoco>"
        )
        camera = OffscreenCamera(model, "c", 8, 8)
        camera.render(mujoco.MjData(model))
        camera.close()
    except RenderBackendError:
        raise
    except Exception as e:  # the backends fail with many types (RuntimeError, FatalError, ...)
        detail = " ".join(str(e).split())  # keep the message on one line
        raise RenderBackendError(f"{backend_hint()} ({type(e).__name__}: {detail})") from e
