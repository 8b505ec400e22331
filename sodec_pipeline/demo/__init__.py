"""The demo page of ``sodec demo`` and ``app.py``: a photo in, SODEC's two decodes beside JPEG, WebP and AVIF at
the same bytes out.

- :mod:`.comparison`: what the page shows for one photo, without any UI (numpy and Pillow only);
- :mod:`.app`: the Gradio page (needs the ``[demo]`` extra: ``pip install -e ".[demo]"``).
"""

import os


# Set before Gradio is imported (by .app): no usage reports to Gradio's servers unless the user asks for them.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
