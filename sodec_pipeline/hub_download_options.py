"""The keyword arguments of a Hugging Face Hub download (``from_pretrained``'s Hub options), named once for
every loader of this package."""

from typing import Any, Dict


HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "token")


def pop_hub_kwargs(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Removes the Hub options from ``kwargs`` and returns them."""
    return {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
