# Stage 1 trains and exports the models (torch lives only here); stage 2 serves them without torch.
FROM python:3.11-slim AS models
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service service
COPY export export
COPY models models
RUN pip install --no-cache-dir '.[train]' \
 && python -m export build --repository /model_repository

FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service service
RUN pip install --no-cache-dir . && useradd --system --uid 10001 ortserve
COPY --from=models /model_repository /model_repository
USER ortserve
ENV ORTSERVE_HOST=0.0.0.0 \
    ORTSERVE_PORT=8000 \
    ORTSERVE_MODEL_REPOSITORY=/model_repository
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"
CMD ["python", "-m", "service"]
