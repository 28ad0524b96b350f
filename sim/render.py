"""Fast headless MuJoCo rendering (EGL by default) for simulated cameras.

Software EGL renders a 128 px MetaWorld frame in ~65 ms with MuJoCo's defaults and in ~5-7 ms with
shadows, reflections and multisampling off, which is what ``OffscreenCamera`` does.
"""

from __future__ import annotations

import importlib.util

import mujoco
import numpy as np

from tether.sim.gl import RenderBackendError, backend_hint


def load_triton_before_gl() -> None:
    """Mesa's software GL and triton each load their own LLVM, and triton's crashes the process
    if Mesa's came first (see ``tether.sim.gl``). Where triton is installed (torch's CUDA builds),
    load it before the first GL context, which costs ~0.15 s once."""
    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401


class OffscreenCamera:
    """Renders RGB frames of a MuJoCo model from a named camera.

    Args:
        model, data: the MuJoCo model and data to render (``data`` is read at each ``render``).
        camera: a camera name in the model.
        height, width: image size in pixels.

    Raises:
        RenderBackendError: no offscreen context could be created (message says what to install).
        ValueError: the camera does not exist.
    """

    def __init__(self, model: mujoco.MjModel, camera: str, height: int = 128, width: int = 128):
        if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
            raise ValueError(f"camera {camera!r} is not in the model")
        load_triton_before_gl()
        model.vis.quality.offsamples = 0
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        try:
            self._renderer = mujoco.Renderer(model, height=height, width=width)
        except Exception as e:  # the backends raise many types (ImportError, EGLError, ...)
            detail = " ".join(str(e).split())
            raise RenderBackendError(f"{backend_hint()} ({type(e).__name__}: {detail})") from e
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self.camera = camera
        self.shape = (height, width, 3)

    def render(self, data: mujoco.MjData) -> np.ndarray:
        """Return an RGB frame, uint8 of shape (height, width, 3)."""
        self._renderer.update_scene(data, camera=self.camera)
        return self._renderer.render()

    def close(self) -> None:
        self._renderer.close()

