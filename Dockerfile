# One image for every role (stream worker, trainer, init jobs, and the MLflow server of
# docker-compose.yml); the role is the command. TORCH_INDEX selects the torch build: CUDA for the
# GPU trainer, CPU for everything else.
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

RUN apt-get update && apt-get install -y --no-install-recommends libev4 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# torch first, from its own index: the project only asks for torch>=2.4, so pip keeps this build
# instead of pulling the default (CUDA) wheel from PyPI.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY ingest ingest
COPY session_store session_store
COPY stream_processors stream_processors
COPY trainer trainer
COPY embedding_studio embedding_studio
COPY plugins plugins
COPY index index
# psycopg2: the PostgreSQL driver of the MLflow server (backend store) that runs from this image.
RUN pip install . "psycopg2-binary==2.9.13" \
    && python -c "import torch; assert torch.__version__.split('+')[0] == '${TORCH_VERSION}', torch.__version__"

ENV ES_DATA_DIR=/data
VOLUME /data
ENTRYPOINT ["embedding-studio"]
CMD ["--help"]
