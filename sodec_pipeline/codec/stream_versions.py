"""The versions of the SODEC bitstream (docs/bitstream.md): which entropy model wrote a stream's strings. Pure
Python: the container (``bitstream.py``) checks them, and each entropy model (``entropy_models.py``) says which it
writes and reads, without the models importing the container."""

#: The version of the mean-scale hyperprior's streams (every model before the context models).
FORMAT_VERSION = 3
#: The version of the checkerboard context model's streams: version 3's layout, the y string holding two passes.
CHECKERBOARD_FORMAT_VERSION = 4
#: Versions this package reads: 2 (sodec-pipeline 0.2, single-rate models; read as quality 1), 3 and 4.
READABLE_VERSIONS = (2, 3, 4)
#: Versions this package writes (one per entropy model).
WRITABLE_VERSIONS = (FORMAT_VERSION, CHECKERBOARD_FORMAT_VERSION)
#: The entropy model whose strings each readable version holds (``entropy_models.py``), for messages.
VERSION_ENTROPY_MODELS = {
    2: "the mean-scale hyperprior",
    3: "the mean-scale hyperprior",
    4: "the checkerboard context model",
}
