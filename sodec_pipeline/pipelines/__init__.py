from .diffusers_registration import register_with_diffusers
from .pipeline_output import SODECPipelineOutput
from .pipeline_sodec import SODECPipeline

register_with_diffusers(SODECPipeline)

__all__ = ["SODECPipeline", "SODECPipelineOutput"]
