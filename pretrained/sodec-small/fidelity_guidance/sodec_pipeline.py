"""The classes of this folder's sodec_pipeline components, imported from the installed sodec-pipeline package.

With this file, diffusers.DiffusionPipeline.from_pretrained(folder_or_repo_id, trust_remote_code=True) loads the
pipeline in any interpreter where sodec-pipeline is installed (pip install sodec-pipeline), without importing
sodec_pipeline first. Written by SODECPipeline.save_pretrained; it holds no model code.
"""

from sodec_pipeline.models.compression_vae import CompressionVAE
from sodec_pipeline.models.fidelity_guidance_encoder import FidelityGuidanceEncoder
from sodec_pipeline.schedulers.scheduling_sodec import SODECScheduler


__all__ = ["CompressionVAE", "FidelityGuidanceEncoder", "SODECScheduler"]
