"""The device runtime: bundle → OpenVINO inference. Imports openvino, numpy, Pillow and tokenizers only."""

from edge_vl.runtime.predictor import Prediction as Prediction
from edge_vl.runtime.predictor import Predictor as Predictor
