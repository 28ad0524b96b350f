"""The MUJOCO_GL rendering backend: a preflight check with a one-line fix when it is missing.

Software EGL is Mesa's llvmpipe, which loads its own LLVM. The torch builds that ship triton load
another LLVM when ``torch.optim``/``torch._dynamo`` first imports triton; if Mesa's came first, that
import crashes the process (SIGSEGV). ``OffscreenCamera`` therefore loads triton (when installed)
before it opens a GL context, and ``check_render_backend_isolated`` keeps a process that will
train free of GL altogether.
"""

from __future__ import annotations

import os
import subprocess
import sys


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


def check_render_backend_isolated(timeout_s: float = 60.0) -> None:
    """``check_render_backend`` in a child process, so this process loads no GL library.

    Raises:
        RenderBackendError: the child could not render (its one-line message is kept).
    """
    code = (
        "import sys\nfrom tether.sim.gl import check_render_backend, RenderBackendError\n"
        "try:\n    check_render_backend()\nexcept RenderBackendError as e:\n"
        "    print(e, file=sys.stderr)\n    sys.exit(1)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise RenderBackendError(lines[-1] if lines else f"{backend_hint()} (exit {proc.returncode})")
