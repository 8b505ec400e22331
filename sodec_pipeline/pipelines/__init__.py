from .diffusers_registration import register_with_diffusers
from .pipeline_output import SODECPipelineOutput
from .pipeline_sodec import DecodeOptions, SODECPipeline
from .random_initialisation import build_pipeline_from_config


register_with_diffusers(SODECPipeline)

__all__ = ["DecodeOptions", "SODECPipeline", "SODECPipelineOutput", "build_pipeline_from_config"]
