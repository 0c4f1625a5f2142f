"""The frozen encoder (DINOv2 via timm) and its on-disk feature cache."""

from omg_lite.features.cache import FeatureCache
from omg_lite.features.encoder import BackboneFeatures, DinoEncoder, EncoderOutput, RandomWeightsWarning, build_encoder

__all__ = ["BackboneFeatures", "DinoEncoder", "EncoderOutput", "FeatureCache", "RandomWeightsWarning", "build_encoder"]
