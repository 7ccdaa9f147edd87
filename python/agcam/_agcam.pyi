"""Type stub of agcam's compiled module (re-exported by ``agcam``)."""

import os
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

PathLike = Union[str, "os.PathLike[str]"]
#: A path, a list of paths, a uint8 array [H, W, 3] or [B, H, W, 3], a list of uint8
#: [H, W, 3] arrays (any sizes), or a float32 array [B, 3, H, W] already resized and normalised.
Images = Union[PathLike, Sequence[PathLike], npt.NDArray[np.uint8], Sequence[npt.NDArray[np.uint8]], npt.NDArray[np.float32]]

class AgcamError(Exception):
    """An engine error that is neither a missing file (FileNotFoundError) nor a bad argument,
    image or checkpoint (ValueError): no usable GPU adapter, a failed GPU operation, other I/O."""

class Explainer:
    """A ViT checkpoint loaded on a GPU, ready to explain and classify images.

    Arguments are those of the command line's flags: ``weights`` a .safetensors file or a folder
    holding one (timm or Hugging Face ViT; default: the bundled demo model); ``config`` its JSON
    config (default: found beside the weights); ``backend`` "vulkan", "metal", "dx12" or "gl" and
    ``adapter`` an index from ``agcam devices`` (default: the best adapter); ``precision`` "f32"
    or "f16" (weights stored as f16); ``batch`` most images per GPU chunk (default 32);
    ``max_gpu_mem`` the activation memory budget in MiB (default 2048, at most 2**24: 16 TiB).

    Raises FileNotFoundError for missing files, ValueError for bad arguments (a negative
    ``adapter``, ``batch`` or ``max_gpu_mem`` included) or checkpoints, AgcamError when no
    adapter can run the model. Calls from several threads run one at a time.
    """

    def __init__(
        self,
        weights: Optional[PathLike] = None,
        config: Optional[PathLike] = None,
        backend: Optional[str] = None,
        adapter: Optional[int] = None,
        precision: str = "f32",
        batch: Optional[int] = None,
        max_gpu_mem: Optional[int] = None,
    ) -> None: ...
    @property
    def config(self) -> Dict[str, Any]:
        """The model: image_size (H, W), patch_size, grid (gh, gw), num_classes, labels (a list
        of names, or None), mean and std (RGB) and model (its name)."""
    @property
    def adapter(self) -> str:
        """The adapter the model runs on, e.g. "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)"."""
    def explain(
        self,
        images: Images,
        target: Union[None, int, Sequence[int]] = None,
        top_k: int = 1,
        method: str = "agcam",
    ) -> "Explanation":
        """Logits and maps of ``images``.

        ``target``: None explains the predicted class (or the ``top_k`` best classes), an int the
        same class for every image, a sequence of ints one class per image. ``method``: "agcam",
        "grad-cam" (class-token models only), "generic-attention" (Chefer et al. 2021, full
        backward; class-token models only), "transformer-attribution" (Chefer et al. CVPR 2021,
        LRP with attention gradients; class-token models only), or the class-agnostic baselines
        "attention-rollout" and "raw-attention". Files and uint8 arrays are preprocessed exactly as the command line
        preprocesses files, so the maps are the CLI's. The GIL is released while images are
        decoded and the GPU works.

        Raises FileNotFoundError or ValueError for the first file of a list that cannot be read
        (no partial result), ValueError for a bad argument (a negative ``top_k``, a bool or
        out-of-range class) and ValueError naming the image whose logits or map hold a NaN or an
        infinity (the command line reports such a picture as failed); a float32 batch holding
        NaN or infinite values is refused up front.
        """
    def predict(self, images: Images) -> npt.NDArray[np.float32]:
        """Logits [B, num_classes] of ``images`` (the forward pass only). Raises as ``explain``
        does, non-finite logits included."""

class Explanation:
    """What ``Explainer.explain`` returns for a batch of B images and K classes per image."""

    @property
    def maps(self) -> npt.NDArray[np.float32]:
        """[B, K, gh, gw]: the raw maps over the patch grid (what the CLI writes to .npy): no
        upsampling, no normalisation."""
    @property
    def classes(self) -> npt.NDArray[np.int64]:
        """[B, K]: the explained classes, best first for top-k."""
    @property
    def logits(self) -> npt.NDArray[np.float32]:
        """[B, num_classes]: the raw logits."""
    @property
    def predicted(self) -> npt.NDArray[np.int64]:
        """[B]: the predicted class (argmax of the logits, lowest index among ties)."""
    def record(
        self,
        index: int,
        rank: int = 0,
        image: Optional[PathLike] = None,
        map_file: Optional[str] = None,
        overlay_file: Optional[str] = None,
    ) -> Dict[str, Any]:
        """The JSON record ``agcam explain`` writes as ``<stem>.json`` for image ``index`` and its
        ``rank``-th explained class, as a dict; negative ``index`` and ``rank`` count from the
        end, as in a list (ValueError when out of range). ``image`` names the picture when it
        came as pixels (default: its path, or None); ``map_file``/``overlay_file`` the files
        written beside it (default None)."""
    def __len__(self) -> int: ...

def overlay(image: npt.NDArray[np.uint8], grid: npt.NDArray[np.float32], alpha: float = 0.5) -> npt.NDArray[np.uint8]:
    """The map ``grid`` [gh, gw] upsampled (bilinear) to ``image`` [H, W, 3], min-max normalised,
    in jet colours, blended at ``alpha`` over it: the CLI's overlay PNG, as uint8 [H, W, 3].
    ValueError for a grid holding NaN or infinite values, or ``alpha`` outside [0, 1]."""
