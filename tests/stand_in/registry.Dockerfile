# Debian's docker-registry (the distribution project's registry) as a container on the stack's
# network: the host pushes to it through a loopback port, the stand-in instance pulls by name.
ARG BASE_IMAGE=elastic-classifier-base:bookworm
FROM ${BASE_IMAGE}
COPY docker-registry /usr/local/bin/docker-registry
COPY registry.yml /etc/registry.yml
USER 10001:10001
EXPOSE 5000
CMD ["docker-registry", "serve", "/etc/registry.yml"]
