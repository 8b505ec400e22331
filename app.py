"""The SODEC demo page as a Hugging Face Space runs it (``python app.py``); ``sodec demo`` serves the same page.

Settings come from the environment: ``SODEC_MODEL`` (a pipeline folder, shipped name or Hub id; default the
shipped ``sodec-small``), and Gradio's own ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` (a Space sets them).
"""

import os
import sys

from sodec_pipeline.cli.dispatch import main


if __name__ == "__main__":
    argv = ["demo", "--host", os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
            "--port", os.environ.get("GRADIO_SERVER_PORT", "7860")]  # fmt: skip
    if os.environ.get("SODEC_MODEL"):
        argv += ["--model", os.environ["SODEC_MODEL"]]
    sys.exit(main(argv))
