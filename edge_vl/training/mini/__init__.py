"""edge-vl-mini, the embedded default model (build-time only: imports torch and transformers)."""

from edge_vl.training.mini.modeling import MODEL_TYPE as MODEL_TYPE
from edge_vl.training.mini.modeling import EdgeVLMiniConfig as EdgeVLMiniConfig
from edge_vl.training.mini.modeling import EdgeVLMiniModel as EdgeVLMiniModel


def _register_with_transformers() -> None:
    """Make ``AutoConfig``/``AutoModel.from_pretrained`` recognise edge-vl-mini directories."""
    from transformers import AutoConfig, AutoModel

    try:
        AutoConfig.register(MODEL_TYPE, EdgeVLMiniConfig)
        AutoModel.register(EdgeVLMiniConfig, EdgeVLMiniModel)
    except ValueError:  # already registered (module reloaded)
        pass


_register_with_transformers()
