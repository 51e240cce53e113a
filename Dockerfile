# asr-server image: CPU torch by default; build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
# for a CUDA build (the server then uses the GPU when one is visible: device "auto").
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

# libsndfile reads wav/flac/ogg/mp3 uploads (the soundfile wheel bundles it on most platforms; this covers the rest).
RUN apt-get update && apt-get install -y --no-install-recommends libsndfile1 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY asr ./asr
COPY protos ./protos
COPY server ./server
COPY client ./client
RUN pip install --extra-index-url "${TORCH_INDEX}" . \
    && useradd --system --uid 10001 asr
USER asr

# Models are mounted at /app/models (docker-compose.yml); --model / ASR_SERVER_MODEL picks one.
EXPOSE 50051 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys; from client import AsrClient; sys.exit(AsrClient('127.0.0.1:50051', timeout_s=3, max_attempts=1).health() != 'SERVING')"]
ENTRYPOINT ["asr-server"]
CMD ["--model", "models/default.pt"]
