"""mrepo.kernels"""
