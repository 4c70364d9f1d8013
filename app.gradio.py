"""AI Studio's app hosting (应用) starts this file: app.py, listening on every interface at GRADIO_SERVER_PORT.

Upload beside it the project's .py files, onednn_conv/, requirements.txt and requirements-app.txt, and the model as
output/checkpoint.safetensors (or output/generator.safetensors). docs/app.md says more.
"""

import os
import sys

import utils

import app

if __name__ == "__main__" or os.environ.get("GRADIO_SERVER_PORT"):
    sys.exit(utils.run_cli(app.main, ["--host", "0.0.0.0"]))
