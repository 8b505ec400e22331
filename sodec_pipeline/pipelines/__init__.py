from .pipeline_output import SODECPipelineOutput
from .pipeline_sodec import SODECPipeline

__all__ = ["SODECPipeline", "SODECPipelineOutput"]
