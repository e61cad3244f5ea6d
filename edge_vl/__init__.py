"""edge-vl: adapt vision-language models with DAS (parameter- and computation-efficient transfer
learning) and run them on CPUs with OpenVINO.

The top-level package is the device API and imports no torch or transformers: the device core
(:mod:`~edge_vl.bundle`, :mod:`~edge_vl.manifest`, :mod:`~edge_vl.signing`, :mod:`~edge_vl.runtime`)
and :class:`~edge_vl.config.BuildConfig`. Torch code lives in :mod:`edge_vl.training` and the build
in :mod:`edge_vl.pipeline`; ``edge_vl.build(config)`` imports them when it is first used.
"""

from typing import Any

from edge_vl._version import __version__ as __version__
from edge_vl.bundle import Bundle as Bundle
from edge_vl.bundle import read_bundle as read_bundle
from edge_vl.config import BuildConfig as BuildConfig
from edge_vl.errors import BuildError as BuildError
from edge_vl.errors import BundleError as BundleError
from edge_vl.errors import ClosedError as ClosedError
from edge_vl.errors import CPUError as CPUError
from edge_vl.errors import DataError as DataError
from edge_vl.errors import EdgeVLError as EdgeVLError
from edge_vl.errors import ExportError as ExportError
from edge_vl.errors import IncompatibleBundleError as IncompatibleBundleError
from edge_vl.errors import InputError as InputError
from edge_vl.errors import MissingExtraError as MissingExtraError
from edge_vl.errors import ModelError as ModelError
from edge_vl.errors import OutputError as OutputError
from edge_vl.runtime import Prediction as Prediction
from edge_vl.runtime import Predictor as Predictor


def __getattr__(name: str) -> Any:
    """``edge_vl.build``: the Python build entry point (:func:`edge_vl.pipeline.build`), imported
    on first use so that the device API stays torch-free."""
    if name == "build":
        from edge_vl.pipeline import build  # noqa: TID251 (the build entry point, imported on use)

        return build
    raise AttributeError(f"module 'edge_vl' has no attribute {name!r}")
