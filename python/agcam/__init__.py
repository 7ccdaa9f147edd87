"""AGCAM (Attention-Guided CAM) explanations of Vision Transformers, on any GPU through wgpu.

``agcam`` calls the agcam Rust library: the same engine, preprocessing and numbers as the
``agcam`` command line, with numpy arrays in and out::

    import agcam
    ex = agcam.Explainer()                      # the bundled demo model
    r = ex.explain("photo.png", top_k=3)
    r.maps        # float32 [B, K, gh, gw]: the raw grids (what the CLI writes to .npy)
    r.classes     # int64 [B, K]: explained classes
    r.logits      # float32 [B, num_classes]
    r.predicted   # int64 [B]
    ex.predict(images)                          # float32 logits [B, num_classes]
    ex.config                                   # dict describing the model
    agcam.overlay(image_uint8_hwc, r.maps[0, 0], alpha=0.5)  # uint8 HWC, as the CLI's PNG

``images`` is a path (str or os.PathLike), a list of paths, a uint8 array [H, W, 3] or
[B, H, W, 3] (or a list of [H, W, 3] arrays of any sizes), preprocessed exactly as the CLI
preprocesses files, or a float32 array [B, 3, H, W] already resized and normalised.

Errors of the engine are raised as ``FileNotFoundError`` (a missing file), ``ValueError`` (a
bad argument, image or checkpoint) or :class:`AgcamError` (the GPU, other I/O), with the
engine's message; a list of files fails as a whole at its first unreadable file. A result
holding a NaN or an infinity (from NaN input, or weights that overflow) raises ValueError naming
the image, as the command line reports such a picture as failed. The GIL is released while
images are decoded and while the GPU works.

Importing ``agcam`` sets ``XDG_RUNTIME_DIR`` to a private folder when it is unset, as the
command line does, so that Mesa's OpenGL driver does not print a spurious error.
"""

import os as _os


def _ensure_runtime_dir():
    """Points XDG_RUNTIME_DIR at a private folder when it is unset or not a folder, as the agcam
    command line does: Mesa's EGL, probed for the OpenGL adapter, otherwise prints "error:
    XDG_RUNTIME_DIR is invalid or not set in the environment." whenever an Explainer is made,
    which reads as if agcam had failed."""
    current = _os.environ.get("XDG_RUNTIME_DIR")
    if (current and _os.path.isabs(current) and _os.path.isdir(current)) or _os.name != "posix":
        return
    import stat
    import tempfile

    uid = _os.getuid()
    # One folder per user, as XDG asks: owned by the user, mode 0700 (the command line's too).
    path = _os.path.join(tempfile.gettempdir(), f"agcam-runtime-{uid}")
    try:
        _os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return
    st = _os.lstat(path)
    if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and st.st_mode & 0o077 == 0:
        _os.environ["XDG_RUNTIME_DIR"] = path


_ensure_runtime_dir()

#: The bundled demo checkpoint (a small ViT trained on agcam's synthetic shapes), used by
#: ``Explainer()`` when no weights are given. Its config ``demo.json`` lies beside it.
DEMO_WEIGHTS = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "demo", "demo.safetensors")

from ._agcam import AgcamError, Explainer, Explanation, overlay  # noqa: E402

__all__ = ["AgcamError", "DEMO_WEIGHTS", "Explainer", "Explanation", "overlay"]
