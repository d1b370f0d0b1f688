# One image for every pushwire service; the command names the service.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY services services
COPY sdk sdk
COPY cli cli
COPY bench bench
RUN pip install --no-cache-dir .
ENV PUSHWIRE_BIND=0.0.0.0
ENTRYPOINT ["pushwire"]
CMD ["--help"]
