# The stand-in EC2 instance for tests/test_user_data.py: a Debian machine with a Docker engine,
# curl and bash (as on the AMIs user-data meets), run with the capabilities its own dockerd needs.
# What cannot exist here is replaced: systemd (systemctl), cloud-init (boot.sh) and, through
# the test, the instance metadata service. The package manager is not needed: docker is here.
ARG BASE_IMAGE=elastic-classifier-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends docker.io=20.10.* curl=7.88.* iptables=1.8.* \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/cloud
COPY systemctl /usr/local/bin/systemctl
COPY boot.sh /usr/local/sbin/boot
VOLUME ["/var/lib/docker"]
CMD ["/usr/local/sbin/boot"]
