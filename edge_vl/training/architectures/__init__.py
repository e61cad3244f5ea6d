"""Architecture families (ViLT, …) over one contract, :class:`ArchitectureFamily`. Build-time only (torch)."""

from edge_vl.training.architectures.base import ArchitectureFamily as ArchitectureFamily
from edge_vl.training.architectures.base import InputShape as InputShape
from edge_vl.training.architectures.registry import family_for as family_for
from edge_vl.training.architectures.registry import family_for_checkpoint as family_for_checkpoint
from edge_vl.training.architectures.registry import register_family as register_family
