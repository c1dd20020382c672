"""jobman: run a Docker image at a given time on a fresh EC2 instance, and know what happened."""

__version__ = "0.1.0"
