"""The model zoo. Importing this package registers every architecture in :data:`MODELS`."""

from sparsesnn.models import convnet as _convnet  # noqa: F401  (registers)
from sparsesnn.models import mlp as _mlp  # noqa: F401
from sparsesnn.models import resnet19 as _resnet19  # noqa: F401
from sparsesnn.models import sdsnn_cifar as _sdsnn_cifar  # noqa: F401
from sparsesnn.models import vgg16 as _vgg16  # noqa: F401
from sparsesnn.models import vggsnn as _vggsnn  # noqa: F401
from sparsesnn.models.common import NeuronSpec, count_parameters
from sparsesnn.models.registry import MODELS, build_model

__all__ = ["MODELS", "NeuronSpec", "build_model", "count_parameters"]
