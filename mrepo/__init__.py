"""mrepo: a distributed, content-addressed repository for cryo-EM populations."""

__version__ = "0.1.0"
